"""Real TensorFlow training on small data: determinism, history.csv, the NaN guard."""

from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path

import pytest

from cnnsweep.run import hardware
from cnnsweep.run.checkpoints import Checkpoints
from cnnsweep.run.stops import interrupt_once
from cnnsweep.run.config import OptimizerConfig, RunConfig, compose_run_config
from cnnsweep.run.data import load_dataset
from cnnsweep.errors import ConfigError, TrainingError
from conftest import dataset_config, write_npz

pytestmark = pytest.mark.tensorflow
SMALL = ("model.filters=4", "model.dense_units=8", "training.epochs=2", "training.batch_size=32")


def small_run(*overrides: str) -> RunConfig:
    return compose_run_config(*SMALL, *overrides)


def train_once(run: RunConfig, data_file: Path, run_dir: Path, val_size: int = 32) -> list[dict]:
    from cnnsweep.run.training import train

    run_dir.mkdir()
    hardware.configure(run.hardware, run.seed)
    data = load_dataset(dataset_config(path=str(data_file), val_size=val_size))
    epochs: list[dict] = []
    train(run, data, run_dir, show_progress_bar=False, on_epoch=epochs.append)
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(epochs) == run.training.epochs
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def test_same_seed_same_history_other_seed_differs(tmp_path: Path) -> None:
    data_file = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)
    first = train_once(small_run("seed=3"), data_file, tmp_path / "a")
    second = train_once(small_run("seed=3"), data_file, tmp_path / "b")
    other = train_once(small_run("seed=4"), data_file, tmp_path / "c")
    assert first == second
    assert first != other
    assert list(first[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]


@pytest.mark.parametrize(("steps_per_execution", "where"), [(1, r"batch \d+"), (4, r"in batches 1-4")])
def test_nan_loss_stops_the_run_and_keeps_the_history(tmp_path: Path, steps_per_execution: int, where: str) -> None:
    data_file = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)
    run = small_run("optimizer=sgd", "optimizer.lr=1e12", "training.epochs=3",
                    f"training.steps_per_execution={steps_per_execution}")
    with pytest.raises(TrainingError, match=rf"loss became NaN at epoch 1, {where}; lower optimizer.lr \(now 1e\+12\)"):
        train_once(run, data_file, tmp_path / "nan")
    rows = list(csv.DictReader((tmp_path / "nan" / "history.csv").open()))
    assert len(rows) == 1 and rows[0]["loss"] == "nan"
    assert not (tmp_path / "nan" / "model.keras").exists()


def test_a_stop_whose_raise_a_finalizer_dropped_ends_training_after_that_epoch(tmp_path: Path, monkeypatch) -> None:
    """Python runs a signal handler wherever the main thread is; inside a `__del__` (TensorFlow frees each
    epoch's iterators through several) its exception is dropped. A job's Ctrl-C handler run there still
    stops training, once the epoch it came in is recorded and checkpointed, and the job records its
    run interrupted (cnnsweep.run.task)."""
    from cnnsweep.run.training import train

    class Finalized:
        def __del__(self) -> None:
            interrupt_once(signal.SIGINT, None)

    def on_epoch(row: dict) -> bool:
        epochs.append(row["epoch"])
        Finalized()  # freed at once: the handler runs inside its __del__
        return False

    dropped: list = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # leave pytest's own SIGINT handler be
    data = load_dataset(dataset_config(path=str(write_npz(tmp_path / "d.npz", n_train=256, n_test=64)), val_size=32))
    run, epochs = small_run("training.epochs=3"), []
    hardware.configure(run.hardware, run.seed)
    with pytest.raises(KeyboardInterrupt):
        train(run, data, tmp_path, show_progress_bar=False, on_epoch=on_epoch)
    assert [type(unraisable.exc_value) for unraisable in dropped] == [KeyboardInterrupt]
    assert epochs == [1] and Checkpoints(tmp_path).epochs() == [1]
    assert len(list(csv.DictReader((tmp_path / "history.csv").open()))) == 1


def test_several_steps_per_execution_train_exactly_each_epoch(tmp_path: Path) -> None:
    data_file = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)  # 224 after the hold-out: 7 batches
    one_step = train_once(small_run(), data_file, tmp_path / "one")
    three_steps = train_once(small_run("training.steps_per_execution=3"), data_file, tmp_path / "three")
    assert three_steps == one_step  # the third call of an epoch runs 1 batch, not 2 of the next epoch's


def test_training_without_op_determinism_runs(tmp_path: Path) -> None:
    data_file = write_npz(tmp_path / "d.npz", n_train=128, n_test=32)
    rows = train_once(small_run("hardware.deterministic=false"), data_file, tmp_path / "run")
    assert [row["epoch"] for row in rows] == ["1", "2"]


