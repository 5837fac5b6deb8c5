"""cnnsweep's process launcher (`hydra/launcher=cnnsweep_process`, behind `launcher=local|parallel`):
every job in a process of its own, one job per slot at a time, each slot's process kept warm for the
next job (cnnsweep.job_process.Worker).

A slot is one concurrent job's share of the machine (see cnnsweep.devices): with GPUs, exactly one GPU
(`CUDA_VISIBLE_DEVICES` is set before the job's TensorFlow starts); on CPU, cores / jobs threads. A slot
that frees up takes the next job at once, whether the jobs come from one grid batch or from an Optuna
search running trials from several threads (the TrialLauncher contract of cnnsweep.launching). A job
that dies (killed, out of memory, segfault) fails alone and is recorded as failed; the sweep goes on.
Every job's slot, start and end are appended to <sweep folder>/schedule.jsonl.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep import hydra_internals
from cnnsweep.devices import Slot
from cnnsweep.interrupts import SWEEP
from cnnsweep.job_process import Worker, WorkerLimits
from cnnsweep.launching import JobOutcome, TrialJob
from cnnsweep.progress import Best, Progress
from cnnsweep.records import METRICS_FILE

log = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.jsonl"
# Settings TensorFlow fixes once per process (threads, visible devices, memory growth): a job whose
# `hardware` differs from its worker's previous job gets a fresh worker.
PROCESS_SETTINGS = "hardware"


class SlotPool:
    """Runs jobs in child processes, each in the next free slot; safe to use from several threads."""

    def __init__(self, slots: Sequence[Slot], limits: WorkerLimits) -> None:
        self.slots = list(slots)
        self.workers = {slot.index: Worker(slot.environment(), limits) for slot in self.slots}
        self._free: "queue.Queue[Slot]" = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        self._hydra: Optional[tuple[HydraContext, TaskFunction, DictConfig]] = None
        self._schedule_lock = threading.Lock()

    def setup(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._hydra = (hydra_context, task_function, config)
        if len(self.slots) > 1:
            log.info("%d jobs at once: %s", len(self.slots), "; ".join(map(describe, self.slots)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Hydra's batch call (grid multiruns): every job at once, as slots allow. One thread more than
        there are slots composes the next job's config while every slot is busy, so a freed slot starts
        it within milliseconds."""
        progress, best, lock = Progress(len(job_overrides)), Best(), threading.Lock()
        counts = {"finished": 0, "failed": 0}
        running: set[int] = set()  # jobs started and not yet ended (kept and unstarted jobs never are)

        def run_and_report(job: TrialJob) -> JobOutcome:
            result = self.run_trial(job)
            objective = _objective(result.run_dir)
            with lock:
                running.discard(job.number)
                counts["finished"] += 1
                counts["failed"] += result.error is not None
                if objective is not None:
                    best.offer(f"job {job.number}", *objective)
                log.info("%s", progress.line(counts["finished"], len(running), failed=counts["failed"],
                                             best=best.text))
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
            with ThreadPoolExecutor(max_workers=len(self.slots) + 1) as pool:
                outcomes = list(pool.map(run_and_report, jobs))
        finally:
            SWEEP.release()
        if SWEEP.requested:
            SWEEP.tally = (sum(_objective(outcome.run_dir) is not None for outcome in outcomes), len(jobs), "jobs")
            assert self._hydra is not None
            SWEEP.stop_sweep(Path(str(self._hydra[2].hydra.sweep.dir)))
        return [outcome.job_return for outcome in outcomes]  # type: ignore[misc]  (always set here)

    def run_trial(self, job: TrialJob) -> JobOutcome:
        assert self._hydra is not None, "setup() comes first"
        hydra_context, task_function, config = self._hydra
        job_config = hydra_internals.compose_job_config(hydra_context, config, job.overrides, job.number)
        job_dir = hydra_internals.job_dir(job_config)
        sweep_dir = Path(str(job_config.hydra.sweep.dir))
        earlier = _completed_before(job_dir, job.overrides)
        if earlier is not None:  # the same job in the same sweep folder: a continued sweep keeps it
            log.info("#%d : %s completed before in %s; kept", job.number, " ".join(filter_overrides(job.overrides)),
                     job_dir)
            return JobOutcome(job_dir, None, hydra_internals.job_return(job_config, JobStatus.COMPLETED, earlier))
        slot = self._free.get()  # waits for a free GPU / share of the cores
        if SWEEP.requested:
            self._free.put(slot)
            return JobOutcome(job_dir, "not started: the sweep was interrupted",
                              hydra_internals.job_return(job_config, JobStatus.COMPLETED, math.nan))
        try:
            job.started(job_dir)
            log.info("#%d : %s%s", job.number, " ".join(filter_overrides(job.overrides)),
                     f" [{describe(slot)}]" if len(self.slots) > 1 or slot.gpu is not None else "")
            started = time.time()
            worker = self.workers[slot.index]
            key = OmegaConf.to_container(job_config[PROCESS_SETTINGS]) if PROCESS_SETTINGS in job_config else None
            result = worker.run(hydra_context, task_function, job_config, sweep_dir / ".jobs", key)
            self._record(sweep_dir, job, job_dir, slot, started, result, worker)
            return result
        finally:
            self._free.put(slot)

    def _record(self, sweep_dir: Path, job: TrialJob, job_dir: Path, slot: Slot, started: float,
                result: JobOutcome, worker: Worker) -> None:
        """One line per finished job: which slot, GPU, threads and worker process it had, and when."""
        line = {"job": job.number, "run_dir": str(job_dir), "slot": slot.index, "gpu": slot.gpu,
                "threads": slot.threads, "start": started, "end": time.time(),
                "status": "failed" if result.error else "completed", "worker_pid": worker.last_pid,
                "worker_job": worker.jobs_run}
        with self._schedule_lock, open(sweep_dir / SCHEDULE_FILE, "a") as schedule:
            schedule.write(json.dumps(line) + "\n")


def _completed_before(job_dir: Path, overrides: Sequence[str]) -> Optional[float]:
    """The objective of a completed run already in this job's folder with the same overrides, else None."""
    try:
        if OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")) != list(overrides):
            return None
    except (OSError, ValueError, OmegaConfBaseException):
        return None
    objective = _objective(job_dir)
    return objective[1] if objective is not None else None


def _objective(run_dir: Path) -> Optional[tuple[str, float, str]]:
    """A completed cnnsweep run's objective (metric, value, direction) from its metrics.json."""
    try:
        record = json.loads((run_dir / METRICS_FILE).read_text())
        objective = record["objective"] if record.get("status") == "completed" else None
        return (objective["name"], float(objective["value"]), objective["direction"]) if objective else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe(slot: Slot) -> str:
    gpu = {None: "", "": "no GPU"}.get(slot.gpu, f"GPU {slot.gpu}")
    threads = f"{slot.threads} thread{'s' if slot.threads != 1 else ''}" if slot.threads else ""
    return ", ".join(part for part in (gpu, threads) if part) or "all devices"
