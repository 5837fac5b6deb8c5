"""Where a run's seconds go: data, set-up, model build, each epoch's training, validation and checkpoint,
the test evaluation and saving. Kept in metrics.json (`timings`) so a search can say what its trials
spent their time on (cnnsweep.search.results) and the next setting is chosen from figures. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any, Iterator, Mapping, Optional

# Phases in the order a run goes through them, with the words a summary uses for them.
PHASES = {
    "data": "data",
    "setup": "set-up (framework import, devices)",
    "build": "model build",
    "train": "training",
    "validate": "validation",
    "checkpoint": "checkpoints",
    "test": "test evaluation",
    "save": "saving",
}


class Stopwatch:
    """Seconds per phase of one run, and per epoch."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.epochs: list[dict[str, float]] = []

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds

    def epoch(self, number: int, **seconds: float) -> None:
        """One epoch's phases (train, validate, checkpoint), added to the totals too."""
        self.epochs.append({"epoch": number, **{phase: round(value, 4) for phase, value in seconds.items()}})
        for phase, value in seconds.items():
            self.add(phase, value)

    def as_dict(self) -> dict[str, Any]:
        """The totals in the order a run goes through its phases, then the epochs."""
        return {**{phase: round(self.totals[phase], 4) for phase in PHASES if phase in self.totals},
                "epochs": self.epochs}


def merged(*timings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Several stopwatches' timings (the task's and its trainer's) as one run's."""
    stopwatch = Stopwatch()
    for part in timings:
        for phase, seconds in phase_totals(part).items():
            stopwatch.add(phase, seconds)
        if isinstance(part, Mapping):
            stopwatch.epochs += part.get("epochs", [])
    return stopwatch.as_dict()


def phase_totals(timings: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """A metrics.json `timings` entry's totals per known phase (nothing for a run that recorded none)."""
    if not isinstance(timings, Mapping):
        return {}
    return {phase: float(timings[phase]) for phase in PHASES if isinstance(timings.get(phase), (int, float))}


def wall_seconds(fields: Mapping[str, Any]) -> Optional[float]:
    """A run record's seconds from `started_at` to `finished_at`; None while running or when unreadable."""
    try:
        return (datetime.fromisoformat(fields["finished_at"]) - datetime.fromisoformat(fields["started_at"])
                ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def summary_line(runs: list[tuple[dict[str, float], Optional[float]]]) -> Optional[str]:
    """`runs`: each run's phase totals and its wall time (None when unknown). One line: each phase's
    share of the runs' time, largest first, the rest as `other`; None without any timings."""
    runs = [(phases, wall) for phases, wall in runs if phases]
    if not runs:
        return None
    totals = {phase: sum(phases.get(phase, 0.0) for phases, _ in runs) for phase in PHASES}
    measured = sum(totals.values())
    wall = sum(max(wall, sum(phases.values())) if wall is not None else sum(phases.values()) for phases, wall in runs)
    if wall <= 0:
        return None
    shares = sorted(((seconds, PHASES[phase]) for phase, seconds in totals.items() if seconds > 0),
                    key=lambda share: -share[0])  # ties in the order a run goes through them
    parts = [f"{label} {seconds / wall:.0%}" for seconds, label in shares]
    if wall - measured > 0.005 * wall:
        parts.append(f"other {(wall - measured) / wall:.0%}")
    return (f"where the time of {len(runs)} run{'s' if len(runs) != 1 else ''} went ({wall / len(runs):.1f} s "
            f"each on average): {', '.join(parts)}")
