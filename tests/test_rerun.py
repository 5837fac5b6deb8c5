"""Every past run reruns (cnnsweep.rerun): the config each version of conf/ saved, kept in
tests/saved_configs/, composes as a rerun's primary config, loads, and has every setting today's runs have,
each added one with the value that does what the run did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cnnsweep.launch.process_launcher import SCHEDULE_FILE
from cnnsweep.rerun import rerun_arguments
from cnnsweep.run.config import CnnConfig, load_run_config
from cnnsweep.run.tracking import flat_params
from conftest import FAKE_RUN, kill_once_checkpointed

SAVED_CONFIGS = sorted((Path(__file__).parent / "saved_configs").glob("*.yaml"))
OLDEST = SAVED_CONFIGS[0]
# A rerun's launcher is Hydra's choice for its own command line (hydra/launcher), never the saved `launcher.*`.
UNUSED_BY_A_RERUN = ("launcher.",)


def rerun_config(saved: Path, run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The config `cnnsweep rerun RUN_DIR OVERRIDES` composes for a run folder holding `saved`."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, run_dir / ".hydra" / "config.yaml")
    arguments = rerun_arguments(run_dir, list(overrides))
    with initialize_config_dir(config_dir=arguments[1], version_base="1.3"):
        return compose(config_name="config",
                       overrides=[argument for argument in arguments[4:] if not argument.startswith("hydra.")])


def dotted_keys(config: DictConfig) -> dict[str, object]:
    """Every leaf of `config` by its dotted key, values unresolved."""
    return flat_params(OmegaConf.to_container(config))


def test_the_newest_saved_config_is_todays() -> None:
    """A change to conf/'s keys needs a saved config of its own here (and SETTINGS_OLDER_RUNS_LACK entries)."""
    from conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        today = compose(config_name="config")
    assert set(dotted_keys(OmegaConf.load(SAVED_CONFIGS[-1]))) == set(dotted_keys(today)), (
        "conf/ changed its keys: save `uv run python src/run.py --cfg job` as tests/saved_configs/<commit date and time>_<commit>.yaml "
        "and give every key runs saved before lacked a value in cnnsweep.rerun.SETTINGS_OLDER_RUNS_LACK")


@pytest.mark.parametrize("saved", SAVED_CONFIGS, ids=lambda path: path.stem)
def test_a_config_saved_by_any_version_reruns_as_it_ran(saved: Path, compose_config, tmp_path: Path) -> None:
    rerun = rerun_config(saved, tmp_path / "run")
    load_run_config(rerun)  # a missing setting would be a one-line ConfigError here
    keys, original = dotted_keys(rerun), dotted_keys(OmegaConf.load(saved))
    lacking = {key for key in dotted_keys(compose_config()) if key not in keys and not key.startswith(UNUSED_BY_A_RERUN)}
    assert not lacking, f"add {sorted(lacking)} to cnnsweep.rerun.SETTINGS_OLDER_RUNS_LACK"
    assert {key: keys[key] for key in original} == original  # what the run saved is what it reruns with


def test_settings_added_since_get_the_values_older_runs_ran_with(tmp_path: Path) -> None:
    """The oldest saved config lacks every setting added since; the command line's own value still wins."""
    run = load_run_config(rerun_config(OLDEST, tmp_path / "run", ["hardware.malloc_top_pad_mb=16"]))
    assert (run.training.steps_per_execution, run.training.checkpoints.value, run.training.eval_batch_size) == \
        (1, "auto", None)
    assert (run.training.lr_schedule, run.training.warmup_epochs, run.training.resume) == ("constant", 0.0, False)
    assert (run.augment.flip, run.augment.rotation, run.augment.zoom) == ("none", 0.0, 0.0)
    assert (run.hardware.backend, run.hardware.distribution, run.hardware.malloc_top_pad_mb) == \
        ("tensorflow", "none", 16)
    assert run.logger.name == "csv"
    assert (type(run.model), run.model.filters, run.dataset.name, run.seed) == (CnnConfig, 32, "mnist", 0)


def test_the_recorded_backend_wins_over_the_one_an_older_config_gets(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "environment.json").write_text(json.dumps({"devices": {"backend": "jax"}}))
    assert rerun_config(OLDEST, run_dir).hardware.backend == "jax"
    assert rerun_config(OLDEST, run_dir, ["hardware.backend=torch"]).hardware.backend == "torch"


