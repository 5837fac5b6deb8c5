"""The leaderboard: every run folder below some paths as one pandas row, best objective first.

A run folder is any folder holding metrics.json (single runs, grid jobs, search trials), whatever its
status, so the same code reads a sweep that is still running or folders copied from another machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.records import METRICS_FILE, write_atomic

LEADERBOARD_FILE = "leaderboard.csv"
# metrics.json fields that become columns, in this order, after run, sweep, status and objective.
METRIC_COLUMNS = [
    "val_accuracy", "val_loss", "test_accuracy", "test_loss", "params", "epochs_completed",
    "train_seconds", "seconds_per_epoch", "seed", "trial", "baseline", "error", "started_at", "finished_at",
]
LEAD_COLUMNS = ["run", "sweep", "status", "objective", "objective_metric", "objective_direction"]
# Config keys that never distinguish one experiment from another.
# (launcher.*: how jobs were spread over devices, not what was trained).
IGNORED_CONFIG_KEYS = ("training.progress",)
IGNORED_CONFIG_PREFIXES = ("launcher.",)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Every folder at or below `paths` that holds a metrics.json."""
    found: set[Path] = set()
    for path in paths:
        found.update(metrics.parent for metrics in path.rglob(METRICS_FILE))
    return sorted(found)


def build_leaderboard(paths: Iterable[Path]) -> pd.DataFrame:
    """One row per run, sorted by objective (best first; runs without a value last)."""
    paths = [Path(path) for path in paths]
    rows, configs = [], []
    for run_dir in find_run_dirs(paths):
        row, config = _read_run(run_dir, paths)
        rows.append(row)
        configs.append(config)
    if not rows:
        return pd.DataFrame(columns=LEAD_COLUMNS + METRIC_COLUMNS)
    frame = pd.DataFrame(rows).fillna(value=np.nan)  # missing metrics print and sort as NaN, not None
    config_frame = pd.DataFrame(configs, index=frame.index)
    varying = [
        key for key in config_frame.columns
        if key not in IGNORED_CONFIG_KEYS and not key.startswith(IGNORED_CONFIG_PREFIXES) and key not in frame.columns
        and config_frame[key].astype(str).nunique(dropna=False) > 1
    ]
    frame = pd.concat([frame, config_frame[varying]], axis=1)
    return sort_by_objective(frame).reset_index(drop=True)


def sort_by_objective(frame: pd.DataFrame) -> pd.DataFrame:
    sign = frame["objective_direction"].map({"maximize": 1.0, "minimize": -1.0}).fillna(1.0)
    score = pd.to_numeric(frame["objective"], errors="coerce") * sign
    return frame.assign(_score=score).sort_values("_score", ascending=False, na_position="last",
                                                   kind="stable").drop(columns="_score")


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over runs that differ only by seed (completed runs only)."""
    done = frame[frame["status"] == "completed"]
    keys = [key for key in _config_columns(frame) if key != "seed"]
    measures = [column for column in ("objective", "val_accuracy", "test_accuracy") if done[column].notna().any()]
    numeric = done.assign(**{column: pd.to_numeric(done[column]) for column in measures})
    grouped = numeric.groupby(keys, dropna=False) if keys else numeric.groupby(lambda _: "all")
    table = grouped[measures].agg(["mean", "std", "count"])
    table.columns = [f"{measure}_{statistic}" for measure, statistic in table.columns]
    table = table.reset_index() if keys else table.reset_index(drop=True)
    direction = done["objective_direction"].dropna()
    ascending = not direction.empty and direction.iloc[0] == "minimize"
    return table.sort_values("objective_mean", ascending=ascending).reset_index(drop=True)


def write_leaderboard(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, frame.to_csv(index=False))


def format_table(frame: pd.DataFrame, top: int = 10) -> str:
    """The first `top` rows with the columns a reader compares, as fixed-width text."""
    wanted = ["run", "status", "objective", "val_accuracy", "test_accuracy", "params", "epochs_completed",
              "train_seconds"] + _config_columns(frame)
    shown = frame[[column for column in dict.fromkeys(wanted) if column in frame.columns]].head(top)
    return shown.to_string(index=False, float_format=lambda value: f"{value:.4f}", na_rep="-")


def _config_columns(frame: pd.DataFrame) -> list[str]:
    known = set(LEAD_COLUMNS + METRIC_COLUMNS)
    return [column for column in frame.columns if column not in known]


def _read_run(run_dir: Path, roots: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    row: dict[str, Any] = {"run": _relative(run_dir, roots), "sweep": _sweep_of(run_dir, roots)}
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError) as error:
        metrics = {"status": "unreadable", "error": f"{METRICS_FILE}: {error}"}
    objective = metrics.get("objective") or {}
    row.update(
        status=metrics.get("status"),
        objective=objective.get("value"),
        objective_metric=objective.get("name"),
        objective_direction=objective.get("direction"),
    )
    row.update({column: metrics.get(column) for column in METRIC_COLUMNS})
    return row, _flat_config(run_dir)


def _flat_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    except (OSError, OmegaConfBaseException, ValueError):
        return {}
    assert isinstance(config, dict)
    return pd.json_normalize(config, sep=".").iloc[0].to_dict() if config else {}


def _sweep_of(run_dir: Path, roots: list[Path]) -> Optional[str]:
    """The multirun folder a job belongs to (Hydra writes multirun.yaml there), else None."""
    parent = run_dir.parent
    return _relative(parent, roots) if (parent / "multirun.yaml").is_file() else None


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        base = root if root.is_dir() else root.parent
        try:
            return str(path.resolve().relative_to(base.resolve().parent))
        except ValueError:
            continue
    return str(path)
