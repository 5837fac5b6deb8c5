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

from cnnsweep.errors import ConfigError
from cnnsweep.launch.process_launcher import SCHEDULE_FILE
from cnnsweep import cli, rerun
from cnnsweep.rerun import rerun_arguments
from cnnsweep.run.config import CnnConfig, load_run_config
from cnnsweep.run.records import cpu_description
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


# The other options of each config group (the launcher's are never a rerun's, the sweeps' are searches): each
# saved, for each version of its keys, in saved_configs/options/<group>=<option>/, with what it needs to load.
OPTION_CONFIGS = sorted((Path(__file__).parent / "saved_configs" / "options").glob("*/*.yaml"))
OPTION_NEEDS = {"dataset=folder": ["dataset.path=/data/photos"], "dataset=npz": ["dataset.path=/data/images.npz"],
                "model=custom": ["model._target_=mypackage.models.build"]}


def todays_options() -> list[str]:
    """`group=option` for every option of conf/'s groups but the default one, the launcher's and the sweeps'."""
    from conftest import CONF_DIR

    defaults = {}
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").defaults:
        if isinstance(entry, DictConfig):
            defaults.update(OmegaConf.to_container(entry))
    return [f"{group}={path.stem}" for group in sorted(defaults) if group not in ("launcher", "sweeps")
            for path in sorted((CONF_DIR / group).glob("*.yaml")) if path.stem != defaults[group]]


def option_of(saved: Path) -> list[str]:
    return [saved.parent.name, *OPTION_NEEDS.get(saved.parent.name, [])]


@pytest.mark.parametrize("option", todays_options())
def test_each_options_newest_saved_config_is_todays(option: str, compose_config) -> None:
    """A change to an option's keys needs a saved config of its own (and a value for runs saved before)."""
    saved = sorted((Path(__file__).parent / "saved_configs" / "options" / option).glob("*.yaml"))
    fix = (f"save `uv run python src/run.py --cfg job {' '.join([option, *OPTION_NEEDS.get(option, [])])}` as "
           f"tests/saved_configs/options/{option}/<commit date and time>_<commit>.yaml")
    assert saved, f"{option} has no saved config: {fix}"
    assert set(dotted_keys(OmegaConf.load(saved[-1]))) == set(dotted_keys(compose_config(option, *OPTION_NEEDS.get(
        option, [])))), (f"{option} changed its keys: {fix}, and give every key runs saved before lacked a value in "
                         "cnnsweep.rerun.SETTINGS_OLDER_RUNS_LACK")


