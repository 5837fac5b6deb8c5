"""Per-epoch checkpoints: a real run killed with SIGKILL after its second epoch, continued with
`cnnsweep rerun RUN_DIR --resume`, trains only the missing epochs and ends with the same history.csv and
test accuracy as the same run uninterrupted (CPU, same seed, dropout on: its random state is restored
too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import RERUN, RUN, TINY_RUN, command_env

SETTINGS = [*TINY_RUN, "training.epochs=4", "model.dropout=0.3", "dataset.val_size=128"]


@pytest.mark.tensorflow
def test_a_killed_run_resumes_where_it_stopped(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    env = {"CNNSWEEP_DATA_DIR": str(mnist_dir)}
    whole = run_cli(*SETTINGS, f"hydra.run.dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr
    assert not (tmp_path / "whole" / "checkpoint.keras").exists()  # model.keras holds the end state

    killed = tmp_path / "killed"
    process = subprocess.Popen([*RUN, *SETTINGS, f"hydra.run.dir={killed}"], cwd=tmp_path, env=command_env(**env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        saved = killed / "checkpoint.json"
        if saved.exists() and json.loads(saved.read_text())["epoch"] >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    stopped_at = json.loads((killed / "checkpoint.json").read_text())["epoch"]
    assert 2 <= stopped_at < 4 and json.loads((killed / "metrics.json").read_text())["status"] == "running"

    resumed = run_cli(str(killed), "--resume", command=RERUN, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {stopped_at}" in resumed.stdout + resumed.stderr
    record = json.loads((killed / "metrics.json").read_text())
    reference = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["resumed_after_epoch"] == stopped_at
    assert record["test_accuracy"] == reference["test_accuracy"] and record["epochs_completed"] == 4
    history = pd.read_csv(killed / "history.csv").drop(columns="seconds")
    assert history.equals(pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds"))
    assert not (killed / "checkpoint.keras").exists() and (killed / "model.keras").is_file()
