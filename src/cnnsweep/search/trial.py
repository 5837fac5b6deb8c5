"""The job side of an Optuna search: report the validation metric after every epoch, and stop
early when the study's pruner says the trial is hopeless.

The search sets two environment variables for each trial's job; a run without them (a single run, a
grid job) never imports Optuna here, so its start-up does not pay for it."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from cnnsweep.search.study import StudySpec

STUDY_ENV = "CNNSWEEP_STUDY"  # path of study.json, set for each trial's job
TRIAL_ENV = "CNNSWEEP_TRIAL"  # the trial number, set for each trial's job


class TrialReporter:
    """Set up by the search sweeper through two environment variables of the job."""

    def __init__(self, spec: "StudySpec", number: int) -> None:
        import optuna

        from cnnsweep.search.study import BASELINE_ATTR, WARM_START_ATTR

        self.number = number
        storage = spec.open_storage()
        study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=spec.make_pruner())
        study_id = storage.get_study_id_from_name(spec.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.metric = spec.objectives[0]
        self.objective_metrics, self.directions = list(spec.metrics), list(spec.directions)
        self.test_top_k = spec.test_top_k
        self.requeued = spec.trials_requeued
        self.prunable = len(spec.directions) == 1 and bool(spec.metrics)
        self.baseline = bool(self.trial.user_attrs.get(BASELINE_ATTR))  # the search's trial 0
        self.warm_start: Optional[str] = self.trial.user_attrs.get(WARM_START_ATTR)  # "<study>#<trial>" it repeats

    @classmethod
    def from_environment(cls) -> Optional["TrialReporter"]:
        study_file, number = os.environ.get(STUDY_ENV), os.environ.get(TRIAL_ENV)
        if not study_file or number is None:
            return None
        from cnnsweep.search.study import StudySpec

        return cls(StudySpec.read(Path(study_file)), int(number))

    def should_stop(self, row: dict[str, Any]) -> bool:
        """Report this epoch's value of the objective metric; True when the pruner stops the trial."""
        value = row.get(self.metric)
        if not self.prunable or value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), step=int(row["epoch"]))
        return self.trial.should_prune()

    def skips_test(self, metrics: dict[str, Any], stopped_early: bool) -> Optional[str]:
        """With hydra.sweeper.test_top_k=K: skip the test set for a pruned trial, and for one that K or more
        completed trials beat (for several objectives: dominate). The trials that end among the best K were
        among the best K when they finished, so they are all evaluated, without a pass at the end."""
        if self.test_top_k is None or not self.objective_metrics:
            return None
        setting = f"hydra.sweeper.test_top_k={self.test_top_k}"
        if stopped_early:
            return f"pruned ({setting} evaluates the test set for the best trials only)"
        values = [metrics.get(metric) for metric in self.objective_metrics]
        if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in values):
            return None
        import optuna

        completed = self.trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        better = sum(1 for trial in completed if trial.values and dominates(trial.values, values, self.directions))
        if better < self.test_top_k:
            return None
        return (f"{better} completed trials were better when it finished ({setting} evaluates the test set for "
                "the best trials only)")


def dominates(first: list[float], second: list[float], directions: list[str]) -> bool:
    """Whether `first` is at least as good as `second` in every objective and better in one."""
    signs = [1 if direction == "maximize" else -1 for direction in directions]
    gains = [sign * (a - b) for sign, a, b in zip(signs, first, second)]
    return all(gain >= 0 for gain in gains) and any(gain > 0 for gain in gains)
