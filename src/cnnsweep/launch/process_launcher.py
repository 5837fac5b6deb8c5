"""cnnsweep's process launcher (`hydra/launcher=cnnsweep_process`, behind `launcher=local|parallel`):
every job in a process of its own, one job per slot at a time, each slot's process kept warm for the
next job (cnnsweep.launch.job_process.Worker).

A slot is one concurrent job's share of the machine (see cnnsweep.launch.devices): with GPUs, exactly one GPU
(`CUDA_VISIBLE_DEVICES` is set before the job's TensorFlow starts); on CPU, cores / jobs threads. A slot
that frees up takes the next job at once, whether the jobs come from one grid batch or from an Optuna
search running trials from several threads (the TrialLauncher contract of cnnsweep.launch.contract). A job
that dies (killed, out of memory, segfault) fails alone and is recorded as failed; the sweep goes on.
Every job's slot, start, end and phase timings are appended to <sweep folder>/schedule.jsonl.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cnnsweep.launch import hydra_internals
from cnnsweep.launch.contract import JobOutcome, TrialJob, continuing, kept_or_unstarted, unstarted
from cnnsweep.launch.devices import Slot
from cnnsweep.launch.job_process import Worker, WorkerLimits
from cnnsweep.run.hardware import PROCESS_WIDE
from cnnsweep.run.records import RunRecord

log = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.jsonl"


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

    @property
    def sweep_dir(self) -> Path:
        assert self._hydra is not None, "setup() comes first"
        return Path(str(self._hydra[2].hydra.sweep.dir))

    def run_trial(self, job: TrialJob) -> JobOutcome:
        assert self._hydra is not None, "setup() comes first"
        hydra_context, task_function, config = self._hydra
        job_config = hydra_internals.compose_job_config(hydra_context, config, job.overrides, job.number)
        job_dir = hydra_internals.job_dir(job_config)
        sweep_dir = Path(str(job_config.hydra.sweep.dir))
        kept = kept_or_unstarted(job, job_config)
        if kept is not None:
            return kept
        resumed = continuing(job, job_config)
        if resumed is not None:
            job = resumed
            job_config = hydra_internals.compose_job_config(hydra_context, config, job.overrides, job.number)
        slot = self._free.get()  # waits for a free GPU / share of the cores
        try:
            stopped = unstarted(job_config)  # the sweep may have been interrupted while the job waited
            if stopped is not None:
                return stopped
            job.started(job_dir)
            log.info("#%d : %s%s", job.number, " ".join(filter_overrides(job.overrides)),
                     f" [{describe(slot)}]" if len(self.slots) > 1 or slot.gpu is not None else "")
            started = time.time()
            worker = self.workers[slot.index]
            key = process_wide(job_config)
            result = worker.run(hydra_context, task_function, job_config, sweep_dir / ".jobs", key)
            self._record(sweep_dir, job, job_dir, slot, started, result, worker)
            return result
        finally:
            self._free.put(slot)

    def _record(self, sweep_dir: Path, job: TrialJob, job_dir: Path, slot: Slot, started: float,
                result: JobOutcome, worker: Worker) -> None:
        """One line per finished job: which slot, GPU, threads and worker process it had, when, how it ended
        (its run record's status: completed, pruned, failed, interrupted), and where its seconds went (the
        run record's `timings`: data, set-up, build, each epoch's phases, test, save)."""
        record = RunRecord.read(job_dir)
        line = {"job": job.number, "run_dir": str(job_dir), "slot": slot.index, "gpu": slot.gpu,
                "gpu_share": slot.gpu_share, "threads": slot.threads, "start": started, "end": time.time(),
                "status": "failed" if result.error else record.status, "worker_pid": worker.last_pid,
                "worker_job": worker.jobs_run, "timings": record.fields.get("timings")}
        with self._schedule_lock, open(sweep_dir / SCHEDULE_FILE, "a") as schedule:
            schedule.write(json.dumps(line) + "\n")


def describe(slot: Slot) -> str:
    gpu = {None: "", "": "no GPU"}.get(slot.gpu, f"GPU {slot.gpu}")
    if slot.gpu_share is not None:
        gpu += f" ({slot.gpu_share:.2g} of its memory)"
    threads = f"{slot.threads} thread{'s' if slot.threads != 1 else ''}" if slot.threads else ""
    return ", ".join(part for part in (gpu, threads) if part) or "all devices"


def process_wide(job_config: DictConfig) -> Optional[dict[str, Any]]:
    """The job's settings that a warm worker cannot change between jobs (cnnsweep.run.hardware): a job
    whose values differ from its worker's previous job gets a fresh worker."""
    hardware = job_config.get("hardware")
    return None if hardware is None else {key: hardware.get(key) for key in PROCESS_WIDE}
