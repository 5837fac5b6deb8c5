"""Image arrays TensorFlow can read in place: a tensor over NumPy memory must start on a 64-byte boundary
(Eigen's widest alignment), which NumPy's own allocations (16 bytes) do not promise. Images loaded this
way enter a tf.data pipeline without a copy (cnnsweep.run.backends.tensorflow.shared_tensor)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

TENSOR_ALIGNMENT = 64  # bytes


def aligned_float32(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array of `shape` starting on a TENSOR_ALIGNMENT boundary."""
    size = math.prod(shape) * np.dtype(np.float32).itemsize
    buffer = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % TENSOR_ALIGNMENT
    return buffer[start:start + size].view(np.float32).reshape(shape)


def in_place_view(array: np.ndarray) -> Optional[np.ndarray]:
    """A writable view of `array` for TensorFlow to read in place (DLPack exports writable arrays only;
    TensorFlow only reads it), or None where it cannot: not one C-ordered block on a TENSOR_ALIGNMENT
    boundary, or memory its owner keeps read-only. Loaded images are read-only views of a writable buffer."""
    if not array.flags.c_contiguous or array.ctypes.data % TENSOR_ALIGNMENT:
        return None
    view = array.view()
    try:
        view.flags.writeable = True
    except ValueError:
        return None
    return view
