"""Baselines and seed noise without TensorFlow: Welch's t-test against an independent numerical
integration, and leaderboards over constructed run folders (a grid with its multirun.yaml, a search
with its marked trial 0, a named baseline) with known answers: a clear gain and no gain."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPORT
from cnnsweep.review.comparison import student_t_two_sided_p, welch_t_test
from cnnsweep.errors import DataError
from cnnsweep.review.leaderboard import LEAD_COLUMNS, MAIN_METRICS, aggregate_seeds, build_leaderboard, format_table
from cnnsweep.run.records import RunRecord


def t_tail_by_integration(t: float, df: float) -> float:
    x = np.linspace(abs(t), abs(t) + 4000.0, 4_000_001)
    density = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) * (
        1 + x**2 / df) ** (-(df + 1) / 2)
    return 2 * float(np.trapezoid(density, x))


@pytest.mark.parametrize(("t", "df"), [(2.228, 10), (2.0, 10), (0.5, 3.3), (5.0, 2), (12.0, 7.5), (-1.5, 4)])
def test_student_t_p_values(t: float, df: float) -> None:
    assert student_t_two_sided_p(t, df) == pytest.approx(t_tail_by_integration(t, df), rel=1e-5)


def test_welch_t_test_by_hand() -> None:
    test = welch_t_test([0.99, 0.991, 0.989], [0.985, 0.986, 0.984])
    assert test.t == pytest.approx(0.005 / math.sqrt(2e-6 / 3)) and test.df == pytest.approx(4.0)
    assert welch_t_test([0.99], [0.98, 0.97]) is None  # one value: no variance to test against
    assert welch_t_test([0.99, 0.99], [0.98, 0.98]) is None  # no spread at all


def run_folder(path: Path, config: dict, objective: float, status: str = "completed", **fields) -> None:
    record = RunRecord(path, seed=config.get("seed"))
    record.finish(status, objective={"name": "val_accuracy", "value": objective, "direction": "maximize"},
                  val_accuracy=objective, test_accuracy=objective - 0.002, params=1000, epochs_completed=2, **fields)
    (path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")


GAIN = {64: [0.990, 0.991, 0.989], 32: [0.980, 0.981, 0.979], 16: [0.981, 0.979, 0.9805]}


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """`-m model.filters=16,32,64 seed=0,1,2` with the defaults' filters=32: 64 gains, 16 does not."""
    sweep = tmp_path / "grid"
    sweep.mkdir()
    OmegaConf.save(OmegaConf.create({"seed": 2, "model": {"filters": 32, "kernel_size": 3}, "hydra": {"x": 1}}),
                   sweep / "multirun.yaml")
    job = 0
    for filters, values in GAIN.items():
        for seed, value in enumerate(values):
            run_folder(sweep / str(job), {"seed": seed, "model": {"filters": filters, "kernel_size": 3}}, value)
            job += 1
    return sweep


def test_columns_answer_what_won(grid: Path) -> None:
    board = build_leaderboard([grid])
    assert list(board.columns[:7]) == [*LEAD_COLUMNS, "model.filters", "seed"]
    assert list(board.columns[7:7 + len(MAIN_METRICS)]) == [c for c in MAIN_METRICS if c in board.columns]
    assert "model.kernel_size" not in board.columns  # the same everywhere
    assert list(board["rank"]) == list(range(1, 10)) and board.loc[0, "model.filters"] == 64
    table = format_table(board, top=3).splitlines()
    assert table[0].split()[:7] == ["rank", "run", "status", "objective", "vs_baseline", "model.filters", "seed"]


def test_a_grid_baseline_is_the_job_with_the_sweep_defaults(grid: Path) -> None:
    board = build_leaderboard([grid])
    assert set(board.loc[board["baseline"] == True, "model.filters"]) == {32}  # noqa: E712
    baseline_mean = np.mean(GAIN[32])
    for _, row in board.iterrows():
        assert row["vs_baseline"] == pytest.approx(row["objective"] - baseline_mean)


def test_seed_noise_tells_a_gain_from_none(grid: Path) -> None:
    seeds = aggregate_seeds(build_leaderboard([grid])).set_index("model.filters")
    assert list(seeds.columns[:7]) == ["objective_mean", "objective_std", "objective_count", "vs_baseline", "p_value",
                                       "beyond_seed_noise", "baseline"]
    assert seeds.loc[64, "beyond_seed_noise"] == True and seeds.loc[64, "p_value"] < 0.001  # noqa: E712
    assert seeds.loc[64, "vs_baseline"] == pytest.approx(0.01)
    assert seeds.loc[16, "beyond_seed_noise"] == False and seeds.loc[16, "p_value"] > 0.5  # noqa: E712
    assert seeds.loc[32, "baseline"] == True and seeds.loc[32, "p_value"] == pytest.approx(1.0)  # noqa: E712
    # By hand: means 0.990 and 0.980, each sample's variance 1e-6 over 3 seeds, so t = 0.01 / sqrt(2e-6 / 3)
    # with 4 degrees of freedom; its two-sided p-value by numerical integration, not by the code under test.
    expected = t_tail_by_integration(0.01 / math.sqrt(2e-6 / 3), 4.0)
    assert seeds.loc[64, "p_value"] == pytest.approx(expected, rel=1e-4)


