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
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.utils import filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cnnsweep.launch import hydra_internals
from cnnsweep.launch.contract import JobOutcome, TrialJob, continuing, kept_or_unstarted, unstarted
from cnnsweep.launch.devices import FixedSlots, Slot, SlotAllocator, check_jobs, gpu_ids, plan_slots, usable_cores
from cnnsweep.launch.job_process import Worker, WorkerLimits
from cnnsweep.launch.packing import USABLE, GpuPacking
from cnnsweep.run.hardware import PROCESS_WIDE
from cnnsweep.run.records import RunRecord
from cnnsweep.run.slot import gpu_memory_mb

log = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.jsonl"


class SlotPool:
    """Runs jobs in child processes, each in the next free slot; safe to use from several threads."""

    def __init__(self, allocator: SlotAllocator, limits: WorkerLimits) -> None:
        self.allocator = allocator
        self.limits = limits
        self.slots = allocator.slots
        self.workers = {slot.index: Worker(slot.environment(), limits) for slot in self.slots}
        self._hydra: Optional[tuple[HydraContext, TaskFunction, DictConfig]] = None
        self._schedule_lock = threading.Lock()

    def setup(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._hydra = (hydra_context, task_function, config)
        if isinstance(self.allocator, GpuPacking):
            log.info("launcher.jobs_per_gpu=auto: one job at a time on GPU %s until a job has measured its memory, "
                     "then as many as fit (at most %d per GPU)", ",".join(self.allocator.gpus), self.allocator.most)
        elif len(self.slots) > 1:
            log.info("%d jobs at once: %s", len(self.slots), "; ".join(map(describe, self.slots)))

    @property
    def sweep_dir(self) -> Path:
        assert self._hydra is not None, "setup() comes first"
        return Path(str(self._hydra[2].hydra.sweep.dir))

    def run_trial(self, job: TrialJob) -> JobOutcome:
        assert self._hydra is not None, "setup() comes first"
        hydra_context, _, config = self._hydra
        job_config = hydra_internals.compose_job_config(hydra_context, config, job.overrides, job.number)
        job_dir = hydra_internals.job_dir(job_config)
        kept = kept_or_unstarted(job, job_config)
        if kept is not None:
            return kept
        resumed = continuing(job, job_config)
        if resumed is not None:
            job = resumed
            job_config = hydra_internals.compose_job_config(hydra_context, config, job.overrides, job.number)
        slot = self.allocator.acquire()  # waits for a free GPU / share of the cores
        try:
            stopped = unstarted(job_config)  # the sweep may have been interrupted while the job waited
            if stopped is None:
                job.started(job_dir)
        except BaseException:
            self.allocator.release(slot, job.number, None)
            raise
        if stopped is not None:
            self.allocator.release(slot, job.number, None)
            return stopped
        result, record = self._run_in(slot, job, job_config, job_dir)
        if record.fields.get("out_of_memory") and slot.packed and (slot.gpu_share or 0) < USABLE:
            log.warning("#%d ran out of memory in its part of GPU %s (%.2g of it, launcher.jobs_per_gpu=auto); "
                        "running it again alone on a GPU, where its memory is measured", job.number, slot.gpu,
                        slot.gpu_share)
            result, record = self._run_in(self.allocator.acquire(alone=True), job, job_config, job_dir)
        return result

    def _run_in(self, slot: Slot, job: TrialJob, job_config: DictConfig, job_dir: Path) -> tuple[JobOutcome, RunRecord]:
        """Run the job in `slot`'s worker, add it to schedule.jsonl, and free the slot, telling the allocator
        the job's peak GPU memory."""
        assert self._hydra is not None
        hydra_context, task_function, _ = self._hydra
        sweep_dir = Path(str(job_config.hydra.sweep.dir))
        peak = None
        try:
            log.info("#%d : %s%s", job.number, " ".join(filter_overrides(job.overrides)),
                     f" [{describe(slot)}]" if len(self.slots) > 1 or slot.gpu is not None else "")
            started = time.time()
            worker = self.workers.setdefault(slot.index, Worker(slot.environment(), self.limits))
            worker.use_environment(slot.environment())  # a packed slot's cap follows the measured memory
            result = worker.run(hydra_context, task_function, job_config, sweep_dir / ".jobs", process_wide(job_config))
            record = RunRecord.read(job_dir)
            peak = record.fields.get("gpu_peak_bytes")
            self._record(sweep_dir, job, job_dir, slot, started, result, record, worker)
            return result, record
        finally:
            self.allocator.release(slot, job.number, peak)

    def _record(self, sweep_dir: Path, job: TrialJob, job_dir: Path, slot: Slot, started: float,
                result: JobOutcome, record: RunRecord, worker: Worker) -> None:
        """One line per finished job: which slot, GPU (and cap on its memory, and the peak the job used),
        threads and worker process it had, when, how it ended (its run record's status: completed, pruned,
        failed, interrupted), and where its seconds went (the run record's `timings`: data, set-up, build,
        each epoch's phases, test, save)."""
        line = {"job": job.number, "run_dir": str(job_dir), "slot": slot.index, "gpu": slot.gpu,
                "gpu_share": slot.gpu_share, "gpu_peak_bytes": record.fields.get("gpu_peak_bytes"),
                "threads": slot.threads, "start": started, "end": time.time(),
                "status": "failed" if result.error else record.status, "worker_pid": worker.last_pid,
                "worker_job": worker.jobs_run, "timings": record.fields.get("timings")}
        with self._schedule_lock, open(sweep_dir / SCHEDULE_FILE, "a") as schedule:
            schedule.write(json.dumps(line) + "\n")


def slot_allocator(jobs: Optional[int], gpus: Any, jobs_per_gpu: Union[int, str] = 1,
                   cores: Optional[int] = None) -> SlotAllocator:
    """The launcher's slots: plan_slots' fixed plan, or with launcher.jobs_per_gpu=auto and GPUs, slots
    packed by measured memory (at most one job per core of the GPU's share of the cores)."""
    if jobs_per_gpu != "auto":
        return FixedSlots(plan_slots(jobs, gpus, cores, jobs_per_gpu))  # type: ignore[arg-type]
    ids = gpu_ids(gpus)
    if not ids:
        return FixedSlots(plan_slots(jobs, gpus, cores))  # no GPUs: nothing to pack
    check_jobs(jobs)
    most = max(1, (cores or usable_cores()) // len(ids))
    return GpuPacking(ids, most, jobs, 1, gpu_memory_mb)  # a job per core at most: one thread each


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
