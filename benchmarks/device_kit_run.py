"""The GPU checks and benchmark, run on a GPU machine without internet from the device kit, in one go.

    python3 benchmarks/device_kit_run.py --out "$OUT"          # there, with device_kit/ carried
    uv run python benchmarks/device_kit_run.py --rehearse --out /tmp/kit   # here: the same steps on CPU, tiny

First `benchmarks/device_kit_prepare.py` (on a machine with the package registry) fills device_kit/.
This script installs its wheels offline (`pip install --no-index --target`), then, each step with its own
time limit and log:
  1. what the machine has: nvidia-smi, the Python packages, JAX's and PyTorch's devices;
  2. the tutorial (src/run.py, 5 epochs, hardware=gpu) on jax and on torch: seconds per epoch (the first,
     which compiles, apart) and test accuracy;
  3. packing: a 16-trial grid of tutorial-sized trials (1 epoch each, seeds 0-15) on the faster backend
     with launcher=parallel at launcher.jobs_per_gpu 1, 2, 4, 8 and auto: trials per hour, GPU utilisation and
     memory sampled by nvidia-smi, failures, mean test accuracy;
  4. jobs_per_gpu=auto meeting a bigger model: the job that outgrows its part of the GPU runs again alone.
It writes table.md (the README's table), results.json and logs.tar.gz to --out. Targets: the tutorial at
3 s per epoch or less on the faster backend; at least 4x the trials per hour of one trial per GPU.
--rehearse runs the same steps here on the CPU (fake GPU id, tiny data, no install), to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from statistics import mean
from typing import Any, Optional, Union

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "device_kit"
BUDGET_S = 540.0  # the device tool runs a command for 10 minutes at most
BACKENDS = ("jax", "torch")
PACKING = (1, 2, 4, 8, "auto")
BIG_BATCH = 60000  # the whole training split in one batch: too large for a small job's part of the GPU
MACHINE_PROBE = ("nvidia-smi; python3 -m pip list 2>/dev/null | grep -iE "
                 "'^(jax|jaxlib|torch|numpy|keras|hydra|optuna) '; python3 -c 'import jax; print(jax.devices())'; "
                 "python3 -c 'import torch; print(torch.cuda.is_available())'")


class Steps:
    """Runs commands with logs under work/, each bounded by what is left of the whole budget."""

    def __init__(self, work: Path, env: dict[str, str], budget_s: float) -> None:
        self.work, self.env = work, env
        self.deadline = time.monotonic() + budget_s
        self.notes: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, command: list[str], limit_s: float) -> Optional[subprocess.CompletedProcess]:
        limit = min(limit_s, self.left() - 5)
        if limit < 20:
            self.notes.append(f"{name}: not run, the time budget is spent")
            return None
        with open(self.work / f"{name}.log", "w") as log:
            try:
                result = subprocess.run(command, cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=limit)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{name}: stopped at its {limit:.0f} s limit")
                return None
        if result.returncode != 0:
            self.notes.append(f"{name}: exit status {result.returncode} (see its log)")
        return result


class GpuSampler:
    """nvidia-smi's utilisation and memory, twice a second, while a step runs."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process: Optional[subprocess.Popen] = None
        self.enabled = enabled

    def __enter__(self) -> "GpuSampler":
        if self.enabled:
            self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                             "--format=csv,noheader,nounits", "-lms", "500"],
                                            stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                utilisation, memory = (float(part) for part in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((utilisation, memory))

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def summary(self) -> dict[str, Optional[float]]:
        if not self.samples:
            return {"gpu_utilisation_pct": None, "gpu_memory_max_mib": None}
        return {"gpu_utilisation_pct": mean(sample[0] for sample in self.samples),
                "gpu_memory_max_mib": max(sample[1] for sample in self.samples)}


def install(work: Path) -> Path:
    site = work / "site"
    wheels = sorted(str(path) for path in (KIT / "wheels").glob("*.whl"))
    if not wheels:
        sys.exit("error: no wheels in device_kit/wheels; run benchmarks/device_kit_prepare.py first and carry "
                 "device_kit")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
    return site


def tutorial(steps: Steps, backend: str, settings: list[str]) -> dict[str, Any]:
    run_dir = steps.work / f"tutorial-{backend}"
    command = [sys.executable, str(ROOT / "src" / "run.py"), f"hardware.backend={backend}", "training.progress=epoch",
               *settings, f"hydra.run.dir={run_dir}"]
    result = steps.run(f"tutorial-{backend}", command, 240)
    if result is None or result.returncode != 0:
        return {"backend": backend, "ok": False}
    record = json.loads((run_dir / "metrics.json").read_text())
    epochs = [epoch["train"] + epoch["validate"] for epoch in record["timings"]["epochs"]]
    devices = json.loads((run_dir / "environment.json").read_text())["devices"]
    return {"backend": backend, "ok": True, "first_epoch_s": epochs[0],
            "later_epoch_s": mean(epochs[1:]) if len(epochs) > 1 else epochs[0],
            "test_accuracy": record["test_accuracy"], "device": devices.get("device"), "gpus": devices.get("gpus")}


def packing(steps: Steps, backend: str, jobs_per_gpu: Union[int, str], settings: list[str], gpus: str,
            sample_gpu: bool) -> dict[str, Any]:
    sweep = steps.work / f"pack-{jobs_per_gpu}"
    started = time.monotonic()
    with GpuSampler(sample_gpu) as sampler:
        result = steps.run(f"pack-{jobs_per_gpu}", [
            sys.executable, str(ROOT / "src" / "run.py"), "-m", "launcher=parallel", f"launcher.gpus={gpus}",
            f"launcher.jobs_per_gpu={jobs_per_gpu}", f"hardware.backend={backend}", "training.progress=none",
            *settings, f"hydra.sweep.dir={sweep}"], 200)
    wall = time.monotonic() - started
    records = [json.loads(path.read_text()) for path in sweep.glob("*/metrics.json")]
    completed = [record for record in records if record.get("status") == "completed"]
    schedule = sweep / "schedule.jsonl"
    jobs = [json.loads(line) for line in schedule.read_text().splitlines()] if schedule.exists() else []
    peaks = [job["gpu_peak_bytes"] for job in jobs if job.get("gpu_peak_bytes")]
    return {"jobs_per_gpu": jobs_per_gpu,
            "caps": sorted({job["gpu_share"] for job in jobs if job.get("gpu_share")}, reverse=True),
            "job_peak_mib": max(peaks) / 2**20 if peaks else None,
            "ok": result is not None and result.returncode == 0, "wall_s": wall,
            "completed": len(completed), "failed": len(records) - len(completed),
            "trials_per_hour": 3600 * len(completed) / wall if completed else 0.0,
            "test_accuracy": mean(record["test_accuracy"] for record in completed) if completed else None,
            **sampler.summary()}


def outgrowing(steps: Steps, backend: str, settings: list[str], gpus: str) -> dict[str, Any]:
    """jobs_per_gpu=auto meeting a bigger model: three tutorial jobs, then one at batch size BIG_BATCH
    (gigabytes of activations), which should run out of memory in its part of the GPU, run again alone and
    complete; returns each job's attempts as (cap, status)."""
    sweep = steps.work / "pack-outgrown"
    result = steps.run("pack-outgrown", [
        sys.executable, str(ROOT / "src" / "run.py"), "-m", "launcher=parallel", f"launcher.gpus={gpus}",
        "launcher.jobs_per_gpu=auto", f"hardware.backend={backend}", "training.progress=none", *settings,
        f"training.batch_size=32,32,32,{BIG_BATCH}", "training.eval_batch_size=1000", f"hydra.sweep.dir={sweep}"], 150)
    schedule = sweep / "schedule.jsonl"
    attempts: dict[int, list] = {}
    for line in schedule.read_text().splitlines() if schedule.exists() else []:
        job = json.loads(line)
        attempts.setdefault(job["job"], []).append((job["gpu_share"], job["status"]))
    return {"ok": result is not None and result.returncode == 0, "attempts": dict(sorted(attempts.items()))}


def table(machine: str, tutorials: list[dict], packs: list[dict], notes: list[str]) -> str:
    lines = [f"GPU machine: {machine}", "", "| backend | epoch 1 (s) | later epochs (s) | test accuracy |",
             "| --- | --- | --- | --- |"]
    for run in tutorials:
        lines.append(f"| {run['backend']} | {run['first_epoch_s']:.1f} | {run['later_epoch_s']:.1f} | "
                     f"{run['test_accuracy']:.4f} |" if run["ok"] else f"| {run['backend']} | failed | | |")
    lines += ["", "| jobs_per_gpu | trials done | failed | wall (s) | trials/hour | vs 1 per GPU | GPU util % | "
                  "GPU memory max (MiB) | mean test accuracy |", "|" + " --- |" * 9]
    base = next((pack["trials_per_hour"] for pack in packs if pack["jobs_per_gpu"] == 1), 0.0)
    for pack in packs:
        gain = f"{pack['trials_per_hour'] / base:.2f}x" if base else "-"
        utilisation = "-" if pack["gpu_utilisation_pct"] is None else f"{pack['gpu_utilisation_pct']:.0f}"
        memory = "-" if pack["gpu_memory_max_mib"] is None else f"{pack['gpu_memory_max_mib']:.0f}"
        accuracy = "-" if pack["test_accuracy"] is None else f"{pack['test_accuracy']:.4f}"
        lines.append(f"| {pack['jobs_per_gpu']} | {pack['completed']} | {pack['failed']} | {pack['wall_s']:.0f} | "
                     f"{pack['trials_per_hour']:.0f} | {gain} | {utilisation} | {memory} | {accuracy} |")
    notes = [*notes, *(f"jobs_per_gpu={pack['jobs_per_gpu']}: memory caps {pack['caps']} of a GPU, a job's peak "
                       f"{pack['job_peak_mib']} MiB" for pack in packs if pack["jobs_per_gpu"] == "auto")]
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n"


def machine_description(steps: Steps, sample_gpu: bool) -> str:
    if not sample_gpu:
        return "rehearsal on this machine's CPU (fake GPU id)"
    probe = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
    return probe.stdout.strip() or "nvidia-smi said nothing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where table.md, results.json and logs.tar.gz go")
    parser.add_argument("--rehearse", action="store_true", help="here, on the CPU: tiny settings, no install")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cnnsweep-device-kit-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.rehearse:
        if not env.get("CNNSWEEP_DATA_DIR"):
            sys.exit("error: set CNNSWEEP_DATA_DIR to a folder holding mnist.npz")
        tutorial_settings = ["hardware=cpu", "training.epochs=2", "dataset.max_train=512", "dataset.max_test=256"]
        pack_settings = ["seed=range(4)", "training.epochs=1", "dataset.max_train=512", "dataset.max_test=256"]
        gpus, packing_levels = "[fake0]", (1, "auto")
    else:
        site = install(work)
        env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src")]), CNNSWEEP_DATA_DIR=str(KIT / "data"))
        tutorial_settings = ["hardware=gpu"]
        pack_settings = ["seed=range(16)", "training.epochs=1"]
        gpus, packing_levels = "auto", PACKING
    steps = Steps(work, env, BUDGET_S)
    if not args.rehearse:
        steps.run("machine", ["sh", "-c", MACHINE_PROBE], 60)
    tutorials = [tutorial(steps, backend, tutorial_settings) for backend in BACKENDS]
    done = [run for run in tutorials if run["ok"]]
    fastest = min(done, key=lambda run: run["later_epoch_s"])["backend"] if done else "jax"
    packs = [packing(steps, fastest, level, pack_settings, gpus, not args.rehearse) for level in packing_levels]
    steps.notes.append(f"packing ran on {fastest}, the backend with the faster later epochs")
    one_job_each = [setting for setting in pack_settings if not setting.startswith("seed=")]
    outgrown = outgrowing(steps, fastest, one_job_each, gpus)
    steps.notes.append(f"jobs_per_gpu=auto, a bigger model last (batch {BIG_BATCH}): each job's attempts (cap, "
                       f"status) {outgrown['attempts']}; sweep exit {'0' if outgrown['ok'] else 'not 0'}")
    machine = machine_description(steps, not args.rehearse)
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "tutorials": tutorials, "packing": packs,
                                                       "outgrown": outgrown, "notes": steps.notes}, indent=2) + "\n")
    (args.out / "table.md").write_text(table(machine, tutorials, packs, steps.notes))
    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as archive:
        for path in sorted(work.glob("*.log")) + sorted(work.glob("pack-*/schedule.jsonl")):
            archive.add(path, arcname=str(path.relative_to(work)))
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
