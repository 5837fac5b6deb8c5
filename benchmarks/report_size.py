"""Benchmark: `cnnsweep report` over many run folders: seconds to write the CSV, pictures and page, and
the page's size (the review issue's target: 500 runs in under 10 s, a page of sensible size).

    uv run python benchmarks/report_size.py [--runs 500]

The run folders are synthetic (metrics.json, .hydra/config.yaml, a 5-epoch history.csv each) in one
sweep of a 5-key search, with some runs failed and some pruned, so every picture has something to draw.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from cnnsweep.run.records import RunRecord, write_history

ROOT = Path(__file__).resolve().parents[1]


def make_runs(sweep: Path, count: int) -> None:
    rng = random.Random(0)
    sweep.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 2, "model": {"filters": 32, "kernel_size": 3, "dense_units": 64,
                                                          "dropout": 0.0}, "optimizer": {"lr": 0.001}}),
                   sweep / "multirun.yaml")
    for job in range(count):
        config = {"seed": 2, "model": {"filters": rng.choice([16, 32, 48, 64]), "kernel_size": rng.choice([2, 3, 4]),
                                       "dense_units": rng.choice([32, 64, 128]), "dropout": rng.random() / 2},
                  "optimizer": {"lr": 10 ** rng.uniform(-4, -2)}}
        run = sweep / str(job)
        top = 0.97 + 0.02 * rng.random()
        rows = [{"epoch": epoch, "accuracy": top * (1 - 0.4**epoch), "loss": 0.4**epoch,
                 "val_accuracy": top * (1 - 0.45**epoch), "val_loss": 0.45**epoch, "seconds": 20.0}
                for epoch in range(1, 6)]
        record = RunRecord(run, seed=2)
        write_history(run / "history.csv", rows)
        if job % 17 == 5:
            record.fail("loss became NaN at epoch 1, batch 3; lower optimizer.lr or check the data", trial=job)
        else:
            status = "pruned" if job % 5 == 4 else "completed"
            record.finish(status, objective={"name": "val_accuracy", "value": rows[-1]["val_accuracy"],
                                             "direction": "maximize"},
                          val_accuracy=rows[-1]["val_accuracy"], val_loss=rows[-1]["val_loss"],
                          test_accuracy=rows[-1]["val_accuracy"] - 0.002, test_loss=0.03, params=90_000,
                          epochs_completed=5, train_seconds=100.0, seconds_per_epoch=20.0, trial=job,
                          baseline=job == 0)
        (run / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sweep = Path(folder) / "sweep"
        make_runs(sweep, args.runs)
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "cnnsweep"), "report", str(sweep), "--aggregate-seeds"],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        seconds = time.perf_counter() - started
        page = (sweep / "report.html").stat().st_size
        csv = (sweep / "leaderboard.csv").stat().st_size
        print(f"{args.runs} runs: report in {seconds:.1f} s (target < 10 s); report.html {page / 1e6:.2f} MB, "
              f"leaderboard.csv {csv / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
