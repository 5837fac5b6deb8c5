"""Benchmark: where a single run spends its seconds before the first training step.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/startup.py [--repeats 3]

Runs `src/run.py training.epochs=1` on the real MNIST (the full training set is read and checked, a
64-image slice trained, so training itself is short) and splits each run's wall time with the
timestamps its run folder records:
  start-up     process start to the task's start (Python, Hydra, plugins, config composition)
  set-up       task start to environment.json (config checks, data read and checked, TensorFlow import,
               devices and seeds)
  to 1st step  environment.json to the start of the first epoch (model build and compile, tf.data)
  the rest     the epoch, evaluation, model.keras, records, exit
Prints the median of each over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("start-up", "set-up", "to 1st step", "the rest")


def one_run(run_dir: Path) -> dict[str, float]:
    started = time.time()
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "training.epochs=1", "dataset.max_train=64",
                    "dataset.max_test=64", "training.progress=none", f"hydra.run.dir={run_dir}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ended = time.time()
    task_start = datetime.fromisoformat(json.loads((run_dir / "metrics.json").read_text())["started_at"]).timestamp()
    ready = (run_dir / "environment.json").stat().st_mtime
    with (run_dir / "history.csv").open() as handle:
        epoch_seconds = float(next(csv.DictReader(handle))["seconds"])
    first_step = (run_dir / "history.csv").stat().st_mtime - epoch_seconds
    return dict(zip(PHASES, (task_start - started, ready - task_start, first_step - ready, ended - first_step)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    with tempfile.TemporaryDirectory() as folder:
        runs = [one_run(Path(folder) / str(index)) for index in range(args.repeats)]
    for phase in PHASES:
        values = [run[phase] for run in runs]
        print(f"{phase:12s} median {statistics.median(values):5.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    totals = [sum(run.values()) for run in runs]
    before_step = [run["start-up"] + run["set-up"] + run["to 1st step"] for run in runs]
    print(f"{'to 1st step, in all':12s} median {statistics.median(before_step):5.2f} s; whole run median "
          f"{statistics.median(totals):5.2f} s")


if __name__ == "__main__":
    main()
