"""hardware.malloc_top_pad_mb (cnnsweep.run.allocator): the pad reaches glibc in a real training process and
stops the allocator returning each step's memory to the kernel, which the next step faults in again."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import pytest

from cnnsweep.run.allocator import set_top_pad
from conftest import TINY_RUN

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")


def test_null_leaves_the_allocator_as_the_environment_set_it() -> None:
    assert set_top_pad(None) is None


@pytest.mark.tensorflow
def test_a_padded_run_faults_in_far_fewer_pages(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    """The same one-thread training with glibc's own pad and with 64 MB: minor page faults (a count, not a
    time) of each whole process, imports included."""
    faults, devices = {}, {}
    for pad in ("null", "64"):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        result = run_cli(*TINY_RUN, "dataset.max_train=2048", "training.epochs=1", "model.filters=32",
                         "hardware.intra_op_threads=1", "hardware.inter_op_threads=1",
                         f"hardware.malloc_top_pad_mb={pad}", f"hydra.run.dir={tmp_path / pad}",
                         env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
        assert result.returncode == 0, result.stderr
        faults[pad] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
        devices[pad] = json.loads((tmp_path / pad / "environment.json").read_text())["devices"]
    assert devices["null"]["malloc_top_pad_mb"] is None and devices["64"]["malloc_top_pad_mb"] == 64
    assert faults["64"] < 0.6 * faults["null"], faults
    history = {pad: (tmp_path / pad / "history.csv").read_text().splitlines()[1].split(",")[:-1] for pad in faults}
    assert history["null"] == history["64"]  # the same training, seconds aside
