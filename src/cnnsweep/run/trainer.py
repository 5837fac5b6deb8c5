"""What the task asks of whatever trains a model, and what it gets back: the types shared by the task
(cnnsweep.run.task), the Keras trainer (cnnsweep.run.training) and the fast tests' arithmetic trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from cnnsweep.run.config import RunConfig
from cnnsweep.run.data import Dataset

EpochCallback = Callable[[dict[str, Any]], bool]  # gets each epoch's history row; True stops training
# Gets the metrics measured once training ends (all but the test set's) and whether training stopped early;
# returns why the test-set evaluation is skipped, or None to evaluate it.
TestDecision = Callable[[dict[str, Any], bool], Optional[str]]


def always_test(metrics: dict[str, Any], stopped_early: bool) -> Optional[str]:
    return None


@dataclass
class TrainingResult:
    metrics: dict[str, Any]  # the metrics.json fields this run measured
    stopped_early: bool  # `on_epoch` asked to stop (an Optuna pruner judged the trial hopeless)


class Trainer(Protocol):
    def prepare(self, config: RunConfig) -> dict[str, Any]:
        """Set up devices, threads and seeds before training; describe them for environment.json."""

    def train(self, config: RunConfig, data: Dataset, run_dir: Path, show_progress_bar: bool,
              on_epoch: EpochCallback, restart_if_unresumable: bool, skip_test: TestDecision,
              write_checkpoints: bool) -> TrainingResult:
        """Train and evaluate (the test set unless `skip_test` gives a reason, recorded as `test_skipped`);
        keep run_dir's history.csv current, and its checkpoints with `write_checkpoints`, and save the
        model there. With training.resume and no usable checkpoint: refuse (ConfigError), or start again
        from epoch 1 when `restart_if_unresumable` (cnnsweep.run.checkpoints)."""


class EpochReporter(Protocol):
    """Who else hears of each epoch: inside an Optuna search, the trial (cnnsweep.search.trial), whose
    pruner may stop the run. The run knows only this shape, never the search."""

    number: int  # the trial's number, recorded in metrics.json
    baseline: bool  # the search's trial 0, the composed config itself
    warm_start: Optional[str]  # the earlier study's trial it repeats ("<study>#<trial>"), when warm-started
    metric: str  # the metric it reports
    requeued: bool  # its launcher runs it again in its own folder when stopped (Slurm), from its checkpoints

    def should_stop(self, row: dict[str, Any]) -> bool:
        """Report this epoch's row; True when training should stop here."""

    def skips_test(self, metrics: dict[str, Any], stopped_early: bool) -> Optional[str]:
        """Why this trial's test-set evaluation is not worth its time (pruned, or not among the search's
        best trials so far), or None to evaluate it."""


ReporterFactory = Callable[[], Optional[EpochReporter]]  # called once the run's config and data are checked
