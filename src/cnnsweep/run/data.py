"""Dataset loading: an explicit file or folder, then $CNNSWEEP_DATA_DIR, then Keras' own download cache.

Every array is checked (keys, shapes, dtypes, label range) with NumPy alone, so a bad file fails in
well under a second and before TensorFlow is imported. The last file read stays in memory, checked and
scaled, so a warm worker (cnnsweep.launch.job_process) reads it once while its jobs ask for the same file
(same path, size and modification time); each job still records the file and its sha256. A folder of
class folders (dataset=folder) is decoded by cnnsweep.run.image_folder, through its on-disk cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np

from cnnsweep.errors import DataError, first_line
from cnnsweep.run import image_folder, streaming
from cnnsweep.run.aligned import aligned_float32
from cnnsweep.run.config import DatasetConfig
from cnnsweep.run.streaming import StreamedImages

log = logging.getLogger(__name__)

DATA_DIR_ENV = "CNNSWEEP_DATA_DIR"
REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Datasets Keras can download and cache itself when no local copy exists.
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
SPLIT_ORDER = ("train", "val", "test")  # a folder's splits, each shuffled by its own seeded order
Images = Union[np.ndarray, StreamedImages]  # in memory, or a decoded folder too large for it


@dataclass
class Dataset:
    """Arrays ready for Keras: float32 images with a channel axis (or, for a folder too large for memory,
    StreamedImages read a batch at a time), int64 labels."""

    x_train: Images
    y_train: np.ndarray
    x_val: Optional[Images]
    y_val: Optional[np.ndarray]
    x_test: Images
    y_test: np.ndarray
    num_classes: int
    source: str  # the file or folder read, or "keras:<name>" for a download
    sha256: Optional[str]  # of the file; of a folder, over its image files' bytes
    class_names: Optional[tuple[str, ...]] = None  # a folder's class folders, label 0 first
    decoded_cache: Optional[dict[str, object]] = None  # a folder's cache: where, found there?, streamed?

    @property
    def streamed(self) -> bool:
        return isinstance(self.x_train, StreamedImages)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def summary(self) -> dict[str, object]:
        """What a run record keeps about its data: where it came from and how much was used."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train_size": len(self.x_train),
            "val_size": 0 if self.x_val is None else len(self.x_val),
            "test_size": len(self.x_test),
            **({"class_names": list(self.class_names)} if self.class_names else {}),
            **({"decoded_cache": self.decoded_cache} if self.decoded_cache else {}),
        }


def load_dataset(config: DatasetConfig, seed: int = 0) -> Dataset:
    """Load, check and split the configured dataset (a folder's own splits are drawn with `seed`)."""
    if config.path is not None and Path(config.path).expanduser().is_dir():
        return _load_folder(config, seed)
    x_train, y_train, x_test, y_test, source, digest = _read_checked(*_identity(config))
    num_classes = _check_label_range(y_train, y_test, config.num_classes, source)
    val_count = image_folder.image_count(config.val_size, len(x_train))
    if val_count >= len(x_train):
        raise DataError(
            f"dataset.val_size={config.val_size:g} leaves no training images ({source} has "
            f"{len(x_train)}); use a smaller dataset.val_size"
        )
    x_val = y_val = None
    if val_count > 0:
        split = len(x_train) - val_count
        x_train, x_val = x_train[:split], x_train[split:]
        y_train, y_val = y_train[:split], y_train[split:]
    return _limited(config, Dataset(x_train, y_train, x_val, y_val, x_test, y_test, num_classes, source, digest))


def _limited(config: DatasetConfig, data: Dataset) -> Dataset:
    """dataset.max_train and max_test applied."""
    if config.max_train is not None:
        data.x_train, data.y_train = data.x_train[: config.max_train], data.y_train[: config.max_train]
    if config.max_test is not None:
        data.x_test, data.y_test = data.x_test[: config.max_test], data.y_test[: config.max_test]
    return data


