"""launcher=slurm against a real one-node Slurm (`.ci/slurm start`, as .ci/run does; the variable
CNNSWEEP_TEST_SLURM_PARTITION names its partition): grids and searches of tests/fake_run.py whose jobs
Slurm cancels, whose processes die, that reach their time limit or can never start, and a sweep
interrupted while its jobs run. Each fault is one job's outcome, never the sweep's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cnnsweep.launch.slurm import INTERRUPT_GRACE_SECONDS
from cnnsweep.rerun import rerun_arguments
from cnnsweep.run.checkpoints import Checkpoints
from conftest import FAKE_RUN, RUN, TINY_RUN, command_env, missing
from test_interrupts import continue_with, interrupt_when, status
from test_search import fake_search_args
from test_shared_study import leaked_password, postgres_search

PARTITION = os.environ.get("CNNSWEEP_TEST_SLURM_PARTITION")
# The suite runs in parallel (pytest-xdist); these tests run one after another in one worker ("slurm"),
# beside the time-limit test in another ("slurm-clock"), so the one-node cluster never holds more jobs than
# it runs at once and no test waits behind another's jobs.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]


@pytest.fixture(autouse=True)
def cluster() -> None:
    if not PARTITION or shutil.which("sbatch") is None:
        missing("no Slurm cluster: start one as root with `.ci/slurm start` and set CNNSWEEP_TEST_SLURM_PARTITION "
                "to the partition it prints (.ci/run does both)")


def on_slurm(jobs: int = 2, *settings: str) -> list[str]:
    """launcher=slurm sized to the test cluster: CPU-only jobs of one core and 1 GB."""
    return ["launcher=slurm", f"launcher.partition={PARTITION}", "launcher.gpus=null", "launcher.cpus=1",
            "launcher.mem_gb=1", f"launcher.jobs={jobs}", *settings]


def slurm_job_id(run_dir: Path, timeout: float = 60) -> str:
    """The Slurm job that trains this run, as its environment.json records it (once the job has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job_id = json.loads((run_dir / "environment.json").read_text())["slurm_job_id"]
            if job_id:
                return str(job_id)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no Slurm job started for {run_dir}")


class Later(threading.Thread):
    """Does `action` in the background as soon as `ready()` holds; `join()` raises what went wrong there
    (the action's exception, or `ready()` never holding), so the test fails with it."""

    def __init__(self, ready: Callable[[], bool], action: Callable[[], object], timeout: float) -> None:
        super().__init__(daemon=True)
        self.ready, self.action, self.timeout = ready, action, timeout
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout
            while not self.ready():
                if time.monotonic() > deadline:
                    raise AssertionError(f"what the background action waits for did not happen in {self.timeout} s")
                time.sleep(0.2)
            self.action()
        except BaseException as error:  # handed to the test's thread by join
            self.error = error

    def join(self, timeout: Optional[float] = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def when(ready: Callable[[], bool], action: Callable[[], object], timeout: float = 120) -> Later:
    """Do `action` in the background as soon as `ready()` holds."""
    later = Later(ready, action, timeout)
    later.start()
    return later


def queued_jobs(folder: Path) -> list[str]:
    """This test's jobs in Slurm's queue: those submitted from `folder` (other tests' jobs may be there)."""
    lines = subprocess.run(["squeue", "-h", "-o", "%i|%Z|%o"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return [line.split("|")[0] for line in lines if str(folder) in line]


def epochs_in(run_dir: Path) -> int:
    try:
        return len(pd.read_csv(run_dir / "history.csv"))
    except (OSError, ValueError):
        return 0


def error_of(run_dir: Path) -> Optional[str]:
    return json.loads((run_dir / "metrics.json").read_text()).get("error")


def test_a_grid_goes_on_past_a_cancelled_job_and_a_killed_one(tiny_data: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "grid"
    command = [*FAKE_RUN, "-m", *on_slurm(2), "model.filters=4,5,6,7", "training.epochs=16",
               f"dataset.path={tiny_data}", f"hydra.sweep.dir={sweep}"]
    # job 1 (filters 5) is cancelled after its first epoch, 2 (filters 6) kills itself after its first, and
    # 3 (filters 7) is requeued by hand after its second, as an administrator or a node failure would (Slurm
    # stops it with SIGTERM, which submitit ignores, then SIGKILL: KillWait, 10 s here, is fewer than its epochs)
    cancelled: list[str] = []
    canceller = when(lambda: (sweep / "1" / "history.csv").exists(),
                     lambda: cancelled.append(slurm_job_id(sweep / "1")) or subprocess.run(["scancel", cancelled[0]]))
    requeuer = when(lambda: epochs_in(sweep / "3") >= 2,
                    lambda: subprocess.run(["scontrol", "requeue", slurm_job_id(sweep / "3")]), timeout=200)
    result = subprocess.run(command, cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="1.5", FAKE_KILL_FILTERS="6"),
                            capture_output=True, text=True, timeout=300)
    canceller.join()
    requeuer.join()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: 2 of 4 jobs failed (first, ")
    assert [status(sweep / str(job)) for job in range(4)] == ["completed", "failed", "failed", "completed"]
    assert error_of(sweep / "1") == (f"Slurm job {cancelled[0]} (CANCELLED by 0) ended without a result: cancelled "
                                     "(scancel or the cluster)")
    killed = slurm_job_id(sweep / "2")
    assert error_of(sweep / "2") == (f"Slurm job {killed} (FAILED) ended without a result: its process ended with "
                                     "signal 9, SIGKILL")
    board = pd.read_csv(sweep / "leaderboard.csv").set_index("model.filters")
    assert list(board.loc[[5, 6], "status"]) == ["failed", "failed"] and board.loc[4, "epochs_completed"] == 16
    assert len(pd.read_csv(sweep / "2" / "history.csv")) == 1  # what the killed job measured is kept
    assert not set(queued_jobs(tmp_path)) & {cancelled[0], killed}
    requeued = json.loads((sweep / "3" / "metrics.json").read_text())
    assert requeued["resumed_after_epoch"] >= 2  # started again by Slurm, it continued from its checkpoint
    assert requeued["resumed_after_epoch"] < 16 and requeued["status"] == "completed"
    assert list(pd.read_csv(sweep / "3" / "history.csv")["epoch"]) == list(range(1, 17))


def test_a_search_with_a_killed_job_leaves_no_trial_running(tiny_data: Path, tmp_path: Path) -> None:
    sweep, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [*FAKE_RUN, *fake_search_args(tiny_data, searched=("model.filters",)), *on_slurm(2),
               "hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=3",
               "model.filters=choice(4, 6, 8)", "model.dense_units=16", "optimizer.lr=0.003", f"hydra.sweep.dir={sweep}", f"hydra.sweeper.storage={storage}"]
    result = subprocess.run(command, cwd=tmp_path, env=command_env(FAKE_KILL_FILTERS="6"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "1 of 3 jobs failed" in result.stderr.strip().splitlines()[-1]
    trials = {trial.params["model.filters"]: trial
              for trial in optuna.load_study(study_name="quick", storage=storage).trials}
    assert [trials[filters].state for filters in (4, 6, 8)] == [TrialState.COMPLETE, TrialState.FAIL,
                                                                 TrialState.COMPLETE]
    run_dir = Path(trials[6].user_attrs["cnnsweep_run_dir"])
    assert (run_dir / "checkpoints" / "epoch-1.json").exists()  # a requeue would continue from it
    assert trials[6].user_attrs["cnnsweep_error"] == error_of(run_dir)
    assert error_of(run_dir).startswith(f"Slurm job {slurm_job_id(run_dir)} (FAILED) ended without a result")


@pytest.mark.xdist_group("slurm-clock")
def test_a_job_at_its_time_limit_is_requeued_and_resumes(tiny_data: Path, tmp_path: Path) -> None:
    """Slurm signals the job (SIGUSR2, signal_delay_s before its 2-minute limit, so 60 to 90 s after it
    starts: Slurm looks at the clock every 30 s) while it trains its 35 epochs of 3 s; submitit requeues
    it and the job continues after its last finished epoch."""
    sweep = tmp_path / "requeued"
    command = [*FAKE_RUN, "-m", *on_slurm(1, "launcher.timeout_min=2", "launcher.signal_delay_s=60"), "model.filters=4",
               "training.epochs=35", f"dataset.path={tiny_data}", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="3"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    run_dir = sweep / "0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["resumed_after_epoch"] >= 1
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, 36))  # each epoch once: none repeated, none lost
    job_id = slurm_job_id(run_dir)
    logs = "".join(path.read_text() for path in (sweep / ".submitit" / job_id).glob("*_log.*"))
    assert "DUE TO JOB REQUEUE" in logs and f"Requeued job {job_id}" in logs  # Slurm's words, and submitit's
    assert "training.resume=true" in (run_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.xdist_group("slurm-clock")
def test_a_job_past_its_requeues_fails_at_its_time_limit(tiny_data: Path, tmp_path: Path) -> None:
    """launcher.max_num_timeout=0: the job is signalled before its 2-minute limit and is not requeued; its
    run fails with submitit's reason (README names it, and the setting to raise) and keeps the epochs it
    trained, and the sweep exits 1 naming it."""
    sweep = tmp_path / "grid"
    command = [*FAKE_RUN, "-m", *on_slurm(1, "launcher.timeout_min=2", "launcher.signal_delay_s=60",
                                          "launcher.max_num_timeout=0"), "model.filters=4", "training.epochs=300",
               f"dataset.path={tiny_data}", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="1"), capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 1, result.stderr[-3000:]
    run_dir = sweep / "0"
    assert error_of(run_dir) == "UncompletedJobError: Job not requeued because: timed-out too many times."
    assert "error: 1 of 1 jobs failed" in result.stderr and "timed-out too many times" in result.stderr
    # what it trained (from its start, slow on a loaded machine, to the signal a minute or more later) is kept
    assert status(run_dir) == "failed" and 1 <= epochs_in(run_dir) < 300
    assert "training.resume=true" not in (run_dir / ".hydra" / "overrides.yaml").read_text()  # never requeued


@pytest.mark.xdist_group("slurm-clock")
def test_a_job_deaf_to_the_interrupt_is_cancelled_after_the_grace_period(tiny_data: Path, tmp_path: Path) -> None:
    """Ctrl-C of the sweep while its job ignores SIGINT (stuck in native code): the sweep waits the grace
    period, then cancels the job, records it interrupted and exits 130 with nothing left in the queue."""
    sweep = tmp_path / "grid"
    run_dir = sweep / "0"
    command = [*FAKE_RUN, "-m", *on_slurm(1), "model.filters=4", "training.epochs=300", f"dataset.path={tiny_data}",
               f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="1", FAKE_DEAF_FILTERS="4"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while epochs_in(run_dir) < 1:
        assert process.poll() is None and time.monotonic() < deadline, "the job did not start training"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGINT)
    signalled, epochs_then = time.monotonic(), epochs_in(run_dir)
    _, stderr = process.communicate(timeout=300)
    waited = time.monotonic() - signalled
    assert process.returncode == 130, stderr[-3000:]
    assert INTERRUPT_GRACE_SECONDS <= waited < INTERRUPT_GRACE_SECONDS + 120
    assert epochs_in(run_dir) >= epochs_then + INTERRUPT_GRACE_SECONDS / 2  # it trained on, deaf to SIGINT
    assert status(run_dir) == "interrupted"
    assert error_of(run_dir) == f"interrupted: the sweep stopped Slurm job {slurm_job_id(run_dir)} (CANCELLED by 0)"
    assert not queued_jobs(tmp_path)


@pytest.mark.tensorflow
def test_a_preempted_keras_job_resumes_with_the_history_it_would_have_had(mnist_dir: Path, tmp_path: Path) -> None:
    """Real training: two identical jobs, one preempted (SIGUSR2, as Slurm signals before preemption or
    its time limit) after its second epoch; submitit requeues it, it reloads its Keras checkpoint (weights,
    optimizer, dropout's random state) and ends with the same history and test accuracy as the other. Epochs
    take well under a second here, so the job has many left when the signal is sent: with three, it once
    finished before Slurm delivered it."""
    sweep = tmp_path / "grid"
    command = [*RUN, "-m", *on_slurm(2), *TINY_RUN, "dataset.max_train=2048", "training.epochs=16",
               "model.dropout=0.3", "dataset.val_size=128", "seed=2,2", f"hydra.sweep.dir={sweep}"]

    preempter = when(lambda: max(Checkpoints(sweep / "1").epochs(), default=0) >= 2, lambda: subprocess.run(
        ["scancel", "--signal=USR2", slurm_job_id(sweep / "1")], check=True), timeout=300)
    result = subprocess.run(command, cwd=tmp_path, env=command_env(CNNSWEEP_DATA_DIR=str(mnist_dir)),
                            capture_output=True, text=True, timeout=600)
    preempter.join()
    assert result.returncode == 0, result.stderr[-3000:]
    whole, resumed = (json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1"))
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] is not None, resumed
    assert 2 <= resumed["resumed_after_epoch"] < 16
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    history = pd.read_csv(sweep / "1" / "history.csv").drop(columns="seconds")
    assert history.equals(pd.read_csv(sweep / "0" / "history.csv").drop(columns="seconds"))


@pytest.mark.parametrize("setting, names", [
    ("launcher.cpus=64", "pending with reason PartitionConfig (it asks for 64 CPUs, 1 GB; partition "),
    ("launcher.gpus=1", "Invalid generic resource (gres) specification; change "),
])
def test_a_job_that_cannot_start_stops_the_sweep_in_one_line(tiny_data: Path, tmp_path: Path, setting: str,
                                                            names: str) -> None:
    sweep = tmp_path / "never"
    command = [*FAKE_RUN, "-m", *on_slurm(2), setting, "model.filters=4,5,6", f"dataset.path={tiny_data}",
               f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, cwd=tmp_path, env=command_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and names in last and setting.split("=")[0] in last
    assert "Traceback" not in result.stderr
    assert not queued_jobs(tmp_path)  # nothing left waiting in the queue
    assert not any(status(folder) == "completed" for folder in sweep.glob("[0-9]*"))


def test_ctrl_c_stops_a_slurm_grid_and_it_continues(tiny_data: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "grid"
    command = [*FAKE_RUN, "-m", *on_slurm(2), "model.filters=4,5", "training.epochs=1,200", f"dataset.path={tiny_data}",
               f"hydra.sweep.dir={sweep}"]
    env = command_env(FAKE_EPOCH_SECONDS="0.5")
    # jobs: 0 (4, 1 epoch), 1 (4, 200), 2 (5, 1), 3 (5, 200): interrupt while 1 and 3 train (100 s each: on a
    # loaded machine job 3 may start long after job 1)
    result = interrupt_when(command, lambda: (sweep / "3" / "history.csv").exists(), tmp_path, env, "process")
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 of 4 jobs finished; continue with: " in result.stderr.strip().splitlines()[-1]
    assert [status(sweep / str(job)) for job in range(4)] == ["completed", "interrupted", "completed", "interrupted"]
    assert not queued_jobs(tmp_path)  # the running jobs stopped, nothing left in the queue
    trained = {job: json.loads((sweep / str(job) / "metrics.json").read_text())["epochs_completed"] for job in (1, 3)}
    assert any(trained.values())

    again = subprocess.run(continue_with(result.stderr), cwd=tmp_path, env=command_env(FAKE_EPOCH_SECONDS="0.01"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [status(sweep / str(job)) for job in range(4)] == ["completed"] * 4
    assert again.stdout.count("completed before") == 2
    for job, epochs in trained.items():  # an interrupted job that had finished epochs continues after them
        if epochs:
            resumed = json.loads((sweep / str(job) / "metrics.json").read_text())["resumed_after_epoch"]
            assert resumed >= epochs and epochs_in(sweep / str(job)) == 200


def test_a_local_run_reruns_on_the_cluster(tiny_data: Path, tmp_path: Path) -> None:
    """`cnnsweep rerun RUN -m seed=1,2 launcher=slurm ...`: a run from this machine's default launcher, its
    seeds rerun as Slurm jobs with the run's own model."""
    original = tmp_path / "run"
    first = subprocess.run([*FAKE_RUN, f"dataset.path={tiny_data}", "dataset.val_size=16", "training.epochs=2",
                            "model.filters=5", f"hydra.run.dir={original}"], cwd=tmp_path, env=command_env(),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    sweep = tmp_path / "seeds"
    rerun = subprocess.run([*FAKE_RUN, *rerun_arguments(original, ["-m", "seed=1,2", *on_slurm(2),
                                                                   f"hydra.sweep.dir={sweep}"])],
                           cwd=tmp_path, env=command_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert sorted(board["seed"]) == [1, 2] and set(board["status"]) == {"completed"}
    for job in ("0", "1"):
        assert OmegaConf.load(sweep / job / ".hydra" / "config.yaml").model.filters == 5
        assert json.loads((sweep / job / "environment.json").read_text())["slurm_job_id"]

@pytest.mark.server
def test_the_storage_password_reaches_no_slurm_file(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """A PostgreSQL search on Slurm, the password in its URL: the jobs on the node open the study through
    their environment, and neither submitit's pickles and logs nor the node's .hydra files hold it."""
    url, study_name, console = postgres_search(run_cli, tiny_data, tmp_path, *on_slurm(2))
    assert list((tmp_path / "sweep" / ".submitit").rglob("*.pkl")), "the jobs went through submitit's pickles"
    assert leaked_password(url, study_name, tmp_path, consoles=(console,)) == []
