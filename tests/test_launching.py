"""The search/launcher contract (cnnsweep.launch.contract) and the Hydra internals behind it, without
TensorFlow: which launchers implement it, how any other Hydra launcher is adapted (batches of waiting
trials, folders named by trial number, failure as a value), and the hydra-core version bound."""

from __future__ import annotations

import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import hydra
import optuna
import pytest
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.utils import create_config_search_path
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig
from optuna.trial import TrialState
from packaging.specifiers import SpecifierSet

from cnnsweep.launch import hydra_internals
from cnnsweep.errors import ConfigError
from cnnsweep.launch.contract import HydraLauncherAdapter, JobOutcome, TrialJob, TrialLauncher, trial_launcher
from conftest import CONF_DIR, FAKE_RUN, ROOT
from hydra_plugins.cnnsweep_plugins.process_launcher import ProcessLauncher
from hydra_plugins.cnnsweep_plugins.slurm import SlurmRehearsalLauncher, SlurmTrialLauncher
from test_search import fake_search_args


def sweep_context(sweep_dir: Path, *overrides: str) -> tuple[HydraContext, DictConfig]:
    """Hydra's own config loader and the composed multirun config, as `src/run.py -m` builds them."""
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    config = loader.load_configuration("config", [f"hydra.sweep.dir={sweep_dir}", *overrides], RunMode.MULTIRUN)
    return HydraContext(config_loader=loader, callbacks=Callbacks(config)), config


@pytest.mark.parametrize(("launcher", "slots"), [
    (ProcessLauncher(jobs=1, gpus=None), 1),
    (ProcessLauncher(jobs=None, gpus=["a", "b", "c"]), 3),
    (SlurmTrialLauncher(array_parallelism=16, submitit_folder="x"), 16),
    (SlurmRehearsalLauncher(array_parallelism=4, submitit_folder="x", partition="gpu"), 4),
])
def test_cnnsweep_launchers_implement_the_contract(launcher, slots: int, tmp_path: Path) -> None:
    context, config = sweep_context(tmp_path)
    assert isinstance(launcher, TrialLauncher) and launcher.slots == slots
    assert trial_launcher(launcher, context, config) is launcher


def test_other_hydra_launchers_are_adapted(tmp_path: Path) -> None:
    context, config = sweep_context(tmp_path)
    assert not isinstance(BasicLauncher(), TrialLauncher)
    adapted = trial_launcher(BasicLauncher(), context, config)
    assert isinstance(adapted, HydraLauncherAdapter) and isinstance(adapted, TrialLauncher) and adapted.slots == 1


