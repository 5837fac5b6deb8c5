"""Batches for Keras' fit and evaluate on any backend, in an order of cnnsweep's own (TensorFlow gathers
arrays in memory in its tf.data pipeline, in the same order).

Keras' own `shuffle=True` draws its permutation from a seeded op that restarts with every epoch's
iterator, so under a fixed seed every epoch sees the same order (and accuracy suffers). Here each
epoch's order depends on (seed, epoch) only: different every epoch, identical across reruns and
backends, so a resumed run continues with exactly the batches an uninterrupted run had there.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generator, Iterator, Union

import keras
import numpy as np

from cnnsweep.run.streaming import StreamedImages

Images = Union[np.ndarray, StreamedImages]
Batch = tuple[np.ndarray, np.ndarray]
# Batches read from disk ahead of training, so reading overlaps the training step.
STREAM_READ_AHEAD = 4
STREAM_READERS = 2


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The positions of epoch `epoch` (0-based), in the order training sees them."""
    if not shuffle:
        return np.arange(count)
    return np.random.default_rng([seed, epoch]).permutation(count)


def batch_count(count: int, batch_size: int) -> int:
    """Batches in a pass over `count` examples: full batches, then one for the remainder."""
    return -(-count // batch_size)


def epoch_positions(count: int, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[np.ndarray]:
    """One epoch's batches as positions: full batches, then the remainder."""
    order = epoch_order(count, seed, epoch, shuffle)
    return [order[start:start + batch_size] for start in range(0, count, batch_size)]


class TrainingBatches(keras.utils.PyDataset):
    """The training split's batches one epoch at a time, the epoch set by fit's callback
    (`FollowEpochs` in cnnsweep.run.training) before fit reads it. Each epoch's data ends with the epoch, so
    a call running several steps (training.steps_per_execution) stops at the epoch's last batch instead of
    reading into the next epoch's. A PyDataset for JAX and PyTorch (a streamed folder on reader threads);
    TensorFlow reads `order` (arrays in memory) or `epoch_batches` (a streamed folder)."""

    def __init__(self, x: Images, y: np.ndarray, batch_size: int, seed: int, shuffle: bool, epoch: int = 0) -> None:
        self.streamed = isinstance(x, StreamedImages)
        super().__init__(workers=STREAM_READERS if self.streamed else 1, use_multiprocessing=False,
                         max_queue_size=STREAM_READ_AHEAD)
        self.x, self.y, self.batch_size, self.seed, self.shuffle = x, y, batch_size, seed, shuffle
        self.epoch = epoch  # 0-based
        self._positions: tuple[int, list[np.ndarray]] = (-1, [])

    def __len__(self) -> int:
        return batch_count(len(self.x), self.batch_size)

    def order(self) -> np.ndarray:
        """The current epoch's positions in the order training sees them."""
        return epoch_order(len(self.x), self.seed, self.epoch, self.shuffle)

    def positions(self) -> list[np.ndarray]:
        """The current epoch's batches as positions (computed once per epoch)."""
        if self._positions[0] != self.epoch:
            self._positions = (self.epoch, epoch_positions(len(self.x), self.batch_size, self.seed, self.epoch,
                                                           self.shuffle))
        return self._positions[1]

    def __getitem__(self, index: int) -> Batch:
        return self.read(self.positions()[index])

    def read(self, positions: np.ndarray) -> Batch:
        return (self.x.read(positions) if self.streamed else self.x[positions]), self.y[positions]

    def epoch_batches(self) -> Iterator[Batch]:
        """The current epoch's batches of a streamed folder, in order, read ahead."""
        return read_ahead(iter(self.positions()), self.read)


def evaluation_batches(x: StreamedImages, y: np.ndarray, batch_size: int) -> Generator[Batch, None, None]:
    """A streamed folder's split in order, a batch at a time, read ahead: what a TensorFlow pipeline
    validates and tests on."""
    positions = (np.arange(start, min(start + batch_size, len(x))) for start in range(0, len(x), batch_size))
    return read_ahead(positions, lambda batch: (x.read(batch), y[batch]))


def read_ahead(positions: Iterator[np.ndarray], read: Callable[[np.ndarray], Batch]) -> Generator[Batch, None, None]:
    """`read` of each batch of positions, in order, a few batches ahead on reader threads (a folder
    streamed from disk: reading and decoding overlap training on every backend)."""
    with ThreadPoolExecutor(STREAM_READERS, thread_name_prefix="cnnsweep-read") as readers:
        pending: deque[Future[Batch]] = deque()
        for batch in positions:
            pending.append(readers.submit(read, batch))
            if len(pending) > STREAM_READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class InOrderBatches(keras.utils.PyDataset):
    """A streamed folder's split read in order, a batch at a time: what validation and the test
    evaluate. A PyDataset, so Keras reads it again every epoch, on reader threads."""

    def __init__(self, x: StreamedImages, y: np.ndarray, batch_size: int) -> None:
        super().__init__(workers=STREAM_READERS, use_multiprocessing=False, max_queue_size=STREAM_READ_AHEAD)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return batch_count(len(self.x), self.batch_size)

    def __getitem__(self, index: int) -> Batch:
        positions = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.x)))
        return self.x.read(positions), self.y[positions]
