"""TensorFlow process setup: devices, threads, precision, seeding and determinism.

Everything here must happen before TensorFlow runs its first op, so `configure` is the first place
TensorFlow is imported on the training path.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from cnnsweep.errors import ConfigError
from cnnsweep.run.config import Device, Distribution, HardwareConfig

# Set by the process launcher (cnnsweep.launch.devices) for each job's process: its slot, and its share
# of the cores, used when hardware.*_threads are null.
SLOT_ENV = "CNNSWEEP_SLOT"
THREADS_ENV = "CNNSWEEP_CPU_THREADS"


# The hardware settings TensorFlow fixes once per process (visible devices, memory growth, thread pools,
# the strategy's devices): a warm worker runs a job only when they equal its previous job's. The others
# (precision, jit_compile, deterministic) are set again by `configure` for every job.
PROCESS_WIDE = ("device", "intra_op_threads", "inter_op_threads", "memory_growth", "distribution")


def configure(config: HardwareConfig, seed: int) -> dict[str, Any]:
    """Apply the hardware settings and seed; return a description of the devices in use."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.device is Device.cpu and gpus:
        _set_once(tf.config.get_visible_devices("GPU"), [], lambda _: tf.config.set_visible_devices([], "GPU"))
        gpus = []
    if config.device is Device.gpu and not gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            "hardware=gpu but TensorFlow sees no GPU"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
            + "; use hardware=cpu or hardware=auto, or install a CUDA build of TensorFlow"
        )
    if config.memory_growth:
        for gpu in gpus:
            _set_once(
                tf.config.experimental.get_memory_growth(gpu),
                True,
                lambda value, gpu=gpu: tf.config.experimental.set_memory_growth(gpu, value),
            )
    threading = tf.config.threading
    intra_op, inter_op = thread_counts(config)
    if intra_op is not None:
        _set_once(
            threading.get_intra_op_parallelism_threads(),
            intra_op,
            threading.set_intra_op_parallelism_threads,
            "hardware.intra_op_threads",
        )
    if inter_op is not None:
        _set_once(
            threading.get_inter_op_parallelism_threads(),
            inter_op,
            threading.set_inter_op_parallelism_threads,
            "hardware.inter_op_threads",
        )
    keras.backend.clear_session()  # a warm worker's previous job leaves no model, graph or layer names
    keras.mixed_precision.set_global_policy(config.precision.value)
    keras.utils.set_random_seed(seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf.config.experimental.disable_op_determinism()
    return {
        "device": "gpu" if gpus else "cpu",
        "gpus": [gpu.name for gpu in gpus],
        "logical_devices": [device.name for device in tf.config.list_logical_devices()],
        **launcher_assignment(),
        "intra_op_threads": threading.get_intra_op_parallelism_threads(),  # 0: TensorFlow's default
        "inter_op_threads": threading.get_inter_op_parallelism_threads(),
        "precision": config.precision.value,
        "jit_compile": config.jit_compile,
        "deterministic": config.deterministic,
    }


def make_strategy(config: HardwareConfig) -> Any:
    """MirroredStrategy over every GPU this process sees for hardware=multi_gpu, else TensorFlow's
    default (one device). Its replica count scales the batch: training.batch_size is per replica."""
    import tensorflow as tf

    if config.distribution is Distribution.mirrored:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def launcher_assignment() -> dict[str, Any]:
    """What the process launcher gave this job (cnnsweep.launch.devices): its GPU, slot and share of the cores."""
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "launcher_slot": os.environ.get(SLOT_ENV),
        "launcher_cpu_threads": os.environ.get(THREADS_ENV),
        "cpu_count": os.cpu_count(),
    }


def thread_counts(config: HardwareConfig) -> tuple[Optional[int], Optional[int]]:
    """Explicit hardware.*_threads win; else a parallel launcher's share of the cores for this job
    (intra-op gets the share; two inter-op threads, since one can deadlock ops that wait on others)."""
    share = os.environ.get(THREADS_ENV)
    if not share:
        return config.intra_op_threads, config.inter_op_threads
    if not share.isdigit() or int(share) < 1:
        raise ConfigError(f"{THREADS_ENV}={share!r}: must be a positive number of threads; unset it")
    intra_op = config.intra_op_threads if config.intra_op_threads is not None else int(share)
    inter_op = config.inter_op_threads if config.inter_op_threads is not None else 2
    return intra_op, inter_op


def _set_once(current: Any, wanted: Any, setter: Callable[[Any], None], key: str = "hardware") -> None:
    """TensorFlow refuses device and thread changes once it has started; only a real change is an error."""
    if current == wanted:
        return
    try:
        setter(wanted)
    except RuntimeError as error:
        raise ConfigError(
            f"{key}: cannot change to {wanted!r} after TensorFlow started in this process ({error}); "
            "start a fresh process"
        ) from error
