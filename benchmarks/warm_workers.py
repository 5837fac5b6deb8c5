"""Benchmark: trials a search completes in a fixed wall-clock budget, warm workers against a fresh
process per trial and against keras-tuner.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run --group benchmarks --with scikit-learn python benchmarks/warm_workers.py \
        [--budget 290] [--seeds 0 1 2] [--setups warm fresh keras-tuner] [--sampler random|tpe]

Protocol (the throughput issue's): the first 10,000 MNIST training images, the last 5,000 held out, 3
epochs, baseline_tpe's search space. By default cnnsweep's searches use Optuna's random sampler: with
the same seed, warm and fresh then try the same configurations in the same order (as keras-tuner's
RandomSearch draws at random too), so the trial counts differ by overhead alone; `--sampler tpe` runs
baseline_tpe as shipped. Setups, each run for `--budget` seconds and then killed:
  warm         `-m sweeps=baseline_tpe launcher=parallel` (2 jobs, each slot's process kept warm)
  fresh        the same with `launcher.jobs_per_worker=1` (a fresh process, TensorFlow import, per trial)
  keras-tuner  RandomSearch over the same space and data in one process (no isolation), the same model
               built by cnnsweep.run.model.build_model
Counted for each: trials and epochs finished within the budget, best val_accuracy, and for cnnsweep the
per-job overhead (each job's time holding its slot minus its train_seconds and eval_seconds: start-up,
data, set-up, saving and records). Targets: warm completes at least 1.6x the trials of fresh and 1.5x those of
keras-tuner; warm per-job overhead under 1 s (median over jobs after each worker's first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import optuna
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ["dataset.max_train=10000", "dataset.val_size=5000", "training.epochs=3"]


class SetupFailed(RuntimeError):
    """A benchmarked search that ended without a result; its message is the reason, in one line."""


def run_for(command: list[str], budget: float, workdir: Path, env: Optional[dict[str, str]] = None) -> float:
    """Start the command in its own process group (with `env` added to this environment), kill the group
    after `budget` s; return the start time. A command that fails sooner raises SetupFailed with its last
    line of output: a search that cannot start must not read as one that found nothing."""
    started = time.time()
    with tempfile.TemporaryFile("w+", dir=workdir) as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, **(env or {})})
        try:
            returncode = process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return started
        if returncode != 0:
            output.seek(0)
            lines = [line.strip() for line in output if line.strip()]
            raise SetupFailed(f"exited with code {returncode}: {lines[-1] if lines else '(no output)'}")
    return started


def require_trials(count: int, budget: float) -> None:
    """A search that ran its budget out without finishing a trial has no best value to compare."""
    if count == 0:
        raise SetupFailed(f"finished no trial in {budget:g} s (a longer --budget, or run it alone to see why)")


def cnnsweep_search(name: str, seed: int, sampler: str, budget: float, workdir: Path) -> dict:
    sweep, storage = workdir / f"{name}-{seed}", f"sqlite:///{workdir / f'{name}-{seed}.db'}"
    extra = ["launcher.jobs_per_worker=1"] if name == "fresh" else []
    if sampler != "tpe":
        extra.append(f"hydra/sweeper/sampler={sampler}")
    started = run_for([sys.executable, str(ROOT / "src" / "run.py"), "-m", "sweeps=baseline_tpe", "launcher=parallel",
                       *PROTOCOL, *extra, "hydra.sweeper.n_trials=1000", f"hydra.sweeper.seed={seed}",
                       f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"], budget, workdir)
    deadline = started + budget
    trials = [trial for trial in optuna.load_study(study_name="baseline_tpe", storage=storage).trials
              if trial.state.is_finished() and trial.datetime_complete.timestamp() <= deadline]
    finished = [trial for trial in trials if trial.state in (optuna.trial.TrialState.COMPLETE,
                                                             optuna.trial.TrialState.PRUNED)]
    require_trials(len(finished), budget)  # before schedule.jsonl, which a search that ran no job lacks
    jobs = [json.loads(line) for line in (sweep / "schedule.jsonl").read_text().splitlines()]
    overheads, first_jobs = [], []
    for job in jobs:
        record = json.loads((Path(job["run_dir"]) / "metrics.json").read_text())
        if record.get("status") in ("completed", "pruned"):
            test_seconds = record.get("eval_seconds") or 0.0  # none: the trial skipped the test set (test_top_k)
            overhead = job["end"] - job["start"] - record["train_seconds"] - test_seconds
            (first_jobs if job["worker_job"] == 1 else overheads).append(overhead)
    epochs = sum(len(trial.intermediate_values) for trial in finished)
    best = max((trial.value for trial in finished if trial.value is not None), default=float("nan"))
    return {"trials": len(finished), "configurations": len(finished), "epochs": epochs, "best_val": best,
            "overhead_s": statistics.median(overheads) if overheads else float("nan"),
            "first_job_overhead_s": statistics.median(first_jobs) if first_jobs else float("nan")}


KERAS_TUNER = r"""
import sys
from dataclasses import replace
import keras, keras_tuner, numpy as np
from cnnsweep.run.batches import batch_count
from cnnsweep.run.config import compose_run_config
from cnnsweep.run.data import load_dataset
from cnnsweep.run.model import build_model
from cnnsweep.run.training import learning_rate

