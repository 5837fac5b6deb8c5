"""Process setup for training on Keras' backend of choice: backend, devices, threads, precision, seeding,
determinism.

`select_backend` runs before anything imports Keras (Keras reads its backend once, at import); it sets
the environment the backend reads when it starts. `configure` then starts the backend and applies the
rest. The backend-specific parts live in cnnsweep.run.backends.<name>, imported only when chosen, so a
machine without TensorFlow runs JAX or PyTorch jobs.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Optional

from cnnsweep.errors import ConfigError, OutOfMemory, first_line
from cnnsweep.run.allocator import set_top_pad
from cnnsweep.run.backends import BACKENDS, Placement
from cnnsweep.run.config import HardwareConfig, RunConfig
from cnnsweep.run.slot import JOBS_PER_GPU_ENV, gpu_share, launcher_assignment, thread_counts, visible_gpu

# The hardware settings a backend fixes once per process (the backend itself, visible devices, memory
# growth, thread pools, the strategy's devices, XLA's determinism flags): a warm worker runs a job only
# when they equal its previous job's. The others (precision, jit_compile) are set again for every job.
PROCESS_WIDE = ("backend", "device", "intra_op_threads", "inter_op_threads", "memory_growth", "distribution",
                "deterministic")


def select_backend(run: RunConfig) -> None:
    """Make hardware.backend the backend Keras starts with in this process, or say in one line why not."""
    config = run.hardware
    _skip_optional_jax(config.backend)
    backend = BACKENDS[config.backend]
    if importlib.util.find_spec(backend.module) is None:
        raise ConfigError(f"hardware.backend={config.backend}: {backend.module} is not installed; "
                          f"{backend.install}, or choose another hardware.backend")
    if run.tensorboard and importlib.util.find_spec("tensorflow") is None:
        raise ConfigError("training.tensorboard=true (or logger=tensorboard) needs TensorFlow, on any "
                          "hardware.backend, and it is not installed; install it or set training.tensorboard=false")
    keras = sys.modules.get("keras")
    if keras is not None:
        running = keras.config.backend()
        if running != config.backend:
            raise ConfigError(
                f"hardware.backend={config.backend}: Keras already runs on {running} in this process and cannot "
                "switch; run each backend in a process of its own (launcher=local and launcher=parallel start one "
                "per backend)")
        return
    os.environ["KERAS_BACKEND"] = config.backend
    intra_op, inter_op = thread_counts(config)
    for name, value in _backend_module(config.backend).environment(config, intra_op, inter_op).items():
        os.environ[name] = value


class _NoOptionalJax(importlib.abc.MetaPathFinder):
    """Fails the `import jax` of the modules in IMPORTERS, and only theirs: where JAX is installed, tf.lite
    imports it to convert JAX functions and Keras' Orbax callback to patch it, neither of which a run on
    another backend uses, and both expect an ImportError where it is not. JAX's import is a noticeable share
    of every TensorFlow job's start; any other import of JAX (a JAX job's Keras, a user's module) works as
    usual."""

    IMPORTERS = ("tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint")

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "jax" and self._asked_by_an_importer():
            raise ModuleNotFoundError("not imported for this module (cnnsweep.run.hardware)", name=fullname)
        return None

    def _asked_by_an_importer(self) -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__") in self.IMPORTERS:
                return True
            frame = frame.f_back
        return False


def _skip_optional_jax(backend: str) -> None:
    if backend != "jax" and not any(isinstance(finder, _NoOptionalJax) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoOptionalJax())


def configure(config: HardwareConfig, seed: int) -> dict[str, Any]:
    """Start the backend with the hardware settings and seed; return a description of the devices in use."""
    import keras

    top_pad = set_top_pad(config.malloc_top_pad_mb)
    module = _backend_module(config.backend)
    devices = module.configure(config, *thread_counts(config))
    module.reset_gpu_memory_peak()  # each job of a warm worker measures its own (launcher.jobs_per_gpu=auto)
    keras.backend.clear_session()  # a warm worker's previous job leaves no model, graph or layer names
    keras.mixed_precision.set_global_policy(config.precision.value)
    keras.utils.set_random_seed(seed)
    return {
        "backend": config.backend,
        **devices,
        **launcher_assignment(),
        "precision": config.precision.value,
        "jit_compile": config.jit_compile,
        "deterministic": config.deterministic,
        "malloc_top_pad_mb": top_pad,
    }


def freeze_imported_objects() -> None:
    """Once per process, after the backend and Keras are imported: move every object alive now (mostly
    the libraries' own) out of the garbage collector's scans (gc.freeze), so the collection after each
    fit, and Python's own, walk only what jobs create. A warm worker runs many short jobs."""
    if gc.get_freeze_count() == 0:
        gc.freeze()


def placement(config: HardwareConfig) -> Placement:
    """The devices a model trains on (hardware.distribution) and the scope to build it in."""
    return _backend_module(config.backend).placement(config)


def peak_gpu_memory() -> Optional[int]:
    """The most GPU memory this job held at once, in bytes (None on the CPU): what
    launcher.jobs_per_gpu=auto packs the next jobs by."""
    import keras

    return _backend_module(keras.config.backend()).peak_gpu_memory()


def global_random_state() -> dict[str, Any]:
    """The running backend's own global generators, for a checkpoint: PyTorch's (Keras' Dropout without a
    seed draws from it there); {} on TensorFlow and JAX, whose generators are all model variables."""
    import keras

    return _backend_module(keras.config.backend()).global_random_state()


def restore_global_random_state(state: dict[str, Any]) -> None:
    import keras

    _backend_module(keras.config.backend()).restore_global_random_state(state)


def _backend_module(name: str) -> ModuleType:
    return importlib.import_module(f"cnnsweep.run.backends.{name}")


# How each backend says it could not allocate: torch.OutOfMemoryError and "can't allocate memory" (its CPU
# allocator), XLA's RESOURCE_EXHAUSTED (JAX), TensorFlow's ResourceExhaustedError ("OOM when allocating").
OUT_OF_MEMORY_TYPES = ("OutOfMemoryError", "ResourceExhaustedError", "MemoryError")
OUT_OF_MEMORY_WORDS = ("out of memory", "resource_exhausted", "can't allocate memory", "oom when allocating")


def out_of_memory(error: BaseException) -> Optional[OutOfMemory]:
    """A backend's allocation failure as one line naming the fix (with launcher.jobs_per_gpu, the job's
    share of its GPU); None for any other error."""
    text = str(error).lower()
    if type(error).__name__ not in OUT_OF_MEMORY_TYPES and not any(word in text for word in OUT_OF_MEMORY_WORDS):
        return None
    share = gpu_share()
    if share is not None:
        setting = os.environ.get(JOBS_PER_GPU_ENV) or str(round(1 / share))
        return OutOfMemory(f"out of memory on GPU {visible_gpu()}, where this job may use {share:.2g} of the memory "
                           f"(launcher.jobs_per_gpu={setting}); lower launcher.jobs_per_gpu or "
                           "training.batch_size")
    return OutOfMemory(f"out of memory ({first_line(error)[:160]}); lower training.batch_size or the model's size")
