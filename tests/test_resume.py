"""Per-epoch checkpoints with real training: a run killed with SIGKILL after its second epoch, its newest
checkpoint then damaged, continued with `cnnsweep rerun RUN_DIR --resume`, falls back to the checkpoint
before, trains only the missing epochs and ends with the same history.csv and test accuracy as the same
run uninterrupted (CPU, same seed, dropout on: its random state is restored too). What happens with no
usable checkpoint at all is tests/test_checkpoints.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cnnsweep.run.checkpoints import Checkpoints
from conftest import RERUN, RUN, TINY_RUN, kill_once_checkpointed

SETTINGS = [*TINY_RUN, "training.epochs=5", "model.dropout=0.3", "dataset.val_size=128"]


@pytest.mark.tensorflow
def test_a_killed_run_resumes_where_it_stopped(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    env = {"CNNSWEEP_DATA_DIR": str(mnist_dir)}
    whole = run_cli(*SETTINGS, f"hydra.run.dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr
    assert not (tmp_path / "whole" / "checkpoints").exists()  # model.keras holds the end state
    timings = json.loads((tmp_path / "whole" / "metrics.json").read_text())["timings"]
    assert all(epoch["checkpoint"] > 0 for epoch in timings["epochs"])  # one written after every epoch

    killed = tmp_path / "killed"
    kill_once_checkpointed([*RUN, *SETTINGS], killed, 2, tmp_path, env)
    checkpoints = Checkpoints(killed)
    newest, before = checkpoints.epochs()
    assert 2 <= newest < 5 and before == newest - 1
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"
    checkpoints.model_path(newest).write_bytes(checkpoints.model_path(newest).read_bytes()[:1000])  # damaged

    resumed = run_cli(str(killed), "--resume", command=RERUN, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"the checkpoint after epoch {newest} cannot be used" in resumed.stdout + resumed.stderr
    assert f"resuming after epoch {before}" in resumed.stdout + resumed.stderr
    record = json.loads((killed / "metrics.json").read_text())
    reference = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["resumed_after_epoch"] == before
    assert record["test_accuracy"] == reference["test_accuracy"] and record["epochs_completed"] == 5
    history = pd.read_csv(killed / "history.csv").drop(columns="seconds")
    assert history.equals(pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds"))
    assert not checkpoints.folder.exists() and (killed / "model.keras").is_file()
