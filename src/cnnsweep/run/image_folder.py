"""`dataset=folder`: a folder of labelled images, one subfolder per class, as Keras'
`image_dataset_from_directory` and every image-classification tutorial lay them out.

    DIR/cat/001.jpg, DIR/dog/002.png, ...                    split here: dataset.test_size, dataset.val_size
    DIR/train/cat/..., DIR/val/cat/..., DIR/test/cat/...     the folder's own splits (val/ optional)

Class names are the subfolders' sorted names (label 0 first). Images (JPEG, PNG, BMP, GIF; the first
frame) are decoded with Pillow, converted to `dataset.color_mode` and resized to `dataset.image_size`,
once: the decoded arrays go to a cache folder of .npy files keyed by the folder's file list, sizes and
modification times (and the size and colour asked for), so the next run, a sweep's other trials and warm
workers map them instead of decoding again; a folder larger than memory streams from there
(cnnsweep.run.streaming). Splits made here are stratified (each class in proportion) and fixed by
`seed`. Every bad input (no class folders, an empty class, a single class, an image that cannot be
decoded) is one line naming the folder or file, before TensorFlow starts. NumPy and Pillow only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from cnnsweep.errors import DataError, first_line
from cnnsweep.processes import alive

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "val", "test")
CACHE_DIR_ENV = "CNNSWEEP_CACHE_DIR"  # where decoded folders are kept (default: ~/.cache/cnnsweep/folders)
CACHE_FORMAT = 2  # bumped when the cache folder's layout changes
META_FILE = "meta.json"  # class names and content hash, written last into a cache folder


@dataclass(frozen=True)
class FolderListing:
    """What a folder holds: per split (`all` when it has no train/ folder) the images and their labels."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]  # split -> [(path relative to root, label)]
    stamps: tuple[tuple[str, int, int], ...]  # (relative path, size, mtime_ns) of every image, sorted

    def key(self, image_size: tuple[int, int], color_mode: str) -> str:
        """The cache key: the file list with sizes and times, and what the images are decoded to."""
        text = json.dumps([CACHE_FORMAT, str(self.root), list(image_size), color_mode, self.stamps])
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FolderImages:
    """A folder decoded: uint8 images (N, H, W, C), memory-mapped, and int64 labels per split, and where
    they came from."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...]
    content_sha256: str  # over every image file's bytes, in listing order
    cache_folder: Path  # x_<split>.npy, y_<split>.npy, meta.json
    cache_hit: bool


def list_folder(root: Path) -> FolderListing:
    """The folder's classes and images, or DataError naming what is wrong with its layout."""
    if not root.is_dir():
        raise DataError(f"dataset.path={root}: no such folder; pass a folder with one subfolder of images per class")
    split_roots = {split: root / split for split in SPLIT_FOLDERS if (root / split).is_dir()}
    if "train" in split_roots:
        if "test" not in split_roots:
            raise DataError(f"dataset.path={root}: has train/ but no test/; add test/ (same class folders), or "
                            "put the class folders directly in the folder to have it split by dataset.test_size")
        class_names = _class_names(split_roots["train"])
        files = {split: _images(folder, class_names, root, split != "train") for split, folder in split_roots.items()}
    else:
        class_names = _class_names(root)
        files = {"all": _images(root, class_names, root, False)}
    stamps = tuple(sorted((name, *_stamp(root / name)) for split in files.values() for name, _ in split))
    return FolderListing(root.resolve(), class_names, files, stamps)


def _class_names(folder: Path) -> tuple[str, ...]:
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise DataError(f"dataset.path={folder}: no class folders; expected {folder}/<class name>/<image>.png "
                        f"(images: {', '.join(IMAGE_SUFFIXES)})")
    if len(names) == 1:
        raise DataError(f"dataset.path={folder}: only one class folder ({names[0]}); a classifier needs at least "
                        "two classes")
    return tuple(names)


def _images(folder: Path, class_names: tuple[str, ...], root: Path, may_lack_classes: bool) -> list[tuple[str, int]]:
    """(path relative to root, label) of every image under folder/<class>/, in sorted order."""
    found: list[tuple[str, int]] = []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        images = sorted(path for path in class_folder.rglob("*") if path.is_file()
                        and path.suffix.lower() in IMAGE_SUFFIXES) if class_folder.is_dir() else []
        if not images and not may_lack_classes:
            raise DataError(f"dataset.path: class folder {class_folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add images or remove the folder")
        found += [(str(path.relative_to(root)), label) for path in images]
    if not found:
        raise DataError(f"dataset.path: {folder} has no images in its class folders; add images or remove it")
    return found


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnsweep" / "folders"


def read_folder(listing: FolderListing, image_size: tuple[int, int], color_mode: str) -> FolderImages:
    """The folder's images decoded, from the cache when it holds this listing, else decoded and cached.

    The arrays come back memory-mapped from the cache folder: decoding writes each image straight to
    its file, so neither decoding nor reading needs the whole folder in memory."""
    cache_folder = cache_dir() / listing.key(image_size, color_mode)
    cached = _read_cache(cache_folder, listing)
    if cached is not None:
        return cached
    try:
        cache_folder.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_decodes(cache_folder.parent)
        work = Path(tempfile.mkdtemp(dir=cache_folder.parent, prefix=decode_prefix(cache_folder.name)))
    except OSError as error:
        log.warning("decoded images not cached in %s (%s); the next run decodes them again (set %s to a "
                    "writable folder)", cache_folder.parent, first_line(error), CACHE_DIR_ENV)
        work = Path(tempfile.mkdtemp(prefix="cnnsweep-folder-"))
        _decode_all(listing, image_size, color_mode, work)
        decoded = _read_cache(work, listing, fresh=True)
        shutil.rmtree(work)  # its mapped arrays stay readable until this process ends
        return decoded
    _decode_all(listing, image_size, color_mode, work)
    try:
        os.replace(work, cache_folder)  # atomic: a killed run leaves no half-written cache
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        if not (cache_folder / META_FILE).is_file():
            raise
        # another trial finished the same decode first: its cache serves
    return _read_cache(cache_folder, listing, fresh=True)


