"""JAX: devices, memory and determinism through the variables XLA reads when it starts; threads by
pinning the process to its cores (XLA sizes its CPU thread pool by the cores it may use, and has no
thread-count setting); keras.distribution.DataParallel for hardware=multi_gpu."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from importlib import metadata
from typing import Any, Optional

from cnnsweep.run.backends import Placement, no_gpu
from cnnsweep.run.config import Device, Distribution, HardwareConfig
from cnnsweep.run.slot import gpu_share, slot_cores

GPU_PLATFORMS = ("gpu", "cuda", "rocm")
DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"
# The cap on the part of GPU memory JAX may use: jaxlib 0.10 renamed it, and refuses both names at once.
MEMORY_FRACTION_NAMES = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def memory_fraction_name(jaxlib_version: str) -> str:
    major, minor = (int(part) for part in jaxlib_version.split(".")[:2])
    return MEMORY_FRACTION_NAMES[0] if (major, minor) >= (0, 10) else MEMORY_FRACTION_NAMES[1]


def environment(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, str]:
    """JAX_PLATFORMS, XLA_PYTHON_CLIENT_PREALLOCATE, the memory fraction and XLA_FLAGS as this job needs
    them; pins the process to `intra_op` cores (inter_op has no JAX counterpart)."""
    env: dict[str, str] = {}
    if config.device is Device.cpu:
        env["JAX_PLATFORMS"] = "cpu"
    if config.memory_growth:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # else JAX takes 75% of the GPU at start
    share = gpu_share()
    if share is not None:  # the allocator's limit, with or without preallocation
        name = memory_fraction_name(metadata.version("jaxlib"))
        for other in MEMORY_FRACTION_NAMES:
            os.environ.pop(other, None)
        env[name] = f"{share:.3f}"
    flags = os.environ.get("XLA_FLAGS", "")
    if config.deterministic and config.device is not Device.cpu and DETERMINISTIC_GPU_FLAG not in flags:
        env["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_GPU_FLAG}".strip()  # XLA on CPU is deterministic already
    if intra_op is not None:
        os.sched_setaffinity(0, slot_cores(intra_op))
    return env


def configure(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, Any]:
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # its TPU probe's line on every run
    import jax

    devices = jax.devices()
    gpus = [device for device in devices if device.platform in GPU_PLATFORMS]
    if config.device is Device.gpu and not gpus:
        raise no_gpu("JAX", "install JAX with CUDA (`pip install 'jax[cuda12]'`)")
    return {
        "device": "gpu" if gpus else "cpu",
        "gpus": [str(device) for device in gpus],
        "logical_devices": [str(device) for device in devices],
        "intra_op_threads": len(os.sched_getaffinity(0)),  # the cores XLA's thread pool is sized by
        "inter_op_threads": None,
    }


def peak_gpu_memory() -> Optional[int]:
    """The most GPU memory this process's JAX held at once (bytes), None on the CPU. JAX cannot reset the
    count, so in a warm worker it is the largest of the jobs it ran: never an underestimate."""
    import jax

    stats = [device.memory_stats() for device in jax.local_devices() if device.platform in GPU_PLATFORMS]
    return max((int(stat["peak_bytes_in_use"]) for stat in stats if stat and "peak_bytes_in_use" in stat), default=None)


def reset_gpu_memory_peak() -> None:
    pass  # see peak_gpu_memory


def global_random_state() -> dict[str, Any]:
    return {}  # every generator Keras uses here is a model variable, saved with the model


def restore_global_random_state(state: dict[str, Any]) -> None:
    pass


def placement(config: HardwareConfig) -> Placement:
    """hardware=multi_gpu: Keras' DataParallel over every device JAX sees; else one device."""
    import keras

    if config.distribution is Distribution.mirrored:
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Placement(len(devices), nullcontext)
    return Placement(1, nullcontext)
