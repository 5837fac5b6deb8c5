"""Benchmark: the cnnsweep baseline against the plain tutorial script, in one invocation.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/baseline.py [--repeats 3]

Runs `src/run.py` (the default config) with seeds 0..repeats-1 and the plain tutorial script the same
number of times, alternating the two so drift in machine load hits both alike. Prints each run's test
accuracy and seconds per epoch, the means, and the seconds-per-epoch ratio.
Targets: mean cnnsweep test accuracy above 0.990; ratio at most 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]


def run_cnnsweep(seed: int, workdir: Path) -> dict:
    run_dir = workdir / f"cnnsweep-seed{seed}"
    subprocess.run(
        [sys.executable, str(ROOT / "src" / "run.py"), f"seed={seed}", f"hydra.run.dir={run_dir}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return json.loads((run_dir / "metrics.json").read_text())


def run_plain(data_file: Path, *options: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tutorial_plain.py"), str(data_file), *options],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def mnist_file() -> Path:
    """The real mnist.npz from CNNSWEEP_DATA_DIR, or exit with the fix."""
    data_dir = os.environ.get("CNNSWEEP_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "mnist.npz").is_file():
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    return Path(data_dir) / "mnist.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data_file = mnist_file()

    ours, plain = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.repeats):
            ours.append(run_cnnsweep(seed, Path(workdir)))
            print(f"cnnsweep seed {seed}: test_accuracy {ours[-1]['test_accuracy']:.4f}, "
                  f"{ours[-1]['seconds_per_epoch']:.2f} s/epoch, params {ours[-1]['params']}", flush=True)
            plain.append(run_plain(data_file))
            print(f"plain tutorial run {seed + 1}: test_accuracy {plain[-1]['test_accuracy']:.4f}, "
                  f"{plain[-1]['seconds_per_epoch']:.2f} s/epoch, params {plain[-1]['params']}", flush=True)

    ours_acc, plain_acc = mean(r["test_accuracy"] for r in ours), mean(r["test_accuracy"] for r in plain)
    ours_spe, plain_spe = mean(r["seconds_per_epoch"] for r in ours), mean(r["seconds_per_epoch"] for r in plain)
    ratio = ours_spe / plain_spe
    print(f"mean test accuracy: cnnsweep {ours_acc:.4f} (target > 0.9900: "
          f"{'met' if ours_acc > 0.99 else 'MISSED'}), plain tutorial {plain_acc:.4f}")
    print(f"mean seconds per epoch: cnnsweep {ours_spe:.2f}, plain tutorial {plain_spe:.2f}, "
          f"ratio {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")


if __name__ == "__main__":
    main()
