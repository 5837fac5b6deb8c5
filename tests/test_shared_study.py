"""Two sweep processes started at once feed one Optuna study through a shared storage, as workers on a
cluster do: Optuna's journal file (always tested) and a real PostgreSQL server (where .ci/run started
one and set CNNSWEEP_TEST_POSTGRES_URL). Every trial is recorded once, the workers' trials add up to the
study's, and the leaderboard over both sweep folders sees them all. The trials run tests/fake_run.py:
what is tested is the storage and the sweep processes, not the training."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import FAKE_RUN, REPORT, command_env, missing
from cnnsweep.credentials import redact, url_password
from cnnsweep.search.study import Heartbeats
from test_search import fake_search_args

N_TRIALS = 4


def journal_storage(tmp_path: Path) -> tuple[str, optuna.storages.BaseStorage]:
    path = tmp_path / "study.log"
    override = ("{_target_:optuna.storages.JournalStorage,log_storage:{_target_:"
                f"optuna.storages.journal.JournalFileBackend,file_path:'{path}'}}}}")
    return override, optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def postgres_storage(tmp_path: Path) -> tuple[str, optuna.storages.BaseStorage]:
    """The server .ci/run starts (its test is marked `server`)."""
    url = os.environ.get("CNNSWEEP_TEST_POSTGRES_URL")
    if not url:
        missing("no PostgreSQL server: .ci/run starts one and sets CNNSWEEP_TEST_POSTGRES_URL")
    return url, optuna.storages.RDBStorage(url)


def sqlite_storage(tmp_path: Path) -> tuple[str, optuna.storages.BaseStorage]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    return url, optuna.storages.RDBStorage(url)


@pytest.mark.parametrize("make_storage", [
    journal_storage, sqlite_storage, pytest.param(postgres_storage, marks=pytest.mark.server)],
    ids=["journal", "sqlite", "postgresql"])
def test_two_workers_share_one_study(make_storage, tiny_data: Path, tmp_path: Path) -> None:
    storage_override, storage = make_storage(tmp_path)
    study_name = f"shared-{uuid.uuid4().hex[:8]}"  # a server's database outlives one test run
    env = command_env(FAKE_EPOCH_SECONDS="0.2")  # trials long enough for both workers to take some
    workers = [
        subprocess.Popen(
            [*FAKE_RUN, *fake_search_args(tiny_data), "training.epochs=1", f"hydra.sweeper.n_trials={N_TRIALS}",
             f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.storage={storage_override}",
             f"hydra.sweep.dir={tmp_path / name}", "hydra.sweeper.heartbeat_interval=900"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("worker_a", "worker_b")
    ]
    # The worker that runs out of trials first waits for the other's, and ends soon after them: not one
    # heartbeat interval later (it would run past this timeout).
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]

    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    # Each worker stops asking once the study's total is reached; two may both take the last slot.
    assert N_TRIALS <= len(trials) <= N_TRIALS + 1
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials)
    run_dirs = [Path(trial.user_attrs["cnnsweep_run_dir"]) for trial in trials]
    assert len(set(run_dirs)) == len(trials)  # one run folder per trial, none reused
    per_worker = {name: sorted(int(run.name) for run in run_dirs if run.parent.name == name)
                  for name in ("worker_a", "worker_b")}
    assert all(per_worker.values()), f"a worker ran no trial: {per_worker}"
    assert sum(map(len, per_worker.values())) == len(trials)

    report = subprocess.run([*REPORT, str(tmp_path / "worker_a"), str(tmp_path / "worker_b"),
                             "--output", str(tmp_path / "leaderboard.csv")], cwd=tmp_path, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(board["trial"]) == sorted(trial.number for trial in trials)


def ask_queued(make_storage: Callable[[Path], tuple[str, optuna.storages.BaseStorage]], tmp_path: Path,
               study_name: str, asks: int, numbers: "multiprocessing.Queue[list[int]]") -> None:
    """One worker's asks, as the search loop makes them (Heartbeats.ask), in a process of its own."""
    _, storage = make_storage(tmp_path)
    study = optuna.load_study(study_name=study_name, storage=storage)
    numbers.put([Heartbeats(study, storage, None).ask({}).number for _ in range(asks)])


@pytest.mark.parametrize("make_storage", [
    journal_storage, sqlite_storage, pytest.param(postgres_storage, marks=pytest.mark.server)],
    ids=["journal", "sqlite", "postgresql"])
def test_a_queued_trial_goes_to_one_worker(make_storage, tmp_path: Path) -> None:
    """Queued trials (the baseline, warm starts, requeued ones) taken by four workers asking at once: each
    trial once. On SQLite Optuna alone hands one queued trial to two workers (a fifth of 60 asks here)."""
    _, storage = make_storage(tmp_path)
    study_name = f"queue-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=study_name, storage=storage)
    for x in range(60):
        study.enqueue_trial({"x": x}, skip_if_exists=False)
    numbers: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=ask_queued, args=(make_storage, tmp_path, study_name, 15, numbers))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    taken = [number for _ in workers for number in numbers.get(timeout=120)]
    for worker in workers:
        worker.join()
    assert sorted(taken) == list(range(60))


