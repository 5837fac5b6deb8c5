"""A TensorFlow-free stand-in for src/run.py, for the fast test tier.

The same conf/, Hydra plugins, launchers, searches and task (cnnsweep.app.run_app, cnnsweep.run.task.run_task: config checks,
data loading, run records, pruning reports, failure handling); only the Trainer is replaced, by
arithmetic: validation accuracy rises each epoch towards a ceiling that depends on the config
(best near optimizer.lr=0.003, model.filters=16, model.dense_units=32), so searches have something to
find, pruners something to cut, and every result is exactly reproducible.

Each epoch takes FAKE_EPOCH_SECONDS (default 0.02) so tests can kill a job mid-run; optimizer.lr >= 1
gives a NaN loss, as a real run would; a run whose model.filters equals FAKE_KILL_FILTERS kills its own
process with SIGKILL after its first epoch, as the kernel's out-of-memory killer would; one whose
model.filters equals FAKE_DEAF_FILTERS ignores SIGINT, as a run stuck in native code does. Like the Keras
trainer it checkpoints after every epoch through cnnsweep.run.checkpoints (a state file without a model:
the epoch is all the state arithmetic has) and removes its checkpoints when it ends; with
training.resume=true a run continues after its newest readable checkpoint's epoch, keeping the history
rows up to it, and without one it refuses (a single run) or starts again (a sweep's job), as the Keras
trainer does.

    uv run python tests/fake_run.py -m sweeps=quick dataset.path=tiny.npz dataset.val_size=16
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cnnsweep.app import run_app
from cnnsweep.run.config import CnnConfig, RunConfig
from cnnsweep.run.data import Dataset
from cnnsweep.errors import TrainingError, run_with_one_line_errors
from cnnsweep.run.slot import launcher_assignment, thread_counts
from cnnsweep.run.model import conv_widths
from cnnsweep.project import CONF_DIR
from cnnsweep.run.checkpoints import Checkpoint, Checkpoints, ResumePoint
from cnnsweep.run.records import HISTORY_FILE, write_history
from cnnsweep.run.trainer import EpochCallback, TestDecision, TrainingResult

EPOCH_SECONDS_ENV = "FAKE_EPOCH_SECONDS"
KILL_FILTERS_ENV = "FAKE_KILL_FILTERS"
DEAF_FILTERS_ENV = "FAKE_DEAF_FILTERS"


def ceiling(config: RunConfig) -> float:
    """The accuracy this config approaches: 0.99 at the sweet spot, lower the further away."""
    filters, dense_units = getattr(config.model, "filters", 16), getattr(config.model, "dense_units", 32)
    distance = (0.2 * abs(math.log10(config.optimizer.lr) + 2.5) + 0.002 * abs(filters - 16)
                + 0.001 * abs(dense_units - 32))
    return max(0.1, 0.99 - distance) - 0.001 * (config.seed % 7)


class ArithmeticTrainer:
    def prepare(self, config: RunConfig) -> dict[str, Any]:
        if os.environ.get(DEAF_FILTERS_ENV) == str(getattr(config.model, "filters", None)):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        intra_op, inter_op = thread_counts(config.hardware)
        return {"device": "fake", **launcher_assignment(), "intra_op_threads": intra_op,
                "inter_op_threads": inter_op}

    def train(self, config: RunConfig, data: Dataset, run_dir: Path, show_progress_bar: bool,
              on_epoch: EpochCallback, restart_if_unresumable: bool, skip_test: TestDecision,
              write_checkpoints: bool) -> TrainingResult:
        epoch_seconds = float(os.environ.get(EPOCH_SECONDS_ENV, "0.02"))
        top = ceiling(config)
        checkpoints = Checkpoints(run_dir)
        point = ResumePoint(0, [])
        if config.training.resume:
            point = checkpoints.resume_point(load_model_file, restart_if_unresumable)
        rows, stopped_early = list(point.rows), False
        started = time.perf_counter()
        for epoch in range(point.epoch + 1, config.training.epochs + 1):
            time.sleep(epoch_seconds)
            accuracy = top * (1 - 0.5 ** epoch)
            loss = math.nan if config.optimizer.lr >= 1 else 1 - accuracy
            row = {"epoch": epoch, "accuracy": accuracy, "loss": loss}
            if data.x_val is not None:
                row.update(val_accuracy=accuracy, val_loss=loss)
            row["seconds"] = epoch_seconds
            rows.append(row)
            write_history(run_dir / HISTORY_FILE, rows)
            stop = not math.isnan(loss) and on_epoch(row)  # the record, then the checkpoint, as Keras' callbacks
            if write_checkpoints:
                checkpoints.save(epoch, {}, lambda path: path.write_text(json.dumps({"epoch": epoch})))
            if os.environ.get(KILL_FILTERS_ENV) == str(getattr(config.model, "filters", None)):
                os.kill(os.getpid(), signal.SIGKILL)
            if math.isnan(loss):
                raise TrainingError(f"loss became NaN at epoch {epoch}, batch 1; lower optimizer.lr "
                                    f"(now {config.optimizer.lr:g}) or check the data for extreme values")
            if stop:
                stopped_early = True
                break
        checkpoints.remove()  # the run's end state is recorded: nothing to resume
        last = rows[-1]
        seconds = time.perf_counter() - started
        widths = conv_widths(config.model) if isinstance(config.model, CnnConfig) else [0]
        metrics = {
            "test_accuracy": None, "test_loss": None,
            "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
            "params": sum(widths) * 9 + getattr(config.model, "dense_units", 0) * 11,
            "epochs_completed": len(rows), "train_seconds": seconds,
            "seconds_per_epoch": seconds / len(rows), "resumed_after_epoch": point.epoch or None,
            **({"restarted": point.restarted} if point.restarted else {}),
        }
        skipped = skip_test(metrics, stopped_early)
        if skipped is None:
            metrics.update(test_accuracy=last["accuracy"], test_loss=last["loss"], eval_seconds=0.0)
        else:
            metrics["test_skipped"] = skipped
        return TrainingResult(metrics=metrics, stopped_early=stopped_early)


def load_model_file(checkpoint: Checkpoint) -> None:
    """The arithmetic trainer's "model" file names its epoch; a damaged one raises, as Keras' loader does."""
    saved = json.loads(checkpoint.model_path.read_text())["epoch"]
    if saved != checkpoint.epoch:
        raise ValueError(f"the model file holds epoch {saved}, not {checkpoint.epoch}")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def fake_run(cfg: DictConfig) -> float:
    return run_app(cfg, ArithmeticTrainer())


if __name__ == "__main__":
    run_with_one_line_errors(fake_run)
