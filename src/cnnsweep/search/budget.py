"""`hydra.sweeper.fit_budget`: a search whose budget buys few trials spends fewer of them at random.

TPE draws its first `n_startup_trials` at random and the median (or percentile) pruner judges no trial
before `n_startup_trials` have finished. Set for a long search, both can use up a short one: 8 random
start-up trials of the 11 a 290 s budget buys leave TPE three. Before each trial the search estimates
how many trials it will end with (the study's n_trials, or fewer when hydra.sweeper.timeout runs out
first, at the pace of the trials this run has finished) and shrinks both start-ups to a share of that,
never below a floor and never above what is configured, so a long search runs exactly as configured.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import optuna

from cnnsweep.search.study import StudySpec

log = logging.getLogger(__name__)

SAMPLER_STARTUP_SHARE, SAMPLER_STARTUP_FLOOR = 0.25, 3  # TPE models the results after a quarter, at least 3
PRUNER_STARTUP_SHARE, PRUNER_STARTUP_FLOOR = 0.1, 2  # the pruner judges after a tenth, at least 2 finished
STARTUP_PRUNERS = {"median": 5, "percentile": 5}  # pruners with n_startup_trials, and Optuna's default for it


def expected_trials(total: int, finished: int, running: int, time_left: Optional[float],
                    trial_seconds: Optional[float], n_jobs: int) -> int:
    """The trials the study will have when this search ends: its total, or fewer when the time left, at
    `trial_seconds` per trial and `n_jobs` at once, runs out first."""
    if time_left is None or trial_seconds is None or trial_seconds <= 0:
        return total
    return min(total, finished + running + max(0, int(time_left / trial_seconds * n_jobs)))


def scaled_startup(configured: int, expected: int, share: float, floor: int) -> int:
    """A start-up of `share` of the expected trials, at least `floor`, at most what is configured."""
    return min(configured, max(floor, math.ceil(expected * share)))


class BudgetFit:
    """The sampler's and the pruner's start-ups, as configured and as fitted to the expected trials."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, spec: StudySpec) -> None:
        self.sampler = sampler if isinstance(sampler, optuna.samplers.TPESampler) else None
        self.spec = spec
        self.sampler_startup = self.sampler._n_startup_trials if self.sampler is not None else None
        default = STARTUP_PRUNERS.get(spec.pruner)
        self.pruner_startup = None if default is None else int(spec.pruner_options.get("n_startup_trials", default))
        self.expected: Optional[int] = None

    def apply(self, expected: int) -> bool:
        """Fit both start-ups to `expected` trials; True when the pruner's changed (study.json, which trial
        processes read it from, must be written again)."""
        if expected == self.expected:
            return False
        self.expected = expected
        changes, pruner_changed = [], False
        if self.sampler is not None and self.sampler_startup is not None:
            startup = scaled_startup(self.sampler_startup, expected, SAMPLER_STARTUP_SHARE, SAMPLER_STARTUP_FLOOR)
            if startup != self.sampler._n_startup_trials:
                self.sampler._n_startup_trials = startup
                changes.append(f"TPE's random start-up {startup} trials (configured {self.sampler_startup})")
        if self.pruner_startup is not None:
            startup = scaled_startup(self.pruner_startup, expected, PRUNER_STARTUP_SHARE, PRUNER_STARTUP_FLOOR)
            if startup != self.spec.pruner_options.get("n_startup_trials", self.pruner_startup):
                self.spec.pruner_options["n_startup_trials"] = startup
                pruner_changed = True
                changes.append(f"the {self.spec.pruner} pruner judges after {startup} finished trials (configured "
                               f"{self.pruner_startup})")
        if changes:
            log.info("fitting the budget of about %d trials (hydra.sweeper.fit_budget): %s", expected,
                     "; ".join(changes))
        return pruner_changed
