"""Where launching and reviewing meet: when a multirun ends, its leaderboard.csv is written and its top
rows printed, and the multirun exits non-zero when a job of its sweep folder failed (a Hydra callback);
a multirun that ends early (interrupted, or a job that can never start) writes its leaderboard too (the
plugin fronts wrap their sweeps in `leaderboard_on_early_end`)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnsweep.errors import CnnsweepError, RunFailed
from cnnsweep.launch.contract import JobCannotStart
from cnnsweep.launch.interrupts import SweepInterrupted

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class JobsFailed(CnnsweepError):
    """A multirun ended with every job run, but not every job completed; exit code 1."""


class LeaderboardCallback(Callback):
    """Registered in conf/config.yaml under hydra.callbacks; runs in the sweeping process."""

    def __init__(self, top: int = 10) -> None:
        self.top = top

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        frame = write_sweep_leaderboard(sweep_dir, self.top)
        if frame is not None and "logger" in config:
            from cnnsweep.review.leaderboard import LEADERBOARD_FILE
            from cnnsweep.run.config import LoggerConfig, LoggerName
            from cnnsweep.run.tracking import log_sweep_leaderboard

            logger = config.logger
            log_sweep_leaderboard(LoggerConfig(LoggerName(logger.name), logger.get("tracking_uri"),
                                               logger.get("experiment")), sweep_dir, sweep_dir / LEADERBOARD_FILE)
        if frame is not None and "status" in frame:
            failed = frame[frame["status"] == "failed"]
            if len(failed):
                first = failed.iloc[0]
                # Hydra turns a callback's exception into a warning; RunFailed passes it to the entry point.
                raise RunFailed(JobsFailed(
                    f"{len(failed)} of {len(frame)} jobs failed (first, {first['run']}: {first.get('error')}); "
                    f"the others' results are in {Path(config.hydra.sweep.dir) / 'leaderboard.csv'}"))


def write_sweep_leaderboard(sweep_dir: Path, top: int = 10) -> Optional["pd.DataFrame"]:
    """<sweep folder>/leaderboard.csv, and its top rows in the log (also when a sweep is interrupted);
    returns the leaderboard, or None when there are no runs."""
    # pandas loads here, not at start-up: Hydra builds callbacks in every run and every job process.
    from cnnsweep.review.leaderboard import LEADERBOARD_FILE, build_leaderboard, format_table, write_leaderboard

    frame = build_leaderboard([sweep_dir])
    if frame.empty:
        log.warning("no run folders under %s; no leaderboard written", sweep_dir)
        return None
    path = sweep_dir / LEADERBOARD_FILE
    write_leaderboard(frame, path)
    log.info("leaderboard of %d runs: %s\n%s", len(frame), path, format_table(frame, top))
    return frame


@contextlib.contextmanager
def leaderboard_on_early_end(sweep_dir: Path) -> Iterator[None]:
    """Write the sweep's leaderboard when the sweep inside ends early: interrupted (Ctrl-C, SIGTERM) or
    stopped by a job that can never start. Hydra calls no callback then, and what finished must show."""
    try:
        yield
    except (SweepInterrupted, JobCannotStart):
        write_sweep_leaderboard(sweep_dir)
        raise
