"""Errors a user can fix: each message is one line naming the problem and the fix."""


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


class RunFailed(BaseException):
    """Carries a single run's failure past Hydra's job runner to the entry point.

    Hydra reports an ordinary exception from a task with an extra "Error executing job" line;
    a BaseException passes through untouched, so the entry point can print the cause as one line.
    """

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
