"""The benchmarks' harness (benchmarks/warm_workers.py): a setup that cannot run ends the invocation with
its reason in one line, instead of entering the comparison as a search that found nothing; a results file
lets a stopped invocation continue without running again what it finished."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cnnsweep.run.records import cpu_description

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from warm_workers import ResultsFile, SetupFailed, require_trials, run_all, run_for  # noqa: E402


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


class SittingEnded(Exception):
    """The benchmark stopped mid-invocation (a session's end, a Ctrl-C)."""


def test_a_results_file_continues_a_stopped_invocation_on_the_same_cpu(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    path, ran, stops = tmp_path / "results.jsonl", [], [("kt-random", 1)]  # the first sitting ends there

    def search(setup: str, seed: int) -> dict:
        ran.append((setup, seed))
        if (setup, seed) in stops:
            stops.remove((setup, seed))
            raise SittingEnded
        return {"best_val": 0.98 + seed / 1000}

    def invocation() -> dict[str, list[dict]]:
        kept = ResultsFile(path, "AMD EPYC, 2 cores, AVX-512 no")
        return run_all([0, 1], ["tpe+baseline", "kt-random"],
                       lambda setup, seed: kept.get_or_run("budget 290", setup, seed, lambda: search(setup, seed)),
                       lambda result: f"{result['best_val']:.4f}")

    with pytest.raises(SittingEnded):
        invocation()
    with path.open("a") as results:
        results.write('{"cpu": "AMD EPYC, 2 cores, AVX-512 no", "part": "bud')  # a write the kill cut short
    search_calls = len(ran)
    results = invocation()
    assert ran[search_calls:] == [("kt-random", 1)]  # only what the first sitting did not finish
    assert results == {"tpe+baseline": [{"best_val": 0.98}, {"best_val": 0.981}],
                       "kt-random": [{"best_val": 0.98}, {"best_val": 0.981}]}
    printed = capsys.readouterr().out
    assert "results.jsonl:4: not a result line" in printed and "3 results kept in" in printed
    assert len(path.read_text().splitlines()) == 5

    with pytest.raises(SystemExit, match=r"^error: .*results.jsonl holds results measured on AMD EPYC, 2 cores, "
                                         r"AVX-512 no, and this is Intel Xeon, 2 cores, AVX-512 yes; setups are "
                                         r"compared within one machine: pass another --results file$"):
        ResultsFile(path, "Intel Xeon, 2 cores, AVX-512 yes")


def test_a_machine_with_onednn_capped_measures_apart_from_itself_uncapped(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    uncapped = cpu_description()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = cpu_description()
    assert capped == f"{uncapped}, oneDNN capped at AVX2"
    path = tmp_path / "results.jsonl"
    ResultsFile(path, uncapped).get_or_run("budget 290", "kt-random", 0, lambda: {"best_val": 0.98})
    with pytest.raises(SystemExit, match=r"AVX-512 (yes|no), and this is .*, oneDNN capped at AVX2; setups are "
                                         r"compared within one machine"):
        ResultsFile(path, capped)