@pytest.mark.parametrize("saved", OPTION_CONFIGS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_config_saved_with_any_option_reruns_as_it_ran(saved: Path, compose_config, tmp_path: Path) -> None:
    rerun = rerun_config(saved, tmp_path / "run")
    load_run_config(rerun)
    keys, original = dotted_keys(rerun), dotted_keys(OmegaConf.load(saved))
    lacking = {key for key in dotted_keys(compose_config(*option_of(saved)))
               if key not in keys and not key.startswith(UNUSED_BY_A_RERUN)}
    assert not lacking, f"add {sorted(lacking)} to cnnsweep.rerun.SETTINGS_OLDER_RUNS_LACK"
    assert {key: keys[key] for key in original} == original


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


def rerun_hydra_config(tmp_path: Path, launcher: dict, overrides: list[str]) -> DictConfig:
    """The composed config, Hydra's node included, of `cnnsweep rerun RUN OVERRIDES` for a run that saved
    today's keys with `launcher` as its `launcher.*`."""
    saved = OmegaConf.load(SAVED_CONFIGS[-1])
    saved.launcher = launcher
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")
    arguments = rerun_arguments(tmp_path, overrides)
    with initialize_config_dir(config_dir=arguments[1], version_base="1.3"):
        return compose(config_name="config", overrides=arguments[4:], return_hydra_config=True)


@pytest.mark.parametrize("launcher, jobs", [
    ({"_target_": "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher", "jobs": None, "gpus": "auto"}, None),
    ({"_target_": "hydra_plugins.cnnsweep_plugins.slurm.SlurmTrialLauncher", "jobs": 64, "partition": "gpu"}, 1),
], ids=["launcher=parallel", "launcher=slurm"])
def test_a_rerun_multirun_keeps_a_local_launcher_and_leaves_a_cluster(launcher: dict, jobs: object,
                                                                      tmp_path: Path) -> None:
    """A run from launcher=parallel reruns with its jobs and GPUs; one from Slurm on this machine, one job
    at a time (its partition may not exist here)."""
    hydra = rerun_hydra_config(tmp_path, launcher, ["seed=1"]).hydra  # a job of `-m seed=1,2`
    assert hydra.launcher._target_ == "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    assert (hydra.launcher.jobs, hydra.launcher.gpus) == (jobs, launcher.get("gpus"))
    assert list(hydra.callbacks) == ["leaderboard"]



LOCAL = {"_target_": "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher", "jobs": 1, "gpus": None,
         "jobs_per_gpu": 1, "jobs_per_worker": 50, "job_timeout_min": None, "worker_max_memory_gb": None}
SLURM = {"partition": "gpu", "gpus": 1, "cpus": 8, "mem_gb": 32, "timeout_min": 240, "jobs": 64, "account": None,
         "qos": None, "max_num_timeout": 3, "signal_delay_s": 120}


@pytest.mark.parametrize("saved_launcher, overrides, target, launcher_keys, hydra_launcher", [
    (LOCAL, ["launcher=slurm", "launcher.partition=gpu"], "hydra_plugins.cnnsweep_plugins.slurm.SlurmTrialLauncher",
     SLURM, {"partition": "gpu", "array_parallelism": 64, "cpus_per_task": 8, "timeout_min": 240}),
    (LOCAL, ["launcher=parallel", "launcher.gpus=2"], LOCAL["_target_"],
     {**LOCAL, "gpus": 2, "jobs": None}, {"gpus": 2, "jobs": None, "jobs_per_worker": 50}),
    (SLURM, ["launcher=local", "launcher.jobs=3"], LOCAL["_target_"], {**LOCAL, "jobs": 3}, {"jobs": 3, "gpus": None}),
    (SLURM, ["launcher=slurm_local"], "hydra_plugins.cnnsweep_plugins.slurm.SlurmRehearsalLauncher",
     {**SLURM, "partition": None}, {"partition": None, "array_parallelism": 64}),
], ids=["local-to-slurm", "local-to-parallel", "slurm-to-local", "slurm-to-rehearsal"])
def test_a_rerun_takes_a_launcher_preset_in_place_of_the_runs(saved_launcher: dict, overrides: list[str], target: str,
                                                              launcher_keys: dict, hydra_launcher: dict,
                                                              tmp_path: Path) -> None:
    """`cnnsweep rerun RUN -m seed=1,2 launcher=slurm launcher.partition=gpu`: today's preset replaces the run's
    launcher keys (none of the old launcher's stay) and sets up its Hydra launcher, as `src/run.py -m` would."""
    config = rerun_hydra_config(tmp_path, saved_launcher, ["seed=1", *overrides])
    assert OmegaConf.to_container(config.launcher) == launcher_keys
    assert config.hydra.launcher._target_ == target
    assert {key: config.hydra.launcher[key] for key in hydra_launcher} == hydra_launcher
    assert config.seed == 1 and list(config.hydra.callbacks) == ["leaderboard"]


def test_a_launcher_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    shutil.copy(SAVED_CONFIGS[-1], tmp_path / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError) as raised:
        rerun_arguments(tmp_path, ["-m", "seed=1,2", "launcher=slurn"])
    assert str(raised.value).startswith("launcher=slurn: no such launcher in ")
    assert str(raised.value).endswith("; choose one of local, parallel, slurm, slurm_local")

def test_a_rerun_multirun_runs_as_any_multirun(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """`cnnsweep rerun RUN -m seed=3,4`: each job in the process launcher's worker, one at a time as the run's
    launcher=local did (two with launcher.jobs=2), and the leaderboard at the end, as `src/run.py -m` gives
    (a saved config holds the job's keys, not Hydra's); with `launcher=slurm_local`, through submitit."""
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

    # Another launcher preset: the jobs go through submitit (its local executor rehearses launcher=slurm).
    rehearsed = run_cli(*rerun_arguments(original, ["-m", "seed=5,6", "launcher=slurm_local", "launcher.jobs=2",
                                                    f"hydra.sweep.dir={tmp_path / 'submitit'}"]), command=FAKE_RUN)
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert any((tmp_path / "submitit" / ".submitit").iterdir())  # submitit's own job folders and logs
    board = pd.read_csv(tmp_path / "submitit" / "leaderboard.csv")
    assert sorted(board["seed"]) == [5, 6] and set(board["status"]) == {"completed"}
    assert set(board["params"]) == {json.loads((original / "metrics.json").read_text())["params"]}


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


@pytest.mark.parametrize(("recorded", "noted"), [
    ({"cpu": "Intel Xeon, 2 cores, AVX-512 yes, oneDNN capped at AVX2"}, True),
    ({"cpu": "THIS MACHINE"}, False),
    ({"devices": {"backend": "tensorflow"}}, False),  # a run from before runs recorded their CPU
    (None, False),  # no environment.json
])
def test_a_rerun_on_another_cpu_says_its_numbers_may_differ(recorded: dict | None, noted: bool, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """`cnnsweep rerun RUN_DIR`: one stderr line before the rerun when RUN_DIR trained on another CPU (its kernels
    round differently), nothing otherwise; the rerun goes ahead either way."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    shutil.copy(SAVED_CONFIGS[-1], run_dir / ".hydra" / "config.yaml")
    if recorded is not None:
        cpu = {"cpu": cpu_description()} if recorded.get("cpu") == "THIS MACHINE" else recorded
        (run_dir / "environment.json").write_text(json.dumps(cpu))
    replayed = []
    monkeypatch.setattr(rerun, "replay", replayed.append)
    cli.main(["rerun", str(run_dir), "seed=1"])
    assert replayed == [rerun_arguments(run_dir, ["seed=1"])]
    printed = capsys.readouterr().err.splitlines()
    if noted:
        assert printed == [f"note: {run_dir} trained on Intel Xeon, 2 cores, AVX-512 yes, oneDNN capped at AVX2, "
                           f"this machine is {cpu_description()}: the rerun's numbers may differ from its "
                           "history.csv in the last digits; rerun it on that CPU for an exact replay"]
    else:
        assert printed == []
