"""launcher=slurm: the hydra-submitit-launcher preset composes with its overrides, and real multiruns go
through submitit's local executor with the same settings (launcher=slurm_local: the launcher code path
of Slurm, without a cluster): a grid training real models, and a search whose killed job is one failed
trial while the search goes on. And how a job that ended without a result is described: from sacct's real
output format (states the one-node test cluster cannot produce: out of memory, node failure, time limit),
a traceback, sbatch's own refusal, or a sacct that fails."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from submitit.core.utils import CommandFunction, FailedJobError

from cnnsweep.launch.slurm import final_state, lost_because, sacct_state, submission_error
from conftest import CONF_DIR, FAKE_RUN, TINY_RUN
from test_search import fake_search_args


def test_the_slurm_preset_asks_for_one_gpu_per_job_and_takes_overrides() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["launcher=slurm", "launcher.partition=gpu", "launcher.mem_gb=64",
                                 "launcher.timeout_min=600"])
    slurm = cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmTrialLauncher")
    assert (slurm.partition, slurm.gpus_per_node, slurm.mem_gb, slurm.timeout_min) == ("gpu", 1, 64, 600)
    assert slurm.cpus_per_task == 8 and slurm.array_parallelism == 64


@pytest.mark.tensorflow
def test_a_grid_runs_through_submitit(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli("-m", "launcher=slurm_local", "launcher.partition=gpu",
                     *TINY_RUN, "training.epochs=1", "model.filters=4,8", f"hydra.sweep.dir={sweep_dir}",
                     env={"CNNSWEEP_DATA_DIR": str(mnist_dir)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    assert sorted(board["model.filters"]) == [4, 8]
    assert set(board["status"]) == {"completed"}
    assert any((sweep_dir / ".submitit").iterdir())  # submitit's own job folders and logs


def test_a_search_through_submitit_survives_a_killed_job(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(*fake_search_args(tiny_data, searched=("model.filters",)), "launcher=slurm_local", "launcher.jobs=2",
                     "hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=3",
                     "model.filters=choice(4, 6, 8)", "model.dense_units=16", "optimizer.lr=0.003",
                     f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage={storage}",
                     command=FAKE_RUN, env={"FAKE_KILL_FILTERS": "6"})  # filters=6 dies by SIGKILL
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: 1 of 3 jobs failed" in result.stderr
    assert "2 at once" in result.stdout  # trials at once follow launcher.jobs
    trials = {trial.params["model.filters"]: trial
              for trial in optuna.load_study(study_name="quick", storage=storage).trials}
    assert sorted(trials) == [4, 6, 8]
    assert trials[6].state == TrialState.FAIL
    assert trials[6].user_attrs["cnnsweep_error"].startswith("submitit job ")
    assert trials[6].user_attrs["cnnsweep_error"].endswith("ended without a result: its process left no result and "
                                                           "no Python traceback: it was killed, or crashed outside "
                                                           "Python")
    assert trials[4].state == trials[8].state == TrialState.COMPLETE
    for trial in trials.values():  # each trial's folder, as its launcher reported it, is named by its number
        assert trial.user_attrs["cnnsweep_run_dir"] == str(sweep_dir / str(trial.number))
    board = pd.read_csv(sweep_dir / "leaderboard.csv").set_index("model.filters")
    assert board.loc[6, "status"] == "failed" and "killed" in board.loc[6, "error"]
    assert any((sweep_dir / ".submitit").iterdir())


def test_a_python_exception_inside_a_job_is_named(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    """A file where job 1's folder should be: Hydra raises inside the submitit job, whose outcome names the
    exception; the sweep cannot record it in that folder, says so, and finishes the other job."""
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "1").write_text("in the way")
    result = run_cli("-m", "launcher=slurm_local", "launcher.jobs=2", "model.filters=4,5", "training.epochs=1",
                     f"dataset.path={tiny_data}", "dataset.val_size=16", f"hydra.sweep.dir={tmp_path / 'grid'}",
                     command=FAKE_RUN)
    [warning] = [line for line in result.stdout.splitlines() if "is not recorded there" in line]
    assert "ended without a result: its Python raised FileExistsError: [Errno 17] File exists: " in warning
    assert (tmp_path / "grid" / "1").read_text() == "in the way"
    assert pd.read_csv(tmp_path / "grid" / "leaderboard.csv")["status"].tolist() == ["completed"]


# `sacct -n -P -o JobID,State,ExitCode`, as the one-node cluster printed it for a cancelled job (5), a batch
# script killed by SIGKILL (6), one that exited 3 (7) and a Python killed by SIGKILL under srun, as submitit
# runs it (8); then jobs in the same format with the states that cluster cannot produce.
SACCT = """5|CANCELLED by 0|0:0
5.batch|CANCELLED|0:15
6|FAILED|0:9
6.batch|CANCELLED|0:9
7|FAILED|3:0
7.batch|FAILED|3:0
8|FAILED|9:0
8.batch|FAILED|9:0
8.0|CANCELLED|0:9
20|OUT_OF_MEMORY|0:125
20.batch|OUT_OF_MEMORY|0:125
20.0|OUT_OF_MEMORY|0:125
21|NODE_FAIL|0:0
22|TIMEOUT|0:0
22.batch|CANCELLED|0:15
22.0|CANCELLED|0:15
"""
TRACE = ("Job (task=0) failed during processing with trace:\n----------------------\n"
         "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\n"
         "ValueError: model.filters must be positive\n----------------------\nYou can check full logs")


@pytest.mark.parametrize(("job", "state", "returncode", "error", "stderr", "because"), [
    ("5", "CANCELLED by 0", 0, "", "", "cancelled (scancel or the cluster)"),
    ("6", "FAILED", -9, "", "", "its process ended with signal 9, SIGKILL"),
    ("7", "FAILED", 3, "", "", "its process ended with exit code 3 and no Python traceback"),
    ("8", "FAILED", -9, "", "", "its process ended with signal 9, SIGKILL"),
    ("8", "FAILED", -9, TRACE, "", "its Python raised ValueError: model.filters must be positive"),
    ("7", "FAILED", 3, "has not produced any output", "Traceback (most recent call last):\n  File \"y\"\n"
     "ModuleNotFoundError: No module named 'cnnsweep'\n", "its Python raised ModuleNotFoundError: No module named "
     "'cnnsweep'"),
    ("20", "OUT_OF_MEMORY", -125, "", "", "out of memory: raise launcher.mem_gb"),
    ("21", "NODE_FAIL", 0, "", "", "its node failed: rerun the same command to run it again"),
    ("22", "TIMEOUT", -15, "", "", "reached its time limit after its requeues: raise launcher.timeout_min"),
    ("", "", None, "has not produced any output", "", "its process left no result and no Python traceback: it was "
     "killed, or crashed outside Python"),
], ids=["cancelled", "batch-killed", "exit-3", "python-killed", "python-raised", "crashed-before-submitit",
        "out-of-memory", "node-failure", "time-limit", "nothing-known"])
def test_what_ended_a_job_is_named_from_sacct_and_its_logs(job, state, returncode, error, stderr, because) -> None:
    if job:
        assert sacct_state(SACCT, job) == (state, returncode)
    assert lost_because(state, returncode, error, stderr) == because


def fake_command(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_a_sacct_that_cannot_answer_is_named_not_unknown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert final_state("42") == ("state unknown: sacct failed: [Errno 2] No such file or directory: 'sacct'", None)
    fake_command(tmp_path, "sacct", "echo 'sacct: error: Problem talking to the database: Connection refused' >&2\n"
                                    "exit 1")
    assert final_state("42") == ("state unknown: sacct failed: sacct: error: Problem talking to the database: "
                                 "Connection refused", None)
    fake_command(tmp_path, "sacct", "echo '41|COMPLETED|0:0'")
    assert final_state("42") == ("state unknown: sacct has no record of the job", None)


def test_a_submission_error_says_what_refused_it(tmp_path: Path) -> None:
    fake_command(tmp_path, "sbatch", "echo 'sbatch: error: Batch job submission failed: Invalid account or "
                                     "account/partition combination specified' >&2\nexit 1")
    with pytest.raises(FailedJobError) as refused:  # as submitit runs sbatch and raises its refusal
        CommandFunction([str(tmp_path / "sbatch"), "job.sh"], verbose=False)()
    assert str(submission_error(3, refused.value)).startswith(
        "Slurm refused job 3: Batch job submission failed: Invalid account or account/partition combination "
        "specified; change launcher.partition, ")
    with pytest.raises(FileNotFoundError) as missing_sbatch:
        CommandFunction([str(tmp_path / "no-sbatch")], verbose=False)()
    assert str(submission_error(4, missing_sbatch.value)) == (
        f"job 4 could not be submitted: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'no-sbatch'}'")
    assert str(submission_error(5, TypeError("cannot pickle '_thread.lock' object"))) == (
        "job 5 could not be submitted: TypeError: cannot pickle '_thread.lock' object")


def test_a_job_being_requeued_runs_scontrol_past_the_sigterm_of_its_own_requeue() -> None:
    """`scontrol requeue` makes Slurm SIGTERM the whole job, scontrol included (seen in CI: the requeue
    accepted, the job's result "scontrol died with SIGTERM"). A child started after prepare_for_requeue
    is sent SIGTERM as Slurm sends it, and goes on."""
    signalled = ["sh", "-c", "kill -TERM $$; echo answered"]
    assert subprocess.run(signalled, capture_output=True, text=True).returncode == -signal.SIGTERM
    script = ("import signal, subprocess, sys; from cnnsweep.launch.slurm import prepare_for_requeue; "
              f"prepare_for_requeue(); sys.exit(subprocess.run({signalled!r}).returncode)")
    requeuing = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (requeuing.returncode, requeuing.stdout) == (0, "answered\n"), requeuing.stderr
