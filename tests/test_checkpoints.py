"""The last two checkpoints, and no silent start-over: an unreadable newest checkpoint falls back to the
one before; with none usable a single run refuses with one line naming the files, and a sweep's job
starts again from epoch 1, saying so and keeping the earlier history beside. The checkpoint logic is
TensorFlow-free, so it is tested here directly and through tests/fake_run.py (the Keras trainer's own
resume, fallback included, is tests/test_resume.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cnnsweep.errors import ConfigError
from cnnsweep.run.checkpoints import Checkpoint, Checkpoints, skips_checkpoints
from cnnsweep.run.config import CheckpointPolicy
from cnnsweep.run.records import HISTORY_FILE, read_history, write_history
from conftest import FAKE_RUN, RERUN, error_lines, kill_once_checkpointed

FAKE_SETTINGS = ["training.epochs=6", "dataset.val_size=32", "model.filters=8"]
SLOW_EPOCHS = {"FAKE_EPOCH_SECONDS": "1"}  # time to kill the run between two epochs


def trained(run_dir: Path, epochs: int) -> Checkpoints:
    """A run folder after `epochs` epochs: history.csv and a checkpoint per epoch whose model file names it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(run_dir)
    for epoch in range(1, epochs + 1):
        write_history(run_dir / HISTORY_FILE, [{"epoch": number, "loss": 1 / number} for number in range(1, epoch + 1)])
        checkpoints.save(epoch, {"note": epoch}, lambda path: path.write_text(json.dumps({"epoch": epoch})))
    return checkpoints


def load(checkpoint: Checkpoint) -> None:
    assert json.loads(checkpoint.model_path.read_text())["epoch"] == checkpoint.epoch


@pytest.mark.parametrize("policy, trial_requeued, written", [
    ("auto", None, True),  # a single run or a grid's job: rerun --resume, a continued sweep
    ("auto", True, True),  # a search's trial on Slurm: requeued in its own folder
    ("auto", False, False),  # a search's trial on launcher=local|parallel: queued again as a new trial
    ("always", False, True),
    ("always", None, True),
    ("never", None, False),
    ("never", True, False),
])
def test_checkpoints_are_written_where_something_would_resume_from_them(policy: str, trial_requeued, written) -> None:
    reason = skips_checkpoints(CheckpointPolicy(policy), trial_requeued)
    assert (reason is None) == written
    if policy == "never":
        assert reason == "training.checkpoints=never"


def test_only_the_last_two_checkpoints_are_kept(tmp_path: Path) -> None:
    checkpoints = trained(tmp_path, 4)
    assert checkpoints.epochs() == [4, 3]
    assert sorted(path.name for path in checkpoints.folder.iterdir()) == [
        "epoch-3.json", "epoch-3.keras", "epoch-4.json", "epoch-4.keras"]


def test_a_checkpoint_is_complete_only_once_its_state_file_is_written(tmp_path: Path) -> None:
    checkpoints = trained(tmp_path, 2)
    checkpoints.model_path(3).write_text("a model whose process was killed before its state file")
    assert checkpoints.epochs() == [2, 1]
    assert checkpoints.resume_point(load, restart=False).epoch == 2


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path, caplog) -> None:
    checkpoints = trained(tmp_path, 3)
    checkpoints.model_path(3).write_bytes(b"\x00" * 10)  # damaged
    with caplog.at_level(logging.WARNING):
        point = checkpoints.resume_point(load, restart=False)
    assert (point.epoch, [row["epoch"] for row in point.rows], point.restarted) == (2, [1, 2], None)
    assert f"the checkpoint after epoch 3 cannot be used ({checkpoints.model_path(3)}: " in caplog.text
    assert "resuming from the checkpoint after epoch 2, the one before the newest" in caplog.text


def test_a_checkpoint_ahead_of_history_csv_is_not_used(tmp_path: Path) -> None:
    checkpoints = trained(tmp_path, 3)
    write_history(tmp_path / HISTORY_FILE, read_history(tmp_path / HISTORY_FILE)[:2])  # epoch 3's row lost
    assert checkpoints.resume_point(load, restart=False).epoch == 2