def decode_prefix(key: str, pid: Optional[int] = None) -> str:
    """A decode's temporary folder name: hidden, with the host and process that write it."""
    return f".{key}.{socket.gethostname()}.{os.getpid() if pid is None else pid}."


def remove_abandoned_decodes(folder: Path) -> None:
    """Temporary folders of decodes whose process died (killed mid-decode) on this host; another host's, or
    a live process's (a sweep's other trial decoding the same folder), are left alone."""
    host = socket.gethostname()
    for entry in folder.glob(f".*.{host}.*.*"):
        head, pid, _ = entry.name.rsplit(".", 2)  # ".<key>.<host>", the pid, mkdtemp's suffix (no dots)
        if head.split(".", 2)[2] != host or not pid.isdigit() or alive(int(pid)):
            continue
        log.info("removing %s, left by a decode that was killed", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _decode_all(listing: FolderListing, image_size: tuple[int, int], color_mode: str, work: Path) -> None:
    """Every image decoded into x_<split>.npy (one at a time, memory-mapped), labels into y_<split>.npy,
    and meta.json last: its presence marks a complete cache. On any failure `work` is removed."""
    try:
        digest = hashlib.sha256()
        channels = 1 if color_mode == "grayscale" else 3
        for split, files in listing.files.items():
            images = np.lib.format.open_memmap(work / f"x_{split}.npy", mode="w+", dtype=np.uint8,
                                               shape=(len(files), *image_size, channels))
            for index, (name, _) in enumerate(files):
                images[index] = _decode(listing.root / name, image_size, color_mode, digest)
            images.flush()
            del images
            np.save(work / f"y_{split}.npy", np.array([label for _, label in files], dtype=np.int64))
        meta = {"class_names": list(listing.class_names), "content_sha256": digest.hexdigest()}
        (work / META_FILE).write_text(json.dumps(meta))
    except OSError as error:
        shutil.rmtree(work, ignore_errors=True)
        raise DataError(f"decoding {listing.root} into {work.parent}: {first_line(error)}; free disk space or "
                        f"set {CACHE_DIR_ENV} to a folder with room for the decoded images") from error
    except BaseException:  # an undecodable image, an interrupt
        shutil.rmtree(work, ignore_errors=True)
        raise


def _decode(path: Path, image_size: tuple[int, int], color_mode: str, digest: "hashlib._Hash") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
        digest.update(data)
        with Image.open(path) as image:
            image.seek(0)  # a GIF's first frame
            converted = image.convert("L" if color_mode == "grayscale" else "RGB")
            height, width = image_size
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: not a readable image ({first_line(error)}); replace or remove the file") from error
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def _read_cache(folder: Path, listing: FolderListing, fresh: bool = False) -> Optional[FolderImages]:
    """The cached arrays, memory-mapped; None when there is no cache, or (after a warning, the damaged
    folder removed) when it does not match the listing. A `fresh` cache, just written, must be readable."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        arrays = {split: (np.load(folder / f"x_{split}.npy", mmap_mode="r"), np.load(folder / f"y_{split}.npy"))
                  for split in listing.files}
        for split, (x, y) in arrays.items():
            if not len(x) == len(y) == len(listing.files[split]):
                raise ValueError(f"{split} holds {len(x)} images for {len(listing.files[split])} files")
    except (OSError, ValueError, KeyError) as error:
        if not folder.exists():
            return None
        if fresh:
            raise DataError(f"decoded images in {folder} unreadable ({first_line(error)}); set {CACHE_DIR_ENV} to "
                            "another folder") from error
        log.warning("decoded-image cache %s unreadable (%s); decoding the folder again", folder, first_line(error))
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return FolderImages(arrays, tuple(meta["class_names"]), meta["content_sha256"], folder, cache_hit=not fresh)


def stratified_split(labels: np.ndarray, size: float, seed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken) with `size` of the images taken from each class in proportion (a count of
    1 or more, or a fraction below 1), the same for the same labels and seed."""
    count = image_count(size, len(labels))
    if count <= 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    rng = np.random.default_rng([seed, salt])
    classes = np.unique(labels)
    shares = np.array([np.sum(labels == label) for label in classes]) * count / len(labels)
    per_class = np.floor(shares).astype(int)
    for index in np.argsort(shares - per_class)[::-1][: count - per_class.sum()]:  # largest remainders
        per_class[index] += 1
    taken = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:take]
                            for label, take in zip(classes, per_class)])
    kept = np.setdiff1d(np.arange(len(labels)), taken)
    return kept, np.sort(taken)


def image_count(size: float, total: int) -> int:
    """dataset.val_size / test_size as a number of images: a fraction below 1 of `total`, else a count."""
    return round(size * total) if size < 1 else int(size)
