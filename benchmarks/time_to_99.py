"""Benchmark: training time until the tutorial CNN reaches 99% MNIST test accuracy, cnnsweep's
fastest CPU preset (`experiment=fast_cpu`) against the plain tutorial script, in one invocation.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/time_to_99.py [--repeats 3]

The tutorial script (benchmarks/tutorial_plain.py --test-each-epoch) evaluates the test set after each
epoch, outside its timed part: its time to 99% is the training time up to the first epoch at 99% or
more (if none of its 5 epochs gets there, its full training time is a lower bound, marked ">").
The preset's learning-rate schedule is tied to its epoch count, so its time is its whole training time,
counted only when its final test accuracy is 99% or more. The two alternate, so drift in machine load
hits both alike; TensorFlow start-up and data loading are left out of both. Target: the preset at most
half the tutorial's time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import ROOT, mnist_file, run_plain  # noqa: E402

TARGET = 0.99


def tutorial(mnist: Path) -> tuple[float, bool, list[float]]:
    result = run_plain(mnist, "--test-each-epoch")
    elapsed = 0.0
    for seconds, accuracy in zip(result["epoch_seconds"], result["epoch_test_accuracy"]):
        elapsed += seconds
        if accuracy >= TARGET:
            return elapsed, True, result["epoch_test_accuracy"]
    return elapsed, False, result["epoch_test_accuracy"]


def preset(seed: int, workdir: Path) -> tuple[float, bool, float]:
    run_dir = workdir / f"fast_cpu-seed{seed}"
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "experiment=fast_cpu", f"seed={seed}",
                    f"hydra.run.dir={run_dir}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["train_seconds"], metrics["test_accuracy"] >= TARGET, metrics["test_accuracy"]


def describe(seconds: float, reached: bool) -> str:
    return f"{seconds:6.1f} s" if reached else f">{seconds:5.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mnist = mnist_file()
    tutorial_times: list[float] = []
    preset_times: list[Optional[float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.repeats):
            seconds, reached, curve = tutorial(mnist)
            tutorial_times.append(seconds)
            print(f"tutorial           {describe(seconds, reached)} to 99%  (test accuracy by epoch: "
                  f"{', '.join(f'{value:.4f}' for value in curve)})", flush=True)
            seconds, reached, accuracy = preset(seed, Path(folder))
            preset_times.append(seconds if reached else None)
            print(f"fast_cpu seed {seed}    {describe(seconds, reached)} to 99%  (test accuracy {accuracy:.4f})",
                  flush=True)
    reached = [seconds for seconds in preset_times if seconds is not None]
    print(f"median: tutorial {median(tutorial_times):.1f} s, fast_cpu {median(reached):.1f} s "
          f"({len(reached)} of {len(preset_times)} runs reached 99%); ratio {median(reached) / median(tutorial_times):.2f} "
          "(target at most 0.5)" if reached else "fast_cpu never reached 99%")


if __name__ == "__main__":
    main()
