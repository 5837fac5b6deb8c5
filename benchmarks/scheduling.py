"""Benchmark: how busy launcher=parallel keeps 4 (fake) GPUs with 16 trials whose lengths vary 4x.

    uv run python benchmarks/scheduling.py

Each trial is benchmarks/fake_trial.py: it holds its GPU for 5 to 20 s (no TensorFlow, so the numbers
measure scheduling, not this 2-core CPU). Three ways to run the same 16 trials on GPUs 0-3:
  grid          `-m launcher=parallel seed=range(16)` (Hydra's basic sweeper, one batch)
  search        cnnsweep's Optuna sweeper (grid sampler over the 16 seeds), no batch barrier
  optuna-plugin hydra-optuna-sweeper with n_jobs=4, which waits for each batch's slowest trial
From each sweep's schedule.jsonl: wall time (first job start to last job end), and efficiency =
busy device-time / (4 x wall), where busy is each job's time holding its GPU (process start included);
"work" counts only the trial's own 5-20 s. Target: efficiency >= 0.9 with cnnsweep's launcher.
Also printed: the mean gap between a job's end and the next job's start on the same GPU, and the
efficiency a perfect greedy scheduler would reach with the same job lengths in the same order (no
scheduler that does not know the lengths beforehand does better: the rest is the tail, where the last
long jobs run while the other GPUs have nothing left to do).
"""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_trial import LENGTHS, length  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "fake_trial.py"
GPUS = 4
SEEDS = ",".join(map(str, range(LENGTHS)))
# dataset.val_size: a search optimises the run's objective, val_accuracy only with a hold-out (the fake
# trial reads no data, so any size will do).
COMMON = ["-m", "launcher=parallel", f"launcher.gpus=[{','.join(map(str, range(GPUS)))}]", "dataset.val_size=1"]
SETUPS = {
    "grid": [f"seed={SEEDS}"],
    "search": ["hydra/sweeper=cnnsweep_optuna", "hydra.sweeper.sampler=grid", f"hydra.sweeper.n_trials={LENGTHS}",
               "hydra.sweeper.pruner=none", f"seed=choice({SEEDS})"],
    "optuna-plugin": ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", f"hydra.sweeper.n_trials={LENGTHS}",
                      f"hydra.sweeper.n_jobs={GPUS}", f"seed=choice({SEEDS})"],
}


def measure(name: str, workdir: Path) -> dict:
    sweep = workdir / name
    storage = [f"hydra.sweeper.storage=sqlite:///{workdir / name}.db"] if name == "search" else []
    started = time.perf_counter()
    subprocess.run([sys.executable, str(SCRIPT), *COMMON, *SETUPS[name], *storage, f"hydra.sweep.dir={sweep}",
                    ], cwd=workdir, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    command_seconds = time.perf_counter() - started
    jobs = [json.loads(line) for line in (sweep / "schedule.jsonl").read_text().splitlines()]
    seeds = [json.loads((Path(job["run_dir"]) / "metrics.json").read_text())["seed"] for job in jobs]
    assert sorted(seeds) == list(range(LENGTHS)), f"{name}: ran seeds {sorted(seeds)}"
    wall = max(job["end"] for job in jobs) - min(job["start"] for job in jobs)
    busy = sum(job["end"] - job["start"] for job in jobs)
    work = sum(length(seed) for seed in seeds)
    return {"setup": name, "jobs": len(jobs), "wall_s": wall, "command_s": command_seconds,
            "efficiency": busy / (GPUS * wall), "work_efficiency": work / (GPUS * wall),
            "handover_s": handover_gap(jobs), "greedy_efficiency": greedy_efficiency(jobs)}


def handover_gap(jobs: list[dict]) -> float:
    gaps = []
    for gpu in {job["gpu"] for job in jobs}:
        mine = sorted((job for job in jobs if job["gpu"] == gpu), key=lambda job: job["start"])
        gaps += [after["start"] - before["end"] for before, after in zip(mine, mine[1:])]
    return sum(gaps) / len(gaps)


def greedy_efficiency(jobs: list[dict]) -> float:
    """Each job, in start order and with the length it had, on the GPU that frees first, with no gaps."""
    free = [0.0] * GPUS
    for job in sorted(jobs, key=lambda job: job["start"]):
        heapq.heappush(free, heapq.heappop(free) + job["end"] - job["start"])
    return sum(job["end"] - job["start"] for job in jobs) / (GPUS * max(free))


def main() -> None:
    work = sum(length(seed) for seed in range(LENGTHS))
    print(f"{LENGTHS} trials of {min(map(length, range(LENGTHS))):.0f}-{max(map(length, range(LENGTHS))):.0f} s "
          f"on {GPUS} fake GPUs: {work:.0f} s of work, at best {work / GPUS:.1f} s of wall time")
    with tempfile.TemporaryDirectory() as folder:
        for name in SETUPS:
            result = measure(name, Path(folder))
            print(f"{result['setup']:14s} wall {result['wall_s']:6.1f} s (command {result['command_s']:5.1f} s)  "
                  f"efficiency {result['efficiency']:.3f} (greedy bound {result['greedy_efficiency']:.3f})  "
                  f"work efficiency {result['work_efficiency']:.3f}  handover {result['handover_s']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
