"""PyTorch: the device through KERAS_TORCH_DEVICE, threads through torch's own pools (the inter-op pool
is fixed once used), torch.use_deterministic_algorithms, a slot's GPU memory share through
torch.cuda.set_per_process_memory_fraction. Keras has no data-parallel training on PyTorch,
so hardware=multi_gpu is refused (cnnsweep.run.config)."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Optional

from cnnsweep.run.backends import Placement, no_gpu, set_once
from cnnsweep.run.config import Device, HardwareConfig
from cnnsweep.run.slot import gpu_share


def environment(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, str]:
    env: dict[str, str] = {}
    if config.device is Device.cpu:
        env["KERAS_TORCH_DEVICE"] = "cpu"
    if config.deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS' deterministic mode, which torch requires for it
    return env


def configure(config: HardwareConfig, intra_op: Optional[int], inter_op: Optional[int]) -> dict[str, Any]:
    import torch

    gpu = config.device is not Device.cpu and torch.cuda.is_available()
    if config.device is Device.gpu and not gpu:
        raise no_gpu("PyTorch", "install a CUDA build of PyTorch")
    if intra_op is not None:
        torch.set_num_threads(intra_op)
    if inter_op is not None:
        set_once(torch.get_num_interop_threads(), inter_op, torch.set_num_interop_threads, "hardware.inter_op_threads",
                 "PyTorch")
    torch.use_deterministic_algorithms(config.deterministic)
    share = gpu_share()
    if gpu and share is not None:
        torch.cuda.set_per_process_memory_fraction(share, 0)  # the job sees one GPU: its slot's
    return {
        "device": "gpu" if gpu else "cpu",
        "gpus": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] if gpu else [],
        "logical_devices": ["cuda:0" if gpu else "cpu"],
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
    }


def peak_gpu_memory() -> Optional[int]:
    """The most GPU memory PyTorch's allocator reserved at once for this job (bytes), None on the CPU."""
    import torch

    return int(torch.cuda.max_memory_reserved(0)) if torch.cuda.is_initialized() else None


def reset_gpu_memory_peak() -> None:
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats(0)


def global_random_state() -> dict[str, Any]:
    """torch's global generators (CPU, and each GPU's once CUDA started): Keras' Dropout without a seed
    draws its masks from them on this backend, so a resumed run needs them to continue the same sequence."""
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_initialized():
        state["cuda"] = [generator.tolist() for generator in torch.cuda.get_rng_state_all()]
    return state


def restore_global_random_state(state: dict[str, Any]) -> None:
    import torch

    if "cpu" in state:
        torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state:
        torch.cuda.set_rng_state_all([torch.tensor(generator, dtype=torch.uint8) for generator in state["cuda"]])


def placement(config: HardwareConfig) -> Placement:
    return Placement(1, nullcontext)
