"""Benchmark: an Optuna search on a real Slurm whose jobs are cancelled, killed and requeued mid-way,
against the same search with no faults.

    .ci/slurm start    # as root: a one-node Slurm; prints CNNSWEEP_TEST_SLURM_PARTITION=ci
    CNNSWEEP_DATA_DIR=../shared/datasets CNNSWEEP_TEST_SLURM_PARTITION=ci \
        uv run python benchmarks/slurm_faults.py [--trials 16] [--jobs 4]

Protocol: `sweeps=baseline_tpe launcher=slurm` with real TensorFlow training on the first 4,000 MNIST
training images (1,000 held out), 8 epochs (so a job hit after its first epoch still has more to train
than Slurm's KillWait, in which a cancelled or requeued job may finish), `--trials` trials with `--jobs` Slurm jobs at once, each job
one core and 2 GB. With faults, three jobs are hit while they train: the first to finish an epoch is
cancelled (`scancel`), the second has its process killed (SIGKILL), the third is requeued by hand
(`scontrol requeue`, as an administrator or a node failure would) after its second epoch. Counted:
trials completed, pruned and failed; trials lost (left RUNNING or WAITING, or missing from the
leaderboard: must be 0); epochs repeated (trained again after the requeue); wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ["dataset.max_train=4000", "dataset.val_size=1000", "training.epochs=8"]


def epochs_in(run_dir: Path) -> int:
    try:
        return len(pd.read_csv(run_dir / "history.csv"))
    except (OSError, ValueError):
        return 0


def job_of(run_dir: Path) -> Optional[dict]:
    try:
        return json.loads((run_dir / "environment.json").read_text())
    except (OSError, ValueError):
        return None


class Faults(threading.Thread):
    """Hits three different running jobs of the sweep: scancel, SIGKILL, scontrol requeue."""

    def __init__(self, sweep: Path) -> None:
        super().__init__(daemon=True)
        self.sweep = sweep
        self.hit: dict[str, Path] = {}
        self.epochs_at_requeue = 0
        self.done = threading.Event()

    def run(self) -> None:
        plan = [("cancelled", 1), ("killed", 1), ("requeued", 2)]
        while plan and not self.done.is_set():
            kind, epochs = plan[0]
            for run_dir in sorted(self.sweep.glob("[0-9]*"), key=lambda path: int(path.name)):
                environment = job_of(run_dir)
                if run_dir in self.hit.values() or environment is None or epochs_in(run_dir) < epochs:
                    continue
                if kind == "cancelled":
                    subprocess.run(["scancel", str(environment["slurm_job_id"])], check=False)
                elif kind == "killed":
                    os.kill(int(environment["pid"]), signal.SIGKILL)
                else:
                    self.epochs_at_requeue = epochs_in(run_dir)
                    subprocess.run(["scontrol", "requeue", str(environment["slurm_job_id"])], check=False)
                self.hit[kind] = run_dir
                plan.pop(0)
                break
            time.sleep(0.2)


def starts(sweep: Path, run_dir: Path) -> int:
    """How many times the run's Slurm job started, from submitit's log of it."""
    job_id = (job_of(run_dir) or {}).get("slurm_job_id")
    logs = (sweep / ".submitit" / str(job_id)).glob("*_log.out")
    return sum(path.read_text().count("Starting with JobEnvironment") for path in logs)


def search(trials: int, jobs: int, faults: bool, workdir: Path) -> dict:
    name = "faults" if faults else "clean"
    sweep, storage = workdir / name, f"sqlite:///{workdir / f'{name}.db'}"
    command = [sys.executable, str(ROOT / "src" / "run.py"), "-m", "sweeps=baseline_tpe", "launcher=slurm",
               f"launcher.partition={os.environ['CNNSWEEP_TEST_SLURM_PARTITION']}", "launcher.gpus=null",
               "launcher.cpus=1", "launcher.mem_gb=2", f"launcher.jobs={jobs}", *PROTOCOL,
               f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.seed=0", f"hydra.sweeper.storage={storage}",
               f"hydra.sweep.dir={sweep}"]
    injector = Faults(sweep)
    if faults:
        injector.start()
    started = time.monotonic()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.monotonic() - started
    injector.done.set()
    study = optuna.load_study(study_name="baseline_tpe", storage=storage)
    states = [trial.state.name for trial in study.trials]
    board = pd.read_csv(sweep / "leaderboard.csv")
    requeued = injector.hit.get("requeued")
    resumed_after = json.loads((requeued / "metrics.json").read_text()).get("resumed_after_epoch") if requeued else None
    repeated = 0
    if requeued is not None and starts(sweep, requeued) > 1:  # it ran again: from its checkpoint, or from epoch 1
        repeated = max(0, injector.epochs_at_requeue - (resumed_after or 0))
    return {
        "setup": name, "exit_code": result.returncode, "wall_s": round(wall, 1), "trials": len(states),
        "completed": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
        "lost": states.count("RUNNING") + states.count("WAITING") + max(0, len(states) - len(board)),
        "epochs_repeated": repeated, "requeued_job_starts": starts(sweep, requeued) if requeued else None,
        "faults": {kind: run_dir.name for kind, run_dir in injector.hit.items()},
        "requeued_resumed_after_epoch": resumed_after,
        "best_val_accuracy": study.best_value if states.count("COMPLETE") else None,
        "last_line": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=4, help="Slurm jobs at once")
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR") or not os.environ.get("CNNSWEEP_TEST_SLURM_PARTITION"):
        sys.exit("error: set CNNSWEEP_DATA_DIR (a folder holding mnist.npz) and CNNSWEEP_TEST_SLURM_PARTITION "
                 "(.ci/slurm start prints it)")
    with tempfile.TemporaryDirectory() as folder:
        for faults in (False, True):
            print(json.dumps(search(args.trials, args.jobs, faults, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
