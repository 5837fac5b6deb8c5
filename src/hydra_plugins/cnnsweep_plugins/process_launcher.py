"""`hydra/launcher=cnnsweep_process`: every job in a fresh Python process, one job per slot at a time.

A slot is one concurrent job's share of the machine (see cnnsweep.devices): with GPUs, exactly one GPU
(`CUDA_VISIBLE_DEVICES` is set before the job's TensorFlow starts); on CPU, cores / jobs threads. A slot
that frees up takes the next job at once, whether the jobs come from one grid batch or from an Optuna
search calling `launch` from several threads. A job that dies (killed, out of memory, segfault) fails
alone and is recorded as failed; the sweep goes on. Every job's slot, start and end are appended to
<sweep folder>/schedule.jsonl.

Selected through the project's `launcher` config group (conf/launcher/local.yaml, parallel.yaml).
"""

import json
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnsweep.devices import Slot, plan_slots
from cnnsweep.job_process import run_job_in_process

log = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.jsonl"


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    jobs: Optional[int] = 1  # jobs at once; null: one per GPU (see gpus), or 1 without GPUs
    gpus: Any = None  # null: no GPU assignment; auto: every visible GPU; N: the first N; [ids]: these


ConfigStore.instance().store(group="hydra/launcher", name="cnnsweep_process", node=ProcessLauncherConf,
                             provider="cnnsweep")


class ProcessLauncher(Launcher):
    launches_concurrently = True  # `launch` may be called from several threads (the search does)

    def __init__(self, jobs: Optional[int] = 1, gpus: Any = None) -> None:
        if OmegaConf.is_config(gpus):
            gpus = OmegaConf.to_container(gpus)
        self.slots = plan_slots(jobs, gpus)
        self._free: "queue.Queue[Slot]" = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self._compose_lock = threading.Lock()  # Hydra's config loader is not thread-safe
        self._schedule_lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        return len(self.slots)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        if len(self.slots) > 1:
            log.info("%d jobs at once: %s", len(self.slots), "; ".join(map(_describe, self.slots)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs, each in the next free slot; safe to call from several threads at once.
        One worker more than there are slots composes the next job's config while every slot is busy,
        so a freed slot starts it within milliseconds."""
        with ThreadPoolExecutor(max_workers=len(self.slots) + 1) as pool:
            futures = [pool.submit(self.launch_one, overrides, initial_job_idx + offset)
                       for offset, overrides in enumerate(job_overrides)]
            return [future.result() for future in futures]

    def launch_one(self, overrides: Sequence[str], number: int) -> JobReturn:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        with self._compose_lock:
            job_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job_config):
                job_config.hydra.job.id = number
                job_config.hydra.job.num = number
            sweep_dir = Path(str(job_config.hydra.sweep.dir))
            job_dir = sweep_dir / str(job_config.hydra.sweep.subdir)
        slot = self._free.get()  # waits for a free GPU / share of the cores
        try:
            log.info("#%d : %s%s", number, " ".join(filter_overrides(overrides)),
                     f" [{_describe(slot)}]" if len(self.slots) > 1 or slot.gpu is not None else "")
            started = time.time()
            result = run_job_in_process(self.hydra_context, self.task_function, job_config, job_dir,
                                        sweep_dir / ".jobs", slot.environment())
            self._record(sweep_dir, number, job_dir, slot, started, result.status)
            return result
        finally:
            self._free.put(slot)

    def _record(self, sweep_dir: Path, number: int, job_dir: Path, slot: Slot, started: float,
                status: JobStatus) -> None:
        """One line per finished job: which slot, GPU and threads it had, and when it held them."""
        line = {"job": number, "run_dir": str(job_dir), "slot": slot.index, "gpu": slot.gpu,
                "threads": slot.threads, "start": started, "end": time.time(), "status": status.name.lower()}
        with self._schedule_lock, open(sweep_dir / SCHEDULE_FILE, "a") as schedule:
            schedule.write(json.dumps(line) + "\n")


def _describe(slot: Slot) -> str:
    gpu = {None: "", "": "no GPU"}.get(slot.gpu, f"GPU {slot.gpu}")
    threads = f"{slot.threads} thread{'s' if slot.threads != 1 else ''}" if slot.threads else ""
    return ", ".join(part for part in (gpu, threads) if part) or "all devices"
