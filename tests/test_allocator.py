"""hardware.malloc_top_pad_mb (cnnsweep.run.allocator): the pad reaches glibc in a real training process and
stops the allocator returning each step's memory to the kernel, which the next step faults in again; it
happens where Python feeds TensorFlow's pipeline (a folder streamed from disk), not where it does not."""

from __future__ import annotations

import json
import resource
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


@pytest.mark.tensorflow
def test_only_a_python_fed_pipeline_churns_and_the_pad_stops_it(run_cli, tmp_path: Path) -> None:
    """The same one-thread training on a drawn folder: in memory (a tf.data pipeline with no Python in it)
    with glibc's own pad, then streamed from disk (a Python generator feeds tf.data) with glibc's pad and
    with 64 MB. Minor page faults (a count, not a time) of each whole process, imports included."""
    root = draw_folder(tmp_path / "photos", per_class=400)
    env = {CACHE_DIR_ENV: str(tmp_path / "cache")}
    runs = {"in-memory": ("4", "null"), "streamed": ("0", "null"), "streamed-padded": ("0", "64")}
    faults, devices = {}, {}
    for name, (in_memory_gb, pad) in runs.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        result = run_cli("dataset=folder", f"dataset.path={root}", "dataset.image_size=[32,32]",
                         f"dataset.in_memory_gb={in_memory_gb}", "training.epochs=2", "model.filters=16",
                         "model.dense_units=32", "hardware.intra_op_threads=1", "hardware.inter_op_threads=1",
                         f"hardware.malloc_top_pad_mb={pad}", f"hydra.run.dir={tmp_path / name}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        faults[name] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
        devices[name] = json.loads((tmp_path / name / "environment.json").read_text())["devices"]
    assert devices["streamed"]["malloc_top_pad_mb"] is None and devices["streamed-padded"]["malloc_top_pad_mb"] == 64
    assert faults["streamed-padded"] < 0.6 * faults["streamed"], faults
    assert faults["in-memory"] < 0.6 * faults["streamed"], faults
    history = {name: pd.read_csv(tmp_path / name / "history.csv").drop(columns="seconds") for name in runs}
    for name in runs:  # the same training, seconds aside
        pd.testing.assert_frame_equal(history[name], history["in-memory"], check_exact=True)