seed, folder, tuner_name, schedule = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run = compose_run_config("dataset.max_train=10000", "dataset.val_size=5000", "training.epochs=3",
                         f"training.lr_schedule={schedule}")
data = load_dataset(run.dataset)


class SearchSpace(keras_tuner.HyperModel):  # sweeps/baseline_tpe.yaml's params
    def build(self, hp):
        model = replace(run.model, filters=hp.Choice("filters", [16, 32, 48, 64]),
                        kernel_size=hp.Choice("kernel_size", [2, 3, 4]),
                        dense_units=hp.Choice("dense_units", [32, 64, 128, 256]),
                        dropout=hp.Float("dropout", 0.0, 0.5))
        network = build_model(model, data.input_shape, data.num_classes)
        rate = hp.Float("lr", 1e-4, 1e-2, sampling="log")
        if schedule != "constant":  # its steps need the batch size, declared early (fit() gets the same value)
            steps = batch_count(len(data.x_train), hp.Choice("batch_size", [32, 64, 128, 256]))
            rate = learning_rate(rate, run.training, steps)
        network.compile(optimizer=keras.optimizers.Adam(rate),
                        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return network

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [32, 64, 128, 256]), **kwargs)


common = dict(objective="val_accuracy", seed=seed, directory=folder, project_name="bench")
tuner = {"random": lambda: keras_tuner.RandomSearch(SearchSpace(), max_trials=1000, **common),
         "bayesian": lambda: keras_tuner.BayesianOptimization(SearchSpace(), max_trials=1000, **common),
         # Hyperband's own epochs per trial (1 or 3 here), iterations enough to outlast any budget
         "hyperband": lambda: keras_tuner.Hyperband(SearchSpace(), max_epochs=3, factor=3,
                                                    hyperband_iterations=1000, **common)}[tuner_name]()
