"""hydra-optuna-sweeper's own example and test configs (tests/plugin_examples), run unchanged with
`hydra/sweeper=cnnsweep_optuna` in real subprocess multiruns, with that plugin's test assertions: the
sampler group and its fields, `storage: null`, return-value objectives (single and multi-objective), the
grid sampler, the deprecated `search_space` form, `custom_search_space` and `max_failure_rate`.
TensorFlow-free: the apps are Hydra apps that return x**2 + y**2 and the like."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import RUN, ROOT, TINY_RUN, command_env

EXAMPLES = ROOT / "tests" / "plugin_examples"


def run_example(script: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    flags = [item for item in overrides if item.startswith("--")]
    command = [sys.executable, str(EXAMPLES / script), "--multirun", *flags, "hydra/sweeper=cnnsweep_optuna",
               *(item for item in overrides if not item.startswith("--"))]
    result = subprocess.run(command, cwd=EXAMPLES, env=command_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("with_commandline", [True, False])
def test_the_sphere_example(tmp_path: Path, with_commandline: bool) -> None:
    storage, study_name = f"sqlite:///{tmp_path / 'test.db'}", "test-optuna-example"
    run_example("sphere.py", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
                "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}",
                "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123", "~z",
                *(["x=choice(0, 1, 2)", "y=0"] if with_commandline else []))
    returns = OmegaConf.load(tmp_path / "optimization_results.yaml")
    best = optuna.load_study(storage=storage, study_name=study_name).best_trial
    assert returns.name == "optuna" and returns.best_params.x == best.params["x"]
    assert ("y" not in returns.best_params) if with_commandline else (returns.best_params.y == best.params["y"])
    assert returns.best_value == best.value <= 2.27  # the plugin's 95th-percentile bound for TPE
    assert returns.best_value == best.params["x"] ** 2 + (0 if with_commandline else best.params["y"] ** 2)


@pytest.mark.parametrize("n_trials", [10, 1])
def test_the_grid_sampler_config(tmp_path: Path, n_trials: int) -> None:
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    run_example("sphere.py", "--config-name=test_grid", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=False",
                f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.study_name=test-grid-sampler")
    returns = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert returns.best_params.x in [-1, 1] and returns.best_params.y in [-1, 0] and returns.best_params.z in ["foo", "bar"]
    study = optuna.load_study(storage=storage, study_name="test-grid-sampler")
    points = {(t.params["x"], t.params["y"], t.params["z"]) for t in study.trials}
    assert len(study.trials) == len(points) == min(n_trials, 8)  # 2 x 2 x 2 points, none twice
    if n_trials >= 8:
        assert returns.best_value == 1 and abs(returns.best_params.x) == 1 and returns.best_params.y == 0


@pytest.mark.parametrize("with_commandline", [True, False])
def test_the_multi_objective_example_with_an_in_memory_study(tmp_path: Path, with_commandline: bool) -> None:
    run_example("multi-objective.py", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True",
                "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=random",
                "hydra.sweeper.sampler.seed=123", *(["x=range(0, 5)", "y=range(0, 3)"] if with_commandline else []))
    returns = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert returns.name == "optuna" and returns.solutions
    steps = {0} if with_commandline else {0, 0.5}
    for point in returns.solutions:
        x, y = point.params.x, point.params.y
        assert x % 1 in steps and y % 1 in steps
        assert list(point["values"]) == [4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2]
        assert not any(_dominates(other["values"], point["values"]) for other in returns.solutions)
    # storage: null keeps the study with the sweep folder, where every trial could report to it
    study = optuna.load_study(study_name="multi-objective", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))))
    assert len(study.trials) == 20 and all(trial.state is TrialState.COMPLETE for trial in study.trials)


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_the_custom_search_space_example(tmp_path: Path) -> None:
    run_example("custom-search-space-objective.py", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True",
                "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=random",
                "hydra.sweeper.sampler.seed=123", "max_z_difference_from_x=0.3")
    returns = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert abs(returns.best_params.x - returns.best_params.z) <= 0.3
    assert 0 <= returns.best_params["+w"] <= 1


def test_the_deprecated_search_space_form(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    run_example("sphere.py", "--config-name=test_deprecated_search_space", f"hydra.sweep.dir={tmp_path}",
                "hydra.sweeper.n_trials=5", f"hydra.sweeper.storage={storage}")
    study = optuna.load_study(storage=storage, study_name="sphere")
    assert len(study.trials) == 5 and all(set(trial.params) == {"x"} for trial in study.trials)
    assert all(-5.5 <= trial.params["x"] <= 5.5 and trial.params["x"] % 0.5 == 0 for trial in study.trials)


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_max_failure_rate(tmp_path: Path, max_failure_rate: float) -> None:
    """Every trial fails: below 1.0 the sweep stops with the task's error, at 1.0 it runs them all."""
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    result = run_example("sphere.py", f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=True",
                         "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=random",
                         "hydra.sweeper.sampler.seed=123", f"hydra.sweeper.max_failure_rate={max_failure_rate}",
                         f"hydra.sweeper.storage={storage}", "error=true", check=False)
    trials = optuna.load_study(storage=storage, study_name="sphere").trials
    assert all(trial.state is TrialState.FAIL for trial in trials)
    assert all(trial.user_attrs["cnnsweep_error"] == "RuntimeError: cfg.error is True" for trial in trials)
    if max_failure_rate < 1.0:
        assert result.returncode == 1 and len(trials) < 20
        [line] = [line for line in result.stderr.splitlines() if "search stopped" in line]
        assert "(hydra.sweeper.max_failure_rate=0.5)" in line and "RuntimeError: cfg.error is True" in line
    else:
        assert result.returncode == 0 and len(trials) == 20


@pytest.mark.tensorflow
def test_a_plugin_style_search_of_the_real_task(mnist_dir: Path, tmp_path: Path) -> None:
    """The plugin's command-line form against src/run.py: trials train real Keras models, the objective is
    each run's val_accuracy, trial 0 is the composed config, and the in-memory-style study keeps every trial."""
    result = subprocess.run(
        [*RUN, "--multirun", "hydra/sweeper=cnnsweep_optuna", "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123",
         "hydra.sweeper.storage=null", "hydra.sweeper.study_name=null", "hydra.sweeper.n_trials=2",
         "model.kernel_size=choice(2, 3)", *TINY_RUN, "training.epochs=1", "dataset.val_size=256",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=command_env(CNNSWEEP_DATA_DIR=str(mnist_dir)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    returns = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "sweep" / "optuna.journal")))
    study = optuna.load_study(study_name=returns.study_name, storage=storage)
    assert [trial.params["model.kernel_size"] for trial in study.trials][0] == 3  # the composed config first
    assert study.trials[0].user_attrs["cnnsweep_baseline"] is True
    for trial in study.trials:
        record = json.loads((Path(trial.user_attrs["cnnsweep_run_dir"]) / "metrics.json").read_text())
        assert record["status"] == "completed" and trial.value == record["val_accuracy"] and 0 < trial.value <= 1
    assert returns.metric == "val_accuracy" and returns.best_value == max(trial.value for trial in study.trials)
