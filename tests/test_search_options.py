"""The search's own options, in real subprocess multiruns of tests/fake_run.py on real studies: a
conditional search space (sweeps/optimizers.yaml), the baseline as trial 0 marked in the study, the run
record and the leaderboard, a time budget that stops launching and resumes, the progress line, and
every bad input refused with one line before any trial runs."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import CONF_DIR, FAKE_RUN, ROOT, command_env
from test_search import fake_search_args

from cnnsweep.search.preflight import study_spec
from cnnsweep.search.space import search_space
from cnnsweep.search.study import make_sampler


@pytest.fixture
def compose_config_with_hydra():
    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    return _compose


def tiny_args(tiny_data: Path, tmp_path: Path, sweep: str = "quick", folder: str = "sweep") -> list[str]:
    args = fake_search_args(tiny_data)
    return ["-m", f"sweeps={sweep}", *args[2:], f"hydra.sweep.dir={tmp_path / folder}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", "training.epochs=1"]


def test_a_conditional_space_with_the_baseline_as_trial_0(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = run_cli(*tiny_args(tiny_data, tmp_path, "optimizers"), "hydra.sweeper.n_trials=12",
                     "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=3", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr
    assert "trial 0 is the baseline: optimizer=adam optimizer.lr=0.001" in result.stdout
    study = optuna.load_study(study_name="optimizers", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    own = {"adam": set(), "adamw": {"optimizer.weight_decay"}, "sgd": {"optimizer.momentum", "optimizer.nesterov"},
           "rmsprop": {"optimizer.momentum"}}
    for trial in study.trials:
        name = trial.params["optimizer"]
        assert set(trial.params) == {"optimizer", "optimizer.lr"} | own[name], trial.params
        config = OmegaConf.load(Path(trial.user_attrs["cnnsweep_run_dir"]) / ".hydra" / "config.yaml")
        assert config.optimizer.name == name and config.optimizer.lr == trial.params["optimizer.lr"]
        for key in own[name]:  # each searched value reached the run's config
            assert OmegaConf.select(config, key) == trial.params[key]
    assert {trial.params["optimizer"] for trial in study.trials} >= {"adam", "sgd"}

    baseline = study.trials[0]
    assert baseline.params == {"optimizer": "adam", "optimizer.lr": 0.001}
    assert baseline.user_attrs["cnnsweep_baseline"] is True
    assert not any(trial.user_attrs.get("cnnsweep_baseline") for trial in study.trials[1:])
    record = json.loads((Path(baseline.user_attrs["cnnsweep_run_dir"]) / "metrics.json").read_text())
    assert record["baseline"] is True and record["trial"] == 0

    board = pd.read_csv(tmp_path / "sweep" / "leaderboard.csv").set_index("trial")
    assert board.loc[0, "baseline"] == True and board.drop(index=0)["baseline"].eq(False).all()  # noqa: E712
    adam = board[board["optimizer.name"] == "adam"]
    assert adam["optimizer.momentum"].isna().all() and adam["optimizer.weight_decay"].isna().all()
    sgd = board[board["optimizer.name"] == "sgd"]
    assert sgd["optimizer.momentum"].notna().all()

    again = run_cli(*tiny_args(tiny_data, tmp_path, "optimizers", "again"), "hydra.sweeper.n_trials=13",
                    "hydra/sweeper/sampler=random", command=FAKE_RUN)
    assert again.returncode == 0, again.stderr
    assert sum(bool(t.user_attrs.get("cnnsweep_baseline")) for t in study.trials) == 1  # not queued twice


def test_a_time_budget_stops_launching_and_the_next_run_goes_on(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    budget = ["hydra.sweeper.n_trials=100", "hydra.sweeper.timeout=3", "training.epochs=2"]
    first = run_cli(*tiny_args(tiny_data, tmp_path), *budget, command=FAKE_RUN, env={"FAKE_EPOCH_SECONDS": "0.3"})
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.trials
    assert 1 <= len(trials) < 100 and all(trial.state is TrialState.COMPLETE for trial in trials)
    starts = sorted(trial.datetime_start for trial in trials)
    assert (starts[-1] - starts[0]).total_seconds() <= 3  # none started after the budget
    assert f"time budget of 3s used (hydra.sweeper.timeout); {100 - len(trials)} trials still to run" in first.stdout
    progress = [line.split("progress: ")[1] for line in first.stdout.splitlines() if "progress: " in line]
    assert len(progress) == len(trials) and progress[-1].startswith(
        f"{len(trials)}/100 trials finished (0 pruned, 0 failed), 0 running, best val_accuracy ")

    second = run_cli(*tiny_args(tiny_data, tmp_path, folder="second"), *budget, command=FAKE_RUN,
                     env={"FAKE_EPOCH_SECONDS": "0.3"})
    assert second.returncode == 0, second.stderr
    assert f"{len(trials)} of 100 trials finished" in second.stdout
    assert len(trials) < len(study.trials) < 100


def test_a_grid_logs_progress(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = run_cli("-m", "model.filters=4,6,8", f"dataset.path={tiny_data}", "dataset.max_train=64",
                     "training.epochs=1", f"hydra.sweep.dir={tmp_path / 'grid'}", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr
    lines = [line.split("progress: ")[1] for line in result.stdout.splitlines() if "progress: " in line]
    assert [line.split(",")[0] for line in lines] == [f"{n}/3 jobs finished (0 failed)" for n in (1, 2, 3)]
    assert "best test_accuracy " in lines[-1] and lines[-1].endswith("about 0s left")


BAD_INPUTS = [
    (["model.filterz=choice(1, 2)"],
     "hydra.sweeper.params.model.filterz: no such key in the composed config; check its spelling, or write "
     "+model.filterz to add a new one"),
    (["optimizer=choice(adam, sgdd)"], "hydra.sweeper.params: "),
    (["model.kernel_size=range(8, 1)"], "model.kernel_size=range(8, 1) is an empty range"),
    (["model.dropout=interval(0.5, 0.1)"], "model.dropout=interval(0.5, 0.1) is empty or reversed"),
    (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0: must be a positive number of trials at once"),
    (["hydra.sweeper.max_failure_rate=2"], "hydra.sweeper.max_failure_rate=2.0: must be between 0.0 and 1.0"),
    (["hydra.sweeper.timeout=0"], "hydra.sweeper.timeout=0.0: must be a positive number of seconds"),
    (["hydra.sweeper.test_top_k=0"], "hydra.sweeper.test_top_k=0: must be a positive number of trials, or null"),
    (["+hydra.sweeper.sampler.n_candidates=8"],
     "hydra.sweeper.sampler: TPESampler got an unexpected keyword argument 'n_candidates'"),
    (["+hydra.sweeper.pruner_options.warmup=2"], "hydra.sweeper.pruner_options for pruner=median: "),
    (["hydra.sweeper.pruner=hyperband"],  # quick.yaml's median options
     "hydra.sweeper.pruner_options for pruner=hyperband: HyperbandPruner.__init__() got an unexpected keyword argument "
     "'n_startup_trials'; give that pruner's own options, or hydra.sweeper.pruner_options=null for its defaults"),
    (["hydra/sweeper/sampler=motpe"], "hydra/sweeper/sampler=motpe: optuna "),
    (["hydra.sweeper.custom_search_space=nowhere.configure"],
     "hydra.sweeper.custom_search_space=nowhere.configure: cannot import it"),
    (["dataset.val_size=0"], "objective.metric=val_accuracy needs a validation hold-out; set dataset.val_size=N"),
    (["hydra.sweeper.metric=test_accuracy"], "hydra.sweeper.metric=test_accuracy: searches never optimise the test set"),
]


def test_switching_pruners_on_the_command_line_drops_the_sweeps_pruner_options(run_cli, tiny_data: Path,
                                                                               tmp_path: Path) -> None:
    result = run_cli(*tiny_args(tiny_data, tmp_path), "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=hyperband",
                     "hydra.sweeper.pruner_options=null", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr
    study = json.loads((tmp_path / "sweep" / "study.json").read_text())
    assert (study["pruner"], study["pruner_options"]) == ("hyperband", {})


def test_bad_inputs_are_one_line_before_any_trial(tiny_data: Path, tmp_path: Path) -> None:
    def attempt(case: int) -> subprocess.CompletedProcess:
        overrides, _ = BAD_INPUTS[case]
        args = [arg if not arg.startswith("hydra.sweeper.storage=") else  # one each: SQLite's schema creation races
                f"hydra.sweeper.storage=sqlite:///{tmp_path / f'case{case}.db'}"
                for arg in tiny_args(tiny_data, tmp_path, folder=f"case{case}")]
        return subprocess.run([*FAKE_RUN, *args, *overrides],
                              cwd=tmp_path, env=command_env(), capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(4) as pool:  # independent processes, mostly start-up time
        results = list(pool.map(attempt, range(len(BAD_INPUTS))))
    for (overrides, message), result in zip(BAD_INPUTS, results):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (overrides, result.stderr)
        assert message in lines[0], (overrides, lines[0])
        assert not list(tmp_path.glob("case*/[0-9]*")), overrides  # no trial ran


def test_a_missing_data_file_is_refused_before_any_trial(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.npz"
    result = run_cli(*tiny_args(tiny_data, tmp_path), f"dataset.path={missing}", command=FAKE_RUN)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: dataset.path={missing}: no such file or folder; pass an existing .npz with keys x_train, y_train, "
        "x_test, y_test, or a folder with one subfolder of images per class")
    assert not list(tmp_path.glob("sweep/[0-9]*"))  # refused once, not failed in every trial


def test_a_changed_search_space_on_resume_is_refused(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    first = run_cli(*tiny_args(tiny_data, tmp_path), "hydra.sweeper.n_trials=1", "model.kernel_size=choice(2, 3)",
                    command=FAKE_RUN)
    assert first.returncode == 0, first.stderr
    second = run_cli(*tiny_args(tiny_data, tmp_path, folder="second"), "hydra.sweeper.n_trials=2",
                     "model.kernel_size=choice(3, 4)", command=FAKE_RUN)
    assert second.returncode == 2  # a configuration error, as for a wrong override
    assert second.stderr.strip().splitlines()[-1] == (  # after Optuna's own "Using an existing study" line
        "error: hydra.sweeper.params.model.kernel_size: study quick searched it as choice(2, 3), now choice(3, 4); "
        "search the old values, or start a new study with hydra.sweeper.study_name=<new name>")
    assert not list((tmp_path / "second").glob("[0-9]*"))


@pytest.mark.parametrize("name", sorted(path.stem for path in (ROOT / "sweeps").glob("*.yaml")))
def test_every_shipped_sweeps_file_makes_a_search(compose_config_with_hydra, name: str) -> None:
    """Each sweeps/*.yaml composes, and its space, objective and sampler build as the search builds them."""
    config = compose_config_with_hydra(f"sweeps={name}")
    sweeper = instantiate(config.hydra.sweeper)
    settings = sweeper.settings
    space = search_space(settings.params, [], conditional_params=settings.conditional_params,
                         old_search_space=settings.search_space, custom_search_space=settings.custom_search_space)
    spec = study_spec(settings, config)
    sampler = make_sampler(settings.sampler, dict(settings.sampler_options), settings.seed,
                           space.grid() if settings.sampler == "grid" else None)
    assert space.distributions and spec.metrics and not any(metric.startswith("test_") for metric in spec.metrics)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert space.baseline({**{key: OmegaConf.select(config, key) for key in space.searched()},
                           "optimizer": config.optimizer.name})[1] is None  # the tutorial is inside each space


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # QMCSampler's, Optuna's own
@pytest.mark.parametrize("sampler", ["random", "qmc", "cmaes", "nsgaii", "grid"])
def test_another_sampler_group_over_a_sweeps_file(compose_config_with_hydra, sampler: str, caplog) -> None:
    """sweeps/baseline_tpe.yaml sets TPE fields; another sampler chosen on the command line gets them dropped
    with a warning, not a composition error (hydra-optuna-sweeper's typed configs, where installed, would
    refuse them: cnnsweep's untyped group is the one in use)."""
    config = compose_config_with_hydra("sweeps=baseline_tpe", f"hydra/sweeper/sampler={sampler}")
    node = OmegaConf.to_container(config.hydra.sweeper.sampler)
    assert node["n_startup_trials"] == 8 and node["_target_"].endswith(
        {"random": "RandomSampler", "qmc": "QMCSampler", "cmaes": "CmaEsSampler", "nsgaii": "NSGAIISampler",
         "grid": "GridSampler"}[sampler])
    built = make_sampler(node, {}, None, {"model.filters": [16, 32]})
    assert type(built).__name__ == node["_target_"].rpartition(".")[2]
    assert "hydra.sweeper.sampler.multivariate=True does not apply to" in caplog.text


def test_a_search_in_the_default_sweep_folder_keeps_every_trial_in_it(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """hydra.sweep.dir left at conf/config.yaml's outputs/multiruns/${now:...} (to the microsecond): one folder
    for the search, its trials (each batch composed apart) and its leaderboard."""
    args = [arg for arg in tiny_args(tiny_data, tmp_path) if not arg.startswith("hydra.sweep.dir=")]
    result = run_cli(*args, "hydra.sweeper.n_trials=3", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr
    [sweep] = (tmp_path / "outputs" / "multiruns").iterdir()
    assert sorted(path.name for path in sweep.iterdir() if path.name.isdigit()) == ["0", "1", "2"]
    assert len(pd.read_csv(sweep / "leaderboard.csv")) == 3 and (sweep / "optimization_results.yaml").is_file()
