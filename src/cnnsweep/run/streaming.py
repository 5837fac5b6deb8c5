"""Images too large to hold in memory: read from their memory-mapped cache file a batch at a time.

A decoded folder (cnnsweep.run.image_folder) is kept on disk as uint8 `.npy` arrays. When its images as
float32 would exceed `dataset.in_memory_gb`, a split is a `StreamedImages`: the mapped file and the
indices of the split's images in it. Selecting (a split, a seeded order, `max_train`) only narrows the
indices; `read` gathers one batch and scales it to [0, 1] float32, exactly as the in-memory path
scales the whole array, so a streamed run trains on the same numbers in the same order. NumPy only.
"""

from __future__ import annotations

from typing import Union

import numpy as np

FLOAT32_BYTES = 4


class StreamedImages:
    """A view of some images of a mapped uint8 (N, H, W, C) array, read batch by batch as float32."""

    def __init__(self, source: np.ndarray, indices: np.ndarray) -> None:
        self.source = source
        self.indices = indices

    @classmethod
    def of(cls, source: np.ndarray) -> "StreamedImages":
        return cls(source, np.arange(len(source)))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices), *self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, selection: Union[slice, np.ndarray]) -> "StreamedImages":
        """Some of these images (a slice or index array), still on disk."""
        return StreamedImages(self.source, self.indices[selection])

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The images at `positions` (of this view), as float32 in [0, 1]; read in file order for the disk."""
        wanted = self.indices[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(wanted, kind="stable")
        batch = np.empty((len(wanted), *self.source.shape[1:]), dtype=np.float32)
        batch[order] = self.source[wanted[order]]
        return np.divide(batch, np.float32(255.0), out=batch)


def float32_gb(count: int, image_shape: tuple[int, ...]) -> float:
    """What `count` images of `image_shape` take in memory as float32, in GB (10^9 bytes)."""
    return count * int(np.prod(image_shape)) * FLOAT32_BYTES / 1e9
