"""cnnsweep's own pruner, beside Optuna's (by name in cnnsweep.search.study.PRUNERS).

`rechecked_halving`: Optuna's asynchronous successive halving promotes a trial past a rung when it is
among the best 1/reduction_factor of the trials that have reached that rung so far. In a short search
the first trials at a rung pass with few or no competitors (Optuna promotes the best of fewer than
reduction_factor), and those are often the cheap ones, large batches finishing their epochs first; then
they train to the end. This pruner checks every promotion again at each later step: a trial stops where
its value at a rung it passed is no longer among the best 1/reduction_factor of the values that rung
holds by then (once reduction_factor trials have reached it). The best trials at each rung are never
stopped by the check, so it changes nothing for them; it ends the early passes that later trials showed
to be weak after one more step instead of at the end.
"""

from __future__ import annotations

from typing import Union

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Where Optuna's SuccessiveHalvingPruner keeps a trial's value at each rung it passed (a trial system attribute)
RUNG_KEY = "completed_rung_{}"


class RecheckedHalvingPruner(optuna.pruners.SuccessiveHalvingPruner):
    """Successive halving (Optuna's options and defaults) whose promotions are checked again at each later
    step against the rung's values as they are then."""

    def __init__(self, min_resource: Union[str, int] = "auto", reduction_factor: int = 4,
                 min_early_stopping_rate: int = 0, bootstrap_count: int = 0) -> None:
        super().__init__(min_resource, reduction_factor, min_early_stopping_rate, bootstrap_count)
        self.reduction_factor = reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if super().prune(study, trial):
            return True
        passed = []  # the rungs this trial passed before this step, with its value there
        while RUNG_KEY.format(len(passed)) in trial.system_attrs:
            passed.append(trial.system_attrs[RUNG_KEY.format(len(passed))])
        if not passed:
            return False
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        maximize = study.direction == StudyDirection.MAXIMIZE
        for rung, value in enumerate(passed):
            values = [other.system_attrs[RUNG_KEY.format(rung)] for other in trials
                      if RUNG_KEY.format(rung) in other.system_attrs]
            if len(values) < self.reduction_factor:
                continue
            cut = sorted(values, reverse=maximize)[len(values) // self.reduction_factor - 1]
            if (value < cut) if maximize else (value > cut):
                return True
        return False
