"""Optuna searches from sweeps/ in real subprocess multiruns with a real SQLite study: the study and
the leaderboard agree, a resumed search continues the count, failures and killed trial processes are
recorded while the search goes on, pruning stops hopeless trials, and a killed sweep resumes.

One search trains real Keras models; the others run the same commands through tests/fake_run.py (the
task with arithmetic in place of training), so their trials take a fraction of a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import FAKE_RUN, REPORT, command_env

# The quick search, made smaller still: 512 training images, a 256-image hold-out, tiny models.
TINY_SEARCH = ["-m", "sweeps=quick", "dataset.max_train=512", "dataset.max_test=256", "dataset.val_size=256",
               "training.batch_size=64", "model.filters=4", "model.dense_units=8"]


def fake_search_args(tiny_data: Path, searched: tuple[str, ...] = ()) -> list[str]:
    """TINY_SEARCH for tests/fake_run.py, on the small random dataset; the keys in `searched` are left
    free for the test to search (a fixed value would win over a sweep of its key)."""
    return [*(arg for arg in TINY_SEARCH if arg.split("=")[0] not in searched), f"dataset.path={tiny_data}",
            "dataset.val_size=32"]


def search(run_cli, tmp_path: Path, mnist_dir: Path, name: str, *overrides: str):
    return run_cli(*TINY_SEARCH, f"hydra.sweep.dir={tmp_path / name}",
                   f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", *overrides,
                   env={"CNNSWEEP_DATA_DIR": str(mnist_dir)}, timeout=600)


def fake_search(run_cli, tmp_path: Path, tiny_data: Path, name: str, *overrides: str, env=None):
    return run_cli(*fake_search_args(tiny_data), f"hydra.sweep.dir={tmp_path / name}",
                   f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", *overrides,
                   command=FAKE_RUN, env=env, timeout=300)


def load(tmp_path: Path, study: str = "quick") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


@pytest.mark.tensorflow
def test_search_then_resume_study_and_leaderboard_agree(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    first = search(run_cli, tmp_path, mnist_dir, "first", "hydra.sweeper.n_trials=3",
                   "optimizer.lr=tag(log, interval(0.001, 0.01))")
    assert first.returncode == 0, first.stderr
    assert "Warning:" not in first.stderr  # no deprecation, future or experimental warnings
    study = load(tmp_path)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3

    board = pd.read_csv(tmp_path / "first" / "leaderboard.csv")
    assert sorted(board["trial"]) == [0, 1, 2] and set(board["status"]) == {"completed"}
    for trial in study.trials:
        row = board[board["trial"] == trial.number].iloc[0]
        assert row["val_accuracy"] == pytest.approx(trial.value)
        assert row["run"] == f"first/{trial.number}"
        assert row["optimizer.lr"] == pytest.approx(trial.params["optimizer.lr"])
    assert board["test_accuracy"].notna().all() and board["objective"].iloc[0] == pytest.approx(study.best_value)
    assert "where the time of 3 runs went" in first.stdout and "training " in first.stdout
    for line in (tmp_path / "first" / "schedule.jsonl").read_text().splitlines():  # each job's phases, measured
        job = json.loads(line)
        timings, record = job["timings"], json.loads((Path(job["run_dir"]) / "metrics.json").read_text())
        assert record["timings"] == timings and [epoch["epoch"] for epoch in timings["epochs"]] == [1, 2]
        assert all(epoch["train"] > 0 and epoch["validate"] > 0 for epoch in timings["epochs"])
        # on launcher=local an interrupted trial is queued again as a new trial: nothing would resume it
        assert timings["checkpoint"] == 0 and record["checkpoints_skipped"].startswith("nothing would resume them")
        phases = ("data", "setup", "build", "train", "validate", "test", "save")
        assert all(timings[phase] > 0 for phase in phases)
        assert sum(timings[phase] for phase in phases) < job["end"] - job["start"]
    results = OmegaConf.load(tmp_path / "first" / "optimization_results.yaml")
    assert results.best_trial == study.best_trial.number and results.best_value == pytest.approx(study.best_value)

    report = run_cli(str(tmp_path / "first"), "--output", str(tmp_path / "review" / "board.csv"),
                     command=REPORT)
    assert report.returncode == 0, report.stderr
    for image in ("objective_vs_params", "quick_history", "quick_importance"):
        assert (tmp_path / "review" / f"{image}.png").stat().st_size > 1000

    second = search(run_cli, tmp_path, mnist_dir, "second", "hydra.sweeper.n_trials=5")
    assert second.returncode == 0, second.stderr
    assert "3 of 5 trials finished" in second.stdout
    study = load(tmp_path)
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3, 4]
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in study.trials)
    assert sorted(path.name for path in (tmp_path / "second").iterdir() if path.name.isdigit()) == ["3", "4"]
    assert sorted(path.name for path in (tmp_path / "first").iterdir() if path.name.isdigit()) == ["0", "1", "2"]


def test_failed_and_killed_trials_are_recorded_and_the_search_goes_on(tiny_data: Path, tmp_path: Path) -> None:
    env = command_env(FAKE_EPOCH_SECONDS="0.1")
    command = [*FAKE_RUN, *fake_search_args(tiny_data, searched=("model.filters",)), f"hydra.sweep.dir={tmp_path / 'sweep'}",
               f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", "hydra.sweeper.n_trials=4",
               "hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=none", "training.epochs=30",
               "model.kernel_size=choice(3, 13)", "model.filters=choice(4, 6)", "optimizer.lr=0.003"]
    out, err = (tmp_path / "stdout.txt").open("w+"), (tmp_path / "stderr.txt").open("w+")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)
    # Kill the first job process that starts training, from outside, as an OOM killer would.
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and process.poll() is None:
        for history in (tmp_path / "sweep").glob("*/history.csv"):  # a trial that is training
            os.kill(json.loads((history.parent / "environment.json").read_text())["pid"], signal.SIGKILL)
            killed = int(history.parent.name)
            break
        time.sleep(0.2)
    process.wait(timeout=300)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 1, stderr  # the search finished; not every trial completed
    assert stderr.strip().splitlines()[-1].startswith("error: 3 of 4 jobs failed (first, ")
    assert killed is not None

    study = load(tmp_path)
    states = {trial.number: trial.state for trial in study.trials}
    assert len(states) == 4 and TrialState.RUNNING not in states.values()
    kernel = {trial.number: trial.params["model.kernel_size"] for trial in study.trials}
    for number, state in states.items():
        if number == killed:
            assert state == TrialState.FAIL
            assert "job process died (signal 9, SIGKILL)" in study.trials[number].user_attrs["cnnsweep_error"]
        elif kernel[number] == 13:
            assert state == TrialState.FAIL
            assert "conv block 2 (kernel 13)" in study.trials[number].user_attrs["cnnsweep_error"]
        else:
            assert state == TrialState.COMPLETE
    board = pd.read_csv(tmp_path / "sweep" / "leaderboard.csv").set_index("trial")
    assert board.loc[killed, "status"] == "failed" and "SIGKILL" in board.loc[killed, "error"]
    assert "trial %d failed" % killed in stdout


def test_the_median_pruner_stops_a_trial_below_earlier_trials(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """The sweeps' default pruner: trial 0 (optimizer.lr=0.001; the grid's order under seed 1) finishes;
    trial 1 (lr 1e-7) reports an epoch-1 value below trial 0's at epoch 1 and is stopped there."""
    result = fake_search(run_cli, tmp_path, tiny_data, "median", "hydra.sweeper.n_trials=2", "training.epochs=3",
                         "hydra.sweeper.sampler=grid", "hydra.sweeper.seed=1", "hydra.sweeper.enqueue_baseline=false",
                         "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_options.n_startup_trials=1",
                         "optimizer.lr=choice(0.001, 0.0000001)")
    assert result.returncode == 0, result.stderr
    trials = load(tmp_path).trials
    assert [trial.params["optimizer.lr"] for trial in trials] == [0.001, 1e-7]
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].intermediate_values[1] < trials[0].intermediate_values[1]  # below the median of one
    assert list(trials[1].intermediate_values) == [1]
    pruned = json.loads((tmp_path / "median" / "1" / "metrics.json").read_text())
    assert pruned["test_accuracy"] is None and pruned["test_skipped"].startswith("pruned (hydra.sweeper.test_top_k=3 ")


