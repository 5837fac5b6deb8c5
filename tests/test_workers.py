"""Warm workers (cnnsweep.launch.job_process.Worker): each slot's process runs job after job. Real multiruns read
back <sweep>/schedule.jsonl (which worker process ran each job, and its how-many-th job it was) and
the run folders: the same config gives the same history warm or fresh; a worker that dies, runs past the
time limit, has run its quota or grown too large is replaced, and the job it failed says why."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAKE_RUN, command_env, write_npz


def schedule(sweep_dir: Path) -> list[dict]:
    jobs = [json.loads(line) for line in (sweep_dir / "schedule.jsonl").read_text().splitlines()]
    return sorted(jobs, key=lambda job: job["job"])


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(handle)]


def fake_grid(run_cli, tiny_data: Path, sweep_dir: Path, *overrides: str, env=None, failed: int = 0):
    """A grid of tests/fake_run.py; `failed` of its jobs are expected to fail (the multirun then exits 1)."""
    result = run_cli("-m", f"dataset.path={tiny_data}", "dataset.val_size=32", f"hydra.sweep.dir={sweep_dir}",
                     *overrides, command=FAKE_RUN, env=env)
    assert result.returncode == (1 if failed else 0), result.stderr[-3000:]
    if failed:
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {failed} of ")
    return schedule(sweep_dir)


TINY_TRAINING = ["model.filters=4", "model.dense_units=8", "training.epochs=2", "training.batch_size=64",
                 "dataset.val_size=32"]


@pytest.mark.tensorflow
def test_a_warm_worker_gives_the_same_history_as_a_fresh_process(run_cli, tmp_path: Path) -> None:
    first = write_npz(tmp_path / "first.npz", n_train=256, n_test=64)
    second = write_npz(tmp_path / "second.npz", n_train=192, n_test=64, num_classes=4)  # 160 + 32 held out
    warm = run_cli("-m", *TINY_TRAINING, f"dataset.path={first},{second},{first}",
                   f"hydra.sweep.dir={tmp_path / 'warm'}", timeout=600)
    assert warm.returncode == 0, warm.stderr[-3000:]
    jobs = schedule(tmp_path / "warm")
    assert len({job["worker_pid"] for job in jobs}) == 1 and [job["worker_job"] for job in jobs] == [1, 2, 3]
    fresh = run_cli("-m", *TINY_TRAINING, f"dataset.path={first}", "launcher.jobs_per_worker=1",
                    f"hydra.sweep.dir={tmp_path / 'fresh'}", timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]

    warm_dir, fresh_dir = tmp_path / "warm", tmp_path / "fresh"
    # The worker's first job, its third (after another dataset and model), and a fresh process: one history.
    assert history(warm_dir / "0") == history(warm_dir / "2") == history(fresh_dir / "0")
    assert (metrics(warm_dir / "0")["test_accuracy"] == metrics(warm_dir / "2")["test_accuracy"]
            == metrics(fresh_dir / "0")["test_accuracy"])
    datasets = [metrics(warm_dir / str(job))["dataset"] for job in range(3)]
    assert datasets[1]["train_size"] == 160 and datasets[1]["source"] == str(second)  # not the cached file
    assert datasets[2]["sha256"] == datasets[0]["sha256"] != datasets[1]["sha256"]


# Three jobs as a warm worker runs them (the backend set up again, a model trained), counting the traced
# graphs (FuncGraph) still alive after each.
THREE_JOBS = """
import gc, json, sys
from pathlib import Path
from cnnsweep.run import hardware
from cnnsweep.run.config import compose_run_config
from cnnsweep.run.data import load_dataset
config = compose_run_config("dataset=npz", f"dataset.path={sys.argv[1]}", *sys.argv[3:])
hardware.select_backend(config)
data = load_dataset(config.dataset, config.seed)
graphs = []
for job in range(3):
    hardware.configure(config.hardware, config.seed)
    from cnnsweep.run.training import train
    run_dir = Path(sys.argv[2]) / str(job)
    run_dir.mkdir(parents=True)
    train(config, data, run_dir, False, lambda row: False)
    gc.collect()
    graphs.append(sum(type(thing).__name__ == "FuncGraph" for thing in gc.get_objects()))
print(json.dumps(graphs))
"""


@pytest.mark.tensorflow
def test_a_warm_workers_jobs_leave_no_traced_graphs_behind(tmp_path: Path) -> None:
    """TensorFlow registers a gradient function per traced train step (Keras' optimizer sums gradients
    through a tf.custom_gradient) and never lets go of it, nor of the graph it holds: a worker kept every
    earlier job's graphs, and each collection took longer. Each job now starts with only its own."""
    data = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)
    process = subprocess.run([sys.executable, "-c", THREE_JOBS, str(data), str(tmp_path / "runs"), *TINY_TRAINING],
                             capture_output=True, text=True, timeout=300, env=command_env())
    assert process.returncode == 0, process.stderr[-3000:]
    graphs = json.loads(process.stdout.strip().splitlines()[-1])
    assert graphs[0] > 0 and graphs == [graphs[0]] * 3  # the last job's, and none of those before it


