"""hydra.sweeper.fit_budget: the start-ups of TPE and of the median pruner shrink to a share of the trials a
search's budget buys, and never grow past what is configured. Real Optuna samplers and studies; the
search end to end runs through tests/fake_run.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from cnnsweep.search.budget import BudgetFit, expected_trials, scaled_startup
from cnnsweep.search.study import StudySpec
from conftest import FAKE_RUN


@pytest.mark.parametrize(("total", "finished", "running", "time_left", "trial_seconds", "n_jobs", "expected"), [
    (30, 0, 0, None, None, 2, 30),  # no time budget: the study's total
    (1000, 0, 2, 290.0, None, 2, 1000),  # no trial finished yet: nothing to estimate from
    (1000, 4, 2, 100.0, 20.0, 2, 16),  # 100 s at 20 s a trial, 2 at once: 10 more
    (12, 4, 2, 100.0, 20.0, 2, 12),  # never more than the total
    (1000, 9, 1, -5.0, 20.0, 2, 10),  # past the budget: what is finished and running
])
def test_the_trials_a_budget_buys(total, finished, running, time_left, trial_seconds, n_jobs, expected) -> None:
    assert expected_trials(total, finished, running, time_left, trial_seconds, n_jobs) == expected


@pytest.mark.parametrize(("configured", "expected_trials", "startup"), [(8, 11, 3), (8, 30, 8), (8, 100, 8),
                                                                        (10, 6, 3), (2, 6, 2), (8, 16, 4)])
def test_a_start_up_is_a_quarter_of_the_expected_trials_within_floor_and_configured(configured, expected_trials,
                                                                                    startup) -> None:
    assert scaled_startup(configured, expected_trials, 0.25, 3) == startup


def spec(pruner: str = "median", **options) -> StudySpec:
    return StudySpec(None, "s", ["maximize"], ["val_accuracy"], pruner, dict(options))


def test_fitting_changes_tpe_and_the_pruner_and_goes_back_for_a_longer_budget() -> None:
    sampler, study_spec = optuna.samplers.TPESampler(n_startup_trials=8, seed=0), spec(n_startup_trials=3)
    fit = BudgetFit(sampler, study_spec)
    assert fit.apply(11) is True  # the pruner's options changed: study.json must be written again
    assert (sampler._n_startup_trials, study_spec.pruner_options["n_startup_trials"]) == (3, 2)
    assert fit.apply(11) is False
    assert fit.apply(40) is True
    assert (sampler._n_startup_trials, study_spec.pruner_options["n_startup_trials"]) == (8, 3)
    random, hyperband = optuna.samplers.RandomSampler(seed=0), spec("hyperband")
    assert BudgetFit(random, hyperband).apply(5) is False and hyperband.pruner_options == {}
    median_default = spec()  # Optuna's own default start-up (5), shrunk
    assert BudgetFit(random, median_default).apply(6) and median_default.pruner_options == {"n_startup_trials": 2}


def test_tpe_fitted_to_three_start_up_trials_samples_as_tpe_built_with_three() -> None:
    """The fitted attribute is the one Optuna's TPE reads: same seed, same suggestions."""

    def suggestions(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda trial: (trial.suggest_float("x", -5, 5) - 1) ** 2, n_trials=7)
        return [trial.params["x"] for trial in study.trials]

    fitted = optuna.samplers.TPESampler(n_startup_trials=8, seed=3)
    BudgetFit(fitted, spec("none")).apply(7)
    built = suggestions(optuna.samplers.TPESampler(n_startup_trials=3, seed=3))
    assert suggestions(fitted) == built != suggestions(optuna.samplers.TPESampler(n_startup_trials=8, seed=3))


def test_a_short_search_says_how_it_fitted_its_budget_and_its_trials_read_the_pruner(run_cli, tiny_data: Path,
                                                                                     tmp_path: Path) -> None:
    from test_search import fake_search_args

    common = [*fake_search_args(tiny_data), "hydra.sweeper.n_trials=6", "training.epochs=1",
              f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"]
    fitted = run_cli(*common, f"hydra.sweep.dir={tmp_path / 'fitted'}", command=FAKE_RUN, timeout=300)
    assert fitted.returncode == 0, fitted.stderr
    assert ("fitting the budget of about 6 trials (hydra.sweeper.fit_budget): TPE's random start-up 3 trials "
            "(configured 10); the median pruner judges after 2 finished trials (configured 3)") in fitted.stdout
    assert json.loads((tmp_path / "fitted" / "study.json").read_text())["pruner_options"]["n_startup_trials"] == 2
    configured = run_cli(*common, "hydra.sweeper.fit_budget=false", "hydra.sweeper.study_name=configured",
                         f"hydra.sweep.dir={tmp_path / 'configured'}", command=FAKE_RUN, timeout=300)
    assert configured.returncode == 0, configured.stderr
    assert "fitting the budget" not in configured.stdout
    assert json.loads((tmp_path / "configured" / "study.json").read_text())["pruner_options"]["n_startup_trials"] == 3
