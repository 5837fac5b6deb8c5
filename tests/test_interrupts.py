"""Ctrl-C (SIGINT) or SIGTERM of a sweep process, in real subprocess multiruns of tests/fake_run.py: a
parallel grid and a search stop in order (no new job, running jobs recorded `interrupted`, the leaderboard
written, no traceback, exit 130 or 143), and the printed command continues them without repeating finished
jobs; Ctrl-C of a single run records it interrupted and exits 130."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cnnsweep.run.checkpoints import Checkpoints
from conftest import FAKE_RUN, command_env
from test_search import fake_search_args


def interrupt_when(command: list[str], ready, cwd: Path, env: dict[str, str], to: str,
                   signum: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Start the command in a session of its own with SIGINT at its default (as a terminal would), send
    SIGINT once `ready()`: to the sweep process alone (`kill`), or to its whole process group, jobs
    included, as a terminal's Ctrl-C does; return how it ended."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    if to == "group":
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["status"]


def continue_with(stderr: str) -> list[str]:
    """The command the interrupted sweep printed, run through tests/fake_run.py as the test started it."""
    line = stderr.strip().splitlines()[-1]
    words = shlex.split(line.split("continue with: ")[1])
    assert words[:3] == ["uv", "run", "python"] and words[3].endswith("fake_run.py")
    return [*FAKE_RUN, *words[4:]]


@pytest.mark.parametrize("to", ["group", "process"])
def test_ctrl_c_stops_a_parallel_grid_in_order_and_it_continues(tiny_data: Path, tmp_path: Path, to: str) -> None:
    sweep = tmp_path / "grid"
    command = [*FAKE_RUN, "-m", "launcher=parallel", "launcher.jobs=2", "model.filters=4,5", "training.epochs=1,60",
               f"dataset.path={tiny_data}", f"hydra.sweep.dir={sweep}"]
    env = command_env(FAKE_EPOCH_SECONDS="0.05")
    # jobs: 0 (4, 1 epoch), 1 (4, 60), 2 (5, 1), 3 (5, 60): interrupt while 1 and 3 train, each checkpointed
    result = interrupt_when(command, lambda: all(Checkpoints(sweep / job).epochs() for job in ("1", "3")), tmp_path,
                            env, to)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGINT: 2 of 4 jobs finished; continue with: uv run python ")
    assert [status(sweep / str(job)) for job in range(4)] == ["completed", "interrupted", "completed", "interrupted"]
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert sorted(board["status"]) == ["completed", "completed", "interrupted", "interrupted"]
    finished_at = {job: json.loads((sweep / str(job) / "metrics.json").read_text())["finished_at"] for job in (0, 2)}

    again = subprocess.run(continue_with(result.stderr), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert [status(sweep / str(job)) for job in range(4)] == ["completed"] * 4
    for job in (0, 2):  # kept, not trained again
        assert json.loads((sweep / str(job) / "metrics.json").read_text())["finished_at"] == finished_at[job]
        assert f"#{job} : " in again.stdout and "completed before" in again.stdout
    assert len(pd.read_csv(sweep / "leaderboard.csv")) == 4
    for job in (1, 3):  # the interrupted jobs continued after their last finished epoch
        resumed = json.loads((sweep / str(job) / "metrics.json").read_text())["resumed_after_epoch"]
        assert resumed >= 1 and list(pd.read_csv(sweep / str(job) / "history.csv")["epoch"]) == list(range(1, 61))
        assert f"#{job} : " in again.stdout and "training.resume=true" in again.stdout

    third = subprocess.run(continue_with(result.stderr), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("completed before") == 4  # resumed jobs count as the same jobs


def test_ctrl_c_stops_a_search_in_order_and_it_continues(tiny_data: Path, tmp_path: Path) -> None:
    sweep, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [*FAKE_RUN, *fake_search_args(tiny_data), "hydra.sweeper.n_trials=4", "training.epochs=40",
               f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}", "hydra.sweeper.pruner=none"]
    env = command_env(FAKE_EPOCH_SECONDS="0.05")
    result = interrupt_when(command, lambda: (sweep / "1" / "history.csv").exists(), tmp_path, env, "group")
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGINT: 1 of 4 trials finished")
    study = optuna.load_study(study_name="quick", storage=storage)
    states = [trial.state for trial in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]  # the interrupted one queued again
    assert study.trials[1].user_attrs["cnnsweep_interrupted"] is True and status(sweep / "1") == "interrupted"
    assert study.trials[2].system_attrs["fixed_params"] == study.trials[1].params  # Optuna's queue
    assert set(pd.read_csv(sweep / "leaderboard.csv")["status"]) == {"completed", "interrupted"}

    again = subprocess.run(continue_with(result.stderr), cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="0.01"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="quick", storage=storage).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert trials[0].datetime_complete == study.trials[0].datetime_complete  # finished trials are kept
    assert trials[2].params == trials[1].params and trials[2].user_attrs["cnnsweep_requeued_from"] == 1


def test_sigterm_stops_a_grid_in_order_with_exit_143(tiny_data: Path, tmp_path: Path) -> None:
    """As a scheduler or `kill` ends a sweep: SIGTERM to the sweep process alone."""
    sweep = tmp_path / "grid"
    command = [*FAKE_RUN, "-m", "launcher=parallel", "launcher.jobs=2", "model.filters=4,5", "training.epochs=1,60",
               f"dataset.path={tiny_data}", f"hydra.sweep.dir={sweep}"]
    result = interrupt_when(command, lambda: (sweep / "3" / "history.csv").exists(), tmp_path,
                            command_env(FAKE_EPOCH_SECONDS="0.05"), "process", signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: interrupted by SIGTERM: 2 of 4 jobs finished; continue with: uv run python ")
    assert [status(sweep / str(job)) for job in range(4)] == ["completed", "interrupted", "completed", "interrupted"]
    assert sorted(pd.read_csv(sweep / "leaderboard.csv")["status"]) == ["completed", "completed", "interrupted",
                                                                        "interrupted"]


def epochs_recorded(run_dir: Path) -> int:
    """The epochs the run's metrics.json counts (history.csv is written first, so it alone is too early)."""
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("epochs_completed") or 0)
    except (OSError, ValueError):
        return 0


def test_ctrl_c_of_a_single_run_records_it_interrupted(tiny_data: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the run's whole process group."""
    run_dir = tmp_path / "run"
    command = [*FAKE_RUN, "training.epochs=200", f"dataset.path={tiny_data}", f"hydra.run.dir={run_dir}"]
    result = interrupt_when(command, lambda: epochs_recorded(run_dir) >= 1, tmp_path,
                            command_env(FAKE_EPOCH_SECONDS="0.05"), "group")
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: interrupted by Ctrl-C; the run's metrics.json says `interrupted`; run the same command again to "
        "train it")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and 1 <= record["epochs_completed"] < 200