def test_only_trials_among_the_best_k_when_they_finish_evaluate_the_test_set(run_cli, tiny_data: Path,
                                                                             tmp_path: Path) -> None:
    """One trial at a time, so "better when it finished" is every earlier trial with a higher value."""
    result = fake_search(run_cli, tmp_path, tiny_data, "top", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=1",
                         "hydra.sweeper.test_top_k=2", "hydra.sweeper.pruner=none", "hydra.sweeper.sampler=random",
                         "hydra.sweeper.seed=0", "training.epochs=1")
    assert result.returncode == 0, result.stderr
    values = [trial.value for trial in load(tmp_path).trials]
    board = pd.read_csv(tmp_path / "top" / "leaderboard.csv").set_index("trial")
    evaluated = board["test_accuracy"].notna()
    for number, value in enumerate(values):
        better = sum(earlier > value for earlier in values[:number])
        if better < 2:
            assert evaluated[number] and pd.isna(board.loc[number, "test_skipped"])
        else:
            assert not evaluated[number]
            assert board.loc[number, "test_skipped"].startswith(f"{better} completed trials were better when it")
    best_two = sorted(range(len(values)), key=lambda number: -values[number])[:2]
    assert board.loc[best_two, "test_accuracy"].notna().all()
    assert 0 < board["test_accuracy"].isna().sum() < len(values) - 2  # some skipped, and more than the best two ran


