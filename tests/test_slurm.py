"""launcher=slurm: the hydra-submitit-launcher preset composes with its overrides, and a real multirun
goes through submitit's local executor with the same settings (launcher=slurm_local: the launcher
code path of Slurm, without a cluster)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, TINY_RUN


def test_the_slurm_preset_asks_for_one_gpu_per_job_and_takes_overrides() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["launcher=slurm", "launcher.partition=gpu", "launcher.mem_gb=64",
                                 "launcher.timeout_min=600"])
    slurm = cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.gpus_per_node, slurm.mem_gb, slurm.timeout_min) == ("gpu", 1, 64, 600)
    assert slurm.cpus_per_task == 8 and slurm.array_parallelism == 64


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
