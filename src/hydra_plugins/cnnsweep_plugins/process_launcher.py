"""`hydra/launcher=cnnsweep_process`: every job in a fresh process, one job per slot (a GPU, or a share of
the cores) at a time. The implementation is cnnsweep.process_launcher; selected through the project's
`launcher` config group (conf/launcher/local.yaml, parallel.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cnnsweep.plugin_config import ProcessLauncherConf

if TYPE_CHECKING:
    from cnnsweep.launching import JobOutcome, TrialJob

ConfigStore.instance().store(group="hydra/launcher", name="cnnsweep_process", node=ProcessLauncherConf,
                             provider="cnnsweep")


class ProcessLauncher(Launcher):
    def __init__(self, jobs: Optional[int] = 1, gpus: Any = None, jobs_per_worker: int = 50,
                 job_timeout_min: Optional[float] = None, worker_max_memory_gb: Optional[float] = None) -> None:
        from cnnsweep.devices import plan_slots
        from cnnsweep.job_process import worker_limits
        from cnnsweep.process_launcher import SlotPool

        slots = plan_slots(jobs, OmegaConf.to_container(gpus) if OmegaConf.is_config(gpus) else gpus)
        self.pool = SlotPool(slots, worker_limits(jobs_per_worker, job_timeout_min, worker_max_memory_gb))

    @property
    def slots(self) -> int:
        return len(self.pool.slots)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.pool.setup(hydra_context, task_function, config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnnsweep.launching import run_batch

        return run_batch(self, job_overrides, initial_job_idx, self.pool.sweep_dir)

    def run_trial(self, job: "TrialJob") -> "JobOutcome":
        return self.pool.run_trial(job)