def test_with_no_usable_checkpoint_a_single_run_refuses_naming_each_file(tmp_path: Path) -> None:
    checkpoints = trained(tmp_path, 3)
    for epoch in (3, 2):
        checkpoints.model_path(epoch).write_text("garbage")
    history = (tmp_path / HISTORY_FILE).read_bytes()
    with pytest.raises(ConfigError) as refused:
        checkpoints.resume_point(load, restart=False)
    message = str(refused.value)
    assert message.startswith(f"cannot resume {tmp_path}: {checkpoints.model_path(3)}: ")
    assert f"; {checkpoints.model_path(2)}: " in message and message.endswith(
        "; rerun it without --resume to train it again from epoch 1 in a new folder")
    assert "\n" not in message and (tmp_path / HISTORY_FILE).read_bytes() == history
    assert checkpoints.epochs() == [3, 2]  # nothing touched


def test_with_no_usable_checkpoint_a_sweeps_job_starts_again_and_keeps_the_old_history(tmp_path: Path) -> None:
    checkpoints = trained(tmp_path, 2)
    for epoch in (2, 1):
        checkpoints.state_path(epoch).write_text("{")
    history = (tmp_path / HISTORY_FILE).read_bytes()
    point = checkpoints.resume_point(load, restart=True)
    assert (point.epoch, point.rows) == (0, [])
    assert point.restarted.startswith(f"cannot resume ({checkpoints.model_path(2)}: ")
    assert point.restarted.endswith("; trained again from epoch 1, the earlier history kept as "
                                    "history.before-restart-1.csv")
    assert (tmp_path / "history.before-restart-1.csv").read_bytes() == history
    assert not (tmp_path / HISTORY_FILE).exists() and checkpoints.epochs() == []  # no damaged file left to pick


def test_a_job_that_never_finished_an_epoch_simply_starts(tmp_path: Path) -> None:
    point = Checkpoints(tmp_path).resume_point(load, restart=True)
    assert (point.epoch, point.restarted) == (0, None) and list(tmp_path.iterdir()) == []


def test_a_run_with_damaged_checkpoints_is_refused_alone_and_restarted_in_a_sweep(run_cli, tiny_data: Path,
                                                                                tmp_path: Path) -> None:
    """End to end on the fake trainer: both checkpoints of a killed run damaged, `training.resume=true` as a
    single run refuses with one line and changes nothing; as a sweep's job (what a requeue or a continued
    sweep runs) the same folder trains again from epoch 1, saying so, the old history kept beside."""
    run_dir = tmp_path / "runs" / "killed"
    kill_once_checkpointed([*FAKE_RUN, *FAKE_SETTINGS, f"dataset.path={tiny_data}"], run_dir, 2, tmp_path, SLOW_EPOCHS)
    checkpoints = Checkpoints(run_dir)
    for epoch in checkpoints.epochs():
        checkpoints.model_path(epoch).write_text("damaged")
    history = (run_dir / HISTORY_FILE).read_bytes()
    settings = [*FAKE_SETTINGS, f"dataset.path={tiny_data}", "training.resume=true"]

    alone = run_cli(*settings, f"hydra.run.dir={run_dir}", command=FAKE_RUN)
    assert alone.returncode == 2
    [line] = error_lines(alone.stderr)
    assert line.startswith(f"error: cannot resume {run_dir}: {checkpoints.model_path(checkpoints.epochs()[0])}: ")
    assert (run_dir / HISTORY_FILE).read_bytes() == history

    in_sweep = run_cli("-m", *settings, f"hydra.sweep.dir={run_dir.parent}", f"hydra.sweep.subdir={run_dir.name}",
                       command=FAKE_RUN)
    assert in_sweep.returncode == 0, in_sweep.stderr[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["resumed_after_epoch"] is None
    assert record["restarted"].endswith("trained again from epoch 1, the earlier history kept as "
                                        "history.before-restart-1.csv")
    assert "cannot resume (" in in_sweep.stdout + in_sweep.stderr  # the log says so too
    assert (run_dir / "history.before-restart-1.csv").read_bytes() == history
    assert [row["epoch"] for row in read_history(run_dir / HISTORY_FILE)] == [1, 2, 3, 4, 5, 6]


def test_rerun_resume_refuses_a_run_without_a_checkpoint(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    kill_once_checkpointed([*FAKE_RUN, *FAKE_SETTINGS, f"dataset.path={tiny_data}"], run_dir, 1, tmp_path, SLOW_EPOCHS)
    Checkpoints(run_dir).remove()  # as a run killed in its first epoch, or on a full disk, has none
    result = run_cli(str(run_dir), "--resume", command=RERUN)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"error: cannot resume {run_dir}: no checkpoint in {run_dir / 'checkpoints'} (the run ended before its "
        "first epoch did, or wrote none); rerun it without --resume to train it again from epoch 1 in a new folder"]
