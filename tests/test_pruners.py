"""`hydra.sweeper.pruner=rechecked_halving` (cnnsweep.search.pruners) on real in-memory Optuna studies,
trials reporting by hand, against Optuna's own SuccessiveHalvingPruner on the same reports."""

from __future__ import annotations

import optuna
import pytest

from cnnsweep.search.pruners import RecheckedHalvingPruner
from cnnsweep.search.study import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def reports(pruner: optuna.pruners.BasePruner, direction: str = "maximize") -> dict[str, bool]:
    """A short asynchronous search: trial `early` reaches epoch 1 alone and passes the rung unopposed, three
    more reach it later (one better), then `early` and `best` report epoch 2. Whether each was pruned when."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    sign = 1 if direction == "maximize" else -1
    early, best, second, third = (study.ask() for _ in range(4))
    pruned = {}
    for name, trial, value in (("early", early, 0.50), ("best", best, 0.90), ("second", second, 0.80),
                               ("third", third, 0.85)):
        trial.report(sign * value, step=1)
        pruned[f"{name} at epoch 1"] = trial.should_prune()
    for name, trial, value in (("early", early, 0.70), ("best", best, 0.95)):
        trial.report(sign * value, step=2)
        pruned[f"{name} at epoch 2"] = trial.should_prune()
    return pruned


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_an_early_pass_is_checked_again_once_the_rung_has_competitors(direction: str) -> None:
    options = {"min_resource": 1, "reduction_factor": 3}
    plain = reports(optuna.pruners.SuccessiveHalvingPruner(**options), direction)
    rechecked = reports(RecheckedHalvingPruner(**options), direction)
    at_epoch_1 = {"early at epoch 1": False, "best at epoch 1": False, "second at epoch 1": True,
                  "third at epoch 1": True}
    assert plain == {**at_epoch_1, "early at epoch 2": False, "best at epoch 2": False}
    assert rechecked == {**at_epoch_1, "early at epoch 2": True, "best at epoch 2": False}


def test_fewer_competitors_than_the_reduction_factor_keep_the_promotion() -> None:
    study = optuna.create_study(direction="maximize",
                                pruner=RecheckedHalvingPruner(min_resource=1, reduction_factor=3))
    first, second = study.ask(), study.ask()
    first.report(0.5, step=1)
    assert not first.should_prune()
    second.report(0.9, step=1)
    assert not second.should_prune()  # the best of two
    first.report(0.6, step=2)
    assert not first.should_prune()  # two values at the rung: too few to judge a pass again


def test_it_is_a_pruner_by_name_with_optunas_options() -> None:
    spec = StudySpec(storage=None, study_name="s", directions=["maximize"], metrics=["val_accuracy"],
                     pruner="rechecked_halving", pruner_options={"min_resource": 1, "reduction_factor": 3})
    pruner = spec.make_pruner()
    assert isinstance(pruner, RecheckedHalvingPruner) and pruner.reduction_factor == 3
