"""The progress line a multirun logs each time a job or trial ends: how many are done of how many, how
they ended, how many run now, the best so far, the time spent and an estimate of the time left.

The estimate is this run's pace (jobs finished per second so far, whatever the parallelism) applied to
the jobs still to go, and never more than what a time budget (`hydra.sweeper.timeout`) leaves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from cnnsweep.run.records import Objective


@dataclass
class Progress:
    total: int  # jobs or trials this multirun is to finish (a study's total)
    noun: str = "jobs"
    already: int = 0  # finished before this run started (a resumed study)
    budget: Optional[float] = None  # seconds after which no new job starts
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def out_of_time(self) -> bool:
        return self.budget is not None and self.elapsed() >= self.budget

    def line(self, finished: int, running: int, pruned: int = 0, failed: int = 0, best: Optional[str] = None) -> str:
        """`finished` counts every ended job (pruned and failed too), earlier runs' included."""
        elapsed = self.elapsed()
        ended = [f"{pruned} pruned"] if self.noun == "trials" else []
        parts = [f"{finished}/{self.total} {self.noun} finished ({', '.join([*ended, f'{failed} failed'])})",
                 f"{running} running"]
        if best:
            parts.append(f"best {best}")
        parts.append(f"{duration(elapsed)} elapsed")
        left = self._time_left(finished, elapsed)
        if left is not None:
            parts.append(f"about {duration(left)} left")
        return "progress: " + ", ".join(parts)

    def _time_left(self, finished: int, elapsed: float) -> Optional[float]:
        done_here = finished - self.already
        to_go = self.total - finished
        if to_go <= 0:
            return 0.0
        if done_here <= 0:
            return None
        estimate = elapsed / done_here * to_go
        if self.budget is not None:
            estimate = min(estimate, max(self.budget - elapsed, 0.0) + elapsed / done_here)
        return estimate


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class Best:
    """The best objective value seen so far, with the job or trial it came from."""

    text: Optional[str] = None
    _value: Optional[float] = None

    def offer(self, label: str, objective: Objective) -> None:
        value = objective.value
        if self._value is None or (value > self._value if objective.direction == "maximize" else value < self._value):
            self._value = value
            self.text = f"{objective.name} {value:.4g} ({label})"
