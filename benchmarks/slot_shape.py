"""Benchmark: training throughput of two one-thread jobs at once against one two-thread job, per model
and batch size, to choose the shape of CPU slots (`launcher=parallel launcher.jobs=N`).

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/slot_shape.py [--rounds 2] \
        [--max-train 10000]

For each configuration of the search space's corners (filters 16 and 64, batch 32 and 256, the tutorial
in between), on the search protocol's data (the first 10,000 MNIST training images, the last 5,000 held
out): one job with 2 threads (what `launcher.jobs=1` gives each job on 2 cores), then two identical jobs
started together with 1 thread each (`launcher.jobs=2`, the default), each job's threads set exactly as
the launcher sets them (CNNSWEEP_CPU_THREADS, OMP_NUM_THREADS). Throughput is training images per
second in epoch 2 (epoch 1 includes tracing), summed over the jobs running at once; rounds alternate the
two shapes so a drift of the machine hits both. Prints the ratio two-jobs / one-job per configuration:
above 1, the default shape trains more per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from cnnsweep.run.records import cpu_description

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name: overrides (baseline_tpe's space: filters 16-64, batch 32-256)
    "filters 16, batch 32": ["model.filters=16", "training.batch_size=32"],
    "filters 16, batch 256": ["model.filters=16", "training.batch_size=256"],
    "tutorial (32, batch 32)": [],
    "filters 64, batch 32": ["model.filters=64", "training.batch_size=32"],
    "filters 64, batch 256": ["model.filters=64", "training.batch_size=256"],
}


def start(overrides: list[str], threads: int, run_dir: Path, max_train: int) -> subprocess.Popen:
    env = {**os.environ, "CNNSWEEP_CPU_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, str(ROOT / "src" / "run.py"), *overrides, f"dataset.max_train={max_train}",
                             "dataset.val_size=5000", "training.epochs=2", "training.progress=none",
                             f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def images_per_second(jobs: list[tuple[subprocess.Popen, Path]], images: int) -> float:
    """Wait for the jobs started together; their epoch-2 training images per second, summed."""
    total = 0.0
    for process, run_dir in jobs:
        _, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(f"error: a job failed: {stderr.strip().splitlines()[-1] if stderr.strip() else process.returncode}")
        history = pd.read_csv(run_dir / "history.csv")
        total += images / float(history.loc[history["epoch"] == 2, "seconds"].iloc[0])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each shape per configuration")
    parser.add_argument("--max-train", type=int, default=10000, help="training images (the last 5,000 held out)")
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    images = args.max_train - 5000
    print(f"CPU: {cpu_description()}; {images} training images per epoch, epoch 2 timed", flush=True)
    print(f"{'configuration':26s} {'1 job x 2 threads':>18s} {'2 jobs x 1 thread':>18s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as folder:
        for name, overrides in CONFIGS.items():
            one, two = [], []
            for round_ in range(args.rounds):
                base = Path(folder) / f"{list(CONFIGS).index(name)}-{len(one) + len(two)}"
                shapes = [(one, 1), (two, 2)] if round_ % 2 == 0 else [(two, 2), (one, 1)]
                for results, jobs in shapes:
                    started = [(start(overrides, 2 // jobs, base / f"{jobs}-{index}", args.max_train),
                                base / f"{jobs}-{index}") for index in range(jobs)]
                    results.append(images_per_second(started, images))
            single, double = statistics.mean(one), statistics.mean(two)
            print(f"{name:26s} {single:12.0f} img/s {double:12.0f} img/s {double / single:6.2f}", flush=True)


if __name__ == "__main__":
    main()