@pytest.mark.parametrize("policy, written", [("auto", False), ("always", True)])
def test_a_trial_nothing_would_resume_writes_no_checkpoints(run_cli, tiny_data: Path, tmp_path: Path, policy: str,
                                                            written: bool) -> None:
    """On launcher=local an interrupted trial is queued again as a new trial, trained from epoch 1, so with
    training.checkpoints=auto its checkpoints would serve nothing: the trial killed after its first epoch
    shows whether one was written (on Slurm, which requeues a trial in place, they are: test_slurm_cluster)."""
    result = run_cli(*fake_search_args(tiny_data, searched=("model.filters",)), "hydra.sweeper.sampler=grid",
                     "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=2", "model.filters=choice(4, 6)",
                     "model.dense_units=16", "optimizer.lr=0.003", "training.epochs=2", f"training.checkpoints={policy}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", command=FAKE_RUN,
                     env={"FAKE_KILL_FILTERS": "6"}, timeout=300)
    assert result.returncode == 1, result.stderr
    trials = {trial.params["model.filters"]: trial for trial in load(tmp_path).trials}
    assert [trials[filters].state for filters in (4, 6)] == [TrialState.COMPLETE, TrialState.FAIL]
    killed = Path(trials[6].user_attrs["cnnsweep_run_dir"])
    assert len(pd.read_csv(killed / "history.csv")) == 1
    assert (killed / "checkpoints" / "epoch-1.json").exists() == written
    completed = json.loads((Path(trials[4].user_attrs["cnnsweep_run_dir"]) / "metrics.json").read_text())
    assert completed["status"] == "completed" and completed["epochs_completed"] == 2
    if written:
        assert "checkpoints_skipped" not in completed
    else:
        assert completed["checkpoints_skipped"].startswith("nothing would resume them: an interrupted trial of this")