class BatchRecorder(Launcher):
    """A Hydra launcher that records each batch, fails jobs with filters=0, and holds its first batch
    until the test releases it (`first_batch_running` says it has started)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, list[str]]]] = []
        self.first_batch_running, self.release = threading.Event(), threading.Event()
        self.release.set()

    def setup(self, **kwargs) -> None:
        pass

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.batches.append([(initial_job_idx + offset, list(overrides)) for offset, overrides in enumerate(job_overrides)])
        if any("model.filters=0" in overrides for overrides in job_overrides):
            raise RuntimeError("the whole batch was lost")
        self.first_batch_running.set()
        assert self.release.wait(timeout=120), "the test never released the batch"
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=1.0) for _ in job_overrides]


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "what the test waits for did not happen"
        time.sleep(0.01)


def test_trials_that_wait_go_out_together_in_the_next_batch(tmp_path: Path) -> None:
    context, config = sweep_context(tmp_path / "sweep")
    recorder = BatchRecorder()
    recorder.release.clear()
    adapter = HydraLauncherAdapter(recorder, context, config)
    started: dict[int, Path] = {}
    jobs = [TrialJob(number, ("model.filters=8",), lambda run_dir, number=number: started.__setitem__(number, run_dir))
            for number in (3, 7, 9, 12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(adapter.run_trial, jobs[0])
        assert recorder.first_batch_running.wait(timeout=120)
        rest = [pool.submit(adapter.run_trial, job) for job in jobs[1:]]
        wait_for(lambda: len(adapter._waiting) == 3)  # the other three wait while the first batch runs
        recorder.release.set()
        outcomes: list[JobOutcome] = [first.result(), *(future.result() for future in rest)]
    assert [[number for number, _ in batch] for batch in recorder.batches] == [[3], [7, 8, 9]]
    assert [overrides[-1] for _, overrides in recorder.batches[1]] == [f"hydra.sweep.subdir={n}" for n in (7, 9, 12)]
    assert {number: run_dir.name for number, run_dir in started.items()} == {3: "3", 7: "7", 9: "9", 12: "12"}
    assert [outcome.run_dir for outcome in outcomes] == [tmp_path / "sweep" / str(job.number) for job in jobs]
    assert all(outcome.error is None for outcome in outcomes)


def test_a_batch_the_launcher_loses_is_failed_trials_not_an_exception(tmp_path: Path) -> None:
    context, config = sweep_context(tmp_path / "sweep")
    adapter = HydraLauncherAdapter(BatchRecorder(), context, config)
    outcome = adapter.run_trial(TrialJob(5, ("model.filters=0",)))
    assert outcome.error == "BatchRecorder failed: RuntimeError: the whole batch was lost"
    assert outcome.run_dir == tmp_path / "sweep" / "5" and outcome.job_return is None
    assert '"status": "failed"' in (outcome.run_dir / "metrics.json").read_text()


def test_a_search_through_hydras_basic_launcher(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """Any Hydra launcher: `~launcher` drops cnnsweep's launcher presets, `hydra/launcher=...` picks one."""
    sweep_dir, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(*fake_search_args(tiny_data), "~launcher", "hydra/launcher=basic", "hydra.sweeper.n_jobs=2",
                     "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage={storage}",
                     command=FAKE_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Launching 1 jobs locally" in result.stdout or "Launching 2 jobs locally" in result.stdout
    trials = optuna.load_study(study_name="quick", storage=storage).trials
    assert len(trials) == 4 and all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials)
    for trial in trials:
        assert trial.user_attrs["cnnsweep_run_dir"] == str(sweep_dir / str(trial.number))
        assert (sweep_dir / str(trial.number) / "metrics.json").is_file()


def test_hydra_core_is_within_the_bound_its_internals_were_checked_for() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [hydra_requirement] = [requirement for requirement in declared if requirement.startswith("hydra-core")]
    assert hydra_requirement.split("#")[0].strip() == f"hydra-core{hydra_internals.SUPPORTED_HYDRA}"
    assert hydra.__version__ in SpecifierSet(hydra_internals.SUPPORTED_HYDRA)


def test_the_internals_compose_and_describe_a_job(tmp_path: Path) -> None:
    context, config = sweep_context(tmp_path / "sweep")
    job_config = hydra_internals.compose_job_config(context, config, ["model.filters=8", "seed=3"], 11)
    assert (job_config.model.filters, job_config.seed, job_config.hydra.job.num) == (8, 3, 11)
    assert hydra_internals.job_dir(job_config) == tmp_path / "sweep" / "11"
    failed = hydra_internals.job_return(job_config, JobStatus.FAILED, ValueError("no such file"))
    assert hydra_internals.job_error(failed) == "ValueError: no such file"
    ours = hydra_internals.job_return(job_config, JobStatus.FAILED, ConfigError("dataset.path=x: no such file"))
    assert hydra_internals.job_error(ours) == "dataset.path=x: no such file"  # already one line that names the key
    assert hydra_internals.output_dir(failed) == tmp_path / "sweep" / "11"
    assert list(failed.overrides) == ["model.filters=8", "seed=3"] and "hydra" not in failed.cfg
    completed = hydra_internals.job_return(job_config, JobStatus.COMPLETED, 0.97)
    assert hydra_internals.job_error(completed) is None and hydra_internals.stored_value(completed) == 0.97
