"""The contract between a search and the launcher that runs its trials.

A search asks the launcher how many trials it runs at once (`slots`) and hands it one trial at a time,
from as many threads as it keeps trials running. For each trial the launcher says where the run folder
is as soon as it knows (`TrialJob.started`), and returns a JobOutcome when the job has ended: the run
folder, Hydra's JobReturn when there is one, and the error when the job failed. A failed job, even one
whose process was killed or whose cluster job was cancelled, is a value, never an exception: the search
goes on, and the run folder's metrics.json says `failed` with the same error.

Implemented by cnnsweep's process launcher (`launcher=local|parallel`), its Slurm launchers
(`launcher=slurm|slurm_local`), and, through HydraLauncherAdapter, by any other Hydra launcher. The first
two run a grid's batch through the same contract (`run_batch`), so a grid and a search share progress
lines, interrupts, continuation of a sweep folder and failure recording.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.errors import CnnsweepError
from cnnsweep.launch import hydra_internals
from cnnsweep.launch.interrupts import SWEEP
from cnnsweep.launch.progress import Best, Progress
from cnnsweep.run.config import RESUME_OVERRIDE
from cnnsweep.run.records import INTERRUPTED, RunRecord, mark_failed

log = logging.getLogger(__name__)


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


class JobCannotStart(CnnsweepError):
    """Raised by `run_trial` when no job of the sweep would run as configured (a cluster refuses the
    request, or holds it for good): the sweep stops with this one line instead of failing every job."""


@runtime_checkable
class TrialLauncher(Protocol):
    """What a search needs of a launcher; see the module docstring."""

    @property
    def slots(self) -> int:
        """Trials it runs at once."""

    @property
    def requeues(self) -> bool:
        """Whether it may run a stopped job (preempted, out of time) again in its own folder while the sweep
        goes on, which continues from the job's checkpoints."""

    def run_trial(self, job: TrialJob) -> JobOutcome:
        """Run one job to its end; safe to call from several threads at once; never raises for the job
        (only JobCannotStart, which is about every job)."""


def outcome(result: JobReturn, run_dir: Path) -> JobOutcome:
    """A JobOutcome from Hydra's JobReturn, trusting the folder the job itself recorded."""
    return JobOutcome(hydra_internals.output_dir(result) or run_dir, hydra_internals.job_error(result), result)


def failed(run_dir: Path, error: str, job_return: Optional[JobReturn] = None) -> JobOutcome:
    """A job that ended without reporting back: recorded as failed in its run folder and returned so."""
    mark_failed(run_dir, error)
    return JobOutcome(run_dir, error, job_return)


def kept_or_unstarted(job: TrialJob, job_config: DictConfig) -> Optional[JobOutcome]:
    """The outcome of a job that needs no launch: completed before in the same folder with the same
    overrides (a continued sweep keeps it), or not started because the sweep is being interrupted."""
    run_dir = hydra_internals.job_dir(job_config)
    earlier = _completed_before(run_dir, job.overrides)
    if earlier is not None:
        log.info("#%d : %s completed before in %s; kept", job.number, " ".join(filter_overrides(job.overrides)),
                 run_dir)
        return JobOutcome(run_dir, None, hydra_internals.job_return(job_config, JobStatus.COMPLETED, earlier))
    return unstarted(job_config)


def unstarted(job_config: DictConfig) -> Optional[JobOutcome]:
    """The outcome of a job not started because the sweep is being interrupted, else None."""
    if not SWEEP.requested:
        return None
    return JobOutcome(hydra_internals.job_dir(job_config), "not started: the sweep was interrupted",
                      hydra_internals.job_return(job_config, JobStatus.COMPLETED, math.nan))


