"""Entry-point error handling: every failure a user can cause ends as one `error:` line and an exit code.

Hydra prints multi-line reports with a traceback; here Hydra is told to raise instead
(HYDRA_FULL_ERROR=1) and the exception is condensed. A user who sets HYDRA_FULL_ERROR=1 gets
Hydra's full traceback as usual.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.errors import CnnsweepError, RunFailed

CONFIG_ERROR_EXIT = 2
# Lines of Hydra's reports that describe its internals rather than the user's mistake.
_NOISE_PREFIXES = ("object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def run_with_one_line_errors(entry: Callable[[], Any]) -> None:
    """Call a Hydra entry point; on failure print `error: ...` on one line and exit non-zero."""
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        entry()
    except RunFailed as failure:
        if wants_traceback:
            raise failure.cause from None
        _exit_with(failure.cause)
    except Exception as error:
        if wants_traceback:
            raise
        _exit_with(error)


def _exit_with(error: Exception) -> None:
    error = _own_cause(error)
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(exit_code(error))


def _own_cause(error: Exception) -> Exception:
    """cnnsweep's own error when Hydra wrapped it (a plugin that refused its settings at instantiation)."""
    cause = error.__cause__
    return cause if isinstance(cause, CnnsweepError) else error


def exit_code(error: BaseException) -> int:
    if isinstance(error, CnnsweepError):
        return error.exit_code
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return CONFIG_ERROR_EXIT
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
