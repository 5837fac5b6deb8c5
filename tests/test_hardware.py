"""Backend selection before Keras starts (cnnsweep.run.hardware): what each backend is told through its
environment, per hardware setting and launcher slot, and the one-line refusals. No training here; the
backends train in tests/test_backends.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cnnsweep.errors import ConfigError
from cnnsweep.run import hardware
from cnnsweep.run.config import compose_run_config
from cnnsweep.run.slot import SLOT_ENV, THREADS_ENV
from conftest import command_env, error_lines

BACKEND_VARIABLES = ("KERAS_BACKEND", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS",
                     "KERAS_TORCH_DEVICE", "CUBLAS_WORKSPACE_CONFIG", SLOT_ENV, THREADS_ENV)

# Run in a fresh process (no Keras imported yet, the backend's variables unset): select the backend for
# the overrides given, print what the environment and the CPU affinity became.
SELECT = """
import json, os, sys
from cnnsweep.run import hardware
from cnnsweep.run.config import compose_run_config
hardware.select_backend(compose_run_config(*sys.argv[1:]))
names = ("KERAS_BACKEND", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS", "KERAS_TORCH_DEVICE",
         "CUBLAS_WORKSPACE_CONFIG")
print(json.dumps({"env": {name: os.environ[name] for name in names if name in os.environ},
                  "cores": sorted(os.sched_getaffinity(0)), "keras_imported": "keras" in sys.modules}))
"""


def select(*overrides: str, **env: str) -> dict:
    clean = {name: value for name, value in command_env(**env).items()
             if name not in BACKEND_VARIABLES or name in env}
    process = subprocess.run([sys.executable, "-c", SELECT, *overrides], capture_output=True, text=True,
                             timeout=120, env=clean)
    assert process.returncode == 0, process.stderr[-2000:]
    import json

    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("overrides", "expected"), [
    (["hardware.backend=jax", "hardware=cpu"],
     {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
    (["hardware.backend=jax", "hardware=gpu"],
     {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
      "XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}),
    (["hardware.backend=jax", "hardware=gpu", "hardware.deterministic=false", "hardware.memory_growth=false"],
     {"KERAS_BACKEND": "jax"}),
    (["hardware.backend=torch", "hardware=cpu"],
     {"KERAS_BACKEND": "torch", "KERAS_TORCH_DEVICE": "cpu", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}),
    (["hardware.backend=torch", "hardware=gpu", "hardware.deterministic=false"], {"KERAS_BACKEND": "torch"}),
    (["hardware=gpu"], {"KERAS_BACKEND": "tensorflow"}),  # TensorFlow takes its settings after import
])
def test_each_backend_is_told_its_settings_before_keras_starts(overrides: list[str], expected: dict) -> None:
    selected = select(*overrides)
    assert selected["env"] == expected and not selected["keras_imported"]


def test_jax_keeps_the_users_xla_flags_and_adds_determinism() -> None:
    selected = select("hardware.backend=jax", XLA_FLAGS="--xla_dump_to=/tmp/x")
    assert selected["env"]["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"


def test_jax_slots_are_pinned_to_their_own_cores() -> None:
    """XLA sizes its CPU thread pool by the cores it may use: slot i of a parallel launcher gets the i-th
    share of them; explicit hardware.intra_op_threads does the same outside a launcher."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two usable cores")
    assert select("hardware.backend=jax", **{SLOT_ENV: "1", THREADS_ENV: "1"})["cores"] == [cores[1]]
    assert select("hardware.backend=jax", **{SLOT_ENV: "0", THREADS_ENV: "1"})["cores"] == [cores[0]]
    assert select("hardware.backend=jax", "hardware.intra_op_threads=1")["cores"] == [cores[0]]
    assert select("hardware.backend=jax")["cores"] == cores  # no limit: every usable core
    assert select("hardware.backend=torch", **{SLOT_ENV: "1", THREADS_ENV: "1"})["cores"] == cores


def test_a_backend_that_is_not_installed_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "jax" else
                        real_find_spec(name, *args))
    with pytest.raises(ConfigError) as raised:
        hardware.select_backend(compose_run_config("hardware.backend=jax"))
    assert str(raised.value) == ("hardware.backend=jax: jax is not installed; install it with `uv sync --extra jax` "
                                 "(or `pip install 'cnnsweep[jax]'`), or choose another hardware.backend")


