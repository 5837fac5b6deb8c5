"""A full disk (a tiny tmpfs, mounted as root) while a run saves its model: no partial file is left,
metrics.json keeps every figure already measured with status `failed`, and the one error line says it
was the disk. Skips, saying why, where tmpfs cannot be mounted (not root)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import error_lines, missing
from cnnsweep.errors import DiskFull
from cnnsweep.run.records import save_model


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 600 kB tmpfs: room for a run's records, not for the tutorial CNN's 1.1 MB model.keras."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if os.geteuid() != 0 or mounted.returncode != 0:
        missing("a full disk needs a tmpfs, which only root can mount here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


class LargeModel:
    """Saves 2 MB, as Keras writes a .keras file."""

    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"\0" * 2_000_000)


def test_a_model_that_does_not_fit_leaves_no_partial_file(tiny_disk: Path) -> None:
    with pytest.raises(DiskFull, match=r"no space left on the disk for .*model.keras \(ENOSPC\); free space there"):
        save_model(LargeModel(), tiny_disk / "model.keras")
    assert list(tiny_disk.iterdir()) == []


def test_other_save_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        save_model(LargeModel(), tmp_path / "missing" / "model.keras")


@pytest.mark.tensorflow
def test_a_run_whose_disk_fills_keeps_its_figures(run_cli, mnist_dir: Path, tiny_disk: Path) -> None:
    run_dir = tiny_disk / "run"
    result = run_cli("dataset.max_train=512", "dataset.max_test=256", "training.epochs=1", f"hydra.run.dir={run_dir}",
                     env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: no space left on the disk for {run_dir / 'model.keras'} (ENOSPC)")
    assert "test_accuracy" in line and "kept in metrics.json" in line
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == line.removeprefix("error: ")
    assert 0 < record["test_accuracy"] <= 1 and record["epochs_completed"] == 1 and record["params"] == 93322
    assert not [path.name for path in run_dir.iterdir() if "model.keras" in path.name or "checkpoint" in path.name]
    assert "checkpoint after epoch 1 not saved" in result.stdout + result.stderr  # training went on without it
