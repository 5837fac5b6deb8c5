"""dataset=folder: a generated folder of labelled images (three classes drawn as distinct shapes, PNG and
JPEG of odd sizes, one grayscale among colour ones) is listed, decoded once into its cache, split per class
and trained on; each bad input is one line naming the folder or file. Everything but the training run
is TensorFlow-free."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnsweep.errors import DataError
from cnnsweep.run import data as data_module
from cnnsweep.run.config import ColorMode
from cnnsweep.run.data import load_dataset
from cnnsweep.run.image_folder import CACHE_DIR_ENV, decode_prefix, list_folder, read_folder, stratified_split
from conftest import CLASSES, dataset_config, draw, draw_folder

@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch) -> Path:
    """A decoded-image cache of the test's own, and no folder kept in memory from another test."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    data_module._last_folder.clear()
    return tmp_path / "cache"


def folder_config(path: Path, **fields):
    return dataset_config(**{"name": "folder", "path": str(path), "image_size": [32, 32], "color_mode": ColorMode.rgb,
                             "test_size": 0.25, **fields})


def test_a_folder_is_decoded_once_and_then_read_from_its_cache(tmp_path: Path, cache: Path) -> None:
    root = draw_folder(tmp_path / "photos")
    listing = list_folder(root)
    assert listing.class_names == CLASSES and len(listing.files["all"]) == 120
    first = read_folder(listing, (32, 32), "rgb")
    x, y = first.arrays["all"]
    assert (x.shape, x.dtype, first.cache_hit) == ((120, 32, 32, 3), np.uint8, False)
    assert np.bincount(y).tolist() == [40, 40, 40]
    again = read_folder(list_folder(root), (32, 32), "rgb")
    assert again.cache_hit and again.cache_folder == first.cache_folder and again.content_sha256 == first.content_sha256
    assert np.array_equal(again.arrays["all"][0], x)
    gray = read_folder(listing, (24, 24), "grayscale")  # another size or colour is another cache file
    assert gray.arrays["all"][0].shape == (120, 24, 24, 1) and not gray.cache_hit
    draw(CLASSES[1], (30, 30), np.random.default_rng(9)).save(root / "square" / "extra.png")  # the folder changed
    changed = read_folder(list_folder(root), (32, 32), "rgb")
    assert not changed.cache_hit and len(changed.arrays["all"][0]) == 121
    assert changed.content_sha256 != first.content_sha256


def test_the_splits_are_stratified_seeded_and_recorded(tmp_path: Path) -> None:
    root = draw_folder(tmp_path / "photos")
    data = load_dataset(folder_config(root, val_size=0.1), seed=3)
    assert [np.bincount(y).tolist() for y in (data.y_train, data.y_val, data.y_test)] == [[27, 27, 27], [3, 3, 3],
                                                                                          [10, 10, 10]]
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0 and data.input_shape == (32, 32, 3)
    assert len(set(data.y_train[:6].tolist())) > 1  # a seeded order, not class by class: max_train mixes classes
    summary = data.summary()
    assert summary["class_names"] == list(CLASSES) and summary["source"] == str(root.resolve())
    assert summary["decoded_cache"]["hit"] is False and len(summary["sha256"]) == 64
    same = load_dataset(folder_config(root, val_size=0.1), seed=3)  # the next job of a warm worker
    assert np.array_equal(same.x_test, data.x_test) and same.summary()["decoded_cache"]["hit"] is True
    other = load_dataset(folder_config(root, val_size=0.1), seed=4)
    assert not np.array_equal(other.x_test, data.x_test)
    assert len(load_dataset(folder_config(root, max_train=10), seed=3).x_train) == 10


