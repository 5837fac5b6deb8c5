"""End to end through `src/run.py` and `cnnsweep rerun` in subprocesses: run folders, reruns,
multiruns, and the one-line error for every bad input."""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from cnnsweep.rerun import SETTINGS_OLDER_RUNS_LACK
from cnnsweep.run.records import cpu_description
from conftest import RERUN, TINY_RUN, error_lines, missing, write_npz
from test_data import _broken

METRIC_FIELDS = {
    "status", "error", "objective", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "params",
    "epochs_completed", "train_seconds", "seconds_per_epoch", "seed", "started_at", "finished_at",
}


def save_as_an_older_run(config: DictConfig, path: Path) -> None:
    """Save `config` without the settings added since runs were first saved, as an older run saved it."""
    OmegaConf.set_struct(config, False)
    for key in SETTINGS_OLDER_RUNS_LACK:
        parent, _, name = key.rpartition(".")
        del (OmegaConf.select(config, parent) if parent else config)[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, path)


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def tiny_run(run_cli, mnist_dir: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    result = run_cli(*TINY_RUN, "dataset.val_size=256", f"hydra.run.dir={run_dir}",
                     env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr
    assert "test_accuracy 0." in result.stdout and "params " in result.stdout  # the summary line
    return run_dir


@pytest.mark.tensorflow
def test_run_folder_holds_a_complete_record(tiny_run: Path, mnist_dir: Path) -> None:
    import keras

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert METRIC_FIELDS <= set(metrics)
    assert metrics["status"] == "completed" and metrics["error"] is None
    assert metrics["objective"] == {"name": "val_accuracy", "value": metrics["val_accuracy"], "direction": "maximize"}
    assert 0.0 < metrics["val_accuracy"] <= 1.0 and metrics["val_loss"] > 0
    assert metrics["epochs_completed"] == 2 and metrics["seed"] == 2
    assert metrics["train_seconds"] > 0 and metrics["seconds_per_epoch"] > 0
    assert metrics["started_at"].endswith("+00:00") and metrics["finished_at"] > metrics["started_at"]
    assert metrics["dataset"]["train_size"] == 512 and metrics["dataset"]["val_size"] == 256

    history = read_history(tiny_run)
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert set(history[0]) == {"epoch", "accuracy", "loss", "val_accuracy", "val_loss", "seconds"}
    assert float(history[-1]["val_accuracy"]) == pytest.approx(metrics["val_accuracy"])

    model = keras.models.load_model(tiny_run / "model.keras")
    with np.load(mnist_dir / "mnist.npz") as data:
        x_test, y_test = data["x_test"][:256] / 255.0, data["y_test"][:256]
    _, accuracy = model.evaluate(x_test[..., None], y_test, verbose=0)
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert model.count_params() == metrics["params"]

    environment = json.loads((tiny_run / "environment.json").read_text())
    for package in ("tensorflow", "keras", "hydra-core", "optuna"):
        assert environment["versions"][package] == environment["packages"][package]
    assert environment["packages"] == {dist.metadata["Name"].lower(): dist.version  # every one, as importlib reads it
                                       for dist in metadata.distributions()}
    assert environment["python"].startswith("3.")
    assert set(environment["git"]) == {"commit", "dirty"} and environment["host"]
    assert environment["cpu"] == cpu_description() and " cores, AVX-512 " in environment["cpu"]
    assert environment["devices"]["device"] == "cpu" and environment["devices"]["deterministic"] is True
    assert (tiny_run / ".hydra" / "config.yaml").is_file()


@pytest.mark.tensorflow
def test_rerun_reproduces_the_history(tiny_run: Path, run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    """Also for a run saved before some of today's settings existed: its config lacks them."""
    save_as_an_older_run(OmegaConf.load(tiny_run / ".hydra" / "config.yaml"), tiny_run / ".hydra" / "config.yaml")
    result = run_cli(str(tiny_run), command=RERUN, env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr
    [rerun_dir] = (tmp_path / "outputs" / "reruns").iterdir()

    def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]

    assert without_timing(read_history(rerun_dir)) == without_timing(read_history(tiny_run))
    assert json.loads((rerun_dir / "metrics.json").read_text())["test_accuracy"] == \
        json.loads((tiny_run / "metrics.json").read_text())["test_accuracy"]

    record = (tiny_run / "metrics.json").read_text()
    resumed = run_cli(str(tiny_run), "--resume", command=RERUN, env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert resumed.returncode == 2  # a completed run has nothing to resume: refused, not trained over
    assert error_lines(resumed.stderr) == [
        f"error: {tiny_run}: the run completed, there is nothing to resume; rerun it without --resume (a new "
        "folder under outputs/reruns) to train it again"]
    assert (tiny_run / "metrics.json").read_text() == record


@pytest.mark.tensorflow
def test_multirun_prints_epoch_lines_and_survives_a_failed_job(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *TINY_RUN, "training.epochs=1", "model.kernel_size=3,13",
                     f"hydra.sweep.dir={sweep}", env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 1, result.stderr  # the grid ran both; not every job completed
    assert error_lines(result.stderr)[-1].startswith("error: 1 of 2 jobs failed (first, sweep/1: model: conv block 2")
    assert "job 0 epoch 1/1: accuracy " in result.stdout and "━" not in result.stdout
    assert "job 1 run failed: model: conv block 2 (kernel 13)" in result.stdout
    ok = json.loads((sweep / "0" / "metrics.json").read_text())
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert ok["status"] == "completed" and failed["status"] == "failed"
    assert failed["error"].startswith("model: conv block 2 (kernel 13) gets a 8x8 input")


@pytest.mark.tensorflow
def test_nan_loss_fails_the_run_with_a_record(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "nan"
    result = run_cli(*TINY_RUN, "optimizer=sgd", "optimizer.lr=1e12", f"hydra.run.dir={run_dir}",
                     env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 1
    assert error_lines(result.stderr)[-1].startswith("error: loss became NaN at epoch 1, batch ")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"].startswith("loss became NaN")
    assert read_history(run_dir)[0]["loss"] == "nan"


BROKEN_FILES = ["truncated", "text", "missing_keys", "mismatched", "labels_out_of_range"]


@pytest.mark.parametrize(
    ("overrides", "message", "code"),
    [
        (["model=vgg"], "In 'config': Could not find 'model/vgg'; Available options in 'model': applications, cnn, custom, resnet", 2),
        (["model.depth=3"], "Could not override 'model.depth'; To append to your config use +model.depth=3", 2),
        (["model.filters=0"], "model.filters=0: must be a positive integer", 2),
        (["model.kernel_size=-1"], "model.kernel_size=-1: must be a positive integer", 2),
        (["model.kernel_size=9"], "model: conv block 3 (kernel 9) gets a 1x1 input from 28x28 images", 2),
        (["optimizer.lr=0"], "optimizer.lr=0.0: must be a positive number", 2),
        (["training.epochs=0"], "training.epochs=0: must be a positive integer", 2),
        (["dataset.path=nothere.npz"], "dataset.path=nothere.npz: no such file", 1),
        (["-m", "launcher=parallel", "launcher.gpus=[a,b]", "launcher.jobs=3"],
         "launcher.jobs=3: more than the 2 GPU(s) a,b x launcher.jobs_per_gpu=1 can run at once", 2),
        (["-m", "launcher.jobs_per_worker=0"], "launcher.jobs_per_worker=0: must be a positive number of jobs", 2),
        (["-m", "sweeps=quick", "hydra.sweeper.n_jobs=0"],
         "hydra.sweeper.n_jobs=0: must be a positive number of trials at once, or null for one per launcher slot", 2),
        (["-m", "launcher.job_timeout_min=-1"], "launcher.job_timeout_min=-1.0: must be a positive number, or null", 2),
        *[([f"@{name}"], name, 1) for name in BROKEN_FILES],
    ],
)
def test_bad_input_is_one_error_line(run_cli, tmp_path: Path, overrides: list[str], message: str, code: int) -> None:
    if overrides[0].startswith("@"):  # a broken dataset file made for this case
        name = overrides[0][1:]
        message = {"truncated": "not a readable .npz archive", "text": "not a readable .npz archive",
                   "missing_keys": "missing x_test, y_test", "mismatched": "x_train has 64 images but y_train has 10",
                   "labels_out_of_range": "labels span 0..12, outside the class range 0..9"}[name]
        overrides = [f"dataset.path={_broken(tmp_path, name)}"]
    if not any(override.startswith("dataset.path=") for override in overrides):
        overrides.append(f"dataset.path={write_npz(tmp_path / 'good.npz')}")
    result = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    lines = error_lines(result.stderr)
    assert result.returncode == code
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.stderr + result.stdout
    metrics_file = tmp_path / "run" / "metrics.json"
    if metrics_file.exists():  # the task started: its record says why it failed
        assert json.loads(metrics_file.read_text())["status"] == "failed"


@pytest.mark.tensorflow
def test_offline_without_data_says_how_to_supply_it(run_cli, tmp_path: Path) -> None:
    result = run_cli("dataset=fashion_mnist", "dataset.max_train=64", "dataset.max_test=64", "training.epochs=1",
                     env={"CNNSWEEP_DATA_DIR": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras")})
    if result.returncode == 0:
        missing("this machine reached the download server, so the offline error cannot show")
    [line] = error_lines(result.stderr)
    assert line.startswith("error: could not download fashion_mnist through Keras")
    assert f"save it as {tmp_path / 'fashion_mnist.npz'}" in line and result.returncode == 1


def test_full_error_shows_the_traceback(run_cli, tmp_path: Path) -> None:
    result = run_cli("model.filters=0", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "cnnsweep.errors.ConfigError: model.filters=0" in result.stderr


def test_rerun_needs_a_run_folder(run_cli, tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), command=RERUN)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"error: {tmp_path}: no saved config at {tmp_path}/.hydra/config.yaml; pass a run folder written by "
        "src/run.py (outputs/runs/<time> or a multirun job folder)"
    ]


@pytest.mark.tensorflow
def test_tensorflow_start_up_lines_go_to_the_run_folder(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    quiet = run_cli(*TINY_RUN, "training.epochs=1", f"dataset.path={tiny_data}", f"hydra.run.dir={tmp_path / 'quiet'}")
    assert quiet.returncode == 0, quiet.stderr
    log = tmp_path / "quiet" / "tensorflow.log"
    if not log.exists():
        missing("this TensorFlow build printed nothing while it started")
    first_line = log.read_text().splitlines()[0]
    assert quiet.stderr.strip() == "", quiet.stderr  # nothing of TensorFlow's on the console
    shown = run_cli(*TINY_RUN, "training.epochs=1", f"dataset.path={tiny_data}", f"hydra.run.dir={tmp_path / 'shown'}",
                    env={"CNNSWEEP_TF_LOGS": "1"})
    assert shown.returncode == 0 and first_line.split("]")[-1] in shown.stderr  # asked for: on the console
    assert not (tmp_path / "shown" / "tensorflow.log").exists()
