"""`launcher=slurm` and `launcher=slurm_local`: hydra-submitit-launcher's launchers under the trial
contract of cnnsweep.launch.contract: grids and searches alike submit one job per slot as slots free up, a job
that Slurm cancels, kills or times out is one failed job, and a requeued job continues from its last
finished epoch. The implementation is cnnsweep.launch.slurm.

SlurmRehearsalLauncher runs a launcher=slurm sweep on this machine through submitit's local executor:
the same launcher code path (pickled jobs, .submitit folders) without a queue. That executor refuses
Slurm-only settings (partition, signal delay, array parallelism, ...), so they are dropped there.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from cnnsweep.launch.contract import JobOutcome, TrialJob

SHARED_SETTINGS = set(OmegaConf.structured(BaseQueueConf).keys()) | {"max_num_timeout"}


class _TrialContract:
    """What both launchers add to submitit's: the contract's calls, and requeued jobs that resume."""

    params: dict[str, Any]
    config: Any

    @property
    def slots(self) -> int:
        return int(self.params.get("array_parallelism") or 1)

    requeues = True  # submitit requeues a job near its time limit or preempted, in its own folder

    def run_trial(self, job: "TrialJob") -> "JobOutcome":
        from cnnsweep.launch.slurm import Submissions, run_submitit_trial

        if not hasattr(self, "_submissions"):
            self._submissions = Submissions(self.slots)
        return run_submitit_trial(self, job, self._submissions)  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        """Submitted with each job: without the sweep process's own state (its semaphore and refusal)."""
        return {key: value for key, value in self.__dict__.items() if key != "_submissions"}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnnsweep.callbacks import leaderboard_on_early_end
        from cnnsweep.launch.contract import run_batch

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        with leaderboard_on_early_end(sweep_dir):
            return run_batch(self, job_overrides, initial_job_idx, sweep_dir)  # type: ignore[arg-type]

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        """The job itself, on its node. A job Slurm has started again (requeued by an administrator or
        after a node failure, without submitit's signal) continues from its checkpoint too. The sweep's SIGINT
        interrupts it as it does a warm worker's job (cnnsweep.run.stops)."""
        from cnnsweep.launch.contract import with_resume
        from cnnsweep.run.stops import interrupt_once

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, interrupt_once)
        if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
            sweep_overrides = with_resume(sweep_overrides, self.config)
        return super().__call__(sweep_overrides, *args)  # type: ignore[misc]

    def checkpoint(self, sweep_overrides: list[str], *args: Any) -> Any:
        """Called by submitit in a job that is about to be requeued (time limit, preemption)."""
        import submitit

        from cnnsweep.launch.contract import with_resume
        from cnnsweep.launch.slurm import prepare_for_requeue

        prepare_for_requeue()
        return submitit.helpers.DelayedSubmission(self, with_resume(sweep_overrides, self.config), *args)


class SlurmTrialLauncher(_TrialContract, SlurmLauncher):
    pass


class SlurmRehearsalLauncher(_TrialContract, LocalLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**{key: value for key, value in params.items() if key in SHARED_SETTINGS})
        self._slots = int(params.get("array_parallelism") or 1)

    @property
    def slots(self) -> int:
        return self._slots
