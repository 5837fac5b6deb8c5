"""Composition of every config group option, the tutorial defaults, and range checks."""

from __future__ import annotations

import pytest

from cnnsweep.run.config import Device, Distribution, Pooling, Precision, load_run_config
from cnnsweep.errors import ConfigError
from conftest import CONF_DIR

GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(CONF_DIR.iterdir()) if group.is_dir()
    for option in sorted(group.glob("*.yaml"))
]


def test_every_group_has_options() -> None:
    assert {group for group, _ in GROUP_OPTIONS} >= {"dataset", "model", "optimizer", "hardware"}
    assert {option for group, option in GROUP_OPTIONS if group == "optimizer"} == {"adam", "adamw", "rmsprop", "sgd"}
    assert {option for group, option in GROUP_OPTIONS if group == "dataset"} == {"mnist", "fashion_mnist", "cifar10", "npz",
                                                                                           "folder"}
    assert {option for group, option in GROUP_OPTIONS if group == "hardware"} >= {"auto", "cpu", "gpu", "multi_gpu"}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes_and_validates(compose_config, group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if (group, option) in (("dataset", "npz"), ("dataset", "folder")):
        overrides.append("dataset.path=/data/images")
    if (group, option) == ("model", "custom"):
        overrides.append("model._target_=mypackage.models.build")
    run = load_run_config(compose_config(*overrides))
    if group == "optimizer":
        assert run.optimizer.name == option
    elif group == "hardware":
        expected = (Device.gpu, Distribution.mirrored) if option == "multi_gpu" else (Device(option), Distribution.none)
        assert (run.hardware.device, run.hardware.distribution) == expected
    elif group == "dataset":
        assert run.dataset.name == option


def test_defaults_are_the_tutorial(compose_config) -> None:
    run = load_run_config(compose_config())
    assert (run.dataset.name, run.dataset.val_size, run.dataset.max_train) == ("mnist", 0, None)
    assert (run.model.filters, run.model.kernel_size, run.model.dense_units, run.model.conv_blocks) == (32, 3, 64, 3)
    assert (run.model.pool_size, run.model.pooling, run.model.dropout, run.model.batch_norm) == (2, Pooling.max, 0.0, False)
    assert (run.optimizer.name, run.optimizer.lr) == ("adam", 0.001)
    assert (run.training.epochs, run.training.batch_size) == (5, 32)
    assert (run.hardware.device, run.hardware.precision, run.hardware.jit_compile) == \
        (Device.auto, Precision.float32, "auto")
    assert run.objective_metric == "test_accuracy" and run.objective_direction == "maximize"


def test_optimizer_parameters_pass_through(compose_config) -> None:
    run = load_run_config(compose_config("optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"))
    assert run.optimizer.lr == 0.05
    assert run.optimizer.options == {"momentum": 0.9, "nesterov": False}


def test_objective_follows_the_hold_out(compose_config) -> None:
    assert load_run_config(compose_config("dataset.val_size=5000")).objective_metric == "val_accuracy"
    run = load_run_config(compose_config("objective.metric=val_loss", "dataset.val_size=100"))
    assert (run.objective_metric, run.objective_direction) == ("val_loss", "minimize")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.filters=0", "model.filters=0: must be a positive integer"),
        ("model.kernel_size=-3", "model.kernel_size=-3: must be a positive integer"),
        ("model.dense_units=0", "model.dense_units=0"),
        ("model.dropout=1.0", "model.dropout=1.0: must be in [0, 1)"),
        ("model.pooling=median", "model.pooling: Invalid value 'median'"),
        ("model.filters=wide", "model.filters: Value 'wide' of type 'str' could not be converted to Integer"),
        ("optimizer.lr=0", "optimizer.lr=0.0: must be a positive number"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: must be a positive number"),
        ("training.epochs=0", "training.epochs=0: must be a positive integer"),
        ("training.batch_size=0", "training.batch_size=0"),
        ("dataset.val_size=-1", "dataset.val_size=-1"),
        ("dataset.max_train=0", "dataset.max_train=0: must be a positive integer or null"),
        ("dataset.in_memory_gb=-1", "dataset.in_memory_gb=-1.0: must be 0 or more (0 streams every folder)"),
        ("hardware.precision=float8", "hardware.precision: Invalid value 'float8'"),
        ("hardware.backend=mxnet", "hardware.backend=mxnet: choose tensorflow | jax | torch (its default is "
                                   "KERAS_BACKEND from the environment, else tensorflow)"),
        ("hardware.jit_compile=xla", "hardware.jit_compile=xla: must be true, false or auto"),
        ("training.steps_per_execution=0", "training.steps_per_execution=0: must be a positive integer"),
        ("hardware.malloc_top_pad_mb=-1", "hardware.malloc_top_pad_mb=-1: must be 0 to 2047 megabytes"),
        ("hardware.malloc_top_pad_mb=4096", "hardware.malloc_top_pad_mb=4096: must be 0 to 2047 megabytes"),
        ("training.eval_batch_size=0", "training.eval_batch_size=0: must be a positive integer or null (null uses "
                                       "training.batch_size)"),
        (["hardware.backend=torch", "training.steps_per_execution=4"],
         "training.steps_per_execution=4: must be 1 on hardware.backend=torch"),
        (["sweeps=baseline_tpe", "hardware.backend=torch"],  # the shipped search runs 16 batches per call
         "training.steps_per_execution=16: must be 1 on hardware.backend=torch (Keras runs PyTorch one batch per "
         "call); add training.steps_per_execution=1"),
        (["hardware=multi_gpu", "hardware.backend=torch"],
         "hardware=multi_gpu (hardware.distribution=mirrored) is not available on hardware.backend=torch"),
        ("seed=-1", "seed=-1"),
        ("training.warmup_epochs=5", "training.warmup_epochs=5.0: must be at least 0 and below training.epochs (5)"),
        ("training.lr_schedule=step", "training.lr_schedule: Invalid value 'step'"),
        ("training.checkpoints=sometimes",
         "training.checkpoints: Invalid value 'sometimes', expected one of [auto, always, never]"),
        ("objective.metric=val_accuracy", "objective.metric=val_accuracy needs a validation hold-out"),
        ("objective.metric=f1", "objective.metric=f1: not a metric this run reports"),
        ("dataset=npz", "dataset.path has no value"),
    ],
)
def test_bad_values_name_the_key(compose_config, override: str | list[str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_run_config(compose_config(*([override] if isinstance(override, str) else override)))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("environment", "override", "backend"), [
    (None, None, "tensorflow"),
    ("jax", None, "jax"),
    ("torch", None, "torch"),
    ("jax", "hardware.backend=tensorflow", "tensorflow"),  # an explicit override wins
    (None, "hardware.backend=torch", "torch"),
])
def test_backend_defaults_to_keras_backend_and_an_override_wins(
        compose_config, monkeypatch: pytest.MonkeyPatch, environment: str | None, override: str | None,
        backend: str) -> None:
    if environment is None:
        monkeypatch.delenv("KERAS_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KERAS_BACKEND", environment)
    assert load_run_config(compose_config(*([override] if override else []))).hardware.backend == backend


def test_added_unknown_key_is_rejected(compose_config) -> None:
    with pytest.raises(ConfigError, match="model.depth"):
        load_run_config(compose_config("+model.depth=4"))


def test_run_settings_have_one_home() -> None:
    """conf/ holds every value; the dataclasses only type it, so the two can never disagree."""
    import dataclasses

    from cnnsweep.run import config

    for schema in (config.RunConfig, config.DatasetConfig, *config.MODEL_FAMILIES.values(), config.AugmentConfig,
                   config.OptimizerConfig, config.HardwareConfig, config.TrainingConfig, config.ObjectiveConfig):
        defaults = [field.name for field in dataclasses.fields(schema)
                    if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING]
        assert defaults == [], f"{schema.__name__} repeats conf/'s defaults: {defaults}"


@pytest.mark.parametrize(("preset", "changes"), [
    ("cpu", {"device": "cpu"}),
    ("gpu", {"device": "gpu"}),
    ("multi_gpu", {"device": "gpu", "distribution": "mirrored"}),
])
def test_hardware_presets_extend_auto(compose_config, preset: str, changes: dict) -> None:
    auto = compose_config("hardware=auto").hardware
    assert dict(compose_config(f"hardware={preset}").hardware) == {**auto, **changes}
    assert compose_config(f"hardware={preset}", "hardware.jit_compile=true").hardware.jit_compile is True
