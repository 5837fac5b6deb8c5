"""Typed view of the composed Hydra config, checked before any data is read or TensorFlow starts.

Hydra already rejects unknown keys and group options; this module adds types and ranges, so a bad
override fails in about a second with a message naming the key, instead of deep inside Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.errors import ConfigError


class Pooling(str, Enum):
    max = "max"
    avg = "avg"


class Padding(str, Enum):
    valid = "valid"
    same = "same"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class Precision(str, Enum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


class Distribution(str, Enum):
    none = "none"  # one device: the first GPU, else the CPU
    mirrored = "mirrored"  # data-parallel over every GPU the process sees (hardware=multi_gpu)


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"  # linear warm-up over training.warmup_epochs, then cosine decay to 0 by the last step


class Progress(str, Enum):
    auto = "auto"  # a progress bar for a single run, one line per epoch inside a multirun
    bar = "bar"
    epoch = "epoch"
    none = "none"


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
# Metrics a run reports and may be optimised on, with the direction that makes them better.
METRIC_DIRECTIONS = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "test_accuracy": "maximize",
    "test_loss": "minimize",
    "params": "minimize",
    "train_seconds": "minimize",
    "seconds_per_epoch": "minimize",
}


@dataclass
class DatasetConfig:
    name: str = "mnist"
    path: Optional[str] = None
    num_classes: Optional[int] = None
    val_size: int = 0
    max_train: Optional[int] = None
    max_test: Optional[int] = None


@dataclass
class ModelConfig:
    filters: int = 32
    kernel_size: int = 3
    dense_units: int = 64
    conv_blocks: int = 3
    pool_size: int = 2
    pooling: Pooling = Pooling.max
    padding: Padding = Padding.valid
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    # Every other key of the optimizer group, passed to the Keras optimizer as keyword arguments.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HardwareConfig:
    device: Device = Device.auto
    intra_op_threads: Optional[int] = None
    inter_op_threads: Optional[int] = None
    precision: Precision = Precision.float32
    jit_compile: bool = False
    deterministic: bool = True
    memory_growth: bool = True
    distribution: Distribution = Distribution.none


@dataclass
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 32
    shuffle: bool = True
    tensorboard: bool = False
    progress: Progress = Progress.auto
    lr_schedule: LrSchedule = LrSchedule.constant
    warmup_epochs: float = 0.0


@dataclass
class ObjectiveConfig:
    metric: Optional[str] = None
    direction: Optional[str] = None


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 0

    @property
    def objective_metric(self) -> str:
        """The configured metric, or val_accuracy with a hold-out and test_accuracy without."""
        if self.objective.metric is not None:
            return self.objective.metric
        return "val_accuracy" if self.dataset.val_size > 0 else "test_accuracy"

    @property
    def objective_direction(self) -> str:
        return self.objective.direction or METRIC_DIRECTIONS[self.objective_metric]


def load_run_config(cfg: DictConfig) -> RunConfig:
    """Type-check and range-check a composed config; raise ConfigError naming the first bad key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} has no value; set it on the command line, e.g. {missing[0]}=...")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    optimizer = container.pop("optimizer", {}) or {}
    container.pop("launcher", None)  # how the sweep runs jobs (conf/launcher), not part of a run
    schema = OmegaConf.structured(RunConfig)
    try:
        typed = OmegaConf.merge(schema, container)
    except OmegaConfBaseException as error:
        raise ConfigError(_omegaconf_message(error)) from error
    run_config = OmegaConf.to_object(typed)
    assert isinstance(run_config, RunConfig)
    run_config.optimizer = _optimizer_config(optimizer)
    _check_ranges(run_config)
    return run_config


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    first_line = str(error).splitlines()[0]
    return f"{key}: {first_line}" if key else first_line


def _optimizer_config(values: dict[str, Any]) -> OptimizerConfig:
    options = dict(values)
    name = options.pop("name", None)
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={name}: unknown optimizer; choose optimizer={'|'.join(OPTIMIZERS)}"
        )
    lr = options.pop("lr", None)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ConfigError(f"optimizer.lr={lr}: must be a number such as 0.001")
    return OptimizerConfig(name=name, lr=float(lr), options=options)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value: Optional[int], key: str, hint: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    allowed = "a positive integer or null" if optional else "a positive integer"
    _require(value is not None and value >= 1, f"{key}={value}: must be {allowed} ({hint})")


def _check_ranges(run: RunConfig) -> None:
    model, data, training, hardware = run.model, run.dataset, run.training, run.hardware
    _positive(model.filters, "model.filters", "the first conv layer's width; the tutorial uses 32")
    _positive(model.kernel_size, "model.kernel_size", "the tutorial uses 3")
    _positive(model.dense_units, "model.dense_units", "the tutorial uses 64")
    _positive(model.conv_blocks, "model.conv_blocks", "the tutorial uses 3")
    _positive(model.pool_size, "model.pool_size", "the tutorial uses 2")
    _require(
        0.0 <= model.dropout < 1.0,
        f"model.dropout={model.dropout}: must be in [0, 1); 0 turns dropout off",
    )
    _require(
        math.isfinite(run.optimizer.lr) and run.optimizer.lr > 0,
        f"optimizer.lr={run.optimizer.lr}: must be a positive number such as 0.001",
    )
    _positive(training.epochs, "training.epochs", "the tutorial trains 5 epochs")
    _positive(training.batch_size, "training.batch_size", "the tutorial uses 32")
    _require(
        0 <= training.warmup_epochs < training.epochs,
        f"training.warmup_epochs={training.warmup_epochs}: must be at least 0 and below training.epochs "
        f"({training.epochs})",
    )
    _require(
        data.val_size >= 0,
        f"dataset.val_size={data.val_size}: must be 0 (no hold-out) or a positive number of images",
    )
    _positive(data.max_train, "dataset.max_train", "null uses every training image", optional=True)
    _positive(data.max_test, "dataset.max_test", "null uses every test image", optional=True)
    _require(
        data.num_classes is None or data.num_classes >= 2,
        f"dataset.num_classes={data.num_classes}: must be at least 2, or null to infer it",
    )
    _positive(hardware.intra_op_threads, "hardware.intra_op_threads", "null: TensorFlow's choice", True)
    _positive(hardware.inter_op_threads, "hardware.inter_op_threads", "null: TensorFlow's choice", True)
    _require(run.seed >= 0, f"seed={run.seed}: must be a non-negative integer")
    metric = run.objective_metric
    _require(
        metric in METRIC_DIRECTIONS,
        f"objective.metric={metric}: not a metric this run reports; "
        f"choose one of {', '.join(METRIC_DIRECTIONS)}",
    )
    _require(
        not (metric.startswith("val_") and data.val_size == 0),
        f"objective.metric={metric} needs a validation hold-out; "
        "set dataset.val_size=N or objective.metric=test_accuracy",
    )
    _require(
        run.objective.direction in (None, "maximize", "minimize"),
        f"objective.direction={run.objective.direction}: must be maximize, minimize or null",
    )