@pytest.mark.parametrize("command_line, flags, overrides", [
    (["-m", "seed=1,2"], ["-m"], ["seed=1,2"]),
    (["seed=1,2", "--multirun"], ["--multirun"], ["seed=1,2"]),
    (["seed=1", "--cfg", "job"], ["--cfg", "job"], ["seed=1"]),
    (["--info", "seed=1", "~training.resume"], ["--info"], ["seed=1", "~training.resume"]),
    (["-m", "+sweeps=quick", "hydra.sweeper.n_trials=4"], ["-m"], ["+sweeps=quick", "hydra.sweeper.n_trials=4"]),
])
def test_hydra_flags_go_before_every_override(command_line: list[str], flags: list[str], overrides: list[str],
                                              tmp_path: Path) -> None:
    """Hydra's parser takes its flags only before the overrides; the rerun puts its own overrides first."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    arguments = rerun_arguments(tmp_path, command_line)
    assert arguments[:len(flags) + 1] == [*flags, "--config-path"]
    assert arguments[-len(overrides):] == overrides


@pytest.mark.parametrize("launcher, jobs", [
    ({"_target_": "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher", "jobs": None, "gpus": "auto"}, None),
    ({"_target_": "hydra_plugins.cnnsweep_plugins.slurm.SlurmTrialLauncher", "jobs": 64, "partition": "gpu"}, 1),
], ids=["launcher=parallel", "launcher=slurm"])
def test_a_rerun_multirun_keeps_a_local_launcher_and_leaves_a_cluster(launcher: dict, jobs: object,
                                                                      tmp_path: Path) -> None:
    """A run from launcher=parallel reruns with its jobs and GPUs; one from Slurm on this machine, one job
    at a time (its partition may not exist here)."""
    saved = OmegaConf.load(SAVED_CONFIGS[-1])
    saved.launcher = launcher
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")
    arguments = rerun_arguments(tmp_path, ["seed=1"])  # a job of `-m seed=1,2`
    with initialize_config_dir(config_dir=arguments[1], version_base="1.3"):
        hydra = compose(config_name="config", overrides=arguments[4:], return_hydra_config=True).hydra
    assert hydra.launcher._target_ == "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    assert (hydra.launcher.jobs, hydra.launcher.gpus) == (jobs, launcher.get("gpus"))
    assert list(hydra.callbacks) == ["leaderboard"]


def test_a_rerun_multirun_runs_as_any_multirun(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """`cnnsweep rerun RUN -m seed=3,4`: each job in the process launcher's worker, one at a time as the run's
    launcher=local did (two with launcher.jobs=2), and the leaderboard at the end, as `src/run.py -m` gives
    (a saved config holds the job's keys, not Hydra's)."""
    original = tmp_path / "run"
    first = run_cli(f"dataset.path={tiny_data}", "dataset.val_size=16", "training.epochs=2", "model.filters=4",
                    f"hydra.run.dir={original}", command=FAKE_RUN)
    assert first.returncode == 0, first.stderr
    rerun = run_cli(*rerun_arguments(original, ["-m", "seed=3,4"]), command=FAKE_RUN)
    assert rerun.returncode == 0, rerun.stderr
    [sweep] = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = [json.loads(line) for line in (sweep / SCHEDULE_FILE).read_text().splitlines()]
    assert [(Path(job["run_dir"]).name, job["slot"], job["worker_job"]) for job in jobs] == [("0", 0, 1), ("1", 0, 2)]
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert sorted(board["seed"]) == [3, 4] and set(board["status"]) == {"completed"}
    assert {json.loads((sweep / job / "metrics.json").read_text())["params"] for job in ("0", "1")} == \
        {json.loads((original / "metrics.json").read_text())["params"]}  # the saved model, not today's default

    both = run_cli(*rerun_arguments(original, ["-m", "seed=3,4", "launcher.jobs=2",
                                               f"hydra.sweep.dir={tmp_path / 'both'}"]), command=FAKE_RUN)
    assert both.returncode == 0, both.stderr
    assert sorted(json.loads(line)["slot"] for line in (tmp_path / "both" / SCHEDULE_FILE).read_text().splitlines()) \
        == [0, 1]


def test_a_resumed_run_reruns_from_its_first_epoch(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """A resumed run saved training.resume=true in its folder; a plain rerun of it trains anew in a new folder."""
    run = tmp_path / "run"
    kill_once_checkpointed([*FAKE_RUN, f"dataset.path={tiny_data}", "dataset.val_size=16", "training.epochs=4"], run, 2,
                           tmp_path, env={"FAKE_EPOCH_SECONDS": "0.5"})
    resumed = run_cli(*rerun_arguments(run, [], resume=True), command=FAKE_RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert OmegaConf.load(run / ".hydra" / "config.yaml").training.resume is True
    assert json.loads((run / "metrics.json").read_text())["resumed_after_epoch"] >= 2

    rerun = run_cli(*rerun_arguments(run, []), command=FAKE_RUN)
    assert rerun.returncode == 0, rerun.stderr
    [rerun_dir] = (tmp_path / "outputs" / "reruns").iterdir()
    record = json.loads((rerun_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs_completed"], record.get("resumed_after_epoch")) == ("completed", 4, None)
    assert pd.read_csv(rerun_dir / "history.csv").drop(columns="seconds").equals(
        pd.read_csv(run / "history.csv").drop(columns="seconds"))
