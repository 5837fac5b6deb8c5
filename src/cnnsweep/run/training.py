"""Compile, fit and evaluate a model on any Keras backend, keeping history.csv current after every epoch.

Imported only after `hardware.select_backend`, because Keras fixes its backend when first imported.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import keras
import numpy as np

from cnnsweep.errors import ConfigError, DiskFull, TrainingError, first_line
from cnnsweep.run import hardware
from cnnsweep.run.backends import Placement
from cnnsweep.run.backends.tensorflow import array_pipeline, batch_pipeline
from cnnsweep.run.batches import Images, InOrderBatches, TrainingBatches, batch_count, evaluation_batches
from cnnsweep.run.checkpoints import Checkpoint, Checkpoints, ResumePoint
from cnnsweep.run.config import LrSchedule, OptimizerConfig, RunConfig, TrainingConfig
from cnnsweep.run.data import Dataset
from cnnsweep.run.model import build_model
from cnnsweep.run.records import HISTORY_FILE, MODEL_FILE, disk_full_errno, save_model, write_history
from cnnsweep.run.stops import raise_pending_stop
from cnnsweep.run.streaming import StreamedImages
from cnnsweep.run.tensorboard_hparams import TENSORBOARD_DIR, write_hparams
from cnnsweep.run.timings import Stopwatch
from cnnsweep.run.trainer import TestDecision, TrainingResult, always_test

log = logging.getLogger(__name__)

OPTIMIZER_CLASSES: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def learning_rate(lr: float, training: TrainingConfig, steps_per_epoch: int) -> Any:
    """optimizer.lr, or a schedule peaking at it (training.lr_schedule)."""
    if training.lr_schedule is LrSchedule.constant:
        return lr
    warmup = round(training.warmup_epochs * steps_per_epoch)
    total = training.epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10 if warmup else lr, decay_steps=total - warmup,
        warmup_target=lr if warmup else None, warmup_steps=warmup,
    )


def build_optimizer(config: OptimizerConfig, rate: Any = None) -> keras.optimizers.Optimizer:
    try:
        return OPTIMIZER_CLASSES[config.name](learning_rate=config.lr if rate is None else rate, **config.options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer={config.name}: {first_line(error)}") from error


class BatchSizes(NamedTuple):
    """Global batch sizes: training's decides the updates; evaluation's only the speed of validation and test."""

    train: int
    evaluation: int


class EpochRecorder(keras.callbacks.Callback):
    """Times each epoch, and within it its training and its validation (Keras validates inside the epoch,
    between on_test_begin and on_test_end), rewrites history.csv, and hands the row to `on_epoch`, which
    may stop training."""

    def __init__(self, history_path: Path, on_epoch: Callable[[dict[str, Any]], bool],
                 rows: Optional[list[dict[str, Any]]] = None) -> None:
        super().__init__()
        self.history_path = history_path
        self.on_epoch = on_epoch
        self.rows: list[dict[str, Any]] = list(rows or [])  # a resumed run's earlier epochs
        self.phases: list[tuple[int, float, float]] = []  # this process's epochs: (epoch, training, validation) s
        self.stopped_early = False
        self._epoch_started = self._validation_started = self._validation_ended = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self._epoch_started = time.perf_counter()
        self._validation_started = self._validation_ended = 0.0

    def on_test_begin(self, logs: Optional[dict[str, Any]] = None) -> None:
        self._validation_started = time.perf_counter()

    def on_test_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        self._validation_ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        ended = time.perf_counter()
        training_ended = self._validation_started or ended
        self.phases.append((epoch + 1, training_ended - self._epoch_started,
                            self._validation_ended - self._validation_started))
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}}
        row["seconds"] = ended - self._epoch_started
        self.rows.append(row)
        write_history(self.history_path, self.rows)
        if self.on_epoch(row) and epoch + 1 < self.params["epochs"]:
            self.stopped_early = True
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch (once history.csv has it): the model with its optimizer state and the state of its
    random generators and the backend's, as the run's newest checkpoint (cnnsweep.run.checkpoints), so a
    killed run can continue from there (training.resume)."""

    def __init__(self, checkpoints: Checkpoints, saving: bool = True) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.saving = saving
        self.seconds: dict[int, float] = {}  # epoch -> seconds its checkpoint took

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        if not self.saving:
            return
        started = time.perf_counter()
        try:
            self.checkpoints.save(epoch + 1, {"random_state": random_state(self.model),
                                              "backend_random_state": hardware.global_random_state()},
                                  lambda path: save_model(self.model, path))
            self.seconds[epoch + 1] = time.perf_counter() - started
        except (DiskFull, OSError) as error:  # a checkpoint is a convenience: on a full disk, training goes on
            if not isinstance(error, DiskFull) and disk_full_errno(error) is None:
                raise
            self.checkpoints.remove()  # never one epoch's model beside another epoch's record
            self.saving = False
            log.warning("checkpoint after epoch %d not saved (%s); training goes on without checkpoints",
                        epoch + 1, error)