def test_a_folder_larger_than_in_memory_gb_streams_the_very_same_images(tmp_path: Path) -> None:
    root = draw_folder(tmp_path / "photos")
    in_memory = load_dataset(folder_config(root, val_size=0.1, in_memory_gb=None), seed=3)
    streamed = load_dataset(folder_config(root, val_size=0.1, in_memory_gb=0.001), seed=3)  # 120 images: 1.5 MB
    assert (in_memory.streamed, streamed.streamed) == (False, True)
    assert streamed.summary()["decoded_cache"]["streamed"] is True and streamed.input_shape == (32, 32, 3)
    for split in ("train", "val", "test"):
        x, images = getattr(in_memory, f"x_{split}"), getattr(streamed, f"x_{split}")
        assert isinstance(images.source, np.memmap) and images.shape == x.shape
        assert np.array_equal(images.read(np.arange(len(images))), x)  # same images, order and scaling
        assert np.array_equal(getattr(streamed, f"y_{split}"), getattr(in_memory, f"y_{split}"))
    assert np.array_equal(streamed.x_train.read(np.array([5, 0, 5])), in_memory.x_train[[5, 0, 5]])
    limited = load_dataset(folder_config(root, in_memory_gb=0, max_train=10), seed=3)
    assert limited.streamed and len(limited.x_train) == 10 and len(limited.y_train) == 10
    assert not load_dataset(folder_config(root, in_memory_gb=0.002), seed=3).streamed


def test_a_damaged_cache_is_decoded_again_and_a_failed_decode_leaves_none(tmp_path: Path, cache: Path,
                                                                          caplog) -> None:
    root = draw_folder(tmp_path / "photos", per_class=5)
    first = read_folder(list_folder(root), (32, 32), "rgb")
    decoded = np.array(first.arrays["all"][0])
    damaged = first.cache_folder / "x_all.npy"
    damaged.unlink()  # a new file, not this one truncated: the mapped one stays readable
    damaged.write_bytes(b"\x93NUMPY truncated")
    again = read_folder(list_folder(root), (32, 32), "rgb")
    assert not again.cache_hit and "unreadable" in caplog.text
    assert np.array_equal(again.arrays["all"][0], decoded)
    image = root / "square" / "003.png"
    image.write_bytes(image.read_bytes()[:60])  # the decode stops at this image: no cache, nothing half-written
    with pytest.raises(DataError, match="not a readable image"):
        read_folder(list_folder(root), (32, 32), "rgb")
    assert sorted(path.name for path in cache.iterdir()) == [first.cache_folder.name]


def test_a_decode_killed_midway_leaves_a_folder_the_next_decode_removes(tmp_path: Path, cache: Path) -> None:
    root = draw_folder(tmp_path / "photos", per_class=4)
    dead = subprocess.Popen(["true"])
    dead.wait()
    key = list_folder(root).key((32, 32), "rgb")
    cache.mkdir()
    abandoned = cache / f"{decode_prefix(key, dead.pid)}x1"  # as a SIGKILL mid-decode leaves it
    running = cache / f"{decode_prefix('other', os.getpid())}x2"  # a live process decoding another folder
    elsewhere = cache / f".{key}.another-host.{dead.pid}.x3"  # a shared cache: not ours to judge
    for folder in (abandoned, running, elsewhere):
        folder.mkdir()
        (folder / "x_all.npy").write_bytes(b"partial")
    decoded = read_folder(list_folder(root), (32, 32), "rgb")
    assert sorted(path.name for path in cache.iterdir()) == sorted([decoded.cache_folder.name, running.name,
                                                                    elsewhere.name])


def test_a_folders_own_train_and_test_folders_are_its_splits(tmp_path: Path) -> None:
    root = draw_folder(tmp_path / "photos", splits=True)
    data = load_dataset(folder_config(root, val_size=6, color_mode=ColorMode.grayscale), seed=0)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (84, 6, 30)
    assert data.input_shape == (32, 32, 1) and data.num_classes == 3


def test_stratified_split_takes_each_class_in_proportion() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    kept, taken = stratified_split(labels, 0.2, seed=0, salt=1)
    assert np.bincount(labels[taken]).tolist() == [10, 6, 4] and len(kept) == 80
    assert not set(kept) & set(taken)
    assert len(stratified_split(labels, 7, seed=0, salt=1)[1]) == 7


