"""A run's per-epoch checkpoints, and where a resumed run continues.

After every epoch a checkpoint goes to the run folder's `checkpoints/`: `epoch-N.keras` (the model with
its optimizer state) first, then `epoch-N.json` (the epoch and the state the model file does not hold),
whose presence marks the checkpoint complete. The last two are kept, so a checkpoint that cannot be read
(a kill while it was written, a damaged disk) leaves the one before, from which the run continues with a
warning. With no usable checkpoint a run never starts again silently: a single run (`cnnsweep rerun
--resume`) refuses with one line naming what could not be read, and a sweep's job (a continued sweep, a
requeued Slurm job) starts again from epoch 1, saying so in its log and metrics.json and keeping the
earlier history.csv beside the new one.

TensorFlow-free: the trainer hands in how a model is written and loaded.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from cnnsweep.errors import ConfigError, first_line
from cnnsweep.run.config import CheckpointPolicy
from cnnsweep.run.records import HISTORY_FILE, read_history, write_json

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
KEEP = 2  # the newest checkpoint and the one before it
_STATE_NAME = re.compile(r"epoch-(\d+)\.json")


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    model_path: Path  # epoch-N.keras (absent for a trainer without a model file)
    state: dict[str, Any]  # what epoch-N.json holds besides the epoch


@dataclass(frozen=True)
class ResumePoint:
    epoch: int  # the epochs already trained (0: from the start)
    rows: list[dict[str, Any]]  # their history rows
    restarted: Optional[str] = None  # why a job that was to resume starts again from epoch 1


class Checkpoints:
    """The checkpoints of one run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.folder = run_dir / CHECKPOINT_DIR

    def model_path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch}.keras"

    def state_path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch}.json"

    def save(self, epoch: int, state: dict[str, Any], write_model: Optional[Callable[[Path], None]] = None) -> None:
        """Write epoch `epoch`'s checkpoint (the model first, its state file last), then drop all but the
        newest KEEP."""
        self.folder.mkdir(exist_ok=True)
        if write_model is not None:
            write_model(self.model_path(epoch))
        write_json(self.state_path(epoch), {"epoch": epoch, **state})
        for older in self.epochs()[KEEP:]:
            self.state_path(older).unlink(missing_ok=True)
            self.model_path(older).unlink(missing_ok=True)

    def epochs(self) -> list[int]:
        """The epochs of the complete checkpoints (those with a state file), newest first."""
        if not self.folder.is_dir():
            return []
        found = (_STATE_NAME.fullmatch(path.name) for path in self.folder.iterdir())
        return sorted((int(match.group(1)) for match in found if match), reverse=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def resume_point(self, load: Callable[[Checkpoint], None], restart: bool) -> ResumePoint:
        """The newest checkpoint that can be read and loaded (by `load`, which raises when it cannot), and
        the history rows up to it. With none usable: ConfigError, or with `restart` a fresh start, the
        earlier history.csv kept beside."""
        failures: list[str] = []
        for epoch in self.epochs():
            try:
                rows = self._rows_up_to(epoch)
                state = json.loads(self.state_path(epoch).read_text())
                load(Checkpoint(epoch, self.model_path(epoch), state))
            except Exception as error:  # anything a damaged file makes the reader (or Keras) raise
                failures.append(f"{self._name(epoch)}: {first_line(error)}")
                log.warning("the checkpoint after epoch %d cannot be used (%s); trying the one before", epoch,
                            failures[-1])
                continue
            if failures:
                log.warning("resuming from the checkpoint after epoch %d, the one before the newest", epoch)
            return ResumePoint(epoch, rows)
        return self._nothing_to_resume("; ".join(failures) or f"no checkpoint in {self.folder}", restart)

    def _rows_up_to(self, epoch: int) -> list[dict[str, Any]]:
        rows = [row for row in read_history(self.run_dir / HISTORY_FILE) if row["epoch"] <= epoch]
        if len(rows) != epoch:
            raise ValueError(f"{HISTORY_FILE} holds {len(rows)} of the {epoch} epochs before it")
        return rows

    def _name(self, epoch: int) -> str:
        model = self.model_path(epoch)
        return str(model if model.exists() else self.state_path(epoch))

    def _nothing_to_resume(self, why: str, restart: bool) -> ResumePoint:
        if not restart:
            raise ConfigError(f"cannot resume {self.run_dir}: {why}; rerun it without --resume to train it "
                              "again from epoch 1 in a new folder")
        history = self.run_dir / HISTORY_FILE
        if not history.exists() and not self.epochs():  # it ended before its first epoch: nothing is lost
            log.info("no checkpoint to resume from in %s; training from epoch 1", self.run_dir)
            return ResumePoint(0, [])
        self.remove()  # a damaged checkpoint must never pass for the new run's newest
        kept = ""
        if history.exists():
            kept_path = _free_name(history, "before-restart")
            history.rename(kept_path)
            kept = f", the earlier history kept as {kept_path.name}"
        reason = f"cannot resume ({why}); trained again from epoch 1{kept}"
        log.warning("%s", reason)
        return ResumePoint(0, [], restarted=reason)


def skips_checkpoints(policy: CheckpointPolicy, trial_requeued: Optional[bool]) -> Optional[str]:
    """Why the run writes no checkpoints, or None to write one after every epoch. `trial_requeued` is None
    outside a search, and for a search's trial whether its launcher runs it again in its own folder (a
    Slurm requeue): the only thing that continues a trial from its checkpoints, since a search on
    launcher=local or parallel queues an interrupted trial again as a new trial, trained from epoch 1."""
    if policy is CheckpointPolicy.never:
        return "training.checkpoints=never"
    if policy is CheckpointPolicy.auto and trial_requeued is False:
        return ("nothing would resume them: an interrupted trial of this search is trained again from epoch 1 "
                "as a new trial (training.checkpoints=always writes them anyway)")
    return None


def _free_name(path: Path, label: str) -> Path:
    """`history.LABEL-1.csv`, or the next number not taken."""
    number = 1
    while (candidate := path.with_name(f"{path.stem}.{label}-{number}{path.suffix}")).exists():
        number += 1
    return candidate
