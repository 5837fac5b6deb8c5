"""Hydra callbacks: when a multirun ends, its leaderboard.csv is written and its top rows printed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class LeaderboardCallback(Callback):
    """Registered in conf/config.yaml under hydra.callbacks; runs in the sweeping process."""

    def __init__(self, top: int = 10) -> None:
        self.top = top

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_leaderboard(Path(config.hydra.sweep.dir), self.top)


def write_sweep_leaderboard(sweep_dir: Path, top: int = 10) -> None:
    """<sweep folder>/leaderboard.csv, and its top rows in the log (also when a sweep is interrupted)."""
    # pandas loads here, not at start-up: Hydra builds callbacks in every run and every job process.
    from cnnsweep.leaderboard import LEADERBOARD_FILE, build_leaderboard, format_table, write_leaderboard

    frame = build_leaderboard([sweep_dir])
    if frame.empty:
        log.warning("no run folders under %s; no leaderboard written", sweep_dir)
        return
    path = sweep_dir / LEADERBOARD_FILE
    write_leaderboard(frame, path)
    log.info("leaderboard of %d runs: %s\n%s", len(frame), path, format_table(frame, top))
