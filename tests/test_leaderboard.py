"""Leaderboards from real runs: a grid multirun's own leaderboard.csv, and `cnnsweep report` over a mix
of completed, failed and killed runs (arithmetic ones, tests/fake_run.py), with seed aggregation, plots and
the HTML report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAKE_RUN, REPORT, RUN_SCRIPT, TINY_RUN, error_lines, kill_once_checkpointed, run_command
from cnnsweep.review.leaderboard import sort_by_objective


@pytest.fixture(scope="session")
def grid_sweep(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real 4-job grid, made once for the two tests that read it (one worker runs both: GRID_GROUP)."""
    sweep = tmp_path_factory.mktemp("leaderboard") / "grid"
    result = run_command("-m", *TINY_RUN, "training.epochs=1", "model.filters=4,8", "seed=0,1",
                         f"hydra.sweep.dir={sweep}", cwd=sweep.parent, env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr
    return sweep, result


GRID_GROUP = pytest.mark.xdist_group("leaderboard_grid")


@pytest.mark.tensorflow
@GRID_GROUP
def test_grid_multirun_writes_its_leaderboard(grid_sweep) -> None:
    sweep, result = grid_sweep
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) == 4 and set(board["status"]) == {"completed"}
    assert {"run", "sweep", "status", "objective", "test_accuracy", "params", "train_seconds",
            "model.filters", "seed"} <= set(board.columns)
    assert "dataset.max_train" not in board.columns  # the same in every row, so not a column
    assert sorted(zip(board["model.filters"], board["seed"])) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert list(board["objective"]) == sorted(board["objective"], reverse=True)
    assert (board["objective"] == board["test_accuracy"]).all()
    assert set(board["sweep"]) == {"grid"} and set(board["run"]) == {f"grid/{job}" for job in range(4)}
    assert "leaderboard of 4 runs" in result.stdout and "model.filters" in result.stdout
    # what won, at a glance: outcome, then the keys that vary, then the metrics
    assert list(board.columns[:7]) == ["rank", "run", "status", "objective", "vs_baseline", "model.filters", "seed"]
    # the baseline: the jobs with the sweep's composed value (TINY_RUN's model.filters=8)
    assert set(board.loc[board["baseline"] == True, "model.filters"]) == {8}  # noqa: E712
    base = board.loc[board["model.filters"] == 8, "objective"].mean()
    assert board["vs_baseline"].tolist() == pytest.approx((board["objective"] - base).tolist())


@pytest.mark.tensorflow
@GRID_GROUP
def test_report_aggregates_seeds_and_draws_plots(grid_sweep, run_cli, tmp_path: Path) -> None:
    sweep, _ = grid_sweep
    output = tmp_path / "review" / "board.csv"
    result = run_cli(str(sweep), "--output", str(output), "--aggregate-seeds", command=REPORT)
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(output)
    seeds = pd.read_csv(tmp_path / "review" / "board_seeds.csv")
    assert list(seeds["model.filters"].sort_values()) == [4, 8] and set(seeds["objective_count"]) == {2}
    for filters, group in board.groupby("model.filters"):
        row = seeds[seeds["model.filters"] == filters].iloc[0]
        assert row["objective_mean"] == pytest.approx(group["objective"].mean())
        assert row["objective_std"] == pytest.approx(group["objective"].std())
    assert (tmp_path / "review" / "objective_vs_params.png").stat().st_size > 1000
    page = (tmp_path / "review" / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page


def test_report_on_a_mix_of_statuses(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """The report reads run folders, whatever trained them: the fast tier's arithmetic runs stand in."""
    outputs, data = tmp_path / "outputs", f"dataset.path={tiny_data}"
    assert run_cli(data, f"hydra.run.dir={outputs / 'good'}", command=FAKE_RUN).returncode == 0
    assert run_cli(data, "model.kernel_size=13", f"hydra.run.dir={outputs / 'bad'}", command=FAKE_RUN).returncode == 2
    kill_once_checkpointed([*FAKE_RUN, data, "training.epochs=50"], outputs / "killed", 1, tmp_path,
                           {"FAKE_EPOCH_SECONDS": "0.5"})  # metrics.json still says `running`

    result = run_cli("--no-plots", command=REPORT)  # default: outputs/ under the working folder
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(outputs / "leaderboard.csv")
    assert list(board["run"]) == ["outputs/good", "outputs/bad", "outputs/killed"] or \
        list(board["run"]) == ["outputs/good", "outputs/killed", "outputs/bad"]
    statuses = dict(zip(board["run"], board["status"]))
    assert statuses == {"outputs/good": "completed", "outputs/bad": "failed", "outputs/killed": "running"}
    failed = board[board["status"] == "failed"].iloc[0]
    assert failed["error"].startswith("model: conv block 2 (kernel 13)")
    assert board.loc[board["run"] == "outputs/killed", "epochs_completed"].iloc[0] >= 1
    assert "model.kernel_size" in board.columns and "training.epochs" in board.columns
    assert not (outputs / "report.html").exists()


def test_report_without_runs_is_one_error_line(run_cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli(str(tmp_path / "empty"), command=REPORT)
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: no run folders (folders with metrics.json) under {tmp_path / 'empty'}; "
        "train with `uv run python src/run.py` first"
    ]


def test_minimized_objectives_sort_lowest_first() -> None:
    frame = pd.DataFrame({"run": list("abc"), "objective": [0.3, None, 0.1],
                          "objective_direction": ["minimize"] * 3})
    assert list(sort_by_objective(frame)["run"]) == ["c", "a", "b"]


@pytest.mark.tensorflow
def test_two_sweeps_started_together_get_their_own_folders(mnist_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CNNSWEEP_DATA_DIR": str(mnist_dir)}
    command = [sys.executable, str(RUN_SCRIPT), "-m", *TINY_RUN, "dataset.max_train=64", "training.epochs=1"]
    processes = [subprocess.Popen([*command, f"seed={seed}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for seed in (0, 1)]
    assert [process.wait(timeout=300) for process in processes] == [0, 0]
    sweeps = sorted((tmp_path / "outputs" / "multiruns").iterdir())
    assert len(sweeps) == 2  # microsecond folder names: no collision even within one second
    seeds = sorted(pd.read_csv(sweep / "leaderboard.csv")["seed"].iloc[0] for sweep in sweeps)
    assert seeds == [0, 1]
