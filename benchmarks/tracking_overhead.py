"""Benchmark: what logger=mlflow costs a run, against logger=csv, in one invocation.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/tracking_overhead.py [--repeats 2]

Starts a local MLflow tracking server (SQLite backend), then trains the tutorial CNN on the first 10,000
MNIST images for 3 epochs with logger=csv and logger=mlflow, alternating (so drift in machine load hits
both alike). Prints each run's seconds per epoch and wall time, the means and the ratios, beside the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import mean

from cnnsweep.run.records import cpu_description

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["dataset.max_train=10000", "dataset.max_test=2000", "dataset.val_size=1000", "training.epochs=3",
            "training.progress=none"]



def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def run(logger: str, url: str, run_dir: Path) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), *SETTINGS, f"logger={logger}",
                    f"logger.tracking_uri={url}", f"hydra.run.dir={run_dir}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return json.loads((run_dir / "metrics.json").read_text())["seconds_per_epoch"], wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        server, url = start_server(folder)
        try:
            figures: dict[str, list[tuple[float, float]]] = {"csv": [], "mlflow": []}
            for repeat in range(repeats):
                for logger in ("csv", "mlflow"):
                    figures[logger].append(run(logger, url, folder / f"{logger}-{repeat}"))
                    print(f"{logger:6} run {repeat}: {figures[logger][-1][0]:.2f} s/epoch, "
                          f"{figures[logger][-1][1]:.1f} s wall", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
    print(f"CPU: {cpu_description()}")
    epoch = {logger: mean(value for value, _ in runs) for logger, runs in figures.items()}
    wall = {logger: mean(value for _, value in runs) for logger, runs in figures.items()}
    print(f"seconds per epoch: csv {epoch['csv']:.2f}, mlflow {epoch['mlflow']:.2f} "
          f"(ratio {epoch['mlflow'] / epoch['csv']:.3f}); wall per run: csv {wall['csv']:.1f} s, mlflow "
          f"{wall['mlflow']:.1f} s (+{wall['mlflow'] - wall['csv']:.1f} s)")


if __name__ == "__main__":
    main()
