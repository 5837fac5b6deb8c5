"""Benchmark: one training job with glibc's allocator as the environment leaves it against
`hardware.malloc_top_pad_mb` (cnnsweep.run.allocator), on the search-efficiency protocol's data.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/allocator.py [--pads null 64] [--rounds 2]

Each job is `src/run.py` in its own process, one thread (as a search's slot on launcher=parallel; one row
with TensorFlow's own thread pools), the first 10,000 MNIST training images with the last 5,000 held out,
one epoch; for three models and batch sizes of baseline_tpe's space, the pads alternating within each
round so a drift of the machine hits them alike. Printed per job: the epoch's seconds, the process's user
and system CPU seconds and its minor page faults; then per model the median epoch seconds for each pad
and its speed-up over the first pad given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from search_budget import cpu_description
from warm_workers import ROOT

PROTOCOL = ["dataset.max_train=10000", "dataset.val_size=5000", "training.epochs=1", "training.eval_batch_size=256",
            "hardware.intra_op_threads=1", "hardware.inter_op_threads=1", "training.progress=none"]
MODELS = {
    "tutorial, batch 32": ["training.batch_size=32"],
    "filters 48, dense 256, batch 32": ["model.filters=48", "model.dense_units=256", "training.batch_size=32"],
    "filters 48, dense 256, batch 256": ["model.filters=48", "model.dense_units=256", "training.batch_size=256"],
    # as launcher=local and keras-tuner train: one job with TensorFlow's own thread pools over both cores
    "tutorial, batch 32, all cores": ["training.batch_size=32", "hardware.intra_op_threads=null",
                                      "hardware.inter_op_threads=null"],
}


def train(model: str, pad: str, folder: Path) -> float:
    """One job; the seconds its epoch took."""
    process = subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), *PROTOCOL, *MODELS[model],
                              f"hardware.malloc_top_pad_mb={pad}", f"hydra.run.dir={folder}"],
                             cwd=folder.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if process.returncode:
        sys.exit(f"error: the job with pad {pad} failed: {process.stderr.strip().splitlines()[-1:]}")
    return json.loads((folder / "metrics.json").read_text())["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pads", nargs="+", default=["null", "64"], help="hardware.malloc_top_pad_mb values")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("CNNSWEEP_DATA_DIR"):
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
    print(f"CPU: {cpu_description()}", flush=True)
    epochs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            for model in MODELS:
                for pad in args.pads:
                    folder = Path(workdir) / f"{round_number}-{len(epochs)}-{pad}"
                    before = os.times(), _children_faults()
                    seconds = train(model, pad, folder)
                    after = os.times(), _children_faults()
                    user = after[0].children_user - before[0].children_user
                    system = after[0].children_system - before[0].children_system
                    epochs.setdefault((model, pad), []).append(seconds)
                    print(f"round {round_number} {model:34s} pad {pad:>5s}: epoch {seconds:5.1f} s  "
                          f"user {user:5.1f} s  system {system:5.1f} s  minor faults {after[1] - before[1]:9,d}",
                          flush=True)
    print()
    for model in MODELS:
        first = statistics.median(epochs[(model, args.pads[0])])
        print(f"{model:34s} " + "  ".join(
            f"pad {pad}: {statistics.median(epochs[(model, pad)]):5.1f} s "
            f"({first / statistics.median(epochs[(model, pad)]):.2f}x)" for pad in args.pads))


def _children_faults() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


if __name__ == "__main__":
    main()
