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
