"""`launcher.jobs_per_gpu=auto`: as many jobs on each GPU at once as their measured memory lets fit.

Until a job has measured its peak GPU memory, each GPU runs one job at a time, capped at the usable part
of its memory (USABLE). Every job that finishes reports its peak (metrics.json `gpu_peak_bytes`); the
largest so far, with a margin, sets how many jobs each GPU runs at once for the jobs that start after it
(at most one per core the GPU's slots have), each capped at an equal part of the usable memory, so the
caps on one GPU never add up to more than it has. A larger peak later (a bigger model) lowers the count
for the jobs that start after it; the jobs already running keep their caps. A job that runs out of
memory in a part of a GPU runs again alone on one (`acquire(alone=True)`), where its peak is measured.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Optional, Sequence

from cnnsweep.errors import ConfigError
from cnnsweep.launch.devices import Slot

log = logging.getLogger(__name__)

USABLE = 0.9  # of each GPU's memory the jobs share; the rest stays free for the CUDA contexts and the driver
MARGIN = 1.25  # a job's cap over its measured peak: allocator rounding, cuDNN workspaces, a larger batch shape


def jobs_that_fit(peak_fraction: float, most: int) -> int:
    """Jobs one GPU runs at once when each may need `peak_fraction` of its memory (times MARGIN), 1 to `most`."""
    if peak_fraction <= 0:
        return most
    return max(1, min(most, math.floor(USABLE / (peak_fraction * MARGIN))))


class GpuPacking:
    """Hands out GPU slots to jobs as their measured memory allows; safe to use from several threads."""

    def __init__(self, gpus: Sequence[str], most_per_gpu: int, limit: Optional[int], threads: Optional[int],
                 memory_mb: Callable[[str], int]) -> None:
        self.gpus = list(gpus)
        self.most = most_per_gpu
        self.limit = limit or len(self.gpus) * most_per_gpu  # launcher.jobs: jobs at once over all GPUs
        self.threads = threads
        self.memory_mb = memory_mb  # a GPU's memory (nvidia-smi), read once, when its first peak arrives
        self._total_bytes: dict[str, Optional[int]] = {}  # None: unreadable (said once)
        self.per_gpu = 1  # jobs at once on each GPU: 1 until a job measured its memory
        self.peak_fraction: Optional[float] = None  # the largest peak measured, as a part of its GPU
        self._running: dict[str, list[Slot]] = {gpu: [] for gpu in self.gpus}
        self._waiting_alone = 0
        self._told_unmeasured = False
        self._changed = threading.Condition()

    @property
    def slots(self) -> list[Slot]:
        """Every slot a job may get: `most_per_gpu` per GPU, as many as `limit` (a search's trials at once)."""
        return [self._slot(gpu, position, USABLE) for position in range(self.most) for gpu in self.gpus][:self.limit]

    def share(self) -> float:
        """The cap of a job that starts now: an equal part of a GPU's usable memory."""
        return USABLE / self.per_gpu

    def acquire(self, alone: bool = False) -> Slot:
        """A slot for the next job, waiting until a GPU has room for it; `alone`: a whole GPU's usable
        memory, no other job beside it (the other jobs wait until it has started)."""
        with self._changed:
            self._waiting_alone += alone
            try:
                while (slot := self._place(alone)) is None:
                    self._changed.wait()
            finally:
                self._waiting_alone -= alone
                if alone:
                    self._changed.notify_all()  # the jobs held back for it may start elsewhere now
            self._running[slot.gpu].append(slot)  # type: ignore[index]
            return slot

    def release(self, slot: Slot, job: int, peak_bytes: Optional[int]) -> None:
        """Job `job` ended in `slot`, having held at most `peak_bytes` of GPU memory (None: not measured)."""
        total = self._total(slot.gpu) if peak_bytes is not None else None  # type: ignore[arg-type]
        with self._changed:
            self._running[slot.gpu].remove(slot)  # type: ignore[index]
            if peak_bytes is not None and total is not None:
                self._measured(slot.gpu, job, peak_bytes, total)  # type: ignore[arg-type]
            elif self.peak_fraction is None and not self._told_unmeasured:
                self._told_unmeasured = True
                log.warning("launcher.jobs_per_gpu=auto: job %d measured no GPU memory (it ran on the CPU); one job "
                            "per GPU until a job measures it", job)
            self._changed.notify_all()

    def _place(self, alone: bool) -> Optional[Slot]:
        if sum(map(len, self._running.values())) >= self.limit or (self._waiting_alone and not alone):
            return None
        share = USABLE if alone else self.share()
        for gpu in sorted(self.gpus, key=lambda gpu: len(self._running[gpu])):  # the least busy GPU first
            running = self._running[gpu]
            if len(running) >= (1 if alone else self.per_gpu) or sum(slot.gpu_share or 0 for slot in running) + \
                    share > USABLE + 1e-9:
                continue
            taken = {slot.index for slot in running}
            position = next(position for position in range(self.most) if self._index(gpu, position) not in taken)
            return self._slot(gpu, position, share)
        return None

    def _index(self, gpu: str, position: int) -> int:
        """Each (GPU, position) keeps its slot index, and so its worker and its cores."""
        return self.gpus.index(gpu) + position * len(self.gpus)

    def _slot(self, gpu: str, position: int, share: float) -> Slot:
        return Slot(self._index(gpu, position), gpu, self.threads, share, packed=True)

    def _total(self, gpu: str) -> Optional[int]:
        """GPU `gpu`'s memory in bytes, read outside the lock the first time (nvidia-smi may take seconds)."""
        if gpu not in self._total_bytes:
            try:
                self._total_bytes[gpu] = self.memory_mb(gpu) * 2**20
            except ConfigError as error:
                log.warning("launcher.jobs_per_gpu=auto: %s; one job per GPU", error)
                self._total_bytes[gpu] = None
        return self._total_bytes[gpu]

    def _measured(self, gpu: str, job: int, peak_bytes: int, total: int) -> None:
        fraction = peak_bytes / total
        if self.peak_fraction is not None and fraction <= self.peak_fraction:
            return
        self.peak_fraction = fraction
        per_gpu = jobs_that_fit(fraction, self.most)
        if per_gpu != self.per_gpu:
            log.info("launcher.jobs_per_gpu=auto: job %d peaked at %.2f GB of GPU %s's %.0f GB; %d job%s per GPU "
                     "from now on, each capped at %.2g of its memory", job, peak_bytes / 1e9, gpu, total / 1e9,
                     per_gpu, "s" if per_gpu != 1 else "", USABLE / per_gpu)
        self.per_gpu = per_gpu