def _load_folder(config: DatasetConfig, seed: int) -> Dataset:
    """A folder of class folders: decoded (or read from its cache), split, in a seeded order."""
    root = Path(config.path).expanduser()  # type: ignore[arg-type]
    if config.image_size is None or config.color_mode is None:
        raise DataError(f"dataset.path={config.path} is a folder of images: set dataset.image_size=[H,W] and "
                        "dataset.color_mode=rgb|grayscale (dataset=folder sets both)")
    listing = image_folder.list_folder(root)
    images = _decoded(listing, tuple(config.image_size), config.color_mode.value)  # type: ignore[arg-type]
    splits: dict[str, tuple[Images, np.ndarray]] = dict(images.arrays)
    streamed = streams(config, images)
    if streamed:
        splits = {split: (StreamedImages.of(x), y) for split, (x, y) in splits.items()}
    if "all" in splits:
        x, y = splits.pop("all")
        if config.test_size <= 0:
            raise DataError(f"dataset.path={config.path}: no test/ folder and dataset.test_size=0; set "
                            "dataset.test_size (a fraction such as 0.2, or a count), or add train/ and test/ folders")
        kept, test = image_folder.stratified_split(y, config.test_size, seed, salt=1)
        splits = {"train": (x[kept], y[kept]), "test": (x[test], y[test])}
    if "val" not in splits and config.val_size > 0:
        x, y = splits["train"]
        kept, val = image_folder.stratified_split(y, config.val_size, seed, salt=2)
        splits.update(train=(x[kept], y[kept]), val=(x[val], y[val]))
    for split, (x, y) in list(splits.items()):  # class by class on disk: a seeded order, so max_train mixes them
        if len(x) == 0:
            raise DataError(f"dataset.path={config.path}: its {split} split has no images; lower "
                            f"dataset.{'test' if split == 'test' else 'val'}_size or add images")
        order = np.random.default_rng([seed, 3, SPLIT_ORDER.index(split)]).permutation(len(x))
        splits[split] = x[order] if streamed else _as_images(x[order], f"x_{split}", str(root)), y[order]
    num_classes = len(images.class_names)
    if config.num_classes is not None and config.num_classes != num_classes:
        raise DataError(f"dataset.num_classes={config.num_classes} but {config.path} has {num_classes} class "
                        f"folders ({', '.join(images.class_names)}); set dataset.num_classes=null")
    x_val, y_val = splits.get("val", (None, None))
    data = Dataset(*splits["train"], x_val, y_val, *splits["test"], num_classes, str(listing.root),
                   images.content_sha256, images.class_names,
                   {"folder": str(images.cache_folder), "hit": images.cache_hit, "streamed": streamed})
    return _limited(config, data)


def streams(config: DatasetConfig, images: image_folder.FolderImages) -> bool:
    """Whether a decoded folder is read from disk batch by batch: its images as float32 would take more
    than dataset.in_memory_gb."""
    needed = sum(streaming.float32_gb(len(x), x.shape[1:]) for x, _ in images.arrays.values())
    if config.in_memory_gb is None or needed <= config.in_memory_gb:
        return False
    log.info("%s: its images take %.2f GB as float32, above dataset.in_memory_gb=%g; streaming them from %s",
             config.path, needed, config.in_memory_gb, images.cache_folder)
    return True


_last_folder: dict[str, image_folder.FolderImages] = {}


def _decoded(listing: image_folder.FolderListing, image_size: tuple[int, int],
             color_mode: str) -> image_folder.FolderImages:
    """The last folder decoded stays in memory for a warm worker's next job (same files, sizes, times)."""
    key = listing.key(image_size, color_mode)
    if key in _last_folder:
        return replace(_last_folder[key], cache_hit=True)
    _last_folder.clear()
    _last_folder[key] = image_folder.read_folder(listing, image_size, color_mode)
    return _last_folder[key]


def check_source(config: DatasetConfig) -> None:
    """Refuse a dataset.path that does not exist, reading nothing: a search checks it once, before any
    trial, instead of failing every trial on it."""
    _identity(config)


