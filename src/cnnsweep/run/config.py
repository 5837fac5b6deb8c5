"""Typed view of the composed Hydra config, checked before any data is read or TensorFlow starts.

Hydra already rejects unknown keys and group options; this module adds types and ranges, so a bad
override fails in about a second with a message naming the key, instead of deep inside Keras.
The dataclasses are the schema only: every value, default included, lives in conf/ (one home).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.errors import ConfigError, first_line
from cnnsweep.run.backends import BACKENDS

# The override that continues a run in its own folder after its last checkpointed epoch: added by
# `cnnsweep rerun --resume`, by a continued sweep to its interrupted jobs, and to requeued Slurm jobs.
RESUME_OVERRIDE = "training.resume=true"
FRESH_START_OVERRIDE = "training.resume=false"  # a rerun into a new folder, of a run that may have resumed


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


class CheckpointPolicy(str, Enum):
    auto = "auto"  # after every epoch, except in a search trial nothing would resume (cnnsweep.run.checkpoints)
    always = "always"  # after every epoch
    never = "never"  # none: a killed run trains again from epoch 1


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


class ColorMode(str, Enum):
    grayscale = "grayscale"
    rgb = "rgb"


@dataclass
class DatasetConfig:
    name: str
    path: Optional[str]  # an .npz file, or a folder of class folders (dataset=folder)
    num_classes: Optional[int]
    val_size: float  # images held out of training for validation: a count, or a fraction below 1
    max_train: Optional[int]
    max_test: Optional[int]
    test_size: float  # a folder without test/: its test split, a count or a fraction below 1
    image_size: Optional[list[int]]  # a folder's images resized to [height, width]
    color_mode: Optional[ColorMode]  # a folder's images as grayscale (1 channel) or rgb (3)
    in_memory_gb: Optional[float]  # a folder larger than this as float32 streams from disk; null: never

    @property
    def holds_out(self) -> bool:
        return holds_out(self.path, self.val_size)


def holds_out(path: Optional[str], val_size: float) -> bool:
    """Whether runs on this data have a validation split: dataset.val_size, or a folder's own val/."""
    return val_size > 0 or (path is not None and (Path(path).expanduser() / "val").is_dir())


@dataclass
class CnnConfig:
    """model=cnn: the tutorial CNN and its knobs."""

    filters: int
    kernel_size: int
    dense_units: int
    conv_blocks: int
    pool_size: int
    pooling: Pooling
    padding: Padding
    activation: str
    dropout: float
    batch_norm: bool


@dataclass
class ResNetConfig:
    """model=resnet: a small ResNet (basic residual blocks, batch norm, global average pooling)."""

    width: int  # filters of the first stage; every later stage doubles them
    stages: int  # each stage after the first halves the image size
    depth: int  # residual blocks per stage, two 3x3 conv layers each
    dropout: float


@dataclass
class ApplicationConfig:
    """model=applications: a keras.applications backbone under a new classification head."""

    name: str  # the constructor: MobileNetV3Small, EfficientNetB0, ResNet50, ...
    weights: Optional[str]  # null: random initialisation; a local weights file; imagenet (Keras downloads it)
    dropout: float


@dataclass
class CustomModelConfig:
    """model._target_=package.module.function: a user's builder, called with the data's input shape and
    number of classes and the model group's other keys."""

    target: str
    options: dict[str, Any]


ModelConfig = Union[CnnConfig, ResNetConfig, ApplicationConfig, CustomModelConfig]
# The builders cnnsweep has (conf/model/*.yaml name them in `_target_`), with the schema of their keys.
MODEL_FAMILIES: dict[str, type] = {
    "cnnsweep.run.model.tutorial_cnn": CnnConfig,
    "cnnsweep.run.model.small_resnet": ResNetConfig,
    "cnnsweep.run.model.keras_application": ApplicationConfig,
}


