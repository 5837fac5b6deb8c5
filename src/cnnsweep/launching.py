"""The contract between a search and the launcher that runs its trials.

A search asks the launcher how many trials it runs at once (`slots`) and hands it one trial at a time,
from as many threads as it keeps trials running. For each trial the launcher says where the run folder
is as soon as it knows (`TrialJob.started`), and returns a JobOutcome when the job has ended: the run
folder, Hydra's JobReturn when there is one, and the error when the job failed. A failed job, even one
whose process was killed or whose cluster job was cancelled, is a value, never an exception: the search
goes on, and the run folder's metrics.json says `failed` with the same error.

Implemented by cnnsweep's process launcher (`launcher=local|parallel`), its Slurm launchers
(`launcher=slurm|slurm_local`), and, through HydraLauncherAdapter, by any other Hydra launcher.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig

from cnnsweep import hydra_internals
from cnnsweep.records import mark_failed


def _ignore(run_dir: Path) -> None:
    """The default `started` callback."""


@dataclass(frozen=True)
class TrialJob:
    number: int  # the trial's number in its study; the job's number in the sweep
    overrides: tuple[str, ...]  # Hydra overrides of this job
    started: Callable[[Path], None] = field(default=_ignore, compare=False)  # called with the run folder


@dataclass(frozen=True)
class JobOutcome:
    run_dir: Path  # the folder the job wrote to (its metrics.json says how it ended)
    error: Optional[str] = None  # why the job failed; None when its task returned
    job_return: Optional[JobReturn] = None  # None when the launcher has none (a lost batch or submitit job)


@runtime_checkable
class TrialLauncher(Protocol):
    """What a search needs of a launcher; see the module docstring."""

    @property
    def slots(self) -> int:
        """Trials it runs at once."""

    def run_trial(self, job: TrialJob) -> JobOutcome:
        """Run one job to its end; safe to call from several threads at once; never raises for the job."""


def outcome(result: JobReturn, run_dir: Path) -> JobOutcome:
    """A JobOutcome from Hydra's JobReturn, trusting the folder the job itself recorded."""
    return JobOutcome(hydra_internals.output_dir(result) or run_dir, hydra_internals.job_error(result), result)


def failed(run_dir: Path, error: str, job_return: Optional[JobReturn] = None) -> JobOutcome:
    """A job that ended without reporting back: recorded as failed in its run folder and returned so."""
    mark_failed(run_dir, error)
    return JobOutcome(run_dir, error, job_return)


def trial_launcher(launcher: Launcher, hydra_context: HydraContext, config: DictConfig) -> TrialLauncher:
    """The launcher itself when it implements the contract, else an adapter around it."""
    if isinstance(launcher, TrialLauncher):
        return launcher
    return HydraLauncherAdapter(launcher, hydra_context, config)


class HydraLauncherAdapter:
    """Any other Hydra launcher (basic, joblib, ray, ...) behind the contract.

    Such a launcher runs a batch per `launch` call and returns when all of it is done. Trials handed over
    while a batch runs wait, and go out together as the next batch, so a launcher that runs a batch in
    parallel still does (`hydra.sweeper.n_jobs` trials at once). Each job's folder is named by its trial
    number (`hydra.sweep.subdir`), since a batch's job numbers need not be the trials' numbers.
    """

    slots = 1

    def __init__(self, launcher: Launcher, hydra_context: HydraContext, config: DictConfig) -> None:
        self.launcher = launcher
        self.hydra_context = hydra_context
        self.config = config
        self._waiting: list[tuple[TrialJob, Future[JobOutcome]]] = []
        self._waiting_lock = threading.Lock()
        self._launch_lock = threading.Lock()

    def run_trial(self, job: TrialJob) -> JobOutcome:
        done: Future[JobOutcome] = Future()
        with self._waiting_lock:
            self._waiting.append((job, done))
        with self._launch_lock:  # whoever gets here first launches every job waiting by then
            with self._waiting_lock:
                batch, self._waiting = self._waiting, []
            if batch:
                self._launch(batch)
        return done.result()

    def _launch(self, batch: Sequence[tuple[TrialJob, Future[JobOutcome]]]) -> None:
        overrides = [[*job.overrides, f"hydra.sweep.subdir={job.number}"] for job, _ in batch]
        folders = [hydra_internals.job_dir(hydra_internals.compose_job_config(
            self.hydra_context, self.config, job_overrides, job.number)) for (job, _), job_overrides in zip(batch, overrides)]
        for (job, _), folder in zip(batch, folders):
            job.started(folder)
        try:
            results = self.launcher.launch(overrides, initial_job_idx=batch[0][0].number)
        except Exception as error:  # the launcher gave up on the whole batch
            reason = f"{type(self.launcher).__name__} failed: {type(error).__name__}: {error}"
            for (_, done), folder in zip(batch, folders):
                done.set_result(failed(folder, reason))
            return
        for (_, done), folder, result in zip(batch, folders, results):
            done.set_result(outcome(result, folder))
