"""`hardware.malloc_top_pad_mb`: how much freed memory glibc's allocator keeps before returning it.

The backends allocate each training step's activations and gradients with malloc from their worker
threads, and free them when the step ends. glibc serves those threads from per-thread heaps, and by
default (a 128 KB pad, M_TOP_PAD) unmaps a heap that becomes empty and gives back the free memory at the
top of the others; the next step maps and faults the same memory in again, page by page. On CPUs where
page faults are expensive (virtual machines) that churn can cost as much system time as the training
itself (README, Hardware benchmarks). A larger pad keeps the memory of the last step mapped for the
next; the process's resident memory grows by at most the pad per heap, and only where it was used.

Linux with glibc only: elsewhere (macOS, musl) the setting is left unapplied and the run says so in
environment.json (`devices.malloc_top_pad_mb`: null).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Optional

M_TOP_PAD = -2  # glibc's mallopt() parameter number (malloc.h), the same as the MALLOC_TOP_PAD_ variable


def set_top_pad(megabytes: Optional[int]) -> Optional[int]:
    """Make glibc keep `megabytes` of freed memory at the top of each heap; return the pad now in force
    in megabytes, or None where it was not set (null: the allocator as the environment left it; or no glibc)."""
    if megabytes is None or not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return megabytes if mallopt(M_TOP_PAD, megabytes << 20) == 1 else None
