"""Errors a user can fix, and the one-line error contract of every command.

Each message is one line naming the problem and the fix. Entry points run through
`run_with_one_line_errors`: Hydra prints multi-line reports with a traceback, so Hydra is told to raise
instead (HYDRA_FULL_ERROR=1) and the exception is condensed to one `error: ...` line and an exit code
(2 for configuration, 1 for everything else). A user who sets HYDRA_FULL_ERROR=1 gets the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Optional, TypeVar

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException


class CnnsweepError(Exception):
    """Base for expected failures; the entry point prints them as one line, without a traceback."""

    exit_code = 1


class ConfigError(CnnsweepError):
    """A configuration value is out of range or inconsistent with another."""

    exit_code = 2


class DataError(CnnsweepError):
    """A dataset file is missing, unreadable or malformed, or cannot be downloaded."""


class TrainingError(CnnsweepError):
    """Training itself went wrong, such as a loss that became NaN."""


class OutOfMemory(CnnsweepError):
    """The backend could not allocate the model or a batch (cnnsweep.run.hardware.out_of_memory)."""


class DiskFull(CnnsweepError):
    """A write failed for lack of space (ENOSPC, EDQUOT): not the model's fault. `measured` carries the
    figures the run had already measured, so its record keeps them."""

    def __init__(self, message: str, measured: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.measured = measured or {}


class RunFailed(BaseException):
    """Carries a single run's failure past Hydra's job runner to the entry point.

    Hydra reports an ordinary exception from a task with an extra "Error executing job" line;
    a BaseException passes through untouched, so the entry point can print the cause as one line.
    """

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


T = TypeVar("T")
# Lines of Hydra's reports that describe its internals rather than the user's mistake.
_NOISE_PREFIXES = ("object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def run_with_one_line_errors(entry: Callable[[], T]) -> T:
    """Call an entry point and return its result; on failure print `error: ...` on one line and exit
    non-zero."""
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return entry()
    except KeyboardInterrupt:  # Ctrl-C of a single run (a multirun stops in order: cnnsweep.launch.interrupts)
        print("error: interrupted by Ctrl-C; the run's metrics.json says `interrupted`; run the same command "
              "again to train it", file=sys.stderr)
        sys.exit(130)
    except RunFailed as failure:
        if user_setting == "1":
            raise failure.cause from None
        _exit_with(failure.cause)
    except Exception as error:
        if user_setting == "1":
            raise
        _exit_with(error)
    finally:
        if user_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


def _exit_with(error: Exception) -> NoReturn:
    error = _own_cause(error)
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(exit_code(error))


def _own_cause(error: Exception) -> Exception:
    """cnnsweep's own error when Hydra wrapped it (a plugin that refused its settings at instantiation)."""
    cause = error.__cause__
    return cause if isinstance(cause, CnnsweepError) else error


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (libraries raise multi-line reports), or its
    type's name when the message is empty."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def exit_code(error: BaseException) -> int:
    if isinstance(error, CnnsweepError):
        return error.exit_code
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return ConfigError.exit_code
    return 1


def one_line(error: BaseException) -> str:
    """Condense an exception, and the OmegaConf error behind a Hydra one, into a single line."""
    if isinstance(error, CnnsweepError):
        return str(error)
    parts: list[str] = []
    listing = False  # inside a list under a heading such as "Available options in 'model':"
    for exception in (error, error.__cause__):
        if exception is None:
            continue
        for line in str(exception).splitlines():
            line = line.strip().rstrip(".")
            if line.startswith("Config search path"):
                break
            if not line or line.startswith(_NOISE_PREFIXES) or line in parts:
                continue
            if listing:
                parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            else:
                parts.append(line)
                listing = line.endswith(":")
    text = "; ".join(parts) or type(error).__name__
    if not isinstance(error, (HydraException, OmegaConfBaseException)):
        text = f"{type(error).__name__}: {text} (set HYDRA_FULL_ERROR=1 for the traceback)"
    return text
