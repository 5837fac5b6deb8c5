"""Benchmark: dataset=folder on a CIFAR-10-sized folder, and model=resnet against the tutorial CNN on it.

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/image_folder.py [--train-slice 5000]

Writes 50,000 training and 10,000 test images as 32x32 PNG files in train/ and test/ class folders: the
real CIFAR-10 when $CNNSWEEP_DATA_DIR/cifar10.npz exists, else MNIST padded to 32x32 and repeated to three
channels. Then, all in this invocation:
- listing and first decode of the folder (no cache), and the cached reload as a new process or a sweep's
  next trial pays it (listing, mapping the cache, splitting, float32 for training);
- `src/run.py dataset=folder` on the same first N training images, 2 epochs each: model=cnn in memory,
  model=cnn streamed from the cache (dataset.in_memory_gb=0) and model=resnet: seconds per epoch, ratios.
Prints the CPU's model and whether it has AVX-512 beside the figures, since CPUs here differ 2-2.6x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnnsweep.run import data as data_module  # noqa: E402
from cnnsweep.run.config import compose_run_config  # noqa: E402
from cnnsweep.run.image_folder import CACHE_DIR_ENV, list_folder, read_folder  # noqa: E402
from cnnsweep.run.records import cpu_description  # noqa: E402


def source_images() -> tuple[str, dict[str, np.ndarray]]:
    data_dir = Path(os.environ.get("CNNSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    cifar = data_dir / "cifar10.npz"
    if cifar.is_file():
        with np.load(cifar) as arrays:
            return "CIFAR-10", {key: arrays[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    with np.load(data_dir / "mnist.npz") as arrays:
        padded = {key: np.repeat(np.pad(arrays[key], ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)
                  for key in ("x_train", "x_test")}
        padded.update(y_train=arrays["y_train"][:50_000], y_test=arrays["y_test"])
        padded["x_train"] = padded["x_train"][:50_000]
        return "MNIST padded to 32x32x3", padded


def write_folder(root: Path, arrays: dict[str, np.ndarray]) -> float:
    from PIL import Image

    started = time.perf_counter()
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"].reshape(-1)
        for label in np.unique(labels):
            (root / split / f"class_{label}").mkdir(parents=True, exist_ok=True)
        for number, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / split / f"class_{label}" / f"{number:05d}.png")
    return time.perf_counter() - started


def train(root: Path, name: str, settings: list[str], train_slice: int, workdir: Path, env: dict[str, str]) -> dict:
    run_dir = workdir / name
    subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "dataset=folder", f"dataset.path={root}",
                    "dataset.image_size=[32,32]", "dataset.val_size=0", f"dataset.max_train={train_slice}",
                    "training.epochs=2", "training.progress=none", f"hydra.run.dir={run_dir}", *settings],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((run_dir / "metrics.json").read_text())


def timed_load(root: Path) -> tuple[float, object]:
    """load_dataset as a new process would run it (nothing kept in memory from an earlier call)."""
    data_module._last_folder.clear()
    config = compose_run_config("dataset=folder", f"dataset.path={root}", "dataset.image_size=[32,32]").dataset
    started = time.perf_counter()
    data = data_module.load_dataset(config)
    return time.perf_counter() - started, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-slice", type=int, default=5000, help="training images per model run")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        os.environ[CACHE_DIR_ENV] = str(workdir / "cache")
        name, arrays = source_images()
        root = workdir / "folder"
        written = write_folder(root, arrays)
        started = time.perf_counter()
        listing = list_folder(root)
        listed = time.perf_counter() - started
        started = time.perf_counter()
        first = read_folder(listing, (32, 32), "rgb")
        decoded = time.perf_counter() - started
        reloaded, data = timed_load(root)
        assert data.decoded_cache["hit"] and not first.cache_hit
        count = sum(len(files) for files in listing.files.values())
        cache_mib = sum(path.stat().st_size for path in first.cache_folder.iterdir()) / 2**20
        print(f"CPU: {cpu_description()}")
        print(f"folder: {count:,} PNG files of 32x32 ({name}), written in {written:.1f} s")
        print(f"listing {listed:.2f} s | first decode {decoded:.1f} s | cached reload (listing, cache, split, "
              f"float32) {reloaded:.2f} s: {decoded / reloaded:.0f}x faster | cache folder {cache_mib:.0f} MiB")
        env = {**os.environ, CACHE_DIR_ENV: str(workdir / "cache")}
        runs = {name: train(root, name, settings, arguments.train_slice, workdir, env) for name, settings in
                (("cnn", ["model=cnn"]), ("cnn-streamed", ["model=cnn", "dataset.in_memory_gb=0"]),
                 ("resnet", ["model=resnet"]))}
        assert runs["cnn-streamed"]["dataset"]["decoded_cache"]["streamed"]
        base = runs["cnn"]["seconds_per_epoch"]
        print(f"{arguments.train_slice:,} training images, 2 epochs, seconds per epoch:")
        for name, metrics in runs.items():
            print(f"  {name}: {metrics['seconds_per_epoch']:.1f} s ({metrics['seconds_per_epoch'] / base:.2f}x "
                  f"model=cnn), {metrics['params']:,} parameters, test accuracy {metrics['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
