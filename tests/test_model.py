"""The tutorial architecture, its knobs, and the fits-the-image check."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cnnsweep.run.config import ModelConfig, Padding, Pooling, compose_run_config
from cnnsweep.errors import ConfigError
from cnnsweep.run.model import build_model, check_fits_image, conv_widths

TUTORIAL = compose_run_config().model


def model_config(**changes) -> ModelConfig:
    return replace(TUTORIAL, **changes)


@pytest.mark.tensorflow
def test_default_is_the_tutorial_model() -> None:
    model = build_model(model_config(), (28, 28, 1), 10)
    assert model.count_params() == 93_322
    layers = [(type(layer).__name__, getattr(layer, "filters", None) or getattr(layer, "units", None))
              for layer in model.layers]
    assert layers == [
        ("Conv2D", 32), ("MaxPooling2D", None), ("Conv2D", 64), ("MaxPooling2D", None), ("Conv2D", 64),
        ("Flatten", None), ("Dense", 64), ("Dense", 10),
    ]
    assert model.layers[0].kernel_size == (3, 3) and model.layers[1].pool_size == (2, 2)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_later_conv_layers_scale_with_filters() -> None:
    assert conv_widths(model_config(filters=16, conv_blocks=4)) == [16, 32, 32, 32]


@pytest.mark.tensorflow
def test_input_shape_and_classes_come_from_the_data() -> None:
    model = build_model(model_config(), (32, 32, 3), 100)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 100)


@pytest.mark.tensorflow
def test_optional_layers() -> None:
    config = model_config(batch_norm=True, dropout=0.3, pooling=Pooling.avg, padding=Padding.same)
    names = [type(layer).__name__ for layer in build_model(config, (28, 28, 1), 10).layers]
    assert names.count("BatchNormalization") == 3 and names.count("AveragePooling2D") == 2
    assert names[-2] == "Dropout"


def test_kernel_too_large_names_the_block_and_shape() -> None:
    with pytest.raises(ConfigError) as raised:
        check_fits_image(model_config(kernel_size=7), (28, 28, 1))
    assert str(raised.value).startswith("model: conv block 3 (kernel 7) gets a 2x2 input from 28x28 images")


def test_pooling_stack_too_deep_names_the_layer() -> None:
    with pytest.raises(ConfigError, match="pooling after conv block 5 .pool 2. gets a 1x1 input"):
        check_fits_image(model_config(conv_blocks=6, padding=Padding.same), (28, 28, 1))


def test_same_padding_allows_deeper_stacks() -> None:
    """Kernel 7 leaves conv block 3 a 2x2 input with valid padding, which is refused; same padding keeps the
    size through each conv, so three, four and five blocks fit (six do not: the pooling test above)."""
    deeper = model_config(kernel_size=7, padding=Padding.same)
    with pytest.raises(ConfigError, match="conv block 3"):
        check_fits_image(replace(deeper, padding=Padding.valid), (28, 28, 1))
    for blocks in (3, 4, 5):
        assert check_fits_image(replace(deeper, conv_blocks=blocks), (28, 28, 1)) is None


@pytest.mark.tensorflow
def test_unknown_activation() -> None:
    with pytest.raises(ConfigError, match="model.activation=swoosh: not a Keras activation"):
        build_model(model_config(activation="swoosh"), (28, 28, 1), 10)


@pytest.mark.tensorflow
@pytest.mark.parametrize("preset", ["light", "strong"])
def test_augmentation_changes_training_images_but_not_evaluation(preset: str) -> None:
    """The same weights with and without augment=PRESET: identical predictions in evaluation, different
    ones in training (the random layers act then only); no parameter is added."""
    import keras
    import numpy as np

    augment = compose_run_config(f"augment={preset}").augment
    plain = build_model(model_config(), (28, 28, 1), 10)
    augmented = build_model(model_config(), (28, 28, 1), 10, augment)
    assert augmented.count_params() == plain.count_params() == 93_322
    augmented.set_weights(plain.get_weights())
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    assert np.array_equal(augmented(images, training=False), plain(images, training=False))
    assert np.array_equal(augmented.predict(images, verbose=0), plain.predict(images, verbose=0))
    keras.utils.set_random_seed(1)
    assert not np.allclose(augmented(images, training=True), plain(images, training=True))


def test_augment_is_off_by_default_and_bad_values_are_one_line() -> None:
    assert not compose_run_config().augment.active and compose_run_config("augment=light").augment.active
    with pytest.raises(ConfigError, match=r"^augment.zoom=1.5: must be at least 0 \(off\) and below 1$"):
        compose_run_config("augment=light", "augment.zoom=1.5")


def tiny_builder(input_shape, num_classes, width: int = 4):
    """A user's own builder, as model._target_=test_model.tiny_builder names it."""
    import keras

    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Conv2D(width, 3), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")], name="tiny")


