"""Keras 3's backends as cnnsweep runs them: one module per backend (tensorflow, jax, torch), each with

- `environment(config, intra_op, inter_op)`: variables (and process settings) the backend reads when it
  starts, applied before Keras is imported;
- `configure(config, intra_op, inter_op)`: devices, threads and determinism once it has started, returning
  what it set up (environment.json's `devices`);
- `placement(config)`: where a model trains (hardware.distribution).

cnnsweep.run.hardware calls only the chosen backend's module, and each module imports its backend inside
its functions, so the others need not be installed.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

from cnnsweep.errors import ConfigError


@dataclass(frozen=True)
class BackendInfo:
    module: str  # the package Keras imports for it
    install: str  # how a user gets it
    packages: tuple[str, ...]  # distributions whose versions environment.json records


BACKENDS = {
    "tensorflow": BackendInfo("tensorflow", "`uv sync` installs it (a core dependency)", ("tensorflow",)),
    "jax": BackendInfo("jax", "install it with `uv sync --extra jax` (or `pip install 'cnnsweep[jax]'`)",
                       ("jax", "jaxlib")),
    "torch": BackendInfo("torch", "install it with `uv sync --extra torch` (or `pip install 'cnnsweep[torch]'`)",
                         ("torch",)),
}


@dataclass(frozen=True)
class Placement:
    """Where a model trains: `replicas` devices share each step (the global batch is training.batch_size x
    replicas), and its variables are created inside `scope()`."""

    replicas: int
    scope: Callable[[], AbstractContextManager[Any]]


def no_gpu(backend: str, install: str) -> ConfigError:
    """hardware=gpu where the backend sees no GPU, as one line (naming CUDA_VISIBLE_DEVICES when it is set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return ConfigError(f"hardware=gpu but {backend} sees no GPU{where}; use hardware=cpu or hardware=auto, "
                       f"or {install}")


def set_once(current: Any, wanted: Any, setter: Callable[[Any], None], key: str, backend: str) -> None:
    """A setting the backend fixes once it has started (devices, thread pools): only a real change is
    attempted, and the backend's refusal is one line naming the key."""
    if current == wanted:
        return
    try:
        setter(wanted)
    except RuntimeError as error:
        raise ConfigError(f"{key}: cannot change to {wanted!r} after {backend} started in this process ({error}); "
                          "start a fresh process") from error
