"""The model families: the tutorial CNN (the default), a small ResNet, any keras.applications backbone,
and a user's own builder (`model._target_`), each with `augment`'s random layers in front.

With the defaults (32 filters, kernel 3, 3 blocks, max pooling 2, dense 64) the CNN is exactly the
TensorFlow tutorial model: 93,322 parameters on 28x28x1 MNIST.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cnnsweep.errors import ConfigError, first_line
from cnnsweep.run.config import (
    ApplicationConfig,
    AugmentConfig,
    CnnConfig,
    CustomModelConfig,
    Flip,
    ModelConfig,
    Padding,
    Pooling,
    ResNetConfig,
)

if TYPE_CHECKING:
    import keras


def conv_widths(config: CnnConfig) -> list[int]:
    """The first block has `filters` channels, every later one twice that (tutorial: 32, 64, 64)."""
    return [config.filters] + [2 * config.filters] * (config.conv_blocks - 1)


def check_fits_image(config: ModelConfig, input_shape: tuple[int, ...]) -> None:
    """Walk the spatial size through the CNN's conv/pool stack; fail before Keras does, naming the layer."""
    if not isinstance(config, CnnConfig):
        return
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
    """Build the (uncompiled) classifier of the configured family, `augment`'s layers first; the output
    layer stays float32 under mixed precision."""
    import keras

    augmentation = augmentation_layers(augment) if augment is not None else []
    if isinstance(config, CnnConfig):
        return tutorial_cnn(config, input_shape, num_classes, augmentation)
    if isinstance(config, ResNetConfig):
        body = small_resnet(config, input_shape, num_classes)
    elif isinstance(config, ApplicationConfig):
        body = keras_application(config, input_shape, num_classes)
    else:
        body = custom_model(config, input_shape, num_classes)
    if not augmentation:
        return body
    inputs = keras.Input(shape=input_shape)
    images = inputs
    for layer in augmentation:
        images = layer(images)
    return keras.Model(inputs, body(images), name=f"augmented_{body.name}")


def tutorial_cnn(config: CnnConfig, input_shape: tuple[int, ...], num_classes: int,
                 augmentation: Optional[list["keras.layers.Layer"]] = None) -> keras.Model:
    """model=cnn: the tutorial's conv blocks that widen once, pooling between them, a dense head."""
    import keras

    check_fits_image(config, input_shape)
    activation(config.activation)
    pool_layer = keras.layers.MaxPooling2D if config.pooling is Pooling.max else keras.layers.AveragePooling2D
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape), *(augmentation or [])]
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


def activation(name: str) -> None:
    import keras

    try:
        keras.activations.get(name)
    except ValueError:
        raise ConfigError(f"model.activation={name}: not a Keras activation; try relu, gelu, elu or swish") from None


def small_resnet(config: ResNetConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """model=resnet: a 3x3 stem, `stages` stages of `depth` basic residual blocks (each later stage
    halves the image and doubles the filters), global average pooling and a softmax head."""
    import keras

    layers = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(config.width, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for stage in range(config.stages):
        filters = config.width * 2 ** stage
        for block in range(config.depth):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.Activation("relu")(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
                shortcut = layers.BatchNormalization()(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    if config.dropout > 0:
        x = layers.Dropout(config.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"resnet_{config.stages}x{config.depth}_w{config.width}")


def keras_application(config: ApplicationConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """model=applications: `keras.applications.<name>` without its top, global average pooling, a new
    softmax head. Images reach it in [0, 255] where the backbone preprocesses them itself (MobileNetV3,
    EfficientNet, ConvNeXt), else as the data gives them."""
    import keras

    constructor = getattr(keras.applications, config.name, None)
    if not callable(constructor):
        raise ConfigError(f"model.name={config.name}: not a keras.applications model; e.g. MobileNetV3Small, "
                          "EfficientNetB0, ResNet50 (the list: keras.applications in Keras' documentation)")
    weights = config.weights
    if weights not in (None, "imagenet") and not Path(weights).expanduser().is_file():
        raise ConfigError(f"model.weights={weights}: no such file; pass a local weights file of {config.name} "
                          "without its top, imagenet (downloaded by Keras), or null for random initialisation")
    if weights == "imagenet" and input_shape[-1] != 3:
        raise ConfigError(f"model.weights=imagenet needs colour images; these have {input_shape[-1]} channel(s) "
                          "(set dataset.color_mode=rgb, or model.weights=null)")
    preprocesses = "include_preprocessing" in inspect.signature(constructor).parameters
    options = {"include_preprocessing": True} if preprocesses else {}
    source = weights if weights in (None, "imagenet") else str(Path(weights).expanduser())
    try:
        base = constructor(include_top=False, weights=source, input_shape=input_shape, pooling="avg", **options)
    except ValueError as error:
        raise ConfigError(f"model.name={config.name}: {first_line(error)}; change dataset.image_size or the "
                          "model") from None
    except Exception as error:  # a download that failed: Keras raises bare exceptions for URL errors
        raise ConfigError(f"model.weights={weights}: could not load them ({first_line(error)}); offline? pass a "
                          "local weights file, or model.weights=null") from None
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Rescaling(255.0)(inputs) if preprocesses else inputs
    x = base(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=config.name.lower())


def custom_model(config: CustomModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """model._target_=package.module.function: called with input_shape, num_classes and the model group's
    other keys; it must return an uncompiled keras.Model."""
    from hydra.utils import get_method

    try:
        builder = get_method(config.target)
    except Exception as error:  # Hydra wraps import errors in its own
        raise ConfigError(f"model._target_={config.target}: cannot import it ({first_line(error)}); name a "
                          "function as package.module.function on the Python path") from None
    try:
        model = builder(input_shape=input_shape, num_classes=num_classes, **config.options)
    except TypeError as error:
        raise ConfigError(f"model._target_={config.target}: {first_line(error)}; it is called with input_shape, "
                          "num_classes and the other model.* keys") from None
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(f"model._target_={config.target} returned {type(model).__name__}, not a keras.Model")
    return model
