"""Settings of cnnsweep's process launcher (`hydra/launcher=cnnsweep_process`): the one definition of each,
with its default and meaning. Registered in Hydra's ConfigStore by the plugin front
(src/hydra_plugins/cnnsweep_plugins/process_launcher.py); conf/launcher/local.yaml places the same node
at `launcher`, so `launcher.jobs_per_worker=1` is a type-checked override with this default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

PROCESS_LAUNCHER = "cnnsweep_process"  # its name in the hydra/launcher group


@dataclass
class ProcessLauncherConf:
    """`hydra/launcher=cnnsweep_process`, selected by launcher=local and launcher=parallel."""

    _target_: str = "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    jobs: Optional[int] = 1  # jobs at once; null: one per GPU (see gpus), or 2 without GPUs
    gpus: Any = None  # null: no GPU assignment; auto: every visible GPU; N: the first N; [ids]: these
    jobs_per_gpu: Any = 1  # jobs sharing each GPU at once, each capped at 1/N of its memory (small models);
    # auto: as many as the jobs' measured peak memory lets fit (cnnsweep.launch.packing)
    jobs_per_worker: int = 50  # jobs a slot's warm process runs before a fresh one takes over; 1: always fresh
    job_timeout_min: Optional[float] = None  # a job running longer fails and its process is replaced
    worker_max_memory_gb: Optional[float] = None  # a process larger than this after a job is replaced
