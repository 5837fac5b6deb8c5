"""`hydra/launcher=cnnsweep_process`: every job in a fresh process, one job per slot (a GPU, or a share of
the cores) at a time. The implementation is cnnsweep.launch.process_launcher; selected through the project's
`launcher` config group (conf/launcher/local.yaml, parallel.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cnnsweep.launch.settings import PROCESS_LAUNCHER, ProcessLauncherConf

if TYPE_CHECKING:
    from cnnsweep.launch.contract import JobOutcome, TrialJob

ConfigStore.instance().store(group="hydra/launcher", name=PROCESS_LAUNCHER, node=ProcessLauncherConf,
                             provider="cnnsweep")


class ProcessLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        from cnnsweep.launch.job_process import worker_limits
        from cnnsweep.launch.process_launcher import SlotPool, slot_allocator

        plain = {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                 for key, value in settings.items()}
        conf = ProcessLauncherConf(**plain)  # the defaults of settings not given
        self.pool = SlotPool(slot_allocator(conf.jobs, conf.gpus, conf.jobs_per_gpu),
                             worker_limits(conf.jobs_per_worker, conf.job_timeout_min, conf.worker_max_memory_gb))

    @property
    def slots(self) -> int:
        return len(self.pool.slots)

    requeues = False  # a continued sweep resumes a grid's interrupted job; a search queues a new trial

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.pool.setup(hydra_context, task_function, config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnnsweep.callbacks import leaderboard_on_early_end
        from cnnsweep.launch.contract import run_batch

        with leaderboard_on_early_end(self.pool.sweep_dir):
            return run_batch(self, job_overrides, initial_job_idx, self.pool.sweep_dir)

    def run_trial(self, job: "TrialJob") -> "JobOutcome":
        return self.pool.run_trial(job)