def checkpoint_loader(model: keras.Model, backend_state: dict[str, Any]) -> Callable[[Checkpoint], None]:
    """Loads a checkpoint into `model` (compiled_model's, its optimizer built): weights, optimizer state, the
    model's random-generator state; the backend's own generators' state goes to `backend_state`, for
    BackendGeneratorsRestore."""

    def load(checkpoint: Checkpoint) -> None:
        model.load_weights(checkpoint.model_path)
        saved = checkpoint.state.get("random_state", {})
        for variable in model.variables:  # load_weights leaves the dropout generators' counters at 0
            if variable.path in saved:
                variable.assign(np.array(saved[variable.path], dtype=variable.dtype))
        backend_state.clear()
        backend_state.update(checkpoint.state.get("backend_random_state") or {})

    return load


def random_state(model: keras.Model) -> dict[str, list[int]]:
    """The state of each random generator of the model (Dropout's), which .keras files do not keep."""
    return {variable.path: np.asarray(variable.numpy()).tolist() for variable in model.variables
            if "seed_generator_state" in variable.path}


class BackendGeneratorsRestore(keras.callbacks.Callback):
    """A resumed run's backend generators (PyTorch's), set as its first epoch begins: each epoch's data
    loader draws from them as it starts, as the uninterrupted run's did after the same state."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state: Optional[dict[str, Any]] = state

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        if self.state is not None:
            hardware.restore_global_random_state(self.state)
            self.state = None


class FollowEpochs(keras.callbacks.Callback):
    """Points the training batches at the epoch fit is about to read (TrainingBatches), and gives a
    TensorFlow pipeline over arrays that epoch's order (`set_order`)."""

    def __init__(self, batches: TrainingBatches, set_order: Optional[Callable[[np.ndarray], Any]]) -> None:
        super().__init__()
        self.batches, self.set_order = batches, set_order

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self.batches.epoch = epoch
        if self.set_order is not None:
            self.set_order(self.batches.order())


class NanLossGuard(keras.callbacks.Callback):
    """Stops training at the first call whose loss is NaN or infinite, and remembers where: one batch, or the
    batches of one call when each call runs several (training.steps_per_execution), as Keras reports the loss
    only at a call's end."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.last_batch = 0  # the last batch the previous call of this epoch ran, 1-based
        self.stopped_at: Optional[str] = None  # "at epoch 2, batch 7" or "at epoch 2, in batches 1-16"

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self.epoch, self.last_batch = epoch + 1, 0

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        first, self.last_batch = self.last_batch + 1, batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            batches = f"batch {first}" if first == self.last_batch else f"in batches {first}-{self.last_batch}"
            self.stopped_at = f"at epoch {self.epoch}, {batches}"
            self.model.stop_training = True


class PendingStop(keras.callbacks.Callback):
    """Raises a stop whose signal handler's raise was lost (cnnsweep.run.stops): at the next call's end, or
    at an epoch's end once the callbacks before it have recorded and checkpointed the epoch."""

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        raise_pending_stop()

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        raise_pending_stop()


