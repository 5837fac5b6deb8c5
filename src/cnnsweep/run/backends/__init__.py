"""Keras 3's backends as cnnsweep runs them: one module per backend (tensorflow, jax, torch), each with

- `environment(config, intra_op, inter_op)`: variables (and process settings) the backend reads when it
  starts, applied before Keras is imported;
- `configure(config, intra_op, inter_op)`: devices, threads and determinism once it has started, returning
  what it set up (environment.json's `devices`);
- `placement(config)`: where a model trains (hardware.distribution).

Only the chosen backend's module is imported (cnnsweep.run.hardware), so the others need not be installed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable


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
