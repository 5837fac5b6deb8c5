"""TensorFlow: devices, memory growth or a slot's memory cap (a logical device with a memory limit) and
thread pools through tf.config (fixed once TensorFlow has run an op), op determinism, MirroredStrategy
for hardware=multi_gpu."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from cnnsweep.run.backends import Placement, no_gpu, set_once
from cnnsweep.run.config import Device, Distribution, HardwareConfig
from cnnsweep.run.slot import gpu_memory_mb, gpu_share, visible_gpu

if TYPE_CHECKING:  # cnnsweep.run.batches imports Keras, which must not start before `environment` has run
    import numpy as np

    from cnnsweep.run.batches import Batch, Images

PIPELINE_READ_AHEAD = 2  # batches a pipeline makes ready while one trains
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"  # tf.custom_gradient's names for the gradient functions it registers


def environment(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, str]:
    return {}  # TensorFlow takes every setting through tf.config, after import (configure)


def configure(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, Any]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.device is Device.cpu and gpus:
        set_once(tf.config.get_visible_devices("GPU"), [], lambda _: tf.config.set_visible_devices([], "GPU"),
                 "hardware", "TensorFlow")
        gpus = []
    if config.device is Device.gpu and not gpus:
        raise no_gpu("TensorFlow", "install a CUDA build of TensorFlow")
    share = gpu_share()
    if share is not None:  # a logical device per GPU, capped at the slot's share (memory growth then does not apply)
        for gpu in gpus:
            limit = tf.config.LogicalDeviceConfiguration(memory_limit=int(gpu_memory_mb(visible_gpu()) * share))
            set_once(tf.config.get_logical_device_configuration(gpu), [limit],
                     lambda value, gpu=gpu: tf.config.set_logical_device_configuration(gpu, value),
                     "launcher.jobs_per_gpu", "TensorFlow")
    elif config.memory_growth:
        for gpu in gpus:
            set_once(tf.config.experimental.get_memory_growth(gpu), True,
                     lambda value, gpu=gpu: tf.config.experimental.set_memory_growth(gpu, value),
                     "hardware.memory_growth", "TensorFlow")
    threading = tf.config.threading
    if intra_op is not None:
        set_once(threading.get_intra_op_parallelism_threads(), intra_op,
                 threading.set_intra_op_parallelism_threads, "hardware.intra_op_threads", "TensorFlow")
    if inter_op is not None:
        set_once(threading.get_inter_op_parallelism_threads(), inter_op,
                 threading.set_inter_op_parallelism_threads, "hardware.inter_op_threads", "TensorFlow")
    if config.deterministic:  # never turned off again in one process: `deterministic` is process-wide
        tf.config.experimental.enable_op_determinism()
    forget_earlier_traces()
    return {
        "device": "gpu" if gpus else "cpu",
        "gpus": [gpu.name for gpu in gpus],
        "logical_devices": [device.name for device in tf.config.list_logical_devices()],
        "intra_op_threads": threading.get_intra_op_parallelism_threads(),  # 0: TensorFlow's default
        "inter_op_threads": threading.get_inter_op_parallelism_threads(),
    }


def forget_earlier_traces() -> None:
    """Unregister the gradient functions that earlier jobs' traces left in TensorFlow's gradient registry.
    Keras' optimizer sums gradients through the distribution strategy's all_reduce, a tf.custom_gradient,
    which registers a uniquely named gradient function each time a train step is traced and never removes
    it; each holds its whole traced graph. Without this, a warm worker kept every earlier trial's graphs,
    and each garbage collection (Keras runs one at every clear_session) took longer with each job it ran."""
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry
    for name in [name for name in registry if name.startswith(CUSTOM_GRADIENT_PREFIX)]:
        del registry[name]


def peak_gpu_memory() -> Optional[int]:
    """The most GPU memory this job's TensorFlow held at once (bytes; the largest over its GPUs), None on
    the CPU. reset_gpu_memory_peak starts each job's count."""
    import tensorflow as tf

    return max((tf.config.experimental.get_memory_info(gpu)["peak"] for gpu in logical_gpus()), default=None)


def reset_gpu_memory_peak() -> None:
    import tensorflow as tf

    for gpu in logical_gpus():
        tf.config.experimental.reset_memory_stats(gpu)