@dataclass
class OptimizerConfig:
    name: str
    lr: float
    # Every other key of the optimizer group, passed to the Keras optimizer as keyword arguments.
    options: dict[str, Any]


@dataclass
class HardwareConfig:
    backend: str  # Keras' backend: tensorflow | jax | torch (cnnsweep.run.backends)
    device: Device
    intra_op_threads: Optional[int]
    inter_op_threads: Optional[int]
    precision: Precision
    jit_compile: Any  # true | false | auto, as Keras' compile() takes it
    deterministic: bool
    memory_growth: bool
    distribution: Distribution
    malloc_top_pad_mb: Optional[int]  # freed memory glibc keeps per heap (cnnsweep.run.allocator); null: as is


@dataclass
class TrainingConfig:
    epochs: int
    batch_size: int
    shuffle: bool
    tensorboard: bool
    progress: Progress
    lr_schedule: LrSchedule
    warmup_epochs: float
    resume: bool  # continue from the run folder's checkpoint.keras (`cnnsweep rerun RUN_DIR --resume`)
    checkpoints: CheckpointPolicy
    steps_per_execution: int
    eval_batch_size: Optional[int]  # validation and test batches; null: batch_size, as Keras' fit


@dataclass
class ObjectiveConfig:
    metric: Optional[str]
    direction: Optional[str]


class Flip(str, Enum):
    none = "none"
    horizontal = "horizontal"
    vertical = "vertical"
    horizontal_and_vertical = "horizontal_and_vertical"


@dataclass
class AugmentConfig:
    """Random changes to training images (Keras preprocessing layers: active in training only)."""

    flip: Flip
    rotation: float  # up to this fraction of a full turn either way (0.05: 18 degrees)
    translation: float  # shifts up to this fraction of the height and width
    zoom: float  # in or out by up to this fraction
    contrast: float  # contrast scaled by a factor in [1 - contrast, 1 + contrast]

    @property
    def active(self) -> bool:
        return self.flip is not Flip.none or any((self.rotation, self.translation, self.zoom, self.contrast))


class LoggerName(str, Enum):
    csv = "csv"  # the run folder's own records only (metrics.json, history.csv)
    tensorboard = "tensorboard"  # and TensorBoard event files (training.tensorboard=true)
    mlflow = "mlflow"  # and a run per job in an MLflow tracking server


@dataclass
class LoggerConfig:
    name: LoggerName
    tracking_uri: Optional[str]  # mlflow: the tracking server; null: $MLFLOW_TRACKING_URI
    experiment: Optional[str]  # mlflow: the experiment; null: one per sweep folder (single runs: cnnsweep)


@dataclass
class RunConfig:
    dataset: DatasetConfig
    model: Any  # a ModelConfig, checked by the schema its `_target_` names (load_run_config)
    augment: AugmentConfig
    optimizer: OptimizerConfig
    hardware: HardwareConfig
    training: TrainingConfig
    objective: ObjectiveConfig
    logger: LoggerConfig
    seed: int

    @property
    def objective_metric(self) -> str:
        return objective_metric(self.objective.metric, self.dataset.holds_out)

    @property
    def tensorboard(self) -> bool:
        """TensorBoard curves and HParams: training.tensorboard=true, or logger=tensorboard."""
        return self.training.tensorboard or self.logger.name is LoggerName.tensorboard

    @property
    def objective_direction(self) -> str:
        return self.objective.direction or METRIC_DIRECTIONS[self.objective_metric]


def objective_metric(metric: Optional[str], validated: bool) -> str:
    """The configured metric, or val_accuracy with a validation split and test_accuracy without."""
    if metric is not None:
        return metric
    return "val_accuracy" if validated else "test_accuracy"