def fit_once(model, input_shape: tuple[int, ...]) -> float:
    """One epoch on 64 random images of `input_shape`; the loss it reached."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.random((64, *input_shape)).astype("float32"), rng.integers(0, 10, 64)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return float(model.fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][-1])


@pytest.mark.tensorflow
@pytest.mark.parametrize(("overrides", "input_shape", "name"), [
    (["model=resnet"], (28, 28, 1), "resnet_3x2_w16"),
    (["model=applications", "model.name=MobileNetV3Small"], (32, 32, 3), "mobilenetv3small"),
    (["model=custom", "model._target_=test_model.tiny_builder", "+model.width=6"], (28, 28, 1), "tiny"),
    (["model=resnet", "augment=light"], (28, 28, 1), "augmented_resnet_3x2_w16"),
], ids=["resnet", "applications", "custom", "resnet-augmented"])
def test_each_model_family_builds_and_trains(overrides: list[str], input_shape: tuple[int, ...], name: str) -> None:
    import math

    run = compose_run_config(*overrides)
    model = build_model(run.model, input_shape, 10, run.augment)
    assert model.name == name and model.output_shape == (None, 10)
    assert math.isfinite(fit_once(model, input_shape))


@pytest.mark.tensorflow
def test_the_resnet_stages_halve_the_image_and_double_the_filters() -> None:
    model = build_model(compose_run_config("model=resnet", "model.depth=1").model, (32, 32, 3), 10)
    adds = [layer.output.shape for layer in model.layers if type(layer).__name__ == "Add"]
    assert [tuple(shape[1:]) for shape in adds] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]


@pytest.mark.tensorflow
@pytest.mark.parametrize(("overrides", "input_shape", "message"), [
    (["model=applications", "model.name=MobileNetV4Giant"], (32, 32, 3),
     "model.name=MobileNetV4Giant: not a keras.applications model; e.g. MobileNetV3Small"),
    (["model=applications", "model.weights=/no/such.weights.h5"], (32, 32, 3),
     "model.weights=/no/such.weights.h5: no such file; pass a local weights file"),
    (["model=applications", "model.weights=imagenet"], (32, 32, 1),
     "model.weights=imagenet needs colour images; these have 1 channel(s)"),
    (["model=applications", "model.name=MobileNetV3Small"], (16, 16, 3), "model.name=MobileNetV3Small: "),
    (["model=custom", "model._target_=test_model.tiny_builder", "+model.depth=2"], (28, 28, 1),
     "model._target_=test_model.tiny_builder: tiny_builder() got an unexpected keyword argument 'depth'"),
], ids=["unknown-application", "missing-weights", "imagenet-grayscale", "too-small", "wrong-keys"])
def test_a_bad_model_setting_is_one_line(overrides: list[str], input_shape: tuple[int, ...], message: str) -> None:
    run = compose_run_config(*overrides)
    with pytest.raises(ConfigError) as error:
        build_model(run.model, input_shape, 10)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_model_builder_that_cannot_be_imported_is_one_line() -> None:
    from cnnsweep.run.config import CustomModelConfig
    from cnnsweep.run.model import custom_model

    with pytest.raises(ConfigError, match=r"^model._target_=nowhere.build: cannot import it \("):
        custom_model(CustomModelConfig("nowhere.build", {}), (28, 28, 1), 10)
    with pytest.raises(ConfigError, match=r"^model._target_ has no value; set it on the command line"):
        compose_run_config("model=custom")


@pytest.mark.tensorflow
def test_a_run_trains_another_family_end_to_end(run_cli, mnist_dir, tmp_path) -> None:
    """src/run.py model=resnet: trained, recorded and saved as model.keras, which loads back."""
    import json

    import keras

    result = run_cli("dataset.max_train=512", "dataset.max_test=256", "training.batch_size=64", "training.epochs=1",
                     "model=resnet", "model.width=8", "model.stages=2",
                     f"hydra.run.dir={tmp_path / 'run'}", env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert record["status"] == "completed" and saved.name == "resnet_2x2_w8"
    assert record["params"] == saved.count_params() and record["test_accuracy"] > 0.1