def broken(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A folder with one fault, and the start of the one line it must give."""
    root = draw_folder(tmp_path / case, per_class=4)
    if case == "empty-class":
        (root / "triangle").mkdir()
        return root, f"dataset.path: class folder {root / 'triangle'} has no images (.jpg, .jpeg, .png, .bmp, .gif); "
    if case == "truncated":
        image = root / "square" / "001.png"
        image.write_bytes(image.read_bytes()[:60])
        return root, f"{image}: not a readable image ("
    if case == "not-an-image":
        (root / "circle" / "notes.jpg").write_text("not a picture")
        return root, f"{root / 'circle' / 'notes.jpg'}: not a readable image ("
    if case == "one-class":
        for shape in CLASSES[1:]:
            for image in (root / shape).iterdir():
                image.unlink()
            (root / shape).rmdir()
        return root, f"dataset.path={root}: only one class folder (circle); a classifier needs at least two classes"
    if case == "no-images":
        for image in root.rglob("*.*"):
            image.unlink()
        return root, f"dataset.path: class folder {root / 'circle'} has no images"
    if case == "no-class-folders":
        empty = tmp_path / "empty"
        empty.mkdir()
        return empty, f"dataset.path={empty}: no class folders; expected {empty}/<class name>/<image>.png"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty-class", "truncated", "not-an-image", "one-class", "no-images",
                                  "no-class-folders"])
def test_each_bad_folder_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    root, expected = broken(tmp_path, case)
    with pytest.raises(DataError) as error:
        load_dataset(folder_config(root))
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_a_folder_without_test_split_or_size_is_refused(tmp_path: Path) -> None:
    root = draw_folder(tmp_path / "photos", per_class=4)
    with pytest.raises(DataError, match=r"no test/ folder and dataset.test_size=0; set dataset.test_size"):
        load_dataset(folder_config(root, test_size=0))
    (root / "train").mkdir()
    with pytest.raises(DataError, match=r"has train/ but no test/; add test/"):
        load_dataset(folder_config(root))


@pytest.mark.tensorflow
def test_a_run_trains_on_a_folder_reads_it_from_the_cache_then_streams_it_the_same(run_cli, tmp_path: Path,
                                                                              cache: Path) -> None:
    root = draw_folder(tmp_path / "photos", per_class=80)
    settings = ["dataset=folder", f"dataset.path={root}", "dataset.image_size=[32,32]", "training.epochs=3",
                "model.filters=8", "model.dense_units=16", "training.batch_size=16"]
    env = {CACHE_DIR_ENV: str(cache)}
    records = []
    for name in ("first", "second"):
        result = run_cli(*settings, f"hydra.run.dir={tmp_path / name}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        records.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    first, second = records
    assert first["test_accuracy"] > 0.6  # three classes: chance is a third
    assert first["dataset"]["class_names"] == list(CLASSES)
    assert (first["dataset"]["decoded_cache"]["hit"], second["dataset"]["decoded_cache"]["hit"]) == (False, True)
    assert second["test_accuracy"] == first["test_accuracy"]  # the cache holds exactly what was decoded
    result = run_cli(*settings, "dataset.in_memory_gb=0", f"hydra.run.dir={tmp_path / 'streamed'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    streamed = json.loads((tmp_path / "streamed" / "metrics.json").read_text())
    assert streamed["dataset"]["decoded_cache"] == {**first["dataset"]["decoded_cache"], "hit": True, "streamed": True}
    assert streamed["test_accuracy"] == first["test_accuracy"]  # read from disk batch by batch: the same training
    first_history, streamed_history = (pd.read_csv(tmp_path / name / "history.csv").drop(columns="seconds")
                                       for name in ("first", "streamed"))
    pd.testing.assert_frame_equal(first_history, streamed_history, check_exact=True)