def check_metric(metric: str, validated: bool, key: str) -> None:
    """A metric a run reports, and with a validation split when it is a validation metric; `key` names the
    setting."""
    _require(metric in METRIC_DIRECTIONS,
             f"{key}={metric}: not a metric this run reports; choose one of {', '.join(METRIC_DIRECTIONS)}")
    _require(not (metric.startswith("val_") and not validated),
             f"{key}={metric} needs a validation hold-out; set dataset.val_size=N"
             + (" or objective.metric=test_accuracy" if key == "objective.metric" else ""))


def load_run_config(cfg: DictConfig) -> RunConfig:
    """Type-check and range-check a composed config; raise ConfigError naming the first bad key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} has no value; set it on the command line, e.g. {missing[0]}=...")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container["optimizer"] = asdict(_optimizer_config(container.get("optimizer") or {}))
    model = _model_config(container.pop("model", None) or {})
    container["model"] = {}  # the family's own schema checked it
    container.pop("launcher", None)  # how the sweep runs jobs (conf/launcher), not part of a run
    schema = OmegaConf.structured(RunConfig)
    try:
        typed = OmegaConf.merge(schema, container)
    except OmegaConfBaseException as error:
        raise ConfigError(_omegaconf_message(error)) from error
    unset = sorted(OmegaConf.missing_keys(typed))
    if unset:
        raise ConfigError(f"{unset[0]} is not set by conf/ or the command line; add it to its conf/ group "
                          f"file, or pass +{unset[0]}=...")
    run_config = OmegaConf.to_object(typed)
    assert isinstance(run_config, RunConfig)
    run_config.model = model
    _check_ranges(run_config)
    return run_config


def compose_run_config(*overrides: str) -> RunConfig:
    """conf/ composed with Hydra overrides and checked, as `src/run.py OVERRIDES` would train it
    (for notebooks and tests; runs and sweeps get theirs from Hydra)."""
    from hydra import compose, initialize_config_dir

    from cnnsweep.project import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return load_run_config(compose(config_name="config", overrides=list(overrides)))


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    return f"{key}: {first_line(error)}" if key else first_line(error)


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


def _model_config(values: dict[str, Any]) -> ModelConfig:
    """The model group checked by the schema of the builder its `_target_` names; any other target is a
    user's builder, whose keys are its own."""
    options = dict(values)
    target = options.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise ConfigError("model._target_ is not set; choose model=cnn|resnet|applications, or model=custom "
                          "model._target_=package.module.function for a builder of your own")
    schema = MODEL_FAMILIES.get(target)
    if schema is None:
        return CustomModelConfig(target, options)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), options)
    except OmegaConfBaseException as error:
        raise ConfigError(f"model.{_omegaconf_message(error)}") from error
    unset = sorted(OmegaConf.missing_keys(typed))
    if unset:
        raise ConfigError(f"model.{unset[0]} is not set by conf/model or the command line; pass model.{unset[0]}=...")
    model = OmegaConf.to_object(typed)
    assert isinstance(model, schema)
    return model  # type: ignore[return-value]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value: Optional[int], key: str, hint: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    allowed = "a positive integer or null" if optional else "a positive integer"
    _require(value is not None and value >= 1, f"{key}={value}: must be {allowed} ({hint})")


