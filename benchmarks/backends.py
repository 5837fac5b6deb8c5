"""Benchmark: the tutorial run (`src/run.py`, the default config) on each Keras backend, in one invocation.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/backends.py [--backends tensorflow jax torch]
        [--rounds 1] [--epochs 5]

Each round runs every backend once, in turn (so drift in machine load hits each alike). Prints each run's
seconds per epoch (epoch 1, which includes tracing or compiling the model, apart from the later epochs),
test accuracy and the time to the first epoch's start, then per backend the mean of the later epochs and
its ratio to the first backend's. The 290 s search protocol per backend is benchmarks/search_budget.py's
setups `jax` and `torch` beside `tpe+baseline` (TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

from baseline import mnist_file

from cnnsweep.run.records import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def tutorial_run(backend: str, epochs: int, run_dir: Path) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), f"hardware.backend={backend}",
                    f"training.epochs={epochs}", "training.progress=none", f"hydra.run.dir={run_dir}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    record = json.loads((run_dir / "metrics.json").read_text())
    seconds = [epoch["train"] + epoch["validate"] for epoch in record["timings"]["epochs"]]
    return {"first_epoch_s": seconds[0], "later_epoch_s": mean(seconds[1:]) if len(seconds) > 1 else float("nan"),
            "test_accuracy": record["test_accuracy"], "params": record["params"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    mnist_file()  # exits with the fix when CNNSWEEP_DATA_DIR is not set
    print(cpu_description(), flush=True)
    results: dict[str, list[dict]] = {backend: [] for backend in args.backends}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            for backend in args.backends:
                result = tutorial_run(backend, args.epochs, Path(workdir) / f"{backend}-{round_number}")
                results[backend].append(result)
                print(f"round {round_number} {backend:10s} epoch 1 {result['first_epoch_s']:5.1f} s, later epochs "
                      f"{result['later_epoch_s']:5.1f} s, test_accuracy {result['test_accuracy']:.4f}, params "
                      f"{result['params']:,}, whole run {result['wall_s']:.0f} s", flush=True)
    print()
    reference = mean(run["later_epoch_s"] for run in results[args.backends[0]])
    for backend, runs in results.items():
        later = mean(run["later_epoch_s"] for run in runs)
        print(f"{backend:10s} epoch 1 {mean(run['first_epoch_s'] for run in runs):5.1f} s, later epochs {later:5.1f} s "
              f"({later / reference:.2f}x {args.backends[0]}), test_accuracy "
              f"{mean(run['test_accuracy'] for run in runs):.4f}")


if __name__ == "__main__":
    main()
