"""Every run feature on every Keras backend (hardware.backend: tensorflow, jax, torch), in real subprocess
runs on a slice of the real MNIST: the run's records, TensorBoard's curves and HParams session
(training.tensorboard=true; TensorFlow installed: Keras' callback and the HParams writer need it on every
backend), the same history from the same config, a run killed with SIGKILL resumed to the history of an
uninterrupted one, its model.keras loaded on another backend.
Warm workers replaced when the next job's backend differs, and mixed precision on JAX and PyTorch, are
tests/test_device_kit.py's search over both backends, which runs as on the GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import RERUN, RUN, TINY_RUN, command_env, kill_once_checkpointed

pytestmark = pytest.mark.tensorflow  # trains real models (on whichever backend)

# The tutorial model itself (93,322 parameters), with dropout so its random state must resume too.
SETTINGS = ["dataset.max_train=512", "dataset.max_test=256", "dataset.val_size=128", "training.epochs=3",
            "training.batch_size=64", "model.dropout=0.3"]
PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# JAX's uninterrupted run takes 3 batches per call (8 an epoch: each epoch's third call runs 2, not 1 of the
# next epoch's), the killed and resumed one 1, and both end with the same history.
WHOLE = {"tensorflow": [], "jax": ["training.steps_per_execution=3"], "torch": []}
ANOTHER = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}

# compile=False: a model.keras trained on PyTorch names Keras' PyTorch optimizer class in its compile config,
# which another backend cannot rebuild (README, Backends); the architecture and weights load anywhere.
RELOAD = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1], compile=False)
with np.load(sys.argv[2]) as data:
    x, y = data["x_test"][:256].astype("float32")[..., None] / 255.0, data["y_test"][:256]
accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
print(json.dumps({"backend": keras.config.backend(), "params": model.count_params(), "accuracy": accuracy}))
"""


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv").drop(columns="seconds")


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_every_run_feature_on_the_backend(backend: str, run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    env = {"CNNSWEEP_DATA_DIR": str(mnist_dir)}
    whole = run_cli(*SETTINGS, *WHOLE[backend], f"hardware.backend={backend}", "training.tensorboard=true",
                    f"hydra.run.dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    record = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    environment = json.loads((tmp_path / "whole" / "environment.json").read_text())
    assert record["status"] == "completed" and record["params"] == 93_322 and record["epochs_completed"] == 3
    assert environment["devices"]["backend"] == backend and environment["versions"][PACKAGE[backend]]
    assert record["test_accuracy"] > 0.5
    check_tensorboard(tmp_path / "whole", record)

    if backend != "tensorflow":  # TensorFlow's own: tests/test_resume.py (killed and resumed), test_cli.py (rerun)
        check_resume(backend, run_cli, env, tmp_path)

    other = ANOTHER[backend]
    reload = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "whole" / "model.keras"),
                             str(mnist_dir / "mnist.npz")], capture_output=True, text=True, timeout=300,
                            env=command_env(KERAS_BACKEND=other))
    assert reload.returncode == 0, reload.stderr[-3000:]
    loaded = json.loads(reload.stdout.strip().splitlines()[-1])
    assert (loaded["backend"], loaded["params"]) == (other, 93_322)
    assert loaded["accuracy"] == pytest.approx(record["test_accuracy"], abs=2 / 256)  # float rounding may flip one


def check_tensorboard(run_dir: Path, record: dict) -> None:
    """Keras' per-epoch curves and cnnsweep's HParams session, read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorflow import make_ndarray

    curves = EventAccumulator(str(run_dir / "tensorboard" / "train")).Reload()
    assert [event.step for event in curves.Tensors("epoch_loss")] == [0, 1, 2]  # one point per epoch

    session = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    content = session.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.filters"].number_value == 32 and hparams["optimizer.name"].string_value == "adam"
    assert hparams["dataset.val_size"].number_value == 128 and hparams["model.dropout"].number_value == 0.3
    for name in ("test_accuracy", "val_accuracy", "params"):
        [event] = session.Tensors(name)
        assert float(make_ndarray(event.tensor_proto)) == pytest.approx(record[name])
        assert event.step == record["epochs_completed"] == 3


def check_resume(backend: str, run_cli, env: dict[str, str], tmp_path: Path) -> None:
    """A run killed after epoch 1 and resumed ends with the uninterrupted run's history; its epoch 1, trained
    in a process of its own, is the same config giving the same history twice."""
    # Chosen through KERAS_BACKEND; the resume (without it) runs on the backend the run recorded.
    kill_once_checkpointed([*RUN, *SETTINGS], tmp_path / "killed", 1, tmp_path, {**env, "KERAS_BACKEND": backend})
    resumed = run_cli(str(tmp_path / "killed"), "--resume", command=RERUN, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stdout + resumed.stderr
    assert json.loads((tmp_path / "killed" / "environment.json").read_text())["devices"]["backend"] == backend
    assert history(tmp_path / "killed").equals(history(tmp_path / "whole"))


def test_jax_data_parallel_runs_one_batch_per_device(run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    """hardware=multi_gpu's code path on JAX (keras.distribution.DataParallel over every device, the batch
    scaled by the devices), on two CPU devices."""
    result = run_cli(*TINY_RUN, "hardware.backend=jax", "hardware.distribution=mirrored", "training.batch_size=32",
                     f"hydra.run.dir={tmp_path / 'run'}", env={"CNNSWEEP_DATA_DIR": str(mnist_dir),
                                                               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Unable to initialize backend" not in result.stdout + result.stderr  # JAX's TPU probe stays quiet
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (record["status"], record["replicas"], record["global_batch_size"]) == ("completed", 2, 64)
    devices = json.loads((tmp_path / "run" / "environment.json").read_text())["devices"]
    assert devices["logical_devices"] == ["cpu:0", "cpu:1"]