tuner.search(data.x_train, data.y_train, epochs=3, validation_data=(data.x_val, data.y_val), verbose=0)
"""
KERAS_TUNERS = ("random", "bayesian", "hyperband")
MALLOC_TOP_PAD_MB = OmegaConf.load(ROOT / "conf" / "hardware" / "auto.yaml").malloc_top_pad_mb  # cnnsweep's default


def keras_tuner_search(seed: int, budget: float, workdir: Path, tuner: str = "random", padded: bool = False,
                       schedule: str = "constant") -> dict:
    """keras-tuner's `tuner` for `budget` seconds; its trials finished within the budget. A trial's score is
    keras-tuner's: the best epoch's val_accuracy (cnnsweep's trial value is the last epoch's). `padded`: with
    glibc's allocator set as cnnsweep sets it (hardware.malloc_top_pad_mb), through MALLOC_TOP_PAD_.
    `schedule`: the learning rate's, as training.lr_schedule sets it (cosine: over the 3 epochs; Hyperband's
    continued trials would start it again)."""
    folder = workdir / f"keras-tuner-{tuner}{'-padded' if padded else ''}-{schedule}-{seed}-{budget:g}"
    shutil.rmtree(folder, ignore_errors=True)  # a kept folder's earlier, stopped search: never resumed
    env = {"MALLOC_TOP_PAD_": str(MALLOC_TOP_PAD_MB << 20)} if padded else None
    started = run_for([sys.executable, "-c", KERAS_TUNER, str(seed), str(folder), tuner, schedule], budget, workdir,
                      env)
    deadline = started + budget
    finished = []
    for path in (folder / "bench").glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())
        if trial.get("status") == "COMPLETED" and path.stat().st_mtime <= deadline:
            finished.append(trial)
    require_trials(len(finished), budget)
    values = [trial["hyperparameters"]["values"] for trial in finished]
    epochs = sum(value.get("tuner/epochs", 3) - value.get("tuner/initial_epoch", 0) for value in values)
    best = max((trial["score"] for trial in finished if trial.get("score") is not None), default=float("nan"))
    # Hyperband's promoted trials continue an earlier trial's model ("tuner/trial_id"): one configuration
    # trained on, as a cnnsweep trial that passes its rung is.
    configurations = sum(1 for value in values if "tuner/trial_id" not in value)
    return {"trials": len(finished), "configurations": configurations, "epochs": epochs, "best_val": best,
            "overhead_s": float("nan"), "first_job_overhead_s": float("nan")}


def run_all(seeds: list[int], setups: list[str], run_one: Callable[[str, int], dict],
            describe: Callable[[dict], str]) -> dict[str, list[dict]]:
    """Each setup once per seed, seeds outermost (so slow drifts of the machine hit every setup alike);
    one line per result as it comes. A setup that fails ends the invocation with its reason: the
    comparison it belongs to would be incomplete."""
    results: dict[str, list[dict]] = {setup: [] for setup in setups}
    for seed in seeds:
        for setup in setups:
            try:
                result = run_one(setup, seed)
            except SetupFailed as error:
                sys.exit(f"error: {setup} (seed {seed}) {error}; fix it and run the benchmark again")
            results[setup].append(result)
            print(f"seed {seed} {setup:13s} {describe(result)}", flush=True)
    return results



class ResultsFile:
    """`--results FILE`: each finished search appended as one JSON line, with the machine's CPU, and the
    searches the file already holds for this CPU taken from it instead of run again, so an invocation longer
    than one sitting continues where it stopped and still prints one comparison. A file of another CPU is
    refused: setups are compared only within one machine."""

    def __init__(self, path: Path, cpu: str) -> None:
        self.path, self.cpu = path, cpu
        self.done: dict[tuple[str, str, int], dict] = {}
        text = path.read_text() if path.exists() else ""
        self.cut_short = bool(text) and not text.endswith("\n")  # a kill mid-write: the next line starts afresh
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                key = (entry["part"], entry["setup"], entry["seed"])
            except (ValueError, KeyError, TypeError):
                print(f"{path}:{number}: not a result line (a write cut short?); that search runs again", flush=True)
                continue
            if entry.get("cpu") != cpu:
                sys.exit(f"error: {path} holds results measured on {entry.get('cpu')}, and this is {cpu}; setups are "
                         "compared within one machine: pass another --results file")
            self.done[key] = entry["result"]
        if self.done:
            print(f"{len(self.done)} results kept in {path} from an earlier invocation: not run again", flush=True)

    def get_or_run(self, part: str, setup: str, seed: int, run: Callable[[], dict]) -> dict:
        """The result the file holds for (part, setup, seed), else `run()`'s, appended to the file at once."""
        if (part, setup, seed) in self.done:
            return self.done[(part, setup, seed)]
        result = run()
        line = json.dumps({"cpu": self.cpu, "part": part, "setup": setup, "seed": seed, "result": result})
        with self.path.open("a") as results:
            results.write(("\n" if self.cut_short else "") + line + "\n")
        self.cut_short = False
        self.done[(part, setup, seed)] = result
        return result

def print_summary(results: dict[str, list[dict]]) -> None:
    """Per setup, over the seeds: trials finished, configurations tried and the best val_accuracy, mean ±
    standard deviation."""
    for setup, runs in results.items():
        trials = [run["trials"] for run in runs]
        configurations = [run["configurations"] for run in runs]
        best = [run["best_val"] for run in runs]
        spread = statistics.stdev(best) if len(best) > 1 else 0.0
        print(f"{setup:13s} trials mean {statistics.mean(trials):5.1f} {trials}  configurations mean "
              f"{statistics.mean(configurations):5.1f}  best val_accuracy mean "
              f"{statistics.mean(best):.4f} ± {spread:.4f} {[round(value, 4) for value in best]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=290.0, help="seconds of wall time per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--setups", nargs="+", default=["warm", "fresh", "keras-tuner"])
    parser.add_argument("--sampler", default="random", help="cnnsweep's sampler: random (default) or tpe")
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        results = run_all(
            args.seeds, args.setups,
            lambda setup, seed: (keras_tuner_search(seed, args.budget, workdir) if setup == "keras-tuner"
                                 else cnnsweep_search(setup, seed, args.sampler, args.budget, workdir)),
            lambda result: (f"trials {result['trials']:3d}  epochs {result['epochs']:3d}  best val_accuracy "
                            f"{result['best_val']:.4f}  per-job overhead {result['overhead_s']:.2f} s (first job "
                            f"of a worker {result['first_job_overhead_s']:.2f} s)"))
    print()
    print_summary(results)
    if {"warm", "fresh", "keras-tuner"} <= set(results):
        warm, fresh, tuner = (statistics.mean(run["trials"] for run in results[name])
                              for name in ("warm", "fresh", "keras-tuner"))
        overhead = statistics.median(run["overhead_s"] for run in results["warm"])
        print(f"warm / fresh {warm / fresh:.2f}x (target >= 1.6), warm / keras-tuner {warm / tuner:.2f}x "
              f"(target >= 1.5), warm per-job overhead {overhead:.2f} s (target < 1 s)")


if __name__ == "__main__":
    main()