def continuing(job: TrialJob, job_config: DictConfig) -> Optional[TrialJob]:
    """The job with `training.resume=true` when its folder holds an interrupted run of the very same
    job that had finished an epoch (a continued sweep picks it up after that epoch), else None."""
    run_dir = hydra_internals.job_dir(job_config)
    saved = RunRecord.read(run_dir)
    if saved.status != INTERRUPTED or not saved.epochs_completed or \
            _saved_overrides(run_dir) != _without_resume(job.overrides):
        return None
    overrides = with_resume(list(job.overrides), job_config)
    return TrialJob(job.number, tuple(overrides), job.started) if len(overrides) > len(job.overrides) else None


def with_resume(overrides: list[str], config: DictConfig) -> list[str]:
    """The overrides continuing the run from its checkpoint (for configs that have `training.resume`)."""
    if OmegaConf.select(config, "training.resume", default=None) is None or RESUME_OVERRIDE in overrides:
        return overrides
    return [*overrides, RESUME_OVERRIDE]


def run_batch(launcher: TrialLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
              sweep_dir: Path) -> list[JobReturn]:
    """Hydra's batch call (a grid multirun) through the contract: every job at once as the launcher's
    slots allow, one progress line per finished job, Ctrl-C / SIGTERM ending the sweep in order. One
    thread more than there are slots composes the next job while every slot is busy, so a freed slot
    starts it at once."""
    progress, best, lock = Progress(len(job_overrides)), Best(), threading.Lock()
    counts = {"finished": 0, "failed": 0}
    running: set[int] = set()  # jobs started and not yet ended (kept and unstarted jobs never are)
    cannot_start: list[JobCannotStart] = []

    def run_and_report(job: TrialJob) -> JobOutcome:
        try:
            result = launcher.run_trial(job)
        except JobCannotStart as error:
            with lock:
                running.discard(job.number)
                cannot_start.append(error)
            return JobOutcome(sweep_dir, str(error))
        objective = RunRecord.read(result.run_dir).completed_objective
        with lock:
            running.discard(job.number)
            counts["finished"] += 1
            counts["failed"] += result.error is not None
            if objective is not None:
                best.offer(f"job {job.number}", objective)
            log.info("%s", progress.line(counts["finished"], len(running), failed=counts["failed"], best=best.text))
        return result

    def starter(number: int) -> Callable[[Path], None]:
        def started(run_dir: Path) -> None:
            with lock:
                running.add(number)
        return started

    jobs = [TrialJob(initial_job_idx + offset, tuple(overrides), starter(initial_job_idx + offset))
            for offset, overrides in enumerate(job_overrides)]
    SWEEP.catch()  # Ctrl-C / SIGTERM: no new job starts, running ones stop and record it
    try:
        with ThreadPoolExecutor(max_workers=launcher.slots + 1) as pool:
            outcomes = list(pool.map(run_and_report, jobs))
    finally:
        SWEEP.release()
    if SWEEP.requested:
        SWEEP.tally = (sum(RunRecord.read(outcome.run_dir).completed_objective is not None for outcome in outcomes),
                       len(jobs), "jobs")
        SWEEP.stop_sweep(sweep_dir)
    if cannot_start:
        raise cannot_start[0]
    return [outcome.job_return for outcome in outcomes]  # type: ignore[misc]  (set for every grid job)


def _completed_before(run_dir: Path, overrides: Sequence[str]) -> Optional[float]:
    """The objective of a completed run already in this job's folder with the same overrides, else None."""
    if _saved_overrides(run_dir) != _without_resume(overrides):
        return None
    objective = RunRecord.read(run_dir).completed_objective
    return objective.value if objective is not None else None


def _saved_overrides(run_dir: Path) -> Optional[list[str]]:
    """The overrides the run in this folder was started with, less the resume a continued sweep added."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    except (OSError, ValueError, OmegaConfBaseException):
        return None
    return _without_resume(saved) if isinstance(saved, list) else None


def _without_resume(overrides: Sequence[str]) -> list[str]:
    return [override for override in overrides if override != RESUME_OVERRIDE]


def describe_exit(returncode: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if returncode < 0:
        try:
            return f"signal {-returncode}, {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


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
    requeues = True  # unknown: hydra-submitit-launcher, for one, requeues; a checkpoint costs little

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
