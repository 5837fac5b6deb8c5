"""Ctrl-C (SIGINT) or SIGTERM of a sweep process is a normal way for a multirun to end.

While a multirun sweeps (cnnsweep's process launcher, or its Optuna search with any launcher), the two
signals are caught, not raised: no new job starts, running jobs are asked to stop (each job process
gets SIGINT and records its run `interrupted`), the sweep writes what it has (the leaderboard, the
study's results), and the multirun then ends with one line that says how far it got and the command
that continues it, with exit code 128 + the signal (130, 143). A second signal changes nothing: the
sweep is already stopping.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn, Optional

from cnnsweep.credentials import redact_override
from cnnsweep.errors import CnnsweepError
from cnnsweep.run.records import INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(CnnsweepError):
    """The multirun was stopped by a signal; its exit code is the shell's (128 + the signal number)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class Interrupt:
    """The signal a sweep process received, if any, and the job processes to pass it on to."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._lock = threading.Lock()
        self._job_processes: set[int] = set()
        self._previous: dict[int, object] = {}
        self.tally: tuple[int, int, str] = (0, 0, "jobs")  # finished, total, noun: set when the sweep ends

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def catch(self) -> None:
        """Catch SIGINT and SIGTERM from now on (in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def release(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def add_job_process(self, pid: int) -> None:
        with self._lock:
            self._job_processes.add(pid)
            stop_now = self.requested
        if stop_now:
            _send(pid, signal.SIGINT)

    def remove_job_process(self, pid: int) -> None:
        with self._lock:
            self._job_processes.discard(pid)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        with self._lock:
            first = self.signum is None
            self.signum = self.signum or signum
            processes = list(self._job_processes)
        if first:
            print(f"\n{signal.Signals(signum).name}: stopping the sweep; running jobs record their runs "
                  f"{INTERRUPTED}", file=sys.stderr, flush=True)
        for pid in processes:
            _send(pid, signal.SIGINT)

    def stop_sweep(self, sweep_dir: Path) -> NoReturn:
        """End an interrupted multirun with the line that says how to continue it (its leaderboard is
        written on the way out, by cnnsweep.callbacks.leaderboard_on_early_end)."""
        raise self.error(sweep_dir)

    def error(self, sweep_dir: Path) -> SweepInterrupted:
        """The multirun's last line: how far it got, and the command that continues it."""
        assert self.signum is not None
        name = signal.Signals(self.signum).name
        finished, total, noun = self.tally
        left_out = "" if all(redact_override(argument) == argument for argument in sys.argv) else (
            "; the storage password is left out of this line: give it through PGPASSWORD or ~/.pgpass")
        return SweepInterrupted(f"interrupted by {name}: {finished} of {total} {noun} finished{left_out}; "
                                f"continue with: {continue_command(sweep_dir)}", self.signum)


def continue_command(sweep_dir: Path) -> str:
    """This command again, in the same sweep folder (finished jobs are kept, the rest run), without a
    storage URL's password (cnnsweep.credentials)."""
    arguments = [redact_override(argument) for argument in sys.argv[1:] if not argument.startswith("hydra.sweep.dir=")]
    return shlex.join(["uv", "run", "python", sys.argv[0], *arguments, f"hydra.sweep.dir={sweep_dir}"])


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


SWEEP = Interrupt()  # the sweep process's; the process launcher and the search consult it
