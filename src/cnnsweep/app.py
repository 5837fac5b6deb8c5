"""The Hydra task of `src/run.py`: the run's task (cnnsweep.run.task) with the Keras trainer and, when an
Optuna search launched the job, its trial's pruning reports (cnnsweep.search.trial). The one place where
a run meets the search, so the run itself never imports it."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnsweep.run.task import KerasTrainer, run_task
from cnnsweep.run.trainer import Trainer
from cnnsweep.search.trial import TrialReporter


def train_task(cfg: DictConfig) -> float:
    """Train the composed config in Hydra's output folder; return the configured objective."""
    return run_app(cfg, KerasTrainer())


def run_app(cfg: DictConfig, trainer: Trainer) -> float:
    """The task with any Trainer, reporting to the search's trial when there is one."""
    return run_task(cfg, trainer, TrialReporter.from_environment)
