"""Benchmark: the best validation accuracy a search reaches in a fixed wall-clock budget, for cnnsweep's
default TPE search with pruning, with and without the baseline enqueued as trial 0, and a plain random
search.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/search_budget.py \
        [--budget 300] [--seeds 0 1 2] [--setups tpe+baseline tpe random unfitted]

Protocol (the searches issue's): the first 10,000 MNIST training images, the last 5,000 held out, 3
epochs, `sweeps=baseline_tpe launcher=parallel` (2 jobs at once on 2 cores). Setups, each told its budget
(hydra.sweeper.timeout) and killed when it is spent, once per sampler seed:
  tpe+baseline  sweeps=baseline_tpe as shipped: TPE, median pruner, trial 0 the tutorial baseline
  tpe           the same with hydra.sweeper.enqueue_baseline=false
  random        hydra/sweeper/sampler=random, hydra.sweeper.pruner=none, no baseline
  unfitted      tpe+baseline with hydra.sweeper.fit_budget=false (start-ups as configured, however short
                the budget)
Counted for each: trials finished (completed or pruned) within the budget, and the best val_accuracy
among them; then mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import optuna

from warm_workers import PROTOCOL, ROOT, print_summary, run_all, run_for

SETUPS = {
    "tpe+baseline": [],
    "tpe": ["hydra.sweeper.enqueue_baseline=false"],
    "random": ["hydra/sweeper/sampler=random", "hydra.sweeper.pruner=none", "hydra.sweeper.enqueue_baseline=false"],
    "unfitted": ["hydra.sweeper.fit_budget=false"],
}


def search(setup: str, seed: int, budget: float, workdir: Path) -> dict:
    sweep, storage = workdir / f"{setup}-{seed}", f"sqlite:///{workdir / f'{setup}-{seed}.db'}"
    started = run_for([sys.executable, str(ROOT / "src" / "run.py"), "-m", "sweeps=baseline_tpe", "launcher=parallel",
                       *PROTOCOL, *SETUPS[setup], "hydra.sweeper.n_trials=1000", f"hydra.sweeper.seed={seed}",
                       f"hydra.sweeper.timeout={budget}",  # the search knows its budget (fit_budget uses it)
                       f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"], budget, workdir)
    deadline = started + budget
    trials = [trial for trial in optuna.load_study(study_name="baseline_tpe", storage=storage).trials
              if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
              and trial.datetime_complete.timestamp() <= deadline]
    values = [trial.value for trial in trials if trial.value is not None]
    baseline = [trial.value for trial in trials if trial.user_attrs.get("cnnsweep_baseline")]
    return {"trials": len(trials), "best_val": max(values, default=float("nan")),
            "baseline_val": baseline[0] if baseline and baseline[0] is not None else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of wall time per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    with tempfile.TemporaryDirectory() as folder:
        results = run_all(args.seeds, args.setups, lambda setup, seed: search(setup, seed, args.budget, Path(folder)),
                          lambda result: (f"trials {result['trials']:3d}  best val_accuracy {result['best_val']:.4f}  "
                                          f"(baseline trial {result['baseline_val']:.4f})"))
    print()
    print_summary(results)


if __name__ == "__main__":
    main()
