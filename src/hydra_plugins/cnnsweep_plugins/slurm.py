"""`launcher=slurm` and `launcher=slurm_local`: hydra-submitit-launcher's launchers, with the trial
contract of cnnsweep.launching added, so an Optuna search keeps `launcher.jobs` trials queued or running
and a job that dies is one failed trial. The implementation is cnnsweep.slurm.

SlurmRehearsalLauncher runs a launcher=slurm sweep on this machine through submitit's local executor:
the same launcher code path (pickled jobs, .submitit folders) without a queue. That executor refuses
Slurm-only settings (partition, signal delay, array parallelism, ...), so they are dropped there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from cnnsweep.launching import JobOutcome, TrialJob

SHARED_SETTINGS = set(OmegaConf.structured(BaseQueueConf).keys()) | {"max_num_timeout"}


class SlurmTrialLauncher(SlurmLauncher):
    @property
    def slots(self) -> int:
        return int(self.params.get("array_parallelism") or 1)

    def run_trial(self, job: "TrialJob") -> "JobOutcome":
        from cnnsweep.slurm import run_submitit_trial

        return run_submitit_trial(self, job)


class SlurmRehearsalLauncher(LocalLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**{key: value for key, value in params.items() if key in SHARED_SETTINGS})
        self._slots = int(params.get("array_parallelism") or 1)

    @property
    def slots(self) -> int:
        return self._slots

    def run_trial(self, job: "TrialJob") -> "JobOutcome":
        from cnnsweep.slurm import run_submitit_trial

        return run_submitit_trial(self, job)
