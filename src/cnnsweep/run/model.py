"""The tutorial CNN, generalised: conv blocks that widen once, pooling between them, a dense head.

With the defaults (32 filters, kernel 3, 3 blocks, max pooling 2, dense 64) it is exactly the
TensorFlow tutorial model: 93,322 parameters on 28x28x1 MNIST.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from cnnsweep.errors import ConfigError
from cnnsweep.run.config import AugmentConfig, Flip, ModelConfig, Padding, Pooling

if TYPE_CHECKING:
    import keras


def conv_widths(config: ModelConfig) -> list[int]:
    """The first block has `filters` channels, every later one twice that (tutorial: 32, 64, 64)."""
    return [config.filters] + [2 * config.filters] * (config.conv_blocks - 1)


def check_fits_image(config: ModelConfig, input_shape: tuple[int, ...]) -> None:
    """Walk the spatial size through the conv/pool stack; fail before Keras does, naming the layer."""
    height, width = input_shape[0], input_shape[1]
    for block in range(1, config.conv_blocks + 1):
        if config.padding is Padding.valid:
            if height < config.kernel_size or width < config.kernel_size:
                raise ConfigError(
                    f"model: conv block {block} (kernel {config.kernel_size}) gets a {height}x{width} "
                    f"input from {input_shape[0]}x{input_shape[1]} images; lower model.kernel_size or "
                    "model.conv_blocks, or set model.padding=same"
                )
            height, width = height - config.kernel_size + 1, width - config.kernel_size + 1
        if block < config.conv_blocks:
            if height < config.pool_size or width < config.pool_size:
                raise ConfigError(
                    f"model: pooling after conv block {block} (pool {config.pool_size}) gets a "
                    f"{height}x{width} input from {input_shape[0]}x{input_shape[1]} images; lower "
                    "model.pool_size or model.conv_blocks"
                )
            height, width = height // config.pool_size, width // config.pool_size


def augmentation_layers(config: AugmentConfig) -> list["keras.layers.Layer"]:
    """Keras' random preprocessing layers for `augment`: they change images in training only, and pass
    them through unchanged in evaluation and prediction (and in the saved model.keras)."""
    import keras

    layers: list[keras.layers.Layer] = []
    if config.flip is not Flip.none:
        layers.append(keras.layers.RandomFlip(config.flip.value))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="constant"))
    if config.translation:
        layers.append(keras.layers.RandomTranslation(config.translation, config.translation, fill_mode="constant"))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant"))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 1)))
    return layers


def build_model(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                augment: Optional[AugmentConfig] = None) -> keras.Model:
    """Build the (uncompiled) classifier, `augment`'s layers first; the output layer stays float32 under
    mixed precision."""
    import keras

    check_fits_image(config, input_shape)
    try:
        keras.activations.get(config.activation)
    except ValueError:
        raise ConfigError(
            f"model.activation={config.activation}: not a Keras activation; try relu, gelu, elu or swish"
        ) from None
    pool_layer = keras.layers.MaxPooling2D if config.pooling is Pooling.max else keras.layers.AveragePooling2D
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    layers += augmentation_layers(augment) if augment is not None else []
    for block, width in enumerate(conv_widths(config), start=1):
        if config.batch_norm:
            layers += [
                keras.layers.Conv2D(width, config.kernel_size, padding=config.padding.value, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation(config.activation),
            ]
        else:
            layers.append(
                keras.layers.Conv2D(
                    width, config.kernel_size, activation=config.activation, padding=config.padding.value
                )
            )
        if block < config.conv_blocks:
            layers.append(pool_layer(config.pool_size))
    layers += [keras.layers.Flatten(), keras.layers.Dense(config.dense_units, activation=config.activation)]
    if config.dropout > 0:
        layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(layers, name="tutorial_cnn")
