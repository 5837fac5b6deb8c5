"""The benchmarks' harness (benchmarks/warm_workers.py): a setup that cannot run ends the invocation with
its reason in one line, instead of entering the comparison as a search that found nothing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from warm_workers import SetupFailed, require_trials, run_all, run_for  # noqa: E402


def test_a_command_that_fails_before_its_budget_names_its_last_line(tmp_path: Path) -> None:
    failing = "import sys; print('starting'); sys.exit(\"ModuleNotFoundError: No module named 'sklearn'\")"
    with pytest.raises(SetupFailed, match=r"^exited with code 1: ModuleNotFoundError: No module named 'sklearn'$"):
        run_for([sys.executable, "-c", failing], 60, tmp_path)


def test_a_command_that_outlives_its_budget_is_killed_and_counts(tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    began = time.time()
    started = run_for([sys.executable, "-c", f"import time; open({str(marker)!r}, 'w'); time.sleep(60)"], 3, tmp_path)
    assert began <= started < began + 1 and 3 <= time.time() - began < 30
    assert marker.exists()


def test_a_search_without_a_finished_trial_has_no_result() -> None:
    require_trials(1, 600)
    with pytest.raises(SetupFailed, match=r"^finished no trial in 600 s"):
        require_trials(0, 600)


def test_a_failed_setup_stops_the_invocation_after_the_results_before_it(capsys: pytest.CaptureFixture) -> None:
    def run_one(setup: str, seed: int) -> dict:
        if setup == "kt-bayesian":
            raise SetupFailed("exited with code 1: ModuleNotFoundError: No module named 'sklearn'")
        return {"best_val": 0.98}

    with pytest.raises(SystemExit) as stopped:
        run_all([0, 1], ["tpe+baseline", "kt-bayesian"], run_one, lambda result: f"best {result['best_val']}")
    assert str(stopped.value.code) == ("error: kt-bayesian (seed 0) exited with code 1: ModuleNotFoundError: No module "
                                       "named 'sklearn'; fix it and run the benchmark again")
    assert capsys.readouterr().out == "seed 0 tpe+baseline  best 0.98\n"
