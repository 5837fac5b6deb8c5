"""Prepare the device kit: what a GPU machine without internet and without TensorFlow needs to run
cnnsweep on JAX or PyTorch, in the git-ignored folder `device_kit/` (under 64 MiB: one device call's limit).

    CNNSWEEP_DATA_DIR=../shared/datasets uv run python benchmarks/device_kit_prepare.py

Run it here (a machine that reaches the package registry). It downloads, for CPython 3.12 manylinux
x86_64 and without their dependencies, the wheels of every distribution cnnsweep imports at run time
with hardware.backend=jax that the GPU machine lacks (KIT_DISTRIBUTIONS, at the versions installed here,
so the device runs what CI tested), and copies the real MNIST beside them. Then, on the GPU machine,
benchmarks/device_kit_run.py installs them offline and runs the GPU checks (README, "GPU machine").
tests/test_device_kit.py checks that KIT_DISTRIBUTIONS and ON_DEVICE cover every distribution a search
over JAX and PyTorch trials imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "device_kit"
LIMIT_BYTES = 64 * 2**20

# Distributions cnnsweep needs at run time that the GPU machine has not (../shared/notes/gpu-device.md).
KIT_DISTRIBUTIONS = (
    "keras", "namex", "optree",  # Keras 3 and its two pure-Keras dependencies
    "hydra-core", "omegaconf", "antlr4-python3-runtime",
    "optuna", "sqlalchemy", "alembic", "mako", "colorlog",
    "hydra-submitit-launcher",  # Hydra imports every plugin, cnnsweep's Slurm launcher too (not submitit itself)
)
# What the GPU machine has (its own description; each with what it requires, installed there too).
ON_DEVICE = (
    "jax", "jaxlib", "torch", "numpy", "pandas", "matplotlib", "tensorboard", "h5py", "ml-dtypes", "absl-py",
    "rich", "protobuf", "pyyaml", "tqdm", "cloudpickle", "packaging", "pillow", "psutil", "nvidia-ml-py",
    "pytest", "pytest-xdist",
)
# Published as source only (pure Python): built into a wheel here, which installs anywhere.
SOURCE_ONLY = ("antlr4-python3-runtime",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned(distribution: str) -> str:
    return f"{distribution}=={metadata.version(distribution)}"


def download_wheels(folder: Path) -> None:
    """Every kit distribution's wheel for CPython 3.12 on manylinux x86_64, without dependencies."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    pip = pip_command()
    binary = [pinned(name) for name in KIT_DISTRIBUTIONS if name not in SOURCE_ONLY]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "--dest", str(folder), *binary], check=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder),
                    *(pinned(name) for name in SOURCE_ONLY)], check=True)


def pip_command() -> list[str]:
    """pip from this interpreter, else from the Python its virtual environment was made from (uv's
    environments have no pip), else uv's own (`uvx pip`)."""
    for python in dict.fromkeys((sys.executable, getattr(sys, "_base_executable", sys.executable))):
        if subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "pip"]
    return ["uvx", "pip"]


def main() -> None:
    data_dir = os.environ.get("CNNSWEEP_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "mnist.npz").is_file():
        sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz (the kit carries it to the GPU machine)")
    shutil.rmtree(KIT, ignore_errors=True)
    download_wheels(KIT / "wheels")
    (KIT / "data").mkdir()
    shutil.copy2(Path(data_dir) / "mnist.npz", KIT / "data" / "mnist.npz")
    files = sorted(path for path in KIT.rglob("*") if path.is_file())
    manifest = {"wheels": sorted(path.name for path in (KIT / "wheels").iterdir()),
                "versions": {name: metadata.version(name) for name in KIT_DISTRIBUTIONS},
                "bytes": sum(path.stat().st_size for path in files)}
    (KIT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for path in files:
        print(f"{path.stat().st_size / 2**20:7.2f} MiB  {path.relative_to(ROOT)}")
    total = manifest["bytes"] / 2**20
    print(f"{total:7.2f} MiB in {KIT.relative_to(ROOT)}/ (a device call carries at most {LIMIT_BYTES / 2**20:.0f} MiB)")
    if manifest["bytes"] > LIMIT_BYTES:
        sys.exit("error: the kit is over a device call's limit; drop what the GPU machine has")
    print("next, on the GPU machine (the device tool, carrying device_kit): python3 benchmarks/device_kit_run.py")


if __name__ == "__main__":
    main()
