"""Compile, fit and evaluate a model, keeping history.csv current after every epoch.

Imported only after `hardware.configure`, because importing Keras starts TensorFlow.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np

from cnnsweep.config import OptimizerConfig, RunConfig
from cnnsweep.data import Dataset
from cnnsweep.errors import ConfigError, TrainingError
from cnnsweep.model import build_model
from cnnsweep.records import HISTORY_FILE, MODEL_FILE, write_history

log = logging.getLogger(__name__)

OPTIMIZER_CLASSES: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


@dataclass
class TrainingResult:
    metrics: dict[str, Any]  # the metrics.json fields this run measured
    model: keras.Model


def build_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    try:
        return OPTIMIZER_CLASSES[config.name](learning_rate=config.lr, **config.options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer={config.name}: {str(error).splitlines()[0]}") from error


class EpochRecorder(keras.callbacks.Callback):
    """Times each epoch, rewrites history.csv, and reports the row to `on_epoch`."""

    def __init__(self, history_path: Path, on_epoch: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.history_path = history_path
        self.on_epoch = on_epoch
        self.rows: list[dict[str, Any]] = []
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        seconds = time.perf_counter() - self._epoch_started
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}}
        row["seconds"] = seconds
        self.rows.append(row)
        write_history(self.history_path, self.rows)
        self.on_epoch(row)


class NanLossGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and remembers where."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.stopped_at: Optional[tuple[int, int]] = None  # (epoch, batch), both 1-based

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (self.epoch, batch + 1)
            self.model.stop_training = True


def train(
    config: RunConfig,
    data: Dataset,
    run_dir: Path,
    show_progress_bar: bool,
    on_epoch: Callable[[dict[str, Any]], None],
) -> TrainingResult:
    """Fit and evaluate; raise TrainingError (after history.csv is written) if the loss went NaN."""
    model = build_model(config.model, data.input_shape, data.num_classes)
    model.compile(
        optimizer=build_optimizer(config.optimizer),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.hardware.jit_compile,
    )
    recorder = EpochRecorder(run_dir / HISTORY_FILE, on_epoch)
    nan_guard = NanLossGuard()
    callbacks: list[keras.callbacks.Callback] = [nan_guard, recorder]
    if config.training.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    validation = (data.x_val, data.y_val) if data.x_val is not None else None

    started = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=config.training.batch_size,
        epochs=config.training.epochs,
        shuffle=config.training.shuffle,
        validation_data=validation,
        callbacks=callbacks,
        verbose=1 if show_progress_bar else 0,
    )
    train_seconds = time.perf_counter() - started
    if nan_guard.stopped_at is not None:
        epoch, batch = nan_guard.stopped_at
        raise TrainingError(
            f"loss became NaN at epoch {epoch}, batch {batch}; lower optimizer.lr "
            f"(now {config.optimizer.lr:g}) or check the data for extreme values"
        )

    test = model.evaluate(
        data.x_test, data.y_test, batch_size=config.training.batch_size, verbose=0, return_dict=True
    )
    last = recorder.rows[-1]
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "params": int(model.count_params()),
        "epochs_completed": len(recorder.rows),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in recorder.rows])),
    }
    save_model(model, run_dir / MODEL_FILE)
    return TrainingResult(metrics=metrics, model=model)


def save_model(model: keras.Model, path: Path) -> None:
    """Save under a temporary name, then rename: a crash never leaves a half-written model.keras."""
    partial = path.with_name(f".partial.{path.name}")
    model.save(partial)
    os.replace(partial, path)