def _check_hardware(hardware: HardwareConfig, training: TrainingConfig) -> None:
    _require(hardware.backend in tuple(BACKENDS),
             f"hardware.backend={hardware.backend}: choose {' | '.join(tuple(BACKENDS))} (its default is KERAS_BACKEND "
             "from the environment, else tensorflow)")
    _require(hardware.jit_compile in (True, False, "auto"),
             f"hardware.jit_compile={hardware.jit_compile}: must be true, false or auto (Keras' choice per backend)")
    _positive(hardware.intra_op_threads, "hardware.intra_op_threads", "null: the backend's choice", True)
    _positive(hardware.inter_op_threads, "hardware.inter_op_threads", "null: the backend's choice", True)
    _require(hardware.malloc_top_pad_mb is None or 0 <= hardware.malloc_top_pad_mb < 2048,
             f"hardware.malloc_top_pad_mb={hardware.malloc_top_pad_mb}: must be 0 to 2047 megabytes (glibc takes the "
             "pad as an int of bytes), or null to leave glibc's allocator as the environment set it")
    _positive(training.steps_per_execution, "training.steps_per_execution", "batches per call into the backend; 1 "
              "reports every batch")
    if hardware.backend == "torch":
        _require(hardware.distribution is not Distribution.mirrored,
                 "hardware=multi_gpu (hardware.distribution=mirrored) is not available on hardware.backend=torch: "
                 "Keras has no data-parallel training on PyTorch; use hardware.backend=jax or tensorflow, or "
                 "hardware=gpu with launcher=parallel for one job per GPU")
        _require(training.steps_per_execution == 1,
                 f"training.steps_per_execution={training.steps_per_execution}: must be 1 on hardware.backend=torch "
                 "(Keras runs PyTorch one batch per call); add training.steps_per_execution=1 or use "
                 "hardware.backend=jax or tensorflow")


def _check_ranges(run: RunConfig) -> None:
    model, data, training, hardware = run.model, run.dataset, run.training, run.hardware
    if isinstance(model, CnnConfig):
        _positive(model.filters, "model.filters", "the first conv layer's width; the tutorial uses 32")
        _positive(model.kernel_size, "model.kernel_size", "the tutorial uses 3")
        _positive(model.dense_units, "model.dense_units", "the tutorial uses 64")
        _positive(model.conv_blocks, "model.conv_blocks", "the tutorial uses 3")
        _positive(model.pool_size, "model.pool_size", "the tutorial uses 2")
    if isinstance(model, ResNetConfig):
        _positive(model.width, "model.width", "filters of the first stage, e.g. 16")
        _positive(model.stages, "model.stages", "e.g. 3")
        _positive(model.depth, "model.depth", "residual blocks per stage, e.g. 2")
    if not isinstance(model, CustomModelConfig):
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
    _positive(training.eval_batch_size, "training.eval_batch_size", "null uses training.batch_size", optional=True)
    _require(
        0 <= training.warmup_epochs < training.epochs,
        f"training.warmup_epochs={training.warmup_epochs}: must be at least 0 and below training.epochs "
        f"({training.epochs})",
    )
    for key, size in (("dataset.val_size", data.val_size), ("dataset.test_size", data.test_size)):
        _require(size >= 0 and (size < 1 or size == int(size)),
                 f"{key}={size:g}: must be 0 (none), a fraction below 1 or a whole number of images")
    _require(data.image_size is None or (len(data.image_size) == 2 and min(data.image_size) > 0),
             f"dataset.image_size={data.image_size}: must be [height, width] in pixels, e.g. [64, 64]")
    _require(data.in_memory_gb is None or data.in_memory_gb >= 0,
             f"dataset.in_memory_gb={data.in_memory_gb}: must be 0 or more (0 streams every folder), or null to "
             "always load folders into memory")
    _positive(data.max_train, "dataset.max_train", "null uses every training image", optional=True)
    _positive(data.max_test, "dataset.max_test", "null uses every test image", optional=True)
    _require(
        data.num_classes is None or data.num_classes >= 2,
        f"dataset.num_classes={data.num_classes}: must be at least 2, or null to infer it",
    )
    for key in ("rotation", "translation", "zoom", "contrast"):
        value = getattr(run.augment, key)
        _require(0 <= value < 1, f"augment.{key}={value}: must be at least 0 (off) and below 1")
    _check_hardware(hardware, training)
    _require(run.seed >= 0, f"seed={run.seed}: must be a non-negative integer")
    check_metric(run.objective_metric, data.holds_out, "objective.metric")
    _require(
        run.objective.direction in (None, "maximize", "minimize"),
        f"objective.direction={run.objective.direction}: must be maximize, minimize or null",
    )