def logical_gpus() -> list[str]:
    """This job's GPUs as TensorFlow's memory functions name them ("GPU:0")."""
    import tensorflow as tf

    return [device.name.split("device:")[-1] for device in tf.config.list_logical_devices("GPU")]


def global_random_state() -> dict[str, Any]:
    return {}  # every generator Keras uses here is a model variable, saved with the model


def restore_global_random_state(state: dict[str, Any]) -> None:
    pass


def placement(config: HardwareConfig) -> Placement:
    """MirroredStrategy over every GPU this process sees for hardware=multi_gpu, else TensorFlow's default
    strategy (one device)."""
    import tensorflow as tf

    if config.distribution is Distribution.mirrored:
        return strategy_placement(tf.distribute.MirroredStrategy())
    return strategy_placement(tf.distribute.get_strategy())


def strategy_placement(strategy: Any) -> Placement:
    """A tf.distribute.Strategy as a Placement: its replicas and its scope."""
    return Placement(strategy.num_replicas_in_sync, strategy.scope)


def batch_pipeline(batches: Callable[[], Iterator[Batch]], x: Images, y: np.ndarray,
                   count: Optional[int] = None) -> Any:
    """A tf.data pipeline over `batches()` (called at each pass) of the split (x, y): a streamed folder's,
    read in Python. `count` batches a pass when known (Keras then stops there instead of warning that the
    data ran out)."""
    import tensorflow as tf

    signature = tuple(tf.TensorSpec((None, *part.shape[1:]), tf.as_dtype(part.dtype)) for part in (x, y))
    return finished(tf.data.Dataset.from_generator(batches, output_signature=signature), count)


def array_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int,
                   order: np.ndarray) -> tuple[Any, Callable[[np.ndarray], Any]]:
    """A tf.data pipeline over the arrays (x, y) in memory, `batch_size` at a time in the order a variable
    holds (`order` to start with), and the function that sets the order of the next pass before it starts.
    No Python runs while it iterates: with a Python generator in the pipeline (from_generator), glibc
    unmapped and refaulted its heaps on every training step, up to half of an epoch's time."""
    import tensorflow as tf

    from cnnsweep.run.batches import batch_count

    with tf.device("/CPU:0"):  # where tf.data runs: it cannot read a variable on a GPU
        positions = tf.Variable(order, trainable=False, dtype=tf.int64)
    batches = (tf.data.Dataset.range(1).map(lambda _: positions.read_value())
               .flat_map(tf.data.Dataset.from_tensor_slices).batch(batch_size))
    arrays = tf.data.Dataset.from_tensors((shared_tensor(x), shared_tensor(y))).repeat()
    pipeline = tf.data.Dataset.zip((batches, arrays)).map(
        lambda batch, split: (tf.gather(split[0], batch), tf.gather(split[1], batch)))
    return finished(pipeline, batch_count(len(x), batch_size), reads_variable=True), positions.assign


def shared_tensor(array: np.ndarray) -> Any:
    """`array` as a tensor over the same memory where TensorFlow can read it in place (as the images
    cnnsweep.run.data loads), else a copy (as tf.convert_to_tensor makes of any array)."""
    import tensorflow as tf

    from cnnsweep.run.aligned import in_place_view

    view = in_place_view(array)
    return tf.convert_to_tensor(array) if view is None else tf.experimental.dlpack.from_dlpack(view.__dlpack__())


def finished(pipeline: Any, count: Optional[int], reads_variable: bool = False) -> Any:
    """`pipeline` with its batch count asserted, a fixed read-ahead and tf.data's autotuning off. Keras'
    own pipeline for a generator or arrays autotunes, and deleting an autotuned iterator waits out its
    tuning thread's current sleep, which doubles as training goes on: on a busy CPU, fit and evaluate
    returned seconds (up to a minute) after their last step."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    if reads_variable:  # the order is state outside the pipeline, which tf.data otherwise refuses to distribute
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    if count is not None:
        pipeline = pipeline.apply(tf.data.experimental.assert_cardinality(count))
    return pipeline.prefetch(PIPELINE_READ_AHEAD).with_options(options)