def test_a_search_baseline_is_its_marked_trial_0(tmp_path: Path) -> None:
    sweep = tmp_path / "search"
    sweep.mkdir()
    OmegaConf.save(OmegaConf.create({"model": {"filters": 32}}), sweep / "multirun.yaml")
    run_folder(sweep / "0", {"model": {"filters": 32}, "optimizer": {"lr": 0.001}}, 0.980, trial=0, baseline=True)
    run_folder(sweep / "1", {"model": {"filters": 48}, "optimizer": {"lr": 0.003}}, 0.985, trial=1, baseline=False)
    run_folder(sweep / "2", {"model": {"filters": 16}, "optimizer": {"lr": 0.01}}, 0.5, status="failed", trial=2)
    board = build_leaderboard([sweep]).set_index("trial")
    assert board.loc[0, "baseline"] == True and board.loc[1, "vs_baseline"] == pytest.approx(0.005)  # noqa: E712
    assert board.loc[0, "vs_baseline"] == 0.0


def test_a_named_baseline(grid: Path) -> None:
    board = build_leaderboard([grid], baseline="grid/6")  # filters=16, seed=0
    assert set(board.loc[board["baseline"] == True, "model.filters"]) == {16}  # noqa: E712
    assert board.set_index("run").loc["grid/0", "vs_baseline"] == pytest.approx(0.990 - np.mean(GAIN[16]))
    with pytest.raises(DataError, match="--baseline grid/99: no such run among these"):
        build_leaderboard([grid], baseline="grid/99")


def test_runs_without_a_baseline_have_no_difference(tmp_path: Path) -> None:
    run_folder(tmp_path / "runs" / "a", {"model": {"filters": 32}}, 0.98)
    run_folder(tmp_path / "runs" / "b", {"model": {"filters": 64}}, 0.99)
    board = build_leaderboard([tmp_path / "runs"])
    assert board["vs_baseline"].isna().all() and board["baseline"].isna().all()
    assert list(board["rank"]) == [1, 2]



def test_the_backend_column_is_the_one_each_run_trained_on(tmp_path: Path) -> None:
    """A run saves `${oc.env:KERAS_BACKEND,tensorflow}`, its rerun the pinned name: the same backend, no
    column; a run that trained on JAX under that same saved text makes the column, with the real names."""
    unset = {"model": {"filters": 32}, "hardware": {"backend": "${oc.env:KERAS_BACKEND,tensorflow}"}}
    for name, saved, used in [("run", unset, "tensorflow"), ("rerun", {**unset, "hardware": {"backend": "tensorflow"}},
                                                                 "tensorflow")]:
        run_folder(tmp_path / "runs" / name, saved, 0.98)
        (tmp_path / "runs" / name / "environment.json").write_text(json.dumps({"devices": {"backend": used}}))
    assert "hardware.backend" not in build_leaderboard([tmp_path / "runs"]).columns

    run_folder(tmp_path / "runs" / "on_jax", unset, 0.97)
    (tmp_path / "runs" / "on_jax" / "environment.json").write_text(json.dumps({"devices": {"backend": "jax"}}))
    board = build_leaderboard([tmp_path / "runs"]).set_index("run")
    assert board["hardware.backend"].to_dict() == {"runs/run": "tensorflow", "runs/rerun": "tensorflow",
                                                   "runs/on_jax": "jax"}

def test_the_report_command_names_a_baseline_and_tests_seed_noise(grid: Path, run_cli, tmp_path: Path) -> None:
    result = run_cli(str(grid), "--baseline", "grid/6", "--aggregate-seeds", "--no-plots", command=REPORT)
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(grid / "leaderboard.csv")
    assert list(board.columns[:5]) == LEAD_COLUMNS and set(board.loc[board["baseline"], "model.filters"]) == {16}
    seeds = pd.read_csv(grid / "leaderboard_seeds.csv").set_index("model.filters")
    assert seeds.loc[64, "beyond_seed_noise"] and not seeds.loc[32, "beyond_seed_noise"]
    printed = result.stdout.splitlines()
    assert printed[1].split()[:5] == ["rank", "run", "status", "objective", "vs_baseline"]
