"""Benchmark: trials per hour of one grid with 1 job at a time against 2 jobs at once on this CPU.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/parallel_jobs.py [--trials 6] \
        [--max-train 12000] [--epochs 2]

Runs the same grid (the tutorial CNN, seeds 0..N-1, a training slice) with `launcher=local` (one job,
TensorFlow's default threads) and `launcher=parallel launcher.jobs=J` (J jobs, cores/J threads each),
alternating, and prints each one's wall time and trials per hour.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def grid(launcher: list[str], args: argparse.Namespace, sweep: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "-m", *launcher,
                    f"seed={','.join(map(str, range(args.trials)))}", f"dataset.max_train={args.max_train}",
                    f"training.epochs={args.epochs}", f"hydra.sweep.dir={sweep}"],
                   cwd=sweep.parent, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert (board["status"] == "completed").sum() == args.trials, board["status"].tolist()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--max-train", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    setups = {"1 job": ["launcher=local"], f"{args.jobs} jobs": ["launcher=parallel", f"launcher.jobs={args.jobs}"]}
    print(f"{args.trials} trials of {args.epochs} epochs on {args.max_train} images, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for name, launcher in setups.items():
                seconds = grid(launcher, args, Path(folder) / f"{name.replace(' ', '_')}-{repeat}")
                print(f"{name:8s} {seconds:6.1f} s  {args.trials / seconds * 3600:6.0f} trials/hour", flush=True)


if __name__ == "__main__":
    main()
