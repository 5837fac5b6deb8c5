"""Benchmark: one training job with glibc's allocator as the environment leaves it against
`hardware.malloc_top_pad_mb` (cnnsweep.run.allocator), for images in memory and the same images streamed
from a folder, on the search-efficiency protocol's data.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/allocator.py [--pads null 64] [--rounds 2]

Each job is `src/run.py` in its own process, one thread (as a search's slot on launcher=parallel; one row
with TensorFlow's own thread pools), one epoch on the first 10,000 MNIST training images, validated on
the last 5,000. In memory, TensorFlow's pipeline gathers the batches itself; streamed, the very
same images are written once as a folder of PNGs, decoded into cnnsweep's cache and fed to TensorFlow a
batch at a time by Python (`dataset.in_memory_gb=0`). The pads alternate within each round so a drift of
the machine hits them alike. Printed per job: the epoch's seconds, the process's user and system CPU
seconds and its minor page faults; then per model and source the median epoch seconds for each pad and
its speed-up over the first pad given.
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

import numpy as np
from PIL import Image
from warm_workers import ROOT

from cnnsweep.run.records import cpu_description

PROTOCOL = ["training.epochs=1", "training.eval_batch_size=256", "hardware.intra_op_threads=1",
            "hardware.inter_op_threads=1", "training.progress=none"]
MODELS = {
    "tutorial, batch 32": ["training.batch_size=32"],
    "filters 48, dense 256, batch 32": ["model.filters=48", "model.dense_units=256", "training.batch_size=32"],
    # as launcher=local and keras-tuner train: one job with TensorFlow's own thread pools over both cores
    "tutorial, batch 32, all cores": ["training.batch_size=32", "hardware.intra_op_threads=null",
                                      "hardware.inter_op_threads=null"],
}
TRAIN_IMAGES, VAL_IMAGES, TEST_IMAGES = 10_000, 5_000, 1_000


def sources(folder: Path) -> dict[str, list[str]]:
    """The dataset settings of each source: MNIST's arrays in memory, and its same images as a folder."""
    return {
        "in memory": ["dataset=mnist", f"dataset.max_train={TRAIN_IMAGES}", f"dataset.val_size={VAL_IMAGES}",
                      f"dataset.max_test={TEST_IMAGES}"],
        "streamed": ["dataset=folder", f"dataset.path={folder}", "dataset.image_size=[28,28]",
                     "dataset.color_mode=grayscale", "dataset.in_memory_gb=0"],
    }


def write_folder(folder: Path) -> None:
    """The in-memory source's very images as train/, val/ and test/ folders of <digit>/ PNGs."""
    with np.load(Path(os.environ["CNNSWEEP_DATA_DIR"]) / "mnist.npz") as mnist:
        splits = {"train": ("train", slice(TRAIN_IMAGES)), "val": ("train", slice(-VAL_IMAGES, None)),
                  "test": ("test", slice(TEST_IMAGES))}
        for split, (source, images) in splits.items():
            pairs = zip(mnist[f"x_{source}"][images], mnist[f"y_{source}"][images])
            for number, (image, label) in enumerate(pairs):
                (folder / split / str(label)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / split / str(label) / f"{number:05d}.png")


def train(settings: list[str], pad: str, folder: Path, env: dict[str, str]) -> float:
    """One job; the seconds its epoch took."""
    process = subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), *PROTOCOL, *settings,
                              f"hardware.malloc_top_pad_mb={pad}", f"hydra.run.dir={folder}"],
                             cwd=folder.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    epochs: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        write_folder(Path(workdir) / "mnist-folder")
        source_settings_of = sources(Path(workdir) / "mnist-folder")
        env = {**os.environ, "CNNSWEEP_CACHE_DIR": str(Path(workdir) / "cache")}
        for round_number in range(args.rounds):
            for model, model_settings in MODELS.items():
                for source, source_settings in source_settings_of.items():
                    for pad in args.pads:
                        folder = Path(workdir) / f"{round_number}-{len(epochs)}-{pad}"
                        before = os.times(), _children_faults()
                        seconds = train([*source_settings, *model_settings], pad, folder, env)
                        after = os.times(), _children_faults()
                        user = after[0].children_user - before[0].children_user
                        system = after[0].children_system - before[0].children_system
                        epochs.setdefault((model, source, pad), []).append(seconds)
                        print(f"round {round_number} {model:32s} {source:9s} pad {pad:>5s}: epoch {seconds:5.1f} s  "
                              f"user {user:5.1f} s  system {system:5.1f} s  minor faults {after[1] - before[1]:9,d}",
                              flush=True)
    print()
    for model in MODELS:
        for source in source_settings_of:
            first = statistics.median(epochs[(model, source, args.pads[0])])
            print(f"{model:32s} {source:9s} " + "  ".join(
                f"pad {pad}: {statistics.median(epochs[(model, source, pad)]):5.1f} s "
                f"({first / statistics.median(epochs[(model, source, pad)]):.2f}x)" for pad in args.pads))


def _children_faults() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


if __name__ == "__main__":
    main()