@pytest.mark.tensorflow
def test_mixed_precision_does_not_leak_into_the_next_job(run_cli, tmp_path: Path) -> None:
    """float32, mixed_float16, float32 in one warm worker (precision is set again for every job, so it
    needs no fresh process): the third job's history is the first's, which ran in a fresh process."""
    data = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)
    result = run_cli("-m", *TINY_TRAINING, f"dataset.path={data}", "hardware.precision=float32,mixed_float16,float32",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = schedule(tmp_path / "sweep")
    assert len({job["worker_pid"] for job in jobs}) == 1 and [job["worker_job"] for job in jobs] == [1, 2, 3]
    sweep = tmp_path / "sweep"
    assert json.loads((sweep / "1" / "environment.json").read_text())["devices"]["precision"] == "mixed_float16"
    assert history(sweep / "1") != history(sweep / "0")  # mixed precision did change the arithmetic
    assert history(sweep / "2") == history(sweep / "0")
    assert metrics(sweep / "2")["test_accuracy"] == metrics(sweep / "0")["test_accuracy"]


def test_a_worker_that_dies_is_replaced_and_its_job_failed(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    jobs = fake_grid(run_cli, tiny_data, tmp_path / "sweep", "model.filters=4,6,8,10", env={"FAKE_KILL_FILTERS": "6"},
                     failed=1)
    assert [job["status"] for job in jobs] == ["completed", "failed", "completed", "completed"]
    assert jobs[0]["worker_pid"] == jobs[1]["worker_pid"] != jobs[2]["worker_pid"] == jobs[3]["worker_pid"]
    died = metrics(tmp_path / "sweep" / "1")
    assert died["status"] == "failed" and died["error"].startswith("job process died (signal 9, SIGKILL)")
    assert metrics(tmp_path / "sweep" / "2")["status"] == "completed"


def test_a_job_past_the_time_limit_is_stopped_and_the_next_job_runs(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    # The 200-epoch job takes 40 s, the limit is 15 s: far above what a 1-epoch job takes even on a loaded
    # machine (a process starting, Hydra composing: seconds), far below the long job.
    jobs = fake_grid(run_cli, tiny_data, tmp_path / "sweep", "training.epochs=1,200,1", "launcher.job_timeout_min=0.25",
                     env={"FAKE_EPOCH_SECONDS": "0.2"}, failed=1)
    assert [job["status"] for job in jobs] == ["completed", "failed", "completed"]
    # it ran to the limit, and was stopped before its 200 epochs (a loaded machine may take longer to stop it)
    assert jobs[1]["end"] - jobs[1]["start"] >= 15
    assert 1 <= len((tmp_path / "sweep" / "1" / "history.csv").read_text().splitlines()) - 1 < 200
    stopped = metrics(tmp_path / "sweep" / "1")
    assert stopped["status"] == "failed"
    assert stopped["error"].startswith("job ran past the time limit (0.25 min, launcher.job_timeout_min)")
    assert jobs[2]["worker_pid"] != jobs[1]["worker_pid"]


@pytest.mark.parametrize(("overrides", "worker_jobs"), [
    (["launcher.jobs_per_worker=2"], [1, 2, 1, 2, 1]),  # recycled after its quota
    (["launcher.worker_max_memory_gb=0.001"], [1, 1, 1, 1, 1]),  # every worker is larger than 1 MB
])
def test_workers_are_replaced_after_their_quota_or_past_the_memory_limit(run_cli, tiny_data, tmp_path,
                                                                           overrides, worker_jobs) -> None:
    jobs = fake_grid(run_cli, tiny_data, tmp_path / "sweep", "seed=0,1,2,3,4", *overrides)
    assert [job["worker_job"] for job in jobs] == worker_jobs
    assert len({job["worker_pid"] for job in jobs}) == worker_jobs.count(1)
    assert {metrics(Path(job["run_dir"]))["status"] for job in jobs} == {"completed"}


def test_a_job_with_other_process_settings_gets_a_fresh_worker(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """TensorFlow fixes threads and devices once per process: a change of `hardware` needs a new one."""
    jobs = fake_grid(run_cli, tiny_data, tmp_path / "sweep", "hardware.intra_op_threads=1,1,2")
    assert jobs[0]["worker_pid"] == jobs[1]["worker_pid"] != jobs[2]["worker_pid"]
    threads = [json.loads((Path(job["run_dir"]) / "environment.json").read_text())["devices"]["intra_op_threads"]
               for job in jobs]
    assert threads == [1, 1, 2]
