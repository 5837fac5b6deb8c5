"""logger=mlflow against a real MLflow tracking server the test starts (`mlflow server` on a free port,
SQLite backend): a grid's jobs are one MLflow run each, with params, per-epoch and final metrics, tags and
artifacts, and its leaderboard one more, read back through MLflow's client; a tracker killed mid-sweep leaves every job completed with
its local records. The jobs run tests/fake_run.py: what is tested is the logging, not the training."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from cnnsweep.errors import ConfigError
from cnnsweep.run.config import LoggerConfig, LoggerName
from cnnsweep.run.tracking import check_logger
from conftest import FAKE_RUN, command_env

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A tracking server of this test's own, and its URL once it answers."""
    port = free_port()
    server = subprocess.Popen([str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, f"mlflow server exited: {server.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "mlflow server did not answer in 180 s"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    yield url, server
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def grid(tiny_data: Path, sweep: Path, url: str, *overrides: str) -> list[str]:
    return [*FAKE_RUN, "-m", "logger=mlflow", f"logger.tracking_uri={url}", f"dataset.path={tiny_data}",
            "dataset.val_size=32", f"hydra.sweep.dir={sweep}", *overrides]


def test_a_grid_logs_one_mlflow_run_per_job(tracker, tiny_data: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    url, _ = tracker
    sweep = tmp_path / "grid"
    result = subprocess.run(grid(tiny_data, sweep, url, "model.filters=4,6", "training.epochs=3"), cwd=tmp_path,
                            env=command_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlflow:" not in result.stdout + result.stderr  # no warning: everything was taken

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(str(sweep.resolve()))
    every = client.search_runs([experiment.experiment_id])
    [board] = [run for run in every if run.info.run_name == "leaderboard"]  # the sweep's, at its end
    assert [artifact.path for artifact in client.list_artifacts(board.info.run_id)] == ["leaderboard.csv"]
    runs = {run.data.params["model.filters"]: run for run in every if run is not board}
    assert sorted(runs) == ["4", "6"]
    for job, filters in enumerate(("4", "6")):
        run, run_dir = runs[filters], sweep / str(job)
        record = json.loads((run_dir / "metrics.json").read_text())
        assert run.info.status == "FINISHED" and run.info.run_name == str(job)
        assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["dataset.val_size"] == "32"
        assert run.data.tags["cnnsweep.job"] == str(job) and run.data.tags["cnnsweep.run_dir"] == str(run_dir)
        assert run.data.tags["cnnsweep.sweep"] == str(sweep) and run.data.tags["cnnsweep.status"] == "completed"
        history = [(metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, "val_accuracy")]
        expected = pd.read_csv(run_dir / "history.csv")
        assert sorted(history) == list(zip(expected["epoch"], expected["val_accuracy"]))
        assert run.data.metrics["final_test_accuracy"] == record["test_accuracy"]
        assert {artifact.path for artifact in client.list_artifacts(run.info.run_id)} == {"metrics.json", "history.csv"}


def test_a_killed_tracker_leaves_every_job_completed(tracker, tiny_data: Path, tmp_path: Path) -> None:
    url, server = tracker
    sweep = tmp_path / "grid"
    jobs = subprocess.Popen(grid(tiny_data, sweep, url, "model.filters=4,6,8", "training.epochs=8"), cwd=tmp_path,
                            env=command_env(FAKE_EPOCH_SECONDS="0.3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (sweep / "0" / "history.csv").exists():  # the first job is training, its MLflow run open
        assert jobs.poll() is None and time.monotonic() < deadline, "the sweep ended before the tracker was killed"
        time.sleep(0.1)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=60)
    stdout, stderr = jobs.communicate(timeout=600)
    assert jobs.returncode == 0, stderr[-3000:]
    for job in range(3):
        record = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert record["status"] == "completed" and record["epochs_completed"] == 8
    warnings = [line for line in (stdout + stderr).splitlines() if "mlflow: " in line]
    assert warnings and all("unreachable or refused this run's logging" in line or "did not take" in line
                            for line in warnings)
    assert len(pd.read_csv(sweep / "leaderboard.csv")) == 3


def test_logger_mlflow_names_what_it_lacks(monkeypatch) -> None:
    settings = LoggerConfig(LoggerName.mlflow, tracking_uri=None, experiment=None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"^logger=mlflow: no tracking server; set logger.tracking_uri="):
        check_logger(settings)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on a machine without the extra
    with pytest.raises(ConfigError, match=r"^logger=mlflow needs MLflow, an optional extra: uv sync --extra mlflow"):
        check_logger(settings)
    check_logger(LoggerConfig(LoggerName.csv, tracking_uri=None, experiment=None))
