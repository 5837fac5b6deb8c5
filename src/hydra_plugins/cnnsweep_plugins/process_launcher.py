"""`hydra/launcher=cnnsweep_process`: every job in a fresh Python process, up to `jobs` at once.

A job that dies (killed, out of memory, segfault) fails alone and is recorded as failed; the sweep
goes on. Used by the Optuna searches in sweeps/.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from cnnsweep.job_process import run_job_in_process

log = logging.getLogger(__name__)


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    jobs: int = 1  # jobs running at once


ConfigStore.instance().store(group="hydra/launcher", name="cnnsweep_process", node=ProcessLauncherConf,
                             provider="cnnsweep")


class ProcessLauncher(Launcher):
    launches_concurrently = True  # `launch` may be called from several threads (the search does)

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self._compose_lock = threading.Lock()  # Hydra's config loader is not thread-safe

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs, `jobs` at a time; safe to call from several threads at once."""
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self.launch_one, overrides, initial_job_idx + offset)
                       for offset, overrides in enumerate(job_overrides)]
            return [future.result() for future in futures]

    def launch_one(self, overrides: Sequence[str], number: int, env: Optional[Dict[str, str]] = None) -> JobReturn:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        with self._compose_lock:
            job_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job_config):
                job_config.hydra.job.id = number
                job_config.hydra.job.num = number
            sweep_dir = Path(str(job_config.hydra.sweep.dir))
            job_dir = sweep_dir / str(job_config.hydra.sweep.subdir)
        log.info("#%d : %s", number, " ".join(filter_overrides(overrides)))
        return run_job_in_process(self.hydra_context, self.task_function, job_config, job_dir,
                                  sweep_dir / ".jobs", env)