def test_eval_batch_size_batches_validation_and_test_without_changing_training(tmp_path: Path, monkeypatch) -> None:
    from cnnsweep.run import training

    data_file = write_npz(tmp_path / "d.npz", n_train=256, n_test=96)
    evaluated: list[tuple[int, int]] = []
    real_input = training.evaluation_input

    def recorded_input(x, y, batch_size: int):
        evaluated.append((len(x), batch_size))
        return real_input(x, y, batch_size)

    monkeypatch.setattr(training, "evaluation_input", recorded_input)
    default = train_once(small_run(), data_file, tmp_path / "default", val_size=96)
    assert evaluated == [(96, 32), (96, 32)]  # the hold-out, then the test set
    evaluated.clear()
    larger = train_once(small_run("training.eval_batch_size=64"), data_file, tmp_path / "larger", val_size=96)
    assert evaluated == [(96, 64), (96, 64)]
    assert [row["accuracy"] for row in larger] == [row["accuracy"] for row in default]  # the same updates
    assert [row["loss"] for row in larger] == [row["loss"] for row in default]
    assert [row["val_accuracy"] for row in larger] == [row["val_accuracy"] for row in default]
    assert [float(row["val_loss"]) for row in larger] == pytest.approx([float(row["val_loss"]) for row in default])


@pytest.mark.parametrize("streamed", [False, True], ids=["arrays", "streamed"])
def test_tensorflow_evaluates_every_image_in_order_through_a_pipeline_without_autotuning(streamed: bool) -> None:
    """Keras' autotuned pipelines made fit and evaluate return seconds after their last step on a busy CPU
    (cnnsweep.run.backends.tensorflow.batch_pipeline): the replacement must give the very same batches."""
    import numpy as np

    from cnnsweep.run.streaming import StreamedImages
    from cnnsweep.run.training import evaluation_input

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 6, 6, 1)).astype("uint8")
    labels = rng.integers(0, 10, 70).astype("uint8")
    x = StreamedImages.of(images) if streamed else images.astype("float32") / 255
    pipeline = evaluation_input(x, labels, batch_size=32)
    assert pipeline.options().autotune.enabled is False
    for _ in range(2):  # validation reads it again every epoch
        batches = [(batch_x.numpy(), batch_y.numpy()) for batch_x, batch_y in pipeline]
        assert [len(batch_y) for _, batch_y in batches] == [32, 32, 6]
        np.testing.assert_allclose(np.concatenate([batch_x for batch_x, _ in batches]), images / 255, rtol=1e-6)
        np.testing.assert_array_equal(np.concatenate([batch_y for _, batch_y in batches]), labels)


def test_unknown_optimizer_argument_is_a_config_error() -> None:
    from cnnsweep.run.training import build_optimizer

    with pytest.raises(ConfigError, match="optimizer=adam: .*momentum"):
        build_optimizer(OptimizerConfig(name="adam", lr=0.001, options={"momentum": 0.9}))


def test_every_epoch_is_a_new_permutation_and_reruns_repeat_it() -> None:
    import numpy as np

    from cnnsweep.run.batches import TrainingBatches

    def epoch_of(seed: int, epoch: int) -> list[list[int]]:
        batches = TrainingBatches(np.arange(10), np.arange(10), 4, seed, True)
        batches.epoch = epoch  # as fit's FollowEpochs callback sets it
        order = batches.order()  # what TensorFlow's pipeline gathers, 4 at a time
        through_pipeline = [list(order[start:start + 4]) for start in range(0, 10, 4)]
        assert through_pipeline == [list(batches[index][0]) for index in range(len(batches))]  # JAX, PyTorch
        return through_pipeline

    first = [epoch_of(7, epoch) for epoch in range(3)]
    assert [len(epoch) for epoch in first] == [3, 3, 3]  # 4 + 4 + 2 images: each epoch ends at its own end
    assert all(sorted(sum(epoch, [])) == list(range(10)) for epoch in first)
    assert len({tuple(sum(epoch, [])) for epoch in first}) == 3  # Keras' seeded shuffle would repeat one order
    assert [epoch_of(7, epoch) for epoch in range(3)] == first and [epoch_of(8, epoch) for epoch in range(3)] != first
    resumed = TrainingBatches(np.arange(10), np.arange(10), 4, 7, True, epoch=1)
    assert list(resumed.order()) == sum(first[1], [])  # a resumed run continues the same sequence


