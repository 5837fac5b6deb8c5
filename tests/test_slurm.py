"""launcher=slurm: the hydra-submitit-launcher preset composes with its overrides, and real multiruns go
through submitit's local executor with the same settings (launcher=slurm_local: the launcher code path
of Slurm, without a cluster): a grid training real models, and a search whose killed job is one failed
trial while the search goes on."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

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
    assert trials[6].user_attrs["cnnsweep_error"].endswith("ended without a result: its process was killed, or "
                                                           "crashed outside Python")
    assert trials[4].state == trials[8].state == TrialState.COMPLETE
    for trial in trials.values():  # each trial's folder, as its launcher reported it, is named by its number
        assert trial.user_attrs["cnnsweep_run_dir"] == str(sweep_dir / str(trial.number))
    board = pd.read_csv(sweep_dir / "leaderboard.csv").set_index("model.filters")
    assert board.loc[6, "status"] == "failed" and "killed" in board.loc[6, "error"]
    assert any((sweep_dir / ".submitit").iterdir())
