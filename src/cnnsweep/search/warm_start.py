"""`hydra.sweeper.warm_start`: a new study starts from what an earlier one learned.

The earlier study (named by its sweep folder, or by a storage URL and study name) is read once, when
the new study has no trials yet: its best completed trials whose parameters fit the new search space
(every parameter the new space also searches lies in its new range or choices; the others are left to
the sampler) are enqueued right after the baseline, best first, each marked with the earlier study and
trial it repeats (the run records and the leaderboard say so). Only their parameters carry over: the
new study's total, pruning and comparisons count its own trials alone.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from cnnsweep.credentials import location, stored_password, with_password
from cnnsweep.errors import ConfigError, first_line
from cnnsweep.search.settings import WarmStartConf
from cnnsweep.search.study import BASELINE_ATTR, STUDY_FILE, WARM_START_ATTR, StudySpec

log = logging.getLogger(__name__)


def earlier_study(conf: WarmStartConf) -> optuna.Study:
    """The study `warm_start.source` names, or ConfigError saying what it could not find."""
    source = str(conf.source)
    folder = Path(source).expanduser()
    try:
        if folder.is_dir():
            if not (folder / STUDY_FILE).is_file():
                raise ConfigError(f"hydra.sweeper.warm_start.source={source}: no {STUDY_FILE} in that folder; name "
                                  "the folder of an earlier search (outputs/multiruns/<time>), or a storage URL")
            spec = StudySpec.read(folder / STUDY_FILE)
            return optuna.load_study(study_name=spec.study_name, storage=spec.open_storage())
        if "://" not in source:
            raise ConfigError(f"hydra.sweeper.warm_start.source={source}: no such folder, and not a storage URL; "
                              "name an earlier search's folder or its storage (sqlite:///..., postgresql+psycopg://...)")
        storage = with_password(source, stored_password())
        names = optuna.get_all_study_names(storage)
        name = conf.study_name or (names[0] if len(names) == 1 else None)
        if name not in names:
            raise ConfigError(f"hydra.sweeper.warm_start.study_name={conf.study_name}: {location(source)} holds "
                              f"{', '.join(names) or 'no study'}; name one of them")
        return optuna.load_study(study_name=name, storage=storage)
    except ConfigError:
        raise
    except Exception as error:  # any storage's failure to open: one line, with the URL's password left out
        raise ConfigError(f"hydra.sweeper.warm_start.source={location(source)}: cannot read the study "
                          f"({first_line(error)})") from None


def best_fitting(earlier: optuna.Study, distributions: dict[str, BaseDistribution], count: int
                 ) -> list[tuple[int, dict[str, Any]]]:
    """(trial number, parameters) of the earlier study's `count` best completed trials whose parameters fit
    `distributions`, best first, without repeats."""
    if len(earlier.directions) != 1:
        raise ConfigError(f"hydra.sweeper.warm_start: study {earlier.study_name} has several objectives, so no "
                          "single best; warm-start from a single-objective study")
    sign = -1 if earlier.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    completed = [trial for trial in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if trial.value is not None and math.isfinite(trial.value)]
    chosen: list[tuple[int, dict[str, Any]]] = []
    for trial in sorted(completed, key=lambda trial: sign * trial.value):
        params = {key: value for key, value in trial.params.items() if key in distributions}
        if params and all(_fits(distributions[key], value) for key, value in params.items()) and \
                params not in [seen for _, seen in chosen]:
            chosen.append((trial.number, params))
        if len(chosen) == count:
            break
    return chosen


def _fits(distribution: BaseDistribution, value: Any) -> bool:
    try:
        return distribution._contains(distribution.to_internal_repr(value))  # noqa: SLF001  (Optuna's own check)
    except (ValueError, TypeError):
        return False


def enqueue_warm_start(study: optuna.Study, conf: WarmStartConf, distributions: dict[str, BaseDistribution]) -> None:
    """The earlier study's best fitting trials, queued in a new study (one whose only trial, if any, is the
    baseline waiting to run)."""
    begun = [trial for trial in study.get_trials(deepcopy=False)
             if not (trial.state == TrialState.WAITING and trial.user_attrs.get(BASELINE_ATTR))]
    if begun:
        if not any(WARM_START_ATTR in trial.user_attrs for trial in begun):
            log.warning("warm start: study %s already has trials, so hydra.sweeper.warm_start is not applied; it "
                        "starts new studies only", study.study_name)
        return
    earlier = earlier_study(conf)
    chosen = best_fitting(earlier, distributions, conf.best)
    for number, params in chosen:
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: f"{earlier.study_name}#{number}"})
    log.info("warm start: %d of study %s's best trials queued first (trials %s)", len(chosen), earlier.study_name,
             ", ".join(str(number) for number, _ in chosen) or "none fit this search space")