def train(
    config: RunConfig,
    data: Dataset,
    run_dir: Path,
    show_progress_bar: bool,
    on_epoch: Callable[[dict[str, Any]], bool],
    restart_if_unresumable: bool = False,
    skip_test: TestDecision = always_test,
    placement: Optional[Placement] = None,
    write_checkpoints: bool = True,
) -> TrainingResult:
    """Compile (or resume), fit and finish; raise TrainingError (after history.csv is written) if the loss
    went NaN.

    `on_epoch` gets each epoch's history row and returns True to stop training there. With
    training.resume, a run without a usable checkpoint refuses, or with `restart_if_unresumable` (a sweep's
    job) starts again from epoch 1 (cnnsweep.run.checkpoints). The model is built in `placement`'s scope
    (default: from hardware.distribution), one batch per replica per step.
    """
    placement = placement or hardware.placement(config.hardware)
    batch_size = config.training.batch_size * placement.replicas
    eval_batch_size = (config.training.eval_batch_size or config.training.batch_size) * placement.replicas
    checkpoints = Checkpoints(run_dir)
    stopwatch = Stopwatch()
    with stopwatch.measure("build"):
        model = compiled_model(config, data, placement, batch_size)
        point, backend_state = ResumePoint(0, []), {}
        if config.training.resume:
            point = resume_point(model, checkpoints, placement, restart_if_unresumable, backend_state)
        if point.restarted is not None:  # a failed load may have left part of a damaged checkpoint in the model
            keras.utils.set_random_seed(config.seed)
            model = compiled_model(config, data, placement, batch_size)
    recorder = EpochRecorder(run_dir / HISTORY_FILE, on_epoch, point.rows)
    checkpointer = EpochCheckpoint(checkpoints, saving=write_checkpoints)
    callbacks: list[keras.callbacks.Callback] = [recorder, checkpointer]
    if backend_state and point.restarted is None:
        callbacks.append(BackendGeneratorsRestore(backend_state))
    train_seconds = fit(model, config, data, run_dir, BatchSizes(batch_size, eval_batch_size), point.epoch, callbacks,
                        show_progress_bar)
    for epoch, training_seconds, validation_seconds in recorder.phases:
        stopwatch.epoch(epoch, train=training_seconds, validate=validation_seconds,
                        checkpoint=checkpointer.seconds.get(epoch, 0.0))
    metrics = {**measured(model, recorder.rows, train_seconds),
               "replicas": placement.replicas, "global_batch_size": batch_size,
               "resumed_after_epoch": point.epoch or None,
               **({"restarted": point.restarted} if point.restarted else {})}
    skipped = skip_test(metrics, recorder.stopped_early)
    if skipped is None:
        with stopwatch.measure("test"):
            metrics.update(evaluate_test(model, data, eval_batch_size))
    else:
        metrics["test_skipped"] = skipped
    peak = hardware.peak_gpu_memory()
    if peak is not None:
        metrics["gpu_peak_bytes"] = peak
    with stopwatch.measure("save"):
        finish(model, config, run_dir, metrics)
        checkpoints.remove()  # model.keras holds the end state now
    metrics["timings"] = stopwatch.as_dict()
    return TrainingResult(metrics=metrics, stopped_early=recorder.stopped_early)


def compiled_model(config: RunConfig, data: Dataset, placement: Placement, batch_size: int) -> keras.Model:
    """The configured model, compiled in the placement's scope with its optimizer and learning-rate schedule."""
    steps_per_epoch = batch_count(len(data.x_train), batch_size)
    with placement.scope():
        model = build_model(config.model, data.input_shape, data.num_classes, config.augment)
        model.compile(
            optimizer=build_optimizer(config.optimizer,
                                      learning_rate(config.optimizer.lr, config.training, steps_per_epoch)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=config.hardware.jit_compile,
            steps_per_execution=config.training.steps_per_execution,
        )
        # The optimizer's variables made now, eagerly: made while fit traces its first step, they cost each
        # new model (each trial of a search) more time; and load_weights restores a checkpoint's optimizer
        # state only into a built optimizer
        model.optimizer.build(model.trainable_variables)
    return model


def resume_point(model: keras.Model, checkpoints: Checkpoints, placement: Placement, restart: bool,
                 backend_state: dict[str, Any]) -> ResumePoint:
    """training.resume: the newest usable checkpoint loaded into `model` (the backend's generators' state
    into `backend_state`); the epochs it holds and their rows."""
    with placement.scope():
        point = checkpoints.resume_point(checkpoint_loader(model, backend_state), restart)
    if point.epoch:
        log.info("resuming after epoch %d from %s", point.epoch, checkpoints.model_path(point.epoch))
    return point


def fit(model: keras.Model, config: RunConfig, data: Dataset, run_dir: Path, batch_sizes: BatchSizes, first_epoch: int,
        callbacks: list[keras.callbacks.Callback], show_progress_bar: bool) -> float:
    """Train from `first_epoch` to training.epochs; returns the seconds it took. A NaN loss stops training
    at its batch and raises TrainingError."""
    training = config.training
    nan_guard = NanLossGuard()
    callbacks = [nan_guard, *callbacks]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / TENSORBOARD_DIR)))
    batches = TrainingBatches(data.x_train, data.y_train, batch_sizes.train, config.seed, training.shuffle, first_epoch)
    batches_input, set_order = training_input(batches)
    callbacks = [FollowEpochs(batches, set_order), *callbacks, PendingStop()]
    validation = (evaluation_input(data.x_val, data.y_val, batch_sizes.evaluation)
                  if data.x_val is not None and data.y_val is not None else None)
    started = time.perf_counter()
    model.fit(
        batches_input,
        epochs=training.epochs,
        initial_epoch=first_epoch,
        shuffle=False,  # `batches` is already reshuffled every epoch
        validation_data=validation,
        validation_batch_size=batch_sizes.evaluation if isinstance(validation, tuple) else None,
        callbacks=callbacks,
        verbose=1 if show_progress_bar else 0,
    )
    # A streamed folder's batch generator fit leaves unfinished (a stopped or pruned run) is freed now, not at
    # exit: TensorFlow finalizes it by calling back into Python, which at exit prints an error after the run's
    # last line.
    gc.collect()
    if nan_guard.stopped_at is not None:
        raise TrainingError(
            f"loss became NaN {nan_guard.stopped_at}; lower optimizer.lr "
            f"(now {config.optimizer.lr:g}) or check the data for extreme values"
        )
    return time.perf_counter() - started


