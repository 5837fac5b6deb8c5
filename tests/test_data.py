"""Data loading from dataset.path and $CNNSWEEP_DATA_DIR, splits, and every broken-file error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnsweep.run.aligned import in_place_view
from cnnsweep.run.data import DATA_DIR_ENV, load_dataset
from cnnsweep.errors import DataError
from conftest import dataset_config, missing, write_npz


def test_path_loads_scales_and_adds_a_channel(tmp_path: Path) -> None:
    data = load_dataset(dataset_config(name="npz", path=str(write_npz(tmp_path / "d.npz"))))
    assert data.x_train.shape == (64, 28, 28, 1) and data.x_test.shape == (32, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.y_train.dtype == np.int64 and data.num_classes == 10
    assert data.input_shape == (28, 28, 1) and data.x_val is None
    assert in_place_view(data.x_train) is not None and in_place_view(data.x_test) is not None  # TensorFlow reads them in place
    np.testing.assert_array_equal(data.x_train[..., 0], np.load(tmp_path / "d.npz")["x_train"] / np.float32(255.0))
    assert len(data.sha256) == 64 and data.source.endswith("d.npz")


def test_colour_float_images_keep_their_values(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "rgb.npz", shape=(32, 32, 3), dtype="float32", num_classes=3)
    data = load_dataset(dataset_config(name="npz", path=str(path)))
    raw = np.load(path)["x_train"]
    assert data.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(data.x_train, raw)
    assert in_place_view(data.x_train) is not None and in_place_view(data.x_test) is not None
    assert data.num_classes == 3  # inferred as the largest label + 1


def test_hold_out_comes_from_the_end_and_limits_apply(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", n_train=100, n_test=50)
    raw = np.load(path)
    data = load_dataset(dataset_config(name="npz", path=str(path), val_size=20, max_train=30, max_test=10))
    np.testing.assert_array_equal(data.y_val, raw["y_train"][80:])
    np.testing.assert_array_equal(data.y_train, raw["y_train"][:30])
    np.testing.assert_array_equal(data.y_test, raw["y_test"][:10])
    assert data.summary()["train_size"] == 30 and data.summary()["val_size"] == 20


def test_data_dir_is_used_by_dataset_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "fashion_mnist.npz", n_train=10)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    data = load_dataset(dataset_config(name="fashion_mnist"))
    assert data.source == str(tmp_path / "fashion_mnist.npz") and len(data.x_train) == 10


def test_path_wins_over_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "mnist.npz", n_train=10)
    explicit = write_npz(tmp_path / "explicit.npz", n_train=20)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(load_dataset(dataset_config(name="mnist", path=str(explicit))).x_train) == 20


def test_real_mnist_through_the_data_dir(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))
    data = load_dataset(dataset_config(name="mnist", num_classes=10))
    assert (len(data.x_train), len(data.x_test), data.input_shape) == (60000, 10000, (28, 28, 1))
    assert sorted(np.unique(data.y_train)) == list(range(10))


def _broken(tmp_path: Path, name: str) -> Path:
    """Files that are each broken in one way."""
    path = tmp_path / f"{name}.npz"
    if name == "truncated":
        good = write_npz(tmp_path / "good.npz").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif name == "text":
        path.write_text("x_train,y_train\n1,2\n")
    elif name == "npy":
        with path.open("wb") as handle:
            np.save(handle, np.zeros((3, 28, 28)))
    elif name == "missing_keys":
        np.savez(path, x_train=np.zeros((4, 28, 28), "uint8"), y_train=np.zeros(4, "uint8"))
    elif name == "mismatched":
        write_npz(path, y_train=np.zeros(10, "uint8"))
    elif name == "labels_out_of_range":
        write_npz(path, y_test=np.full(32, 12, "uint8"))
    elif name == "flat_images":
        write_npz(path, x_train=np.zeros((64, 784), "uint8"))
    elif name == "string_images":
        write_npz(path, x_train=np.full((64, 28, 28), "a"))
    elif name == "nan_pixels":
        write_npz(path, dtype="float32", x_test=np.full((32, 28, 28), np.nan, "float32"))
    elif name == "shape_mismatch":
        write_npz(path, x_test=np.zeros((32, 32, 32), "uint8"))
    return path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", "not a readable .npz archive (truncated or corrupt"),
        ("text", "not a readable .npz archive"),
        ("npy", "is a single .npy array, not an .npz archive"),
        ("missing_keys", "missing x_test, y_test (has x_train, y_train)"),
        ("mismatched", "x_train has 64 images but y_train has 10 labels"),
        ("labels_out_of_range", "labels span 0..12, outside the class range 0..9"),
        ("flat_images", "x_train has shape (64, 784); expected (N, H, W) or (N, H, W, C)"),
        ("string_images", "x_train has dtype <U1; expected uint8"),
        ("nan_pixels", "x_test contains NaN or infinite pixels"),
        ("shape_mismatch", "both splits must have the same image shape"),
    ],
)
def test_broken_files_fail_with_one_line(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(DataError) as raised:
        load_dataset(dataset_config(path=str(_broken(tmp_path, name)), num_classes=10))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset.path=.*nothere.npz: no such file"):
        load_dataset(dataset_config(path=str(tmp_path / "nothere.npz")))


def test_hold_out_larger_than_the_training_set(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset.val_size=64 leaves no training images"):
        load_dataset(dataset_config(path=str(write_npz(tmp_path / "d.npz")), val_size=64))


@pytest.mark.tensorflow
def test_offline_without_a_local_copy_says_how_to_supply_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Keras download attempt into an empty cache: here (no network) it fails within seconds."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-cache"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    try:
        load_dataset(dataset_config(name="mnist"))
    except DataError as error:
        message = str(error)
    else:
        missing("this machine reached the MNIST download server, so the offline error cannot show")
    assert message.startswith("could not download mnist through Keras")
    assert f"save it as {tmp_path / 'mnist.npz'}" in message and "dataset.path=FILE.npz" in message


def test_unknown_name_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=r"dataset 'svhn' has no local file and Keras cannot download it; "
                                        r"save it as \$CNNSWEEP_DATA_DIR/svhn.npz"):
        load_dataset(dataset_config(name="svhn"))


def test_a_file_is_read_once_while_it_is_unchanged(tmp_path: Path) -> None:
    """A warm worker's jobs share the checked arrays of a file; a rewritten file is read again."""
    path = write_npz(tmp_path / "d.npz", n_train=20)
    first = load_dataset(dataset_config(path=str(path)))
    again = load_dataset(dataset_config(path=str(path), val_size=5, max_test=4))
    assert np.shares_memory(first.x_train, again.x_train) and again.sha256 == first.sha256
    assert (len(again.x_train), len(again.x_val), len(again.x_test)) == (15, 5, 4)
    assert not first.x_train.flags.writeable  # shared, so no job may change it
    write_npz(path, n_train=30)
    rewritten = load_dataset(dataset_config(path=str(path)))
    assert len(rewritten.x_train) == 30 and not np.shares_memory(rewritten.x_train, first.x_train)
