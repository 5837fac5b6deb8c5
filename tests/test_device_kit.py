"""The device kit (benchmarks/device_kit_prepare.py) carries what a GPU machine without TensorFlow and
without internet lacks: a JAX run and a JAX search succeed in processes that can import only what that
machine has (ON_DEVICE, with what those require) and the kit (KIT_DISTRIBUTIONS), and every distribution
in the kit is imported by them (none travels for nothing)."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN

sys.path.insert(0, str(ROOT / "benchmarks"))
from device_kit_prepare import KIT_DISTRIBUTIONS, ON_DEVICE  # noqa: E402

pytestmark = pytest.mark.tensorflow  # trains real (JAX) models

# Every Python process the commands start (sweep, warm workers) writes the modules it imported, at exit.
# Every Python process the commands start (sweep, warm workers) sees only what the GPU machine would
# have: the modules of every other installed distribution (TensorFlow among them: Keras imports it on any
# backend where it can) are unimportable; and each process writes the modules it imported when it exits
# (a warm worker ends with SIGTERM when its sweep exits: it dies with its parent, so that writes them too).
DEVICE_ONLY = """
import atexit, json, os, signal, sys

BLOCKED = set(json.loads(os.environ["CNNSWEEP_BLOCKED_MODULES"]))

class NotOnTheDevice:
    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] in BLOCKED or ".".join(parts[:2]) in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine)", name=name)
        return None

sys.meta_path.insert(0, NotOnTheDevice())

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
    """Each installed file's path -> the distribution that installed it."""
    owners: dict[str, str] = {}
    for distribution in metadata.distributions():
        for file in distribution.files or []:
            owners[str(Path(distribution.locate_file(file)).resolve())] = normalized(distribution.metadata["Name"])
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


def test_a_jax_run_and_search_need_only_the_device_and_the_kit(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    kit = {normalized(name) for name in KIT_DISTRIBUTIONS}
    available = with_requirements(set(ON_DEVICE)) | kit | {"cnnsweep"} | HYDRA_PLUGINS_HERE
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "sitecustomize.py").write_text(DEVICE_ONLY)
    (tmp_path / "imports").mkdir()
    env = {"CNNSWEEP_DATA_DIR": str(mnist_dir), "PYTHONPATH": str(tmp_path / "device"),
           "CNNSWEEP_IMPORT_LOG": str(tmp_path / "imports"),
           "CNNSWEEP_BLOCKED_MODULES": json.dumps(blocked_modules(available))}
    assert "tensorflow" in json.loads(env["CNNSWEEP_BLOCKED_MODULES"])
    single = run_cli(*TINY_RUN, "training.epochs=1", "hardware.backend=jax", f"hydra.run.dir={tmp_path / 'run'}",
                     env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    search = run_cli("-m", "sweeps=quick", *TINY_RUN, "training.epochs=1", "dataset.val_size=128",
                     "hardware.backend=jax", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'search'}",
                     f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", env=env, timeout=600)
    assert search.returncode == 0, search.stderr[-3000:]

    logs = [json.loads(path.read_text()) for path in (tmp_path / "imports").glob("*.json")]
    assert len(logs) >= 3  # the run, the sweep and its warm worker
    owners = distribution_files()
    imported = {owners[str(Path(file).resolve())] for log in logs for file in log.values()
                if file and str(Path(file).resolve()) in owners}
    assert {"jax", "keras", "optuna", "hydra-core", "sqlalchemy"} <= imported <= available
    unused = kit - imported
    assert unused == set(), f"in the kit but never imported: {sorted(unused)}"
