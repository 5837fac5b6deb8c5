"""hardware.malloc_top_pad_mb (cnnsweep.run.allocator): the pad stops glibc returning a thread's freed memory to
the kernel, which the next step faults in again, and reaches a real training process without changing its
training. How much a training run churns without it depends on the CPU and the input pipeline: measured by
benchmarks/allocator.py, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cnnsweep.run.allocator import set_top_pad
from cnnsweep.run.image_folder import CACHE_DIR_ENV
from conftest import draw_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")


def test_null_leaves_the_allocator_as_the_environment_set_it() -> None:
    assert set_top_pad(None) is None


STEPS = """
import ctypes, resource, sys, threading
from cnnsweep.run.allocator import set_top_pad
set_top_pad(None if sys.argv[1] == "null" else int(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def steps():  # each step: 8 MB in blocks below glibc's mmap threshold, written, then freed
    for _ in range(50):
        blocks = [libc.malloc(64 << 10) for _ in range(128)]
        for block in blocks:
            ctypes.memset(block, 1, 64 << 10)
        for block in blocks:
            libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=steps)  # a thread of its own, with its own heap, as the backends' workers
worker.start()
worker.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_pad_keeps_a_threads_freed_memory_mapped_for_its_next_step() -> None:
    """Minor page faults (a count, not a time) of 50 allocate-write-free steps on a worker thread."""
    faults = {pad: int(subprocess.run([sys.executable, "-c", STEPS, pad], capture_output=True, text=True,
                                      check=True).stdout) for pad in ("null", "64")}
    assert faults["64"] < 0.3 * faults["null"], faults


@pytest.mark.tensorflow
def test_the_pad_reaches_training_and_leaves_it_unchanged(run_cli, tmp_path: Path) -> None:
    """The same one-thread training on a drawn folder: in memory (a tf.data pipeline with no Python in it),
    then streamed from disk (a Python generator feeds tf.data) with glibc's pad and with 64 MB."""
    root = draw_folder(tmp_path / "photos", per_class=400)
    env = {CACHE_DIR_ENV: str(tmp_path / "cache")}
    runs = {"in-memory": ("4", "null"), "streamed": ("0", "null"), "streamed-padded": ("0", "64")}
    devices = {}
    for name, (in_memory_gb, pad) in runs.items():
        result = run_cli("dataset=folder", f"dataset.path={root}", "dataset.image_size=[32,32]",
                         f"dataset.in_memory_gb={in_memory_gb}", "training.epochs=2", "model.filters=16",
                         "model.dense_units=32", "hardware.intra_op_threads=1", "hardware.inter_op_threads=1",
                         f"hardware.malloc_top_pad_mb={pad}", f"hydra.run.dir={tmp_path / name}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        devices[name] = json.loads((tmp_path / name / "environment.json").read_text())["devices"]
    assert devices["streamed"]["malloc_top_pad_mb"] is None and devices["streamed-padded"]["malloc_top_pad_mb"] == 64
    history = {name: pd.read_csv(tmp_path / name / "history.csv").drop(columns="seconds") for name in runs}
    for name in runs:  # the same training, seconds aside
        pd.testing.assert_frame_equal(history[name], history["in-memory"], check_exact=True)
