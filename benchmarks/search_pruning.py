"""Benchmark: the baseline_tpe search with and without pruning, same sampler seed, same budget.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/search_pruning.py [--trials 12] \
        [--max-train 10000] [--epochs 5]

Runs `-m sweeps=baseline_tpe` twice into fresh studies, first with its pruner, then with
`hydra.sweeper.pruner=none`, on a training slice small enough to finish in minutes on 2 cores, and the
tutorial defaults once on the same slice. Prints, for each: the best val_accuracy and that trial's test
accuracy, wall time and epochs trained, then the share of epochs pruning saved.
Target: at least 30% fewer epochs at the same best result. With `--sampler random` both searches try
the same configurations (a seeded random sampler does not look at results), so the comparison shows
the pruner alone: the epochs it saves and whether it cut the trial that would have been best.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run(arguments: list[str], workdir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), *arguments], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def search(pruner: str, args: argparse.Namespace, workdir: Path) -> dict:
    sweep = workdir / f"search-{pruner}"
    seconds = run(["-m", "sweeps=baseline_tpe", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.seed=0",
                   f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.study_name=bench-{pruner}",
                   f"hydra/sweeper/sampler={args.sampler}",
                   f"hydra.sweeper.storage=sqlite:///{workdir / 'bench.db'}", f"hydra.sweep.dir={sweep}",
                   f"dataset.max_train={args.max_train}", f"training.epochs={args.epochs}"], workdir)
    board = pd.read_csv(sweep / "leaderboard.csv")
    best = board[board["status"] == "completed"].sort_values("val_accuracy", ascending=False).iloc[0]
    return {"best_val": best["val_accuracy"], "best_test": best["test_accuracy"], "seconds": seconds,
            "epochs": int(board["epochs_completed"].sum()), "pruned": int((board["status"] == "pruned").sum()),
            "trials": len(board)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sampler", default="tpe",
                        help="random: both searches try the same configurations (a seeded random sampler "
                             "ignores results), so the pruner's effect is isolated")
    parser.add_argument("--pruners", nargs="+", default=["median", "none"],
                        help="which searches to run (both are needed for the saving)")
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        run([f"hydra.run.dir={workdir / 'baseline'}", "dataset.val_size=5000", f"dataset.max_train={args.max_train}",
             f"training.epochs={args.epochs}", "training.progress=none"], workdir)
        baseline = json.loads((workdir / "baseline" / "metrics.json").read_text())
        print(f"baseline (tutorial defaults): val_accuracy {baseline['val_accuracy']:.4f}, "
              f"test_accuracy {baseline['test_accuracy']:.4f}", flush=True)
        results = {}
        for pruner in args.pruners:
            result = results[pruner] = search(pruner, args, workdir)
            print(f"search, pruner={pruner}: best val_accuracy {result['best_val']:.4f} (its test_accuracy "
                  f"{result['best_test']:.4f}), {result['trials']} trials, {result['pruned']} pruned, "
                  f"{result['epochs']} epochs, {result['seconds'] / 60:.1f} min", flush=True)
    if set(results) != {"median", "none"}:
        return
    saved = 1 - results["median"]["epochs"] / results["none"]["epochs"]
    print(f"sampler {args.sampler} (seed 0): pruning saved {saved:.0%} of epochs (target >= 30%: {'met' if saved >= 0.3 else 'MISSED'}); "
          f"best val_accuracy {results['median']['best_val']:.4f} with pruning vs "
          f"{results['none']['best_val']:.4f} without")


if __name__ == "__main__":
    main()