@pytest.mark.tensorflow
def test_the_array_pipeline_reads_the_images_in_place_in_the_order_set(tmp_path: Path) -> None:
    """TensorFlow's pipeline over images in memory: each pass in the order set before it, every image
    once, the loaded images read where they lie (a change to them shows through), a slice TensorFlow cannot
    read in place copied."""
    import subprocess
    import sys

    data_file = write_npz(tmp_path / "d.npz", n_train=100, n_test=10, shape=(5, 5))  # an image in 100 bytes
    process = subprocess.run([sys.executable, "-c", ARRAY_PIPELINE, str(data_file)], capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.split() == ["in-order", "reordered", "in-place", "copied"]


ARRAY_PIPELINE = """
import sys
import numpy as np
from cnnsweep.run.aligned import in_place_view
from cnnsweep.run.backends.tensorflow import array_pipeline
from cnnsweep.run.config import compose_run_config
from cnnsweep.run.data import load_dataset
data = load_dataset(compose_run_config("dataset=npz", f"dataset.path={sys.argv[1]}").dataset)
x, y = data.x_train, data.y_train
def batches(pipeline):
    return [(bx.numpy(), by.numpy()) for bx, by in pipeline]
def gathered(x, y, order):
    return [(x[order[start:start + 32]], y[order[start:start + 32]]) for start in range(0, len(order), 32)]
def same(read, expected):
    return len(read) == len(expected) and all(np.array_equal(a, c) and np.array_equal(b, d)
                                               for (a, b), (c, d) in zip(read, expected))
pipeline, set_order = array_pipeline(x, y, 32, np.arange(100))
assert in_place_view(x) is not None and same(batches(pipeline), gathered(x, y, np.arange(100)))
print("in-order")
order = np.random.default_rng(0).permutation(100)
set_order(order)
assert same(batches(pipeline), gathered(x, y, order))
print("reordered")
in_place_view(x)[order[0]] = 0.5  # the loaded images are read-only
assert batches(pipeline)[0][0][0].min() == 0.5
print("in-place")
shifted = x[1:]  # 100 bytes past a 64-byte boundary
pipeline, _ = array_pipeline(shifted, y[1:], 32, np.arange(99))
assert in_place_view(shifted) is None and same(batches(pipeline), gathered(shifted, y[1:], np.arange(99)))
print("copied")
"""


def test_cosine_schedule_warms_up_to_the_learning_rate_then_decays_to_zero() -> None:
    from cnnsweep.run.training import learning_rate

    training = compose_run_config("training.epochs=4", "training.lr_schedule=cosine", "training.warmup_epochs=1").training
    schedule = learning_rate(0.002, training, steps_per_epoch=100)
    rates = [float(schedule(step)) for step in (0, 50, 100, 250, 400)]
    assert rates[0] == pytest.approx(0.0002) and rates[1] == pytest.approx(0.0011)
    assert rates[2] == pytest.approx(0.002) and rates[3] == pytest.approx(0.001) and rates[4] == pytest.approx(0.0)
    assert learning_rate(0.002, compose_run_config().training, steps_per_epoch=100) == 0.002


# Runs in a fresh process: TensorFlow's CPU can be split into two logical devices only before it starts.
MIRRORED_OVER_TWO_CPUS = """
import json, sys
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cnnsweep.run import hardware
from cnnsweep.run.checkpoints import Checkpoints
from cnnsweep.run.stops import interrupt_once
from cnnsweep.run.config import compose_run_config
from cnnsweep.run.data import load_dataset
from cnnsweep.run.backends.tensorflow import strategy_placement
from cnnsweep.run.training import train
run = compose_run_config("model.filters=4", "model.dense_units=8", "training.epochs=2", "training.batch_size=16",
                         "dataset=npz", f"dataset.path={sys.argv[1]}", "dataset.val_size=32")
hardware.configure(run.hardware, run.seed)
data = load_dataset(run.dataset)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = train(run, data, Path(sys.argv[2]), show_progress_bar=False, on_epoch=lambda row: False,
               placement=strategy_placement(strategy))
print(json.dumps(result.metrics))
"""


def test_mirrored_training_runs_one_batch_per_replica(tmp_path: Path) -> None:
    """hardware=multi_gpu's code path (MirroredStrategy, batch scaled by replicas), on two CPU devices."""
    import json
    import subprocess
    import sys

    data_file = write_npz(tmp_path / "d.npz", n_train=256, n_test=64)
    (tmp_path / "run").mkdir()
    process = subprocess.run([sys.executable, "-c", MIRRORED_OVER_TWO_CPUS, str(data_file), str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    metrics = json.loads(process.stdout.strip().splitlines()[-1])
    assert (metrics["replicas"], metrics["global_batch_size"], metrics["epochs_completed"]) == (2, 32, 2)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and (tmp_path / "run" / "model.keras").is_file()
