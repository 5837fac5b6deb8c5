"""launcher=parallel: one GPU per job and the cores split between jobs, proven on CPU with fake GPU ids.

The subprocess tests run real multiruns (a grid training real models, and an Optuna search through
tests/fake_run.py) and read <sweep>/schedule.jsonl, where the launcher records each job's GPU, threads,
start and end, and each job's environment.json, where the job's own process records what it was given.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import optuna
import pytest

from cnnsweep.launch.devices import SLOT_ENV, THREADS_ENV, plan_slots, visible_gpus
from cnnsweep.launch.packing import USABLE
from cnnsweep.run.slot import GPU_SHARE_ENV
from cnnsweep.errors import ConfigError
from conftest import FAKE_RUN, TINY_RUN, command_env, error_lines
from test_search import fake_search_args

# A device that frees up must take the next waiting job within this generous deadline: it is milliseconds in
# practice, a loaded 2-core machine can take seconds to compose the next job's config, and a device left idle
# by a bug waits for ever (or for every other job).
HANDOVER_SECONDS = 30.0


def read_schedule(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "schedule.jsonl").read_text().splitlines()]


def assert_one_job_per_gpu(schedule: list[dict], gpus: list[str]) -> None:
    """Every GPU used; jobs on one GPU never overlap; a freed GPU takes the next waiting job at once."""
    by_gpu: dict[str, list[dict]] = defaultdict(list)
    for job in schedule:
        by_gpu[job["gpu"]].append(job)
    assert sorted(by_gpu) == sorted(gpus)
    first_wave_end = min(job["end"] for job in schedule)
    for gpu, jobs in by_gpu.items():
        jobs.sort(key=lambda job: job["start"])
        for previous, following in zip(jobs, jobs[1:]):
            assert following["start"] >= previous["end"], f"GPU {gpu} ran jobs {previous['job']} and {following['job']} at once"
            assert following["start"] - previous["end"] < HANDOVER_SECONDS, f"GPU {gpu} sat idle between jobs"
    later = [job for job in schedule if job["start"] >= first_wave_end]
    assert later, "every job started in the first wave: the test proves nothing about handover"


@pytest.mark.tensorflow
def test_a_grid_gives_each_running_job_its_own_gpu_and_a_share_of_the_cores(run_cli, mnist_dir, tmp_path) -> None:
    sweep_dir = tmp_path / "grid"
    result = run_cli("-m", "launcher=parallel", "launcher.gpus=[g0,g1]", *TINY_RUN, "training.epochs=1,2",
                     "model.filters=4,8,12", f"hydra.sweep.dir={sweep_dir}",
                     env={"CNNSWEEP_DATA_DIR": str(mnist_dir)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    schedule = read_schedule(sweep_dir)
    assert sorted(job["job"] for job in schedule) == list(range(6))
    assert {job["status"] for job in schedule} == {"completed"}
    assert_one_job_per_gpu(schedule, ["g0", "g1"])
    for job in schedule:  # what each job's own TensorFlow process was given
        devices = json.loads((sweep_dir / str(job["job"]) / "environment.json").read_text())["devices"]
        assert devices["cuda_visible_devices"] == job["gpu"]
        assert devices["launcher_cpu_threads"] == str(job["threads"])
        # slots split the cores this process may use (its affinity, as Slurm, cgroups or taskset set it)
        assert devices["intra_op_threads"] == job["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert "launcher.jobs" not in (sweep_dir / "leaderboard.csv").read_text()  # not an experiment column


def test_an_optuna_search_keeps_every_gpu_busy(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(*fake_search_args(tiny_data), "launcher=parallel", "launcher.gpus=[g0,g1]",
                     "hydra.sweeper.n_trials=5", "training.epochs=1", f"hydra.sweep.dir={sweep_dir}",
                     f"hydra.sweeper.storage={storage}", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 at once" in result.stdout  # n_jobs follows the launcher's slots
    schedule = read_schedule(sweep_dir)
    assert len(schedule) == 5
    assert_one_job_per_gpu(schedule, ["g0", "g1"])
    trials = optuna.load_study(study_name="quick", storage=storage).trials
    assert len(trials) == 5 and all(trial.state.is_finished() for trial in trials)
    for job in schedule:  # what each trial's own process was given, and its folder named by its trial
        devices = json.loads((Path(job["run_dir"]) / "environment.json").read_text())["devices"]
        assert devices["cuda_visible_devices"] == job["gpu"] and Path(job["run_dir"]).name == str(job["job"])
    workers = {gpu: {job["worker_pid"] for job in schedule if job["gpu"] == gpu} for gpu in ("g0", "g1")}
    assert all(len(pids) == 1 for pids in workers.values()) and workers["g0"] != workers["g1"]  # one warm worker per GPU


def test_slots_split_gpus_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    two_gpus = plan_slots(None, ["3", "5"], cores=8)
    assert [(slot.gpu, slot.threads) for slot in two_gpus] == [("3", 4), ("5", 4)]
    assert two_gpus[1].environment() == {SLOT_ENV: "1", "CUDA_VISIBLE_DEVICES": "5", THREADS_ENV: "4",
                                         "OMP_NUM_THREADS": "4"}
    assert [slot.gpu for slot in plan_slots(1, ["3", "5"], cores=8)] == ["3"]
    cpu = plan_slots(4, 0, cores=8)  # gpus=0: CPU only, GPUs hidden from the jobs
    assert [(slot.gpu, slot.threads) for slot in cpu] == [("", 2)] * 4
    assert [slot.threads for slot in plan_slots(3, [], cores=2)] == [1, 1, 1]  # never 0 threads
    local = plan_slots(1, None, cores=8)  # launcher=local: nothing assigned, TensorFlow's defaults
    assert [(slot.gpu, slot.threads) for slot in local] == [(None, None)]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert visible_gpus() == ["2", "7"]
    assert [slot.gpu for slot in plan_slots(None, "auto", cores=8)] == ["2", "7"]
    assert [slot.gpu for slot in plan_slots(None, 1, cores=8)] == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [(slot.gpu, slot.threads) for slot in plan_slots(None, "auto", cores=2)] == [(None, 1), (None, 1)]


@pytest.mark.parametrize(("jobs", "gpus", "jobs_per_gpu", "plan"), [
    (None, ["3", "5"], 1, [("3", None), ("5", None)]),
    (None, ["3", "5"], 2, [("3", 0.5), ("5", 0.5), ("3", 0.5), ("5", 0.5)]),  # dealt round: the first jobs spread
    (3, ["3", "5"], 4, [("3", 0.25), ("5", 0.25), ("3", 0.25)]),
    (None, ["0"], 8, [("0", 0.125)] * 8),
    (2, 0, 4, [("", None), ("", None)]),  # no GPUs: nothing to share
])
def test_jobs_per_gpu_deals_capped_slots_round_the_gpus(jobs, gpus, jobs_per_gpu: int, plan: list) -> None:
    slots = plan_slots(jobs, gpus, cores=16, jobs_per_gpu=jobs_per_gpu)
    assert [(slot.gpu, slot.gpu_share) for slot in slots] == plan
    for slot in slots:
        environment = slot.environment()
        assert environment.get(GPU_SHARE_ENV) == (None if slot.gpu_share is None else f"{slot.gpu_share:g}")
        assert environment[THREADS_ENV] == str(16 // len(slots))


@pytest.mark.tensorflow
@pytest.mark.parametrize(("jobs_per_gpu", "share"), [(2, 0.5), ("auto", USABLE)])
def test_a_job_out_of_its_gpu_share_fails_alone_naming_jobs_per_gpu(run_cli, mnist_dir, tmp_path, jobs_per_gpu,
                                                                   share: float) -> None:
    """Two jobs share fake GPU g0, each told its share before its backend starts: with jobs_per_gpu=2 half of
    it each, at once; with auto one at a time with the whole usable part, since no job measures GPU memory
    on the CPU. The one whose model cannot be allocated (a 10^9-unit dense layer: PyTorch's allocator refuses
    the hundreds of GB) fails with one line naming launcher.jobs_per_gpu, the other completes."""
    sweep_dir = tmp_path / "grid"
    result = run_cli("-m", "launcher=parallel", "launcher.gpus=[g0]", f"launcher.jobs_per_gpu={jobs_per_gpu}",
                     *TINY_RUN, "training.epochs=1", "hardware.backend=torch", "model.dense_units=16,1000000000",
                     f"hydra.sweep.dir={sweep_dir}", env={"CNNSWEEP_DATA_DIR": str(mnist_dir)}, timeout=600)
    schedule = sorted(read_schedule(sweep_dir), key=lambda job: job["job"])
    assert [(job["gpu"], job["gpu_share"], job["status"]) for job in schedule] == [("g0", share, "completed"),
                                                                                  ("g0", share, "failed")]
    fine, starved = (json.loads((sweep_dir / str(job) / "metrics.json").read_text()) for job in (0, 1))
    assert fine["status"] == "completed" and fine["test_accuracy"] is not None
    assert starved["status"] == "failed" and starved["out_of_memory"] is True and starved["error"] == (
        f"out of memory on GPU g0, where this job may use {share:.2g} of the memory (launcher.jobs_per_gpu="
        f"{jobs_per_gpu}); lower launcher.jobs_per_gpu or training.batch_size")
    output = result.stdout + result.stderr
    assert "out of memory on GPU g0" in output
    devices = json.loads((sweep_dir / "0" / "environment.json").read_text())["devices"]
    assert (devices["backend"], devices["cuda_visible_devices"], devices["launcher_gpu_share"]) == \
        ("torch", "g0", f"{share:.6g}")
    if jobs_per_gpu == "auto":
        first, second = schedule
        assert first["end"] <= second["start"] or second["end"] <= first["start"]  # one at a time
        assert "measured no GPU memory (it ran on the CPU); one job per GPU" in output


def test_jobs_per_gpu_must_be_a_positive_number() -> None:
    with pytest.raises(ConfigError, match=re.escape("launcher.jobs_per_gpu=0: must be a positive number of jobs")):
        plan_slots(None, ["0"], cores=2, jobs_per_gpu=0)


@pytest.mark.parametrize("jobs, gpus, message", [
    (3, ["0", "1"], "launcher.jobs=3: more than the 2 GPU(s) 0,1 x launcher.jobs_per_gpu=1 can run at once"),
    (None, ["0", "0"], "a GPU is listed twice"),
    (None, 4, "launcher.gpus=4: 0 GPU(s) visible"),
    (0, None, "launcher.jobs=0: must be a positive number"),
    (None, "all", "launcher.gpus=all: must be auto, a number of GPUs, or a list"),
])
def test_impossible_slot_plans_are_refused(monkeypatch, jobs, gpus, message) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_slots(jobs, gpus, cores=2)


def test_gpus_that_cannot_be_listed_stop_the_multirun_instead_of_running_it_on_the_cpu(tiny_data: Path,
                                                                                        tmp_path: Path) -> None:
    """launcher=parallel asks for every GPU; an nvidia-smi that fails (a broken driver) is one line naming it."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate "
                                      "with the NVIDIA driver' >&2\nexit 9\n")
    (tools / "nvidia-smi").chmod(0o755)
    env = {key: value for key, value in command_env().items() if key != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    result = subprocess.run([*FAKE_RUN, "-m", "launcher=parallel", "model.filters=4,8", f"dataset.path={tiny_data}",
                             f"hydra.sweep.dir={tmp_path / 'grid'}"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [
        "error: launcher.gpus: cannot list the GPUs, `nvidia-smi --query-gpu=index --format=csv,noheader` failed "
        "(exit status 9: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver); fix the NVIDIA driver, set "
        "CUDA_VISIBLE_DEVICES, or set launcher.gpus=0 to run the jobs on the CPU"]
    assert not (tmp_path / "grid" / "0").exists()  # no job ran
