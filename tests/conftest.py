"""Shared fixtures: config composition, small synthetic .npz files, the real MNIST and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
RUN_SCRIPT = ROOT / "src" / "run.py"
RERUN_SCRIPT = ROOT / "src" / "rerun.py"
# A slice of MNIST small enough for a one-epoch run in a few seconds on two cores.
TINY_RUN = ["dataset.max_train=512", "dataset.max_test=256", "training.epochs=2", "model.filters=8",
            "model.dense_units=16", "training.batch_size=64"]


@pytest.fixture
def compose_config() -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, exactly as `src/run.py` would."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def mnist_dir() -> Path:
    """The folder holding the real mnist.npz, from CNNSWEEP_DATA_DIR (set by .ci/run)."""
    data_dir = os.environ.get("CNNSWEEP_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "mnist.npz").is_file():
        pytest.skip("the real MNIST is needed: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    return Path(data_dir)


def write_npz(path: Path, n_train: int = 64, n_test: int = 32, shape: tuple[int, ...] = (28, 28),
              num_classes: int = 10, dtype: str = "uint8", **replace: np.ndarray) -> Path:
    """A small random dataset in Keras' .npz layout; `replace` swaps in broken arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape)).astype(dtype),
        "y_train": rng.integers(0, num_classes, n_train).astype("uint8"),
        "x_test": rng.integers(0, 256, (n_test, *shape)).astype(dtype),
        "y_test": rng.integers(0, num_classes, n_test).astype("uint8"),
    }
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run an entry script in a subprocess from a temporary folder (so outputs/ lands there)."""

    def _run(*args: str, script: Path = RUN_SCRIPT, env: Optional[dict[str, str]] = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
        full_env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
        full_env.update(env or {})
        return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return _run


def error_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's own start-up chatter (absl/CUDA probes), which cnnsweep does not print."""
    noise = ("WARNING: All log messages before absl", "I0000", "E0000", "W0000", "To enable the following")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]