def on_tensorflow() -> bool:
    return keras.config.backend() == "tensorflow"


def training_input(batches: TrainingBatches) -> tuple[Any, Optional[Callable[[np.ndarray], Any]]]:
    """What fit trains on, and where each epoch's order goes: on TensorFlow a tf.data pipeline (over arrays
    in memory, its order set each epoch; over a streamed folder, `batches`' own), else `batches` itself."""
    if not on_tensorflow():
        return batches, None
    if batches.streamed:
        return batch_pipeline(batches.epoch_batches, batches.x, batches.y, count=len(batches)), None
    return array_pipeline(batches.x, batches.y, batches.batch_size, batches.order())


def evaluation_input(x: Images, y: np.ndarray, batch_size: int) -> Any:
    """What fit validates on and evaluate tests on, in order: a tf.data pipeline on TensorFlow, a streamed
    folder's batches, else the (x, y) arrays."""
    if isinstance(x, StreamedImages):
        if on_tensorflow():
            return batch_pipeline(lambda: evaluation_batches(x, y, batch_size), x, y,
                                  count=batch_count(len(x), batch_size))
        return InOrderBatches(x, y, batch_size)
    if on_tensorflow():
        return array_pipeline(x, y, batch_size, np.arange(len(x)))[0]
    return x, y


def measured(model: keras.Model, rows: list[dict[str, Any]], train_seconds: float) -> dict[str, Any]:
    """The figures of the epochs trained: what a search judges a trial by, before any test evaluation."""
    last = rows[-1]
    return {
        "test_accuracy": None,
        "test_loss": None,
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "params": int(model.count_params()),
        "epochs_completed": len(rows),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in rows])),
    }


def evaluate_test(model: keras.Model, data: Dataset, batch_size: int) -> dict[str, Any]:
    """The test set's accuracy and loss, and the seconds they took."""
    started = time.perf_counter()
    test_input = evaluation_input(data.x_test, data.y_test, batch_size)
    if isinstance(test_input, tuple):
        test = model.evaluate(*test_input, batch_size=batch_size, verbose=0, return_dict=True)
    else:
        test = model.evaluate(test_input, verbose=0, return_dict=True)
    return {"test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
            "eval_seconds": time.perf_counter() - started}


def finish(model: keras.Model, config: RunConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
    """TensorBoard's HParams (when asked for) and model.keras. A full disk raises DiskFull carrying the
    metrics, so the run's record keeps them."""
    if config.tensorboard:
        write_hparams(run_dir, config, metrics)
    try:
        save_model(model, run_dir / MODEL_FILE)
    except DiskFull as error:
        raise DiskFull(f"{error}; the figures measured (test_accuracy {metrics['test_accuracy']}) are kept in "
                       "metrics.json", measured=metrics) from error.__cause__  # the OSError
