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
