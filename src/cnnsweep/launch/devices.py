"""Which GPU and how many CPU threads each job of a parallel multirun gets.

The launcher runs every job in a process of its slot; a job's "slot" is the environment that process
starts with: `CUDA_VISIBLE_DEVICES` naming exactly one GPU (so the backend in that job sees only it),
CNNSWEEP_CPU_THREADS, the job's share of the cores, and with launcher.jobs_per_gpu=N, CNNSWEEP_GPU_SHARE,
the 1/N of the GPU's memory its backend is capped at before it starts (cnnsweep.run.backends). A slot runs
one job at a time, so at most N running jobs share a GPU, and a slot that frees up takes the next job at once.
With launcher.jobs_per_gpu=auto the slots and their caps follow the jobs' measured memory instead
(cnnsweep.launch.packing).

GPU ids are plain strings and never checked against hardware here, so the scheduling can be proven on a
machine without GPUs by giving fake ids (`launcher.gpus=[0,1,2,3]`).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

from cnnsweep.errors import ConfigError, first_line
from cnnsweep.run.slot import GPU_SHARE_ENV, JOBS_PER_GPU_ENV, SLOT_ENV, THREADS_ENV

# Jobs at once without GPUs when launcher.jobs is null: two single-thread jobs beat one two-thread job
# on this model (benchmarks/parallel_jobs.py); more rarely pays, since each job holds its own copy of the data.
DEFAULT_CPU_JOBS = 2


@dataclass(frozen=True)
class Slot:
    index: int
    gpu: Optional[str]  # the one GPU id its jobs see; "" hides every GPU; None leaves the GPUs alone
    threads: Optional[int]  # CPU threads per job; None leaves the backend's default (all cores)
    gpu_share: Optional[float] = None  # the fraction of its GPU's memory a job may use; None: no cap
    packed: bool = False  # its GPU share follows measured memory (launcher.jobs_per_gpu=auto)

    def environment(self) -> dict[str, str]:
        env = {SLOT_ENV: str(self.index)}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        if self.gpu_share is not None:
            env[GPU_SHARE_ENV] = f"{self.gpu_share:.6g}"
        if self.packed:
            env[JOBS_PER_GPU_ENV] = "auto"
        if self.threads is not None:
            env[THREADS_ENV] = str(self.threads)
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which Slurm and taskset narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPU ids a job's TensorFlow would see, found without starting TensorFlow (which takes seconds
    and may grab GPU memory in the sweep process): CUDA_VISIBLE_DEVICES when it is set, else nvidia-smi.
    No nvidia-smi means no GPUs; an nvidia-smi that fails is an error, never a silent run on the CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    command = ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        said = (getattr(error, "stderr", None) or getattr(error, "stdout", None) or "").strip()
        reason = f"exit status {error.returncode}" if isinstance(error, subprocess.CalledProcessError) else \
            first_line(error)
        raise ConfigError(f"launcher.gpus: cannot list the GPUs, `{' '.join(command)}` failed ({reason}"
                          f"{': ' + said.splitlines()[0] if said else ''}); fix the NVIDIA driver, set "
                          "CUDA_VISIBLE_DEVICES, or set launcher.gpus=0 to run the jobs on the CPU") from error
    return [line.strip() for line in listing.splitlines() if line.strip()]


def gpu_ids(gpus: Any) -> Optional[list[str]]:
    """`launcher.gpus` as a list of ids: "auto" every visible GPU, N the first N of them, a list as given,
    0 none; None means no GPU assignment at all (each job sees what the sweep sees)."""
    if gpus is None:
        return None
    if isinstance(gpus, str) and gpus == "auto":
        return visible_gpus()
    if isinstance(gpus, bool) or not isinstance(gpus, (int, Sequence)) or isinstance(gpus, str):
        raise ConfigError(f"launcher.gpus={gpus}: must be auto, a number of GPUs, or a list of GPU ids "
                          "such as [0,1]")
    if isinstance(gpus, int):
        visible = visible_gpus()
        if gpus < 0 or gpus > len(visible):
            raise ConfigError(f"launcher.gpus={gpus}: {len(visible)} GPU(s) visible ({','.join(visible) or 'none'}); "
                              "use launcher.gpus=auto, a smaller number, or a list of ids")
        return visible[:gpus]
    ids = [str(gpu) for gpu in gpus]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"launcher.gpus={gpus}: a GPU is listed twice; two jobs would share it")
    return ids


def plan_slots(jobs: Optional[int], gpus: Any, cores: Optional[int] = None, jobs_per_gpu: int = 1) -> list[Slot]:
    """One slot per concurrent job: with GPUs, `jobs_per_gpu` per GPU, dealt round the GPUs so the first
    jobs spread over them (jobs defaults to all of them), each capped at 1/jobs_per_gpu of its GPU's memory
    when they share; on CPU, `jobs` slots (default: DEFAULT_CPU_JOBS, at most one per core). Threads are
    split evenly when more than one job runs at once."""
    ids = gpu_ids(gpus)
    cores = cores or usable_cores()
    check_jobs(jobs)
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ConfigError(f"launcher.jobs_per_gpu={jobs_per_gpu}: must be a positive number of jobs sharing each "
                          "GPU (1: a GPU per job), or auto (as many as their measured memory lets fit)")
    share = 1 / jobs_per_gpu if jobs_per_gpu > 1 else None
    if ids:
        places = len(ids) * jobs_per_gpu
        count = places if jobs is None else jobs
        if count > places:
            raise ConfigError(
                f"launcher.jobs={jobs}: more than the {len(ids)} GPU(s) {','.join(ids)} x launcher.jobs_per_gpu="
                f"{jobs_per_gpu} can run at once; lower launcher.jobs, raise launcher.jobs_per_gpu, or set "
                "launcher.gpus=0 to run the jobs on the CPU"
            )
        gpu_for = [ids[index % len(ids)] for index in range(count)]
    else:
        count = jobs or min(DEFAULT_CPU_JOBS, cores)
        # gpus=0 or an empty list hides any GPU from the jobs; "auto" with none found changes nothing
        hide = ids is not None and gpus != "auto"
        gpu_for = ["" if hide else None] * count  # type: ignore[list-item]
    threads = max(1, cores // count) if count > 1 else None
    return [Slot(index, gpu_for[index], threads, share if gpu_for[index] else None) for index in range(count)]


def check_jobs(jobs: Optional[int]) -> None:
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"launcher.jobs={jobs}: must be a positive number of jobs at once, or null")


class SlotAllocator(Protocol):
    """Where the next job runs: FixedSlots, or cnnsweep.launch.packing.GpuPacking (chosen by
    cnnsweep.launch.process_launcher.slot_allocator)."""

    @property
    def slots(self) -> list[Slot]:
        """Every slot a job may get; as many as jobs may run at once."""

    def acquire(self, alone: bool = False) -> Slot:
        """A free slot, waiting for one; `alone`: a GPU to itself (only GpuPacking tells them apart)."""

    def release(self, slot: Slot, job: int, peak_bytes: Optional[int]) -> None:
        """The job that ran in `slot` has ended, having held at most `peak_bytes` of GPU memory."""


class FixedSlots:
    """The slots plan_slots planned, each running one job at a time; safe to use from several threads."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = list(slots)
        self._free: "queue.Queue[Slot]" = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)

    def acquire(self, alone: bool = False) -> Slot:
        return self._free.get()

    def release(self, slot: Slot, job: int, peak_bytes: Optional[int]) -> None:
        self._free.put(slot)
