"""What the process launcher gave this job, as the job sees it: the environment its slot's process
started with (cnnsweep.launch.devices writes it), read here for every backend.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Optional

from cnnsweep.errors import ConfigError
from cnnsweep.run.config import HardwareConfig

# Set by the process launcher for each job's process: its slot, its share of the cores (used when
# hardware.*_threads are null), and with launcher.jobs_per_gpu=N, 1/N: the part of its GPU's memory it may use.
SLOT_ENV = "CNNSWEEP_SLOT"
THREADS_ENV = "CNNSWEEP_CPU_THREADS"
GPU_SHARE_ENV = "CNNSWEEP_GPU_SHARE"
JOBS_PER_GPU_ENV = "CNNSWEEP_JOBS_PER_GPU"  # launcher.jobs_per_gpu as set (a number or auto), for its errors


def launcher_assignment() -> dict[str, Any]:
    """What the process launcher gave this job (cnnsweep.launch.devices): its GPU, slot and share of the cores."""
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "launcher_slot": os.environ.get(SLOT_ENV),
        "launcher_cpu_threads": os.environ.get(THREADS_ENV),
        "launcher_gpu_share": os.environ.get(GPU_SHARE_ENV),
        "launcher_jobs_per_gpu": os.environ.get(JOBS_PER_GPU_ENV),
        "cpu_count": os.cpu_count(),
    }


def thread_counts(config: HardwareConfig) -> tuple[Optional[int], Optional[int]]:
    """Explicit hardware.*_threads win; else a parallel launcher's share of the cores for this job
    (intra-op gets the share; two inter-op threads, since one can deadlock ops that wait on others)."""
    share = os.environ.get(THREADS_ENV)
    if not share:
        return config.intra_op_threads, config.inter_op_threads
    if not share.isdigit() or int(share) < 1:
        raise ConfigError(f"{THREADS_ENV}={share!r}: must be a positive number of threads; unset it")
    intra_op = config.intra_op_threads if config.intra_op_threads is not None else int(share)
    inter_op = config.inter_op_threads if config.inter_op_threads is not None else 2
    return intra_op, inter_op


def gpu_share() -> Optional[float]:
    """The part of its GPU's memory this job may use (launcher.jobs_per_gpu), or None without a cap."""
    share = os.environ.get(GPU_SHARE_ENV)
    if not share:
        return None
    try:
        value = float(share)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise ConfigError(f"{GPU_SHARE_ENV}={share!r}: must be a fraction in (0, 1]; unset it")
    return value


def slot_cores(threads: int) -> set[int]:
    """`threads` of this process's usable cores for its slot: slot i takes the i-th run of them, so the
    slots of a parallel launcher pin to different cores."""
    usable = sorted(os.sched_getaffinity(0))
    slot = int(os.environ.get(SLOT_ENV) or 0)
    start = slot * threads
    return {usable[(start + offset) % len(usable)] for offset in range(min(threads, len(usable)))}


def visible_gpu() -> str:
    """The GPU a job of the process launcher sees: its slot's, the first of CUDA_VISIBLE_DEVICES."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]


def gpu_memory_mb(gpu: str) -> int:
    """GPU `gpu`'s memory in MB, from nvidia-smi: the whole of it, whatever any process has taken (the
    launcher plans shares of it; TensorFlow takes its cap in MB)."""
    command = ["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        return int(subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        raise ConfigError(f"launcher.jobs_per_gpu: cannot read GPU {gpu}'s memory with nvidia-smi ({error}); "
                          "fix the NVIDIA driver or set launcher.jobs_per_gpu=1") from error
