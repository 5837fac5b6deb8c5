"""Shared fixtures: config composition, small synthetic .npz files and drawn image folders, the real MNIST and
command runs.

Two tiers (markers in pyproject.toml): tests marked `tensorflow` train real Keras models (about a
minute each on two cores); the rest, the fast tier (`uv run pytest -m "not tensorflow and not slurm"`), drive the same
commands, launchers and searches with tests/fake_run.py, which replaces only the training.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, NoReturn, Optional, Sequence

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from cnnsweep.run.checkpoints import Checkpoints
from cnnsweep.run.config import DatasetConfig, compose_run_config

# The suite starts hundreds of Python processes: let them write the project's own bytecode (src/, tests/;
# git-ignored) once, where the machine sets PYTHONDONTWRITEBYTECODE, instead of compiling it at every start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
RUN_SCRIPT = ROOT / "src" / "run.py"
RUN = [sys.executable, str(RUN_SCRIPT)]  # the front door, real training
FAKE_RUN = [sys.executable, str(ROOT / "tests" / "fake_run.py")]  # the same, training replaced by arithmetic
CNNSWEEP = [str(Path(sys.executable).parent / "cnnsweep")]  # the installed [project.scripts] command
REPORT = [*CNNSWEEP, "report"]
RERUN = [*CNNSWEEP, "rerun"]
# A slice of MNIST small enough for a one-epoch run in a few seconds on two cores.
TINY_RUN = ["dataset.max_train=512", "dataset.max_test=256", "training.epochs=2", "model.filters=8",
            "model.dense_units=16", "training.batch_size=64"]


REQUIRE_ENV = "CNNSWEEP_REQUIRE"  # `all` (set by .ci/run): a test that lacks what it needs fails instead of skipping
MARKERS = ("slurm", "server", "tensorflow")  # counted apart in the summary, each test under the first it carries


def missing(reason: str) -> NoReturn:
    """This machine lacks what the test needs (the real MNIST, a server, the cluster, a browser, root):
    skip with the reason, or under CNNSWEEP_REQUIRE=all, as in CI, fail with it, so a green CI means every
    real test ran."""
    if os.environ.get(REQUIRE_ENV) == "all":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=all: no test may skip)", pytrace=False)
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many tests of each marker ran, passed, failed or skipped: CI's proof that the real ones ran."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or \
                    (outcome == "passed" and report.when != "call"):
                continue
            keywords = getattr(report, "keywords", {})
            marker = next((name for name in MARKERS if name in keywords), "other")
            counts.setdefault(marker, {}).setdefault(outcome, 0)
            counts[marker][outcome] += 1
    if counts:
        terminalreporter.write_sep("-", "tests by marker")
        for marker in (*MARKERS, "other"):
            if marker in counts:
                terminalreporter.write_line(f"{marker}: " + ", ".join(f"{number} {outcome}" for outcome, number
                                                                     in counts[marker].items()))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): one worker per usable core, plus one for each group of Slurm tests
    (tests/test_slurm_cluster.py) when a cluster is up and they are selected: those wait on Slurm's
    clock, not on the cores."""
    cores = len(os.sched_getaffinity(0))
    slurm_selected = "not slurm" not in (config.getoption("markexpr") or "")
    return cores + (2 if slurm_selected and os.environ.get("CNNSWEEP_TEST_SLURM_PARTITION") else 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so the parallel workers finish together: the Slurm tests (they wait on the cluster
    for minutes), then the real-TensorFlow ones, then the rest in file order."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slurm") else
               1 if item.get_closest_marker("tensorflow") else 2)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, in one line, a test whose xdist_group `--dist loadgroup` lost (the suite relies on the groups: the
    Slurm tests' turns on the one-node cluster, fixtures made once per group), rather than run it in the
    wrong worker."""
    if getattr(item.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group") \
            and "@" not in item.nodeid:
        pytest.fail("--dist loadgroup lost this test's xdist_group (pytest-dev/pytest-xdist#1386): install the "
                    "pytest that pyproject.toml's dev group allows (`uv sync`)", pytrace=False)


@pytest.fixture
def compose_config() -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, exactly as `src/run.py` would."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def dataset_config(**fields) -> DatasetConfig:
    """conf/dataset/npz.yaml's settings (no file yet, every limit off, classes inferred) with `fields` changed."""
    return replace(compose_run_config("dataset=npz", "dataset.path=unset.npz").dataset, **{"path": None, **fields})


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the real mnist.npz, from CNNSWEEP_DATA_DIR (set by .ci/run)."""
    data_dir = os.environ.get("CNNSWEEP_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "mnist.npz").is_file():
        missing("the real MNIST is needed: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
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


CLASSES = ("circle", "square", "stripes")


def draw(shape: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One image of `shape` on a random background, in a random colour."""
    width, height = size
    background = tuple(int(value) for value in rng.integers(0, 80, 3))
    colour = tuple(int(value) for value in rng.integers(150, 256, 3))
    image = Image.new("RGB", size, background)
    pen = ImageDraw.Draw(image)
    left, top = int(rng.integers(0, width // 4)), int(rng.integers(0, height // 4))
    right, bottom = int(width - rng.integers(0, width // 4)) - 1, int(height - rng.integers(0, height // 4)) - 1
    if shape == "circle":
        pen.ellipse((left, top, right, bottom), fill=colour)
    elif shape == "square":
        pen.rectangle((left, top, right, bottom), fill=colour)
    else:
        for x in range(0, width, 6):
            pen.rectangle((x, 0, x + 2, height), fill=colour)
    return image


def draw_folder(root: Path, per_class: int = 40, splits: bool = False, seed: int = 0) -> Path:
    """CLASSES as class folders (or train/ and test/ ones), PNG and JPEG of sizes from 20 to 47 pixels, the
    very first image grayscale."""
    rng = np.random.default_rng(seed)
    for label, shape in enumerate(CLASSES):
        for number in range(per_class):
            split = ("test" if number % 4 == 0 else "train") if splits else ""
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            image = draw(shape, (int(rng.integers(20, 48)), int(rng.integers(20, 48))), rng)
            if label == 0 and number == 0:
                image = image.convert("L")
            image.save(folder / f"{number:03d}.{'png' if number % 2 else 'jpg'}")
    return root


def worker_of(job_dir: Path) -> tuple[str, int]:
    """The backend a multirun job trained on and the pid of the (warm worker) process that ran it."""
    devices = json.loads((job_dir / "environment.json").read_text())
    return devices["devices"]["backend"], devices["pid"]


def command_env(**extra: str) -> dict[str, str]:
    """This environment, without a HYDRA_FULL_ERROR of the developer's, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env.update(extra)
    return env


def run_command(*args: str, cwd: Path, command: Sequence[str] = RUN, env: Optional[dict[str, str]] = None,
                timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command (default: src/run.py) in a subprocess from `cwd` (so outputs/ lands there), output captured."""
    return subprocess.run([*command, *args], cwd=cwd, env=command_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def kill_once_checkpointed(command: Sequence[str], run_dir: Path, epochs: int, cwd: Path,
                           env: Optional[dict[str, str]] = None, timeout: int = 300) -> None:
    """Start a single run (`command` with its overrides) in `run_dir` and SIGKILL it, as a host failure or the
    out-of-memory killer would, once it has checkpointed `epochs` epochs."""
    checkpoints = Checkpoints(run_dir)
    process = subprocess.Popen([*command, f"hydra.run.dir={run_dir}"], cwd=cwd, env=command_env(**(env or {})),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while max(checkpoints.epochs(), default=0) < epochs:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """run_command from a temporary folder."""
    return functools.partial(run_command, cwd=tmp_path)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A small random dataset in MNIST's shapes, for runs whose training is fake or whose result does not matter."""
    return write_npz(tmp_path / "tiny.npz", n_train=96, n_test=32)


def error_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's own start-up chatter (absl/CUDA probes), which cnnsweep does not print."""
    noise = ("WARNING: All log messages before absl", "I0000", "E0000", "W0000", "To enable the following")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]