def _identity(config: DatasetConfig) -> tuple[str, Optional[Path], Optional[Path], Optional[tuple[int, int]]]:
    """Which data the config means: (name, file, where a download would go, the file's size and
    modification time), the key under which its checked arrays are kept."""
    if config.path is not None:
        path = Path(config.path).expanduser()
        if path.is_dir():
            return config.name, path.resolve(), None, None
        if not path.is_file():
            raise DataError(
                f"dataset.path={config.path}: no such file or folder; pass an existing .npz with keys "
                f"{', '.join(REQUIRED_KEYS)}, or a folder with one subfolder of images per class"
            )
        return config.name, path.resolve(), None, _stamp(path)
    data_dir = os.environ.get(DATA_DIR_ENV)
    local = Path(data_dir).expanduser() / f"{config.name}.npz" if data_dir else None
    if local is not None and local.is_file():
        return config.name, local.resolve(), None, _stamp(local)
    return config.name, None, local, None


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=1)
def _read_checked(name: str, path: Optional[Path], download_to: Optional[Path], stamp: Optional[tuple[int, int]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, Optional[str]]:
    """The file's (or Keras download's) arrays, checked, as float32 images and int64 labels."""
    if path is not None:
        arrays, source, digest = _read_npz(path), str(path), _sha256(path)
    else:
        arrays, source, digest = _download_with_keras(name, download_to), f"keras:{name}", None
    _check_arrays(arrays, source)
    x_train, x_test = (_as_images(arrays[key], key, source) for key in ("x_train", "x_test"))
    y_train, y_test = (_as_labels(arrays[key], key, source) for key in ("y_train", "y_test"))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{source}: x_train images are {x_train.shape[1:]} but x_test images are "
            f"{x_test.shape[1:]}; both splits must have the same image shape"
        )
    for array in (x_train, y_train, x_test, y_test):
        array.flags.writeable = False  # shared by every job of a warm worker
    return x_train, y_train, x_test, y_test, source, digest


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz archive, turning each way it can be broken into one message."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single .npy array, not an .npz archive; save it with np.savez")
        with archive:
            missing = [key for key in REQUIRED_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing {', '.join(missing)} (has {', '.join(archive.files) or 'no arrays'}); "
                    f"an .npz dataset needs {', '.join(REQUIRED_KEYS)}"
                )
            return {key: archive[key] for key in REQUIRED_KEYS}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise DataError(
            f"{path}: not a readable .npz archive (truncated or corrupt: {first_line(error)}); "
            "re-create or re-download the file"
        ) from error


def _download_with_keras(name: str, local: Optional[Path]) -> dict[str, np.ndarray]:
    hint = (
        f"save it as {local}" if local is not None else f"save it as $CNNSWEEP_DATA_DIR/{name}.npz"
    ) + f" (keys {', '.join(REQUIRED_KEYS)}) or pass dataset.path=FILE.npz"
    if name not in KERAS_DATASETS:
        raise DataError(f"dataset {name!r} has no local file and Keras cannot download it; {hint}")
    import keras  # deferred: importing TensorFlow costs seconds, and only this path needs it

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # Keras raises bare Exception for URL fetch failures
        raise DataError(
            f"could not download {name} through Keras ({first_line(error)}); offline? {hint}"
        ) from error
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(
                f"{source}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels; "
                "they must have the same length"
            )
        if len(x) == 0:
            raise DataError(f"{source}: x_{split} is empty; the dataset needs images in both splits")


def _as_images(x: np.ndarray, key: str, source: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(
            f"{source}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) images"
        )
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255.0), out=aligned_float32(x.shape), dtype=np.float32)
    if np.issubdtype(x.dtype, np.floating):
        images = aligned_float32(x.shape)
        images[...] = x
        if not np.isfinite(images).all():
            raise DataError(f"{source}: {key} contains NaN or infinite pixels; clean the data first")
        return images
    raise DataError(
        f"{source}: {key} has dtype {x.dtype}; expected uint8 (0..255) or float images"
    )


def _as_labels(y: np.ndarray, key: str, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # Keras' CIFAR loaders return (N, 1) labels
    if y.ndim != 1:
        raise DataError(f"{source}: {key} has shape {y.shape}; expected (N,) integer class labels")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: {key} has dtype {y.dtype}; expected integer class labels")
    return y.astype(np.int64)


def _check_label_range(
    y_train: np.ndarray, y_test: np.ndarray, num_classes: Optional[int], source: str
) -> int:
    low = int(min(y_train.min(), y_test.min()))
    high = int(max(y_train.max(), y_test.max()))
    if num_classes is None:
        num_classes = high + 1
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{source}: labels span {low}..{high}, outside the class range 0..{num_classes - 1}; "
            "fix the labels or set dataset.num_classes"
        )
    if num_classes < 2:
        raise DataError(f"{source}: every label is {high}; a classifier needs at least two classes")
    return num_classes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
