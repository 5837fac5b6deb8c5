"""Benchmark: the best validation accuracy a search reaches in a fixed wall-clock budget, for cnnsweep's
searches against keras-tuner's three tuners over the same space, data and model.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run --group benchmarks --with scikit-learn python benchmarks/search_budget.py \
        [--budgets 290 600] [--seeds 0 1 2] [--setups tpe+baseline tpe+constant kt-random ...] [--results FILE] \
        [--keep FOLDER]

Protocol (the search-efficiency issue's): the first 10,000 MNIST training images, the last 5,000 held out,
3 epochs. cnnsweep runs `sweeps=baseline_tpe launcher=parallel` (2 jobs at once on 2 cores); each setup
is told its budget (hydra.sweeper.timeout) and killed when it is spent, once per budget and sampler seed:
  tpe+baseline  sweeps=baseline_tpe as shipped: TPE, successive halving (a rung at epoch 1 keeps the best
                third), each trial's learning rate decaying to 0 by its last step (training.lr_schedule=cosine),
                trial 0 the tutorial baseline
  tpe+constant  the same at optimizer.lr throughout (training.lr_schedule=constant: baseline_tpe until
                2026-12-01, and keras-tuner's trials; every tpe+ setup below trains as tpe+baseline does)
  tpe+onestep   the same, one batch per call into TensorFlow (training.steps_per_execution=1: baseline_tpe
                until 2026-12-02; the same history, each batch paying the call's overhead)
  tpe+median    the same with the median pruner judging from epoch 2 (baseline_tpe's pruner until
                2026-11-30)
  tpe+recheck   the same with rechecked_halving: successive halving whose promotions are checked again
                at each later epoch (cnnsweep.search.pruners)
  tpe+hyperband the same with Optuna's Hyperband (min_resource 1, max_resource 3, reduction_factor 3: a
                bracket halving from epoch 1 and one that trains every trial to the end)
  tpe+independent
                the same with hydra.sweeper.sampler.multivariate=false (a TPE model per parameter)
  tpe+ordered   the same with filters and kernel size as range(16, 64, step=16) and range(2, 4): the
                same values, ordered, so what TPE learns of one value informs its neighbours
  tpe+ordered+independent
                both
  tpe           the same with hydra.sweeper.enqueue_baseline=false
  random        hydra/sweeper/sampler=random, hydra.sweeper.pruner=none, no baseline
  unfitted      tpe+baseline with hydra.sweeper.fit_budget=false (start-ups as configured, however short
                the budget)
  unpadded      tpe+baseline with hardware.malloc_top_pad_mb=null (glibc's allocator returns each training
                step's memory to the kernel, as it does for keras-tuner)
  jax, torch    tpe+baseline with hardware.backend=jax or torch (the others run on TensorFlow)
  kt-random, kt-bayesian, kt-hyperband
                keras-tuner's RandomSearch, BayesianOptimization and Hyperband (max_epochs 3, factor 3) in
                one process, the model built by cnnsweep.run.model.build_model (benchmarks/warm_workers.py)
  kt-random+pad, kt-bayesian+pad, kt-hyperband+pad
                the same with glibc's allocator padded as cnnsweep pads it (MALLOC_TOP_PAD_), to tell the
                search's share of a difference from the allocator's
  kt-random+cosine, kt-bayesian+cosine
                the same with baseline_tpe's schedule, training.lr_schedule=cosine (not Hyperband: its
                continued trials would start the schedule again)
Counted for each: trials finished (completed or pruned) within the budget, the configurations they tried
(the same for cnnsweep; keras-tuner's Hyperband counts a promoted configuration's further epochs as a trial
of its own), the epochs they trained, and
the best val_accuracy among them (keras-tuner scores a trial by its best epoch, cnnsweep by its last);
then mean and standard deviation over the seeds. Target, at each budget: the default cnnsweep search
(the first setup) at least 0.002 above the best keras-tuner tuner's mean, ahead of it on at least 2 of
3 seeds, with at least 1.3x its trials.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import optuna
import yaml
from warm_workers import (
    KERAS_TUNERS,
    PROTOCOL,
    ROOT,
    ResultsFile,
    keras_tuner_search,
    print_summary,
    require_trials,
    run_all,
    run_for,
)

from cnnsweep.run.records import cpu_description

SETUPS = {
    "tpe+baseline": [],
    "tpe+constant": ["training.lr_schedule=constant"],
    "tpe+onestep": ["training.steps_per_execution=1"],
    "tpe+median": ["sweeps=baseline_median"],  # written by variant_sweeps() from baseline_tpe.yaml
    "tpe+recheck": ["hydra.sweeper.pruner=rechecked_halving"],  # baseline_tpe's halving options, rechecked
    "tpe+hyperband": ["hydra.sweeper.pruner=hyperband", "+hydra.sweeper.pruner_options.max_resource=3"],
    "tpe+independent": ["hydra.sweeper.sampler.multivariate=false"],
    "tpe+ordered": ["sweeps=baseline_ordered"],  # written by variant_sweeps() too
    "tpe+ordered+independent": ["sweeps=baseline_ordered", "hydra.sweeper.sampler.multivariate=false"],
    "tpe": ["hydra.sweeper.enqueue_baseline=false"],
    "random": ["hydra/sweeper/sampler=random", "hydra.sweeper.pruner=none", "hydra.sweeper.enqueue_baseline=false"],
    "unfitted": ["hydra.sweeper.fit_budget=false"],
    "unpadded": ["hardware.malloc_top_pad_mb=null"],  # glibc's allocator as the environment left it
    "jax": ["hardware.backend=jax"],  # tpe+baseline on Keras' other backends
    "torch": ["hardware.backend=torch", "training.steps_per_execution=1"],  # Keras runs PyTorch a batch a call
}
AS_SHIPPED_TUNERS = [f"kt-{tuner}" for tuner in KERAS_TUNERS]
TUNER_SETUPS = {  # keras_tuner_search's arguments: the tuner, the allocator padded, the learning-rate schedule
    **{f"kt-{tuner}": (tuner, False, "constant") for tuner in KERAS_TUNERS},
    **{f"kt-{tuner}+pad": (tuner, True, "constant") for tuner in KERAS_TUNERS},
    **{f"kt-{tuner}+cosine": (tuner, False, "cosine") for tuner in ("random", "bayesian")},
}


def variant_sweeps(conf: Path) -> None:
    """baseline_tpe.yaml with the median pruner's options (baseline_median) and with filters and kernel size
    as ranges (baseline_ordered), in `conf`/sweeps: the command line can merge into pruner_options and
    params, not replace them."""
    shipped = (ROOT / "sweeps" / "baseline_tpe.yaml").read_text()
    median, ordered = yaml.safe_load(shipped), yaml.safe_load(shipped)
    median["hydra"]["sweeper"].update(pruner="median", pruner_options={"n_startup_trials": 3, "n_warmup_steps": 2})
    ordered["hydra"]["sweeper"]["params"].update({"model.filters": "range(16, 64, step=16)",
                                                  "model.kernel_size": "range(2, 4)"})
    (conf / "sweeps").mkdir(parents=True, exist_ok=True)
    for name, sweep in (("baseline_median", median), ("baseline_ordered", ordered)):
        (conf / "sweeps" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(sweep))


def search(setup: str, seed: int, budget: float, workdir: Path) -> dict:
    if setup in TUNER_SETUPS:
        return keras_tuner_search(seed, budget, workdir, *TUNER_SETUPS[setup])
    name = f"{setup}-{seed}-{budget:g}"
    sweep, database = workdir / name, workdir / f"{name}.db"
    shutil.rmtree(sweep, ignore_errors=True)  # a kept folder's earlier, stopped search: never resumed
    database.unlink(missing_ok=True)
    storage = f"sqlite:///{database}"
    started = run_for([sys.executable, str(ROOT / "src" / "run.py"), "-m", "sweeps=baseline_tpe", "launcher=parallel",
                       *PROTOCOL, *SETUPS[setup], "hydra.sweeper.n_trials=1000", f"hydra.sweeper.seed={seed}",
                       f"hydra.sweeper.timeout={budget}",  # the search knows its budget (fit_budget uses it)
                       f"hydra.searchpath=[file://{workdir / 'conf'}]",
                       f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"], budget, workdir)
    deadline = started + budget
    trials = [trial for trial in optuna.load_study(study_name="baseline_tpe", storage=storage).trials
              if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
              and trial.datetime_complete.timestamp() <= deadline]
    require_trials(len(trials), budget)
    values = [trial.value for trial in trials if trial.value is not None]
    return {"trials": len(trials), "configurations": len(trials),
            "epochs": sum(len(trial.intermediate_values) for trial in trials), "best_val": max(values, default=float("nan"))}


def print_targets(results: dict[str, list[dict]]) -> None:
    """The first cnnsweep setup against the keras-tuner setup with the best mean, seed by seed."""
    ours = next((setup for setup in results if setup not in TUNER_SETUPS), None)
    tuners = [setup for setup in results if setup in TUNER_SETUPS]
    if ours is None or not tuners:
        return
    best = max(tuners, key=lambda setup: statistics.mean(run["best_val"] for run in results[setup]))
    gain = (statistics.mean(run["best_val"] for run in results[ours])
            - statistics.mean(run["best_val"] for run in results[best]))
    ahead = sum(a["best_val"] > b["best_val"] for a, b in zip(results[ours], results[best]))
    ratio = (statistics.mean(run["trials"] for run in results[ours])
             / max(statistics.mean(run["trials"] for run in results[best]), 1e-9))
    configurations = (statistics.mean(run["configurations"] for run in results[ours])
                      / max(statistics.mean(run["configurations"] for run in results[best]), 1e-9))
    print(f"{ours} against {best} (the best keras-tuner tuner): mean best val_accuracy {gain:+.4f} (target >= "
          f"+0.002), ahead on {ahead} of {len(results[ours])} seeds (target >= 2 of 3), trials {ratio:.2f}x, "
          f"configurations tried {configurations:.2f}x (target >= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[290.0, 600.0],
                        help="seconds of wall time per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--setups", nargs="+", default=["tpe+baseline", *AS_SHIPPED_TUNERS],
                        choices=[*SETUPS, *TUNER_SETUPS])
    parser.add_argument("--results", type=Path,
                        help="a JSON-lines file that keeps each search's result as it finishes; run the same "
                             "command again to continue an invocation that was stopped (one CPU per file)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER",
                        help="run the searches in FOLDER and keep them there (their schedule.jsonl, studies and "
                             "keras-tuner folders) instead of in a temporary folder removed at the end")
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    cpu = cpu_description()
    print(f"CPU: {cpu}", flush=True)
    kept = ResultsFile(args.results, cpu) if args.results else None
    with contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory() as folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        variant_sweeps(Path(folder) / "conf")
        for budget in args.budgets:
            print(f"\nbudget {budget:g} s", flush=True)

            def run_one(setup: str, seed: int, budget: float = budget) -> dict:
                measure = functools.partial(search, setup, seed, budget, Path(folder))
                return kept.get_or_run(f"budget {budget:g}", setup, seed, measure) if kept else measure()

            results = run_all(args.seeds, args.setups, run_one,
                              lambda result: (f"trials {result['trials']:3d}  configurations "
                                              f"{result['configurations']:3d}  epochs {result['epochs']:3d}  "
                                              f"best val_accuracy {result['best_val']:.4f}"))
            print()
            print_summary(results)
            print_targets(results)


if __name__ == "__main__":
    main()