def test_an_unreachable_storage_is_one_error_line(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    result = run_cli(*fake_search_args(tiny_data), "hydra.sweeper.storage=postgresql+psycopg://user:secret@127.0.0.1:9/none",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: hydra.sweeper.storage: cannot open postgresql+psycopg://127.0.0.1:9/none (")
    assert "secret" not in result.stderr + result.stdout


def leaked_password(url: str, study_name: str, *places: Path, consoles: tuple[str, ...] = ()) -> list[str]:
    """Where the URL's password shows, as typed or %-escaped: files under `places`, console output, and
    the study's own attributes (the study's and its trials' user and system attributes)."""
    password = url_password(url)
    assert password and {"/", "@", ":", "%"} <= set(password), "the CI server's password has every awkward character"
    forms = [password, quote(password, safe="")]
    leaks = [str(path) for place in places for path in place.rglob("*")
             if path.is_file() and any(form.encode() in path.read_bytes() for form in forms)]
    leaks += [f"console {number}" for number, text in enumerate(consoles) if any(form in text for form in forms)]
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(study_name)
    trials = storage.get_all_trials(study_id)
    attributes = [storage.get_study_user_attrs(study_id), storage.get_study_system_attrs(study_id),
                  *(trial.user_attrs for trial in trials), *(trial.system_attrs for trial in trials)]
    leaks += [f"study {study_name}" for text in map(repr, attributes) if any(form in text for form in forms)]
    return leaks


def postgres_search(run_cli, tiny_data: Path, tmp_path: Path, *launcher: str) -> tuple[str, str, str]:
    """A two-trial search of tests/fake_run.py on the CI server, the password in its URL, on `launcher`; then
    the report in another process, without the sweep's environment. Returns the URL, the study's name and
    the console output of both."""
    url, storage = postgres_storage(tmp_path)
    study_name = f"secret-{uuid.uuid4().hex[:8]}"
    result = run_cli(*fake_search_args(tiny_data), *launcher, "training.epochs=2", "hydra.sweeper.n_trials=2",
                     f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.storage={url}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", command=FAKE_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    report = run_cli(str(tmp_path / "sweep"), command=REPORT)
    assert report.returncode == 0, report.stderr
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 2
    assert all(len(trial.intermediate_values) == 2 for trial in trials)  # each job opened the study
    assert (tmp_path / "sweep" / "study.json").read_text().count(redact(url)) == 1
    return url, study_name, "\n".join((result.stdout, result.stderr, report.stdout, report.stderr))


@pytest.mark.server
@pytest.mark.parametrize("launcher", [
    (), ("~launcher", "hydra/launcher=basic"), ("launcher=slurm_local", "launcher.jobs=2")],
    ids=["process", "hydra-adapter", "slurm-rehearsal"])
def test_the_storage_password_lands_in_no_file(launcher: tuple[str, ...], run_cli, tiny_data: Path,
                                               tmp_path: Path) -> None:
    """A PostgreSQL search with the password in its URL, on each launcher (Slurm's pickles and .submitit logs
    included; the real cluster's is tests/test_slurm_cluster.py): the jobs reach the study, yet no file under
    the sweep or outputs folder, no console line and no study attribute holds the password."""
    url, study_name, console = postgres_search(run_cli, tiny_data, tmp_path, *launcher)
    assert leaked_password(url, study_name, tmp_path, consoles=(console,)) == []


def sqlite_storage(tmp_path: Path) -> tuple[str, optuna.storages.BaseStorage]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    return url, optuna.storages.RDBStorage(url)


@pytest.mark.parametrize("make_storage", [
    sqlite_storage, pytest.param(postgres_storage, marks=pytest.mark.server)], ids=["sqlite", "postgresql"])
def test_a_dead_workers_trial_is_queued_again_by_a_survivor(make_storage, tiny_data: Path, tmp_path: Path) -> None:
    """Two workers on one study; one dies with its job process (SIGKILL of its process group, as a host
    that goes down): the survivor finds the dead one's trial stale once its heartbeat stops, fails it,
    runs it again, and the study reaches its total with every trial counted once."""
    url, storage = make_storage(tmp_path)
    study_name = f"heartbeat-{uuid.uuid4().hex[:8]}"
    common = [*FAKE_RUN, *fake_search_args(tiny_data), "training.epochs=20", "hydra.sweeper.n_trials=4",
              f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.storage={url}", "hydra.sweeper.pruner=none",
              "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    env = command_env(FAKE_EPOCH_SECONDS="0.1")  # two seconds a trial
    # The doomed worker's trials take twenty seconds, so that on a loaded machine too it is still in its
    # first trial when the survivor has started and the test kills it.
    doomed = subprocess.Popen([*common, f"hydra.sweep.dir={tmp_path / 'doomed'}"], cwd=tmp_path,
                              env=command_env(FAKE_EPOCH_SECONDS="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "doomed").glob("*/history.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivor = subprocess.Popen([*common, f"hydra.sweep.dir={tmp_path / 'survivor'}"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not list((tmp_path / "survivor").glob("*/history.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)  # both workers train: the survivor is past its start, where it settles dead trials
    doomed_worker = f"{socket.gethostname()}:{doomed.pid}"

    def doomed_runs_a_trial() -> bool:
        running = optuna.load_study(study_name=study_name, storage=storage).get_trials(states=(TrialState.RUNNING,))
        return any(trial.user_attrs.get("cnnsweep_worker") == doomed_worker for trial in running)

    while not doomed_runs_a_trial() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    stdout, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr[-3000:]

    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    assert TrialState.RUNNING not in [trial.state for trial in trials]
    dead = [trial for trial in trials if trial.user_attrs.get("cnnsweep_worker") == doomed_worker
            and trial.state is TrialState.FAIL]
    assert len(dead) == 1
    again = [trial for trial in trials if trial.user_attrs.get("cnnsweep_requeued_from") == dead[0].number]
    assert len(again) == 1 and again[0].state is TrialState.COMPLETE and again[0].params == dead[0].params
    counted = [trial for trial in trials if trial.state is TrialState.COMPLETE]
    assert len(counted) == 4 and len({trial.number for trial in trials}) == len(trials)
    assert "stopped its heartbeat; failed and queued again" in stdout + stderr and "Warning" not in stderr
