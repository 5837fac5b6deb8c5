"""Stops that a signal handler asks for, kept until training has seen them.

Python runs a signal handler wherever the main thread happens to be, and what it raises can be lost there: one
raised while Python runs a finalizer (a `__del__`; TensorFlow frees each epoch's iterators through several) is
printed as "Exception ignored" and dropped, and code that catches every exception drops it too; the job then
trains on as if never stopped (seen once in CI, after submitit's exit). A handler that stops a run therefore
also leaves its exception here, and training raises it again at its next batch or epoch end
(cnnsweep.run.training.PendingStop). A process that runs one job after another forgets a stop before each.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import NoReturn, Optional

_pending: Optional[BaseException] = None


def remember_stop(error: BaseException) -> BaseException:
    """Keep `error` for training to raise should the handler's own raise be lost; returns it, to raise."""
    global _pending
    _pending = error
    return error


def interrupt_once(signum: int, frame: Optional[FrameType]) -> NoReturn:
    """The SIGINT handler of a job's process: ignore every later SIGINT from here on, then interrupt the job. A
    terminal's Ctrl-C reaches the job and its sweep, which passes it on: a second KeyboardInterrupt raised while
    the job is still recording the first would escape with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise remember_stop(KeyboardInterrupt())


def raise_pending_stop() -> None:
    """Raise the stop a handler asked for, if any, once."""
    global _pending
    error, _pending = _pending, None
    if error is not None:
        raise error


def forget_pending_stop() -> None:
    """Before a process's next job: a stop that reached the last one is not this one's."""
    global _pending
    _pending = None