def test_tensorboard_without_tensorflow_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorflow" else
                        real_find_spec(name, *args))
    with pytest.raises(ConfigError, match=r"^training.tensorboard=true \(or logger=tensorboard\) needs TensorFlow"):
        hardware.select_backend(compose_run_config("hardware.backend=jax", "training.tensorboard=true"))


SWITCH = """
import keras  # started on KERAS_BACKEND=torch
from cnnsweep.run import hardware
from cnnsweep.run.config import compose_run_config
hardware.select_backend(compose_run_config("hardware.backend=torch"))  # the same backend: fine
hardware.select_backend(compose_run_config("hardware.backend=jax"))
"""


def test_a_process_already_running_keras_cannot_switch_backend() -> None:
    process = subprocess.run([sys.executable, "-c", SWITCH], capture_output=True, text=True, timeout=120,
                             env=command_env(KERAS_BACKEND="torch"))
    assert process.returncode != 0
    assert ("ConfigError: hardware.backend=jax: Keras already runs on torch in this process and cannot switch; run "
            "each backend in a process of its own (launcher=local and launcher=parallel start one per backend)"
            ) in process.stderr


@pytest.mark.parametrize(("backend", "name", "install"), [
    ("tensorflow", "TensorFlow", "install a CUDA build of TensorFlow"),
    ("jax", "JAX", "install JAX with CUDA (`pip install 'jax[cuda12]'`)"),
    ("torch", "PyTorch", "install a CUDA build of PyTorch"),
])
def test_hardware_gpu_without_a_gpu_is_one_line_on_each_backend(run_cli, tiny_data, backend: str, name: str,
                                                                 install: str) -> None:
    result = run_cli("hardware=gpu", f"hardware.backend={backend}", "dataset=npz", f"dataset.path={tiny_data}",
                     env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert error_lines(result.stderr)[-1] == (f"error: hardware=gpu but {name} sees no GPU (CUDA_VISIBLE_DEVICES='');"
                                              f" use hardware=cpu or hardware=auto, or {install}")


FREEZE_TWICE = """
import gc, json
import keras
from cnnsweep.run import hardware
hardware.freeze_imported_objects()
first = gc.get_freeze_count()
jobs_objects = [[] for _ in range(1000)]
hardware.freeze_imported_objects()  # the next job's: a no-op
print(json.dumps({"first": first, "second": gc.get_freeze_count()}))
"""


def test_the_libraries_objects_are_frozen_once_per_process() -> None:
    """What a warm worker's jobs create stays collectable; what Keras and its backend imported is left out of
    every collection from the first job on."""
    process = subprocess.run([sys.executable, "-c", FREEZE_TWICE], capture_output=True, text=True, timeout=300,
                             env=command_env())
    assert process.returncode == 0, process.stderr[-3000:]
    counts = json.loads(process.stdout.strip().splitlines()[-1])
    assert counts["first"] > 50_000  # Keras and TensorFlow import hundreds of thousands of objects
    assert counts["second"] == counts["first"]


# A TensorFlow job imports Keras without JAX (which tf.lite would import), and the job's own code can still
# import it; a JAX job after it in that process, before Keras started (a warm worker whose first job failed
# early), starts as usual.
WITHOUT_JAX = """
import sys
from cnnsweep.run import hardware
from cnnsweep.run.config import compose_run_config
hardware.select_backend(compose_run_config("hardware.backend=tensorflow"))
hardware.select_backend(compose_run_config(*sys.argv[1:]))
import keras
imported_with_keras = "jax" in sys.modules
import jax
print(keras.config.backend(), imported_with_keras, jax.numpy.add(1, 2))
"""


@pytest.mark.parametrize(("backend", "printed"), [("tensorflow", "tensorflow False 3"), ("jax", "jax True 3")])
def test_a_tensorflow_job_starts_without_importing_jax(backend: str, printed: str) -> None:
    assert importlib.util.find_spec("jax") is not None, "the dev group installs JAX"
    clean = {name: value for name, value in command_env().items() if name not in BACKEND_VARIABLES}
    process = subprocess.run([sys.executable, "-c", WITHOUT_JAX, f"hardware.backend={backend}"], capture_output=True,
                             text=True, timeout=120, env=clean)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip().splitlines()[-1] == printed
