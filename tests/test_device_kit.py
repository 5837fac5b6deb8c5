"""The device kit (benchmarks/device_kit_prepare.py) carries what a GPU machine without TensorFlow and
without internet lacks: a search over JAX and PyTorch trials succeeds in processes that can import only what
that machine has (ON_DEVICE, with what those require) and the kit (KIT_DISTRIBUTIONS), and every
distribution in the kit is imported by them (none travels for nothing)."""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, TINY_RUN, worker_of

sys.path.insert(0, str(ROOT / "benchmarks"))
from device_kit_prepare import KIT_DISTRIBUTIONS, ON_DEVICE  # noqa: E402

pytestmark = pytest.mark.tensorflow  # trains real (JAX) models

# Every Python process the commands start (sweep, warm workers) sees only what the GPU machine would
# have: the modules of every other installed distribution (TensorFlow among them: Keras imports it on any
# backend where it can) are unimportable; and each process writes the modules it imported when it exits
# (a warm worker ends with SIGTERM when its sweep exits: it dies with its parent, so that writes them too).
DEVICE_ONLY = """
import atexit, importlib.machinery, json, os, signal, sys

BLOCKED = set(json.loads(os.environ["CNNSWEEP_BLOCKED_MODULES"]))

# The path finder, finding nothing of a blocked distribution: as if it were not installed, so an import
# fails and a probe (importlib.util.find_spec, as PyTorch makes for scikit-learn) answers None.
class NotOnTheDevice(importlib.machinery.PathFinder):

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] in BLOCKED or ".".join(parts[:2]) in BLOCKED:
            return None
        return super().find_spec(name, path, target)

sys.meta_path[:] = [NotOnTheDevice if finder is importlib.machinery.PathFinder else finder for finder in sys.meta_path]

def _write_imports():
    modules = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items()) if module}
    with open(os.path.join(os.environ["CNNSWEEP_IMPORT_LOG"], f"{os.getpid()}.json"), "w") as handle:
        json.dump(modules, handle)

def _on_sigterm(signum, frame):
    _write_imports()
    os._exit(143)

atexit.register(_write_imports)
signal.signal(signal.SIGTERM, _on_sigterm)
"""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_files() -> dict[str, str]:
    """Each installed file's real path -> the distribution that installed it. The metadata is read and the
    install folder resolved once per distribution, not for each of its files: TensorFlow alone has tens of
    thousands."""
    owners: dict[str, str] = {}
    for distribution in metadata.distributions():
        name, root = normalized(distribution.metadata["Name"]), Path(distribution.locate_file("")).resolve()
        for file in distribution.files or []:
            owners[os.path.normpath(root / file)] = name
    return owners


def with_requirements(names: set[str]) -> set[str]:
    """The distributions named and, recursively, those they require (extras left out), as installed here."""
    found, todo = set(), list(names)
    while todo:
        name = normalized(todo.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0] for requirement in requirements
                 if "extra ==" not in requirement]
    return found


def blocked_modules(available: set[str]) -> list[str]:
    """The modules of every installed distribution outside `available`: a top-level module that only such
    distributions provide, or, inside a namespace package shared with an available one (hydra_plugins),
    the subpackage that distribution installs."""
    providers = metadata.packages_distributions()
    blocked: set[str] = set()
    for distribution in metadata.distributions():
        if normalized(distribution.metadata["Name"]) in available:
            continue
        for file in distribution.files or []:
            parts = Path(str(file)).with_suffix("").parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] in ("..", "bin"):
                continue
            shared = {normalized(name) for name in providers.get(parts[0], [])} & available
            blocked.add(".".join(parts[:2]) if shared and len(parts) > 1 else parts[0])
    return sorted(blocked)


# The released Optuna sweeper (dev group, for benchmarks/scheduling.py) is the one Hydra plugin that cannot
# be hidden here: Hydra's plugin scan loads plugin files through pkgutil, past sys.meta_path. The GPU
# machine has none; nothing of cnnsweep's imports it.
HYDRA_PLUGINS_HERE = {"hydra-optuna-sweeper"}


def test_a_search_over_jax_and_torch_needs_only_the_device_and_the_kit(run_cli, mnist_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Also the backends' search behaviour: each trial runs on the backend it drew, a warm worker per backend
    in turn (replaced when the next trial's backend differs), and mixed precision on both (bfloat16
    activations with float32 weights still learn)."""
    kit = {normalized(name) for name in KIT_DISTRIBUTIONS}
    available = with_requirements(set(ON_DEVICE)) | kit | {"cnnsweep"} | HYDRA_PLUGINS_HERE
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "sitecustomize.py").write_text(DEVICE_ONLY)
    (tmp_path / "imports").mkdir()
    env = {"CNNSWEEP_DATA_DIR": str(mnist_dir), "PYTHONPATH": str(tmp_path / "device"), "KERAS_BACKEND": "jax",
           "CNNSWEEP_IMPORT_LOG": str(tmp_path / "imports"),
           "CNNSWEEP_BLOCKED_MODULES": json.dumps(blocked_modules(available))}
    assert "tensorflow" in json.loads(env["CNNSWEEP_BLOCKED_MODULES"])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = run_cli("-m", "sweeps=quick", *TINY_RUN, "training.epochs=1", "dataset.val_size=128",
                     "hydra.sweeper.n_trials=4", "hardware.backend=choice(jax,torch)",
                     "hardware.precision=mixed_bfloat16",
                     f"hydra.sweep.dir={tmp_path / 'search'}", f"hydra.sweeper.storage={storage}", env=env,
                     timeout=600)
    assert search.returncode == 0, search.stderr[-3000:]

    study = optuna.load_study(study_name="quick", storage=storage)
    assert len(study.trials) == 4 and all(trial.state.is_finished() for trial in study.trials)
    backends = [trial.params["hardware.backend"] for trial in study.trials]
    assert set(backends) == {"jax", "torch"}  # trial 0 is the composed config's (KERAS_BACKEND); the seed picks torch
    workers = [worker_of(tmp_path / "search" / str(trial.number)) for trial in study.trials]
    assert [backend for backend, _ in workers] == backends
    for (backend, pid), (next_backend, next_pid) in zip(workers, workers[1:]):
        assert (pid == next_pid) == (backend == next_backend)
    for trial in study.trials:
        devices = json.loads((tmp_path / "search" / str(trial.number) / "environment.json").read_text())["devices"]
        assert devices["precision"] == "mixed_bfloat16"
    assert study.best_value > 0.15  # val_accuracy above chance (0.1)

    logs = [json.loads(path.read_text()) for path in (tmp_path / "imports").glob("*.json")]
    assert len(logs) >= 3  # the sweep and a warm worker per backend
    owners = distribution_files()
    imported = {owners[str(Path(file).resolve())] for log in logs for file in log.values()
                if file and str(Path(file).resolve()) in owners}
    assert {"jax", "torch", "keras", "optuna", "hydra-core", "sqlalchemy"} <= imported <= available
    unused = kit - imported
    assert unused == set(), f"in the kit but never imported: {sorted(unused)}"