def test_a_grid_search_runs_each_point_once_and_marks_the_baselines(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """The composed config (optimizer.lr=0.001) is a point of the grid: it runs once, marked as the baseline,
    and the other point runs too (an enqueued baseline trial would have repeated a point and skipped one)."""
    result = fake_search(run_cli, tmp_path, tiny_data, "grid", "hydra.sweeper.n_trials=2", "training.epochs=1",
                         "hydra.sweeper.sampler=grid", "hydra.sweeper.seed=0", "hydra.sweeper.pruner=none",
                         "optimizer.lr=choice(0.001, 0.0000001)")
    assert result.returncode == 0, result.stderr
    trials = load(tmp_path).trials
    assert sorted(trial.params["optimizer.lr"] for trial in trials) == [1e-7, 0.001]
    assert [trial.params["optimizer.lr"] for trial in trials if trial.user_attrs.get("cnnsweep_baseline")] == [0.001]
    board = pd.read_csv(tmp_path / "grid" / "leaderboard.csv")
    assert list(board.loc[board["baseline"] == True, "optimizer.lr"]) == [0.001]  # noqa: E712


def test_a_hopeless_trial_is_pruned(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = fake_search(run_cli, tmp_path, tiny_data, "prune", "hydra.sweeper.n_trials=2", "training.epochs=3",
                    "hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=threshold",
                    "~hydra.sweeper.pruner_options.n_startup_trials",
                    "+hydra.sweeper.pruner_options.lower=0.3",
                    "optimizer.lr=choice(0.01, 0.0000001)")
    assert result.returncode == 0, result.stderr
    study = load(tmp_path)
    by_lr = {trial.params["optimizer.lr"]: trial for trial in study.trials}
    assert by_lr[1e-7].state == TrialState.PRUNED and by_lr[0.01].state == TrialState.COMPLETE
    assert list(by_lr[1e-7].intermediate_values) == [1]  # stopped after its first epoch
    board = pd.read_csv(tmp_path / "prune" / "leaderboard.csv").set_index("trial")
    pruned = board.loc[by_lr[1e-7].number]
    assert pruned["status"] == "pruned" and pruned["epochs_completed"] == 1
    assert board.loc[by_lr[0.01].number, "epochs_completed"] == 3


def test_a_killed_sweep_resumes_without_losing_or_repeating_trials(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    common = [*fake_search_args(tiny_data), f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
              "hydra.sweeper.n_trials=3"]
    sweeper = subprocess.Popen([*FAKE_RUN, *common, f"hydra.sweep.dir={tmp_path / 'a'}", "training.epochs=40"],
                               cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="0.05"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "a" / "1" / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(sweeper.pid, signal.SIGKILL)  # trial 0 is done, trial 1 is training
    sweeper.wait()
    before = load(tmp_path).trials
    assert [trial.state for trial in before[:2]] == [TrialState.COMPLETE, TrialState.RUNNING]

    result = run_cli(*common, f"hydra.sweep.dir={tmp_path / 'b'}", "training.epochs=2", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr
    trials = load(tmp_path).trials
    assert TrialState.RUNNING not in [trial.state for trial in trials]
    assert trials[0].state == TrialState.COMPLETE and trials[0].datetime_complete == before[0].datetime_complete
    assert trials[1].state == TrialState.FAIL
    rerun = [trial for trial in trials if trial.user_attrs.get("cnnsweep_requeued_from") == 1]
    assert len(rerun) == 1 and rerun[0].params == trials[1].params and rerun[0].state == TrialState.COMPLETE
    finished = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert len(finished) == 3  # the study's total, with the interrupted trial run again once


def test_augmentation_is_searchable_like_any_key(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = fake_search(run_cli, tmp_path, tiny_data, "augmented", "augment=light", "augment.rotation=interval(0, 0.1)",
                         "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    rotations = [trial.params["augment.rotation"] for trial in load(tmp_path).trials]
    assert len(rotations) == 3 and all(0 <= value <= 0.1 for value in rotations) and len(set(rotations)) == 3
    for trial in load(tmp_path).trials:  # each job trained with the rotation its trial drew
        saved = OmegaConf.load(Path(trial.user_attrs["cnnsweep_run_dir"]) / ".hydra" / "config.yaml")
        assert saved.augment.rotation == trial.params["augment.rotation"] and saved.augment.zoom == 0.08


def test_a_warm_started_search_runs_the_earlier_best_trials_first(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """A new study warm-started from an earlier search's folder: after its baseline, the earlier study's two
    best completed trials whose learning rate lies in the new, narrower range run first, marked in the
    study, the run records and the leaderboard."""
    first = fake_search(run_cli, tmp_path, tiny_data, "first", "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner=none")
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = [trial for trial in load(tmp_path).trials if trial.state == TrialState.COMPLETE]
    fitting = sorted((trial for trial in earlier if 0.001 <= trial.params["optimizer.lr"] <= 0.01),
                     key=lambda trial: -trial.value)[:2]
    assert len(fitting) == 2 and len(fitting) < len(earlier), "the narrower range leaves some earlier trials out"

    second = fake_search(run_cli, tmp_path, tiny_data, "second", "hydra.sweeper.study_name=warm",
                         "hydra.sweeper.n_trials=4", "optimizer.lr=tag(log, interval(0.001, 0.01))",
                         f"hydra.sweeper.warm_start.source={tmp_path / 'first'}", "hydra.sweeper.warm_start.best=2")
    assert second.returncode == 0, second.stderr[-3000:]
    trials = load(tmp_path, "warm").trials
    assert trials[0].user_attrs.get("cnnsweep_baseline") is True
    assert [trial.params for trial in trials[1:3]] == [trial.params for trial in fitting]
    assert [trial.user_attrs["cnnsweep_warm_start"] for trial in trials[1:3]] == [f"quick#{t.number}" for t in fitting]
    assert "cnnsweep_warm_start" not in trials[3].user_attrs
    board = pd.read_csv(tmp_path / "second" / "leaderboard.csv").set_index("trial")
    assert board.loc[[1, 2], "warm_start"].tolist() == [f"quick#{t.number}" for t in fitting]
    assert board.loc[[0, 3], "warm_start"].isna().all()


def test_a_warm_start_source_that_is_no_study_is_one_line(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = fake_search(run_cli, tmp_path, tiny_data, "cold", f"hydra.sweeper.warm_start.source={tmp_path / 'none'}")
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: hydra.sweeper.warm_start.source={tmp_path / 'none'}: no such folder, and not a storage URL; name an "
        "earlier search's folder or its storage (sqlite:///..., postgresql+psycopg://...)"]


def test_a_multi_objective_search_is_not_pruned_and_says_so(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """As README promises: Optuna prunes single-objective studies only, so the median pruner that stops the
    hopeless trial above (test_the_median_pruner_stops_a_trial_below_earlier_trials) lets it finish here,
    and the search's first line says the pruner is off."""
    result = fake_search(run_cli, tmp_path, tiny_data, "pareto", "hydra.sweeper.n_trials=2", "training.epochs=3",
                         "hydra.sweeper.sampler=grid", "hydra.sweeper.seed=1", "hydra.sweeper.enqueue_baseline=false",
                         "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_options.n_startup_trials=1",
                         "hydra.sweeper.metric=[val_accuracy,params]", "hydra.sweeper.direction=[maximize,minimize]",
                         "optimizer.lr=choice(0.001, 0.0000001)")
    assert result.returncode == 0, result.stderr
    assert "pruner none (multi-objective)" in result.stdout + result.stderr
    trials = load(tmp_path).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert all(len(trial.values) == 2 and not trial.intermediate_values for trial in trials)
