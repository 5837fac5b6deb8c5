"""`launcher=slurm_local`: a launcher=slurm sweep rehearsed on this machine through submitit's local
executor, the same launcher code path (pickled jobs, .submitit folders, requeue handling) without a queue.

submitit's local executor refuses Slurm-only settings (partition, signal delay, array parallelism, ...);
this launcher keeps the settings both share (time limit, cores, memory, GPUs per job) and drops the rest.
"""

from typing import Any

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

SHARED_SETTINGS = set(OmegaConf.structured(BaseQueueConf).keys()) | {"max_num_timeout"}


class SlurmRehearsalLauncher(LocalLauncher):
    launches_concurrently = True  # like SlurmLauncher: each `launch` call builds its own executor

    def __init__(self, **params: Any) -> None:
        super().__init__(**{key: value for key, value in params.items() if key in SHARED_SETTINGS})
        self.concurrency = int(params.get("array_parallelism") or 1)  # an Optuna search's trials at once
