"""`training.tensorboard=true` on a real run, on each Keras backend (TensorFlow installed: Keras' callback
and the HParams writer need it on every backend): Keras' per-epoch curves and cnnsweep's HParams session,
read back with TensorBoard's own event reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_RUN


@pytest.mark.tensorflow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_tensorboard_curves_and_hparams_read_back(backend: str, run_cli, mnist_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorflow import make_ndarray

    run_dir = tmp_path / "run"
    result = run_cli(*TINY_RUN, "training.tensorboard=true", "dataset.val_size=128", f"hardware.backend={backend}",
                     f"hydra.run.dir={run_dir}", env={"CNNSWEEP_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())

    curves = EventAccumulator(str(run_dir / "tensorboard" / "train")).Reload()
    assert [event.step for event in curves.Tensors("epoch_loss")] == [0, 1]  # one point per epoch

    session = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    content = session.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.filters"].number_value == 8 and hparams["optimizer.name"].string_value == "adam"
    assert hparams["dataset.val_size"].number_value == 128
    for name in ("test_accuracy", "val_accuracy", "params"):
        [event] = session.Tensors(name)
        assert float(make_ndarray(event.tensor_proto)) == pytest.approx(metrics[name])
        assert event.step == metrics["epochs_completed"] == 2
