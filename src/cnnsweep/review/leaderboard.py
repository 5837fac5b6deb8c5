"""The leaderboard: every run folder below some paths as one pandas row, best objective first.

A run folder is any folder holding metrics.json (single runs, grid jobs, search trials), whatever its
status, so the same code reads a sweep that is still running or folders copied from another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnsweep.errors import DataError
from cnnsweep.review.comparison import NOISE_LEVEL, welch_t_test
from cnnsweep.run.records import METRICS_FILE, RunRecord, recorded_backend, write_atomic

LEADERBOARD_FILE = "leaderboard.csv"
SWEEP_CONFIG_FILE = "multirun.yaml"  # Hydra's sweep config: the composed defaults of a sweep's jobs
# The order that answers "what won": rank and outcome, then the config keys that vary (between these
# columns), then the main metrics, then the rest.
LEAD_COLUMNS = ["rank", "run", "status", "objective", "vs_baseline"]
MAIN_METRICS = ["val_accuracy", "val_loss", "test_accuracy", "test_loss", "params", "epochs_completed",
                "train_seconds", "seconds_per_epoch"]
REST_COLUMNS = ["objective_metric", "objective_direction", "sweep", "seed", "trial", "baseline", "warm_start",
                "test_skipped", "error", "started_at", "finished_at"]
# From metrics.json (warm_start: the earlier study's trial a warm-started search's trial repeats;
# test_skipped: why a search's trial has no test figures).
RECORD_FIELDS = MAIN_METRICS + ["seed", "trial", "baseline", "warm_start", "test_skipped", "error", "started_at",
                                "finished_at"]
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


def build_leaderboard(paths: Iterable[Path], baseline: Optional[str] = None) -> pd.DataFrame:
    """One row per run, best objective first, columns in the order of `LEAD_COLUMNS`, varying config
    keys, `MAIN_METRICS`, `REST_COLUMNS`. `baseline` names the run (its `run` value or folder) every row
    is compared with; by default each sweep's own (see cnnsweep.review.comparison)."""
    paths = [Path(path) for path in paths]
    rows, configs = [], []
    for run_dir in find_run_dirs(paths):
        row, config = _read_run(run_dir, paths)
        rows.append(row)
        configs.append(config)
    if not rows:
        return pd.DataFrame(columns=LEAD_COLUMNS + MAIN_METRICS + REST_COLUMNS)
    frame = pd.DataFrame(rows).fillna(value=np.nan)  # missing metrics print and sort as NaN, not None
    config_frame = pd.DataFrame(configs, index=frame.index)
    varying = [
        key for key in config_frame.columns
        if key not in IGNORED_CONFIG_KEYS and not key.startswith(IGNORED_CONFIG_PREFIXES)
        and (key not in frame.columns or key == "seed") and config_frame[key].astype(str).nunique(dropna=False) > 1
    ]
    frame = pd.concat([frame.drop(columns=[key for key in varying if key in frame.columns]), config_frame[varying]],
                      axis=1)
    frame["baseline"] = _baseline_rows(frame, config_frame, [key for key in varying if key != "seed"], paths, baseline)
    frame["vs_baseline"] = _differences_to_baseline(frame, explicit=baseline is not None)
    frame = sort_by_objective(frame).reset_index(drop=True)
    frame.insert(0, "rank", _ranks(frame))
    order = [*LEAD_COLUMNS, *_swept_first(frame, varying), *MAIN_METRICS, *REST_COLUMNS]
    return frame[[column for column in dict.fromkeys(order) if column in frame.columns]]


def _swept_first(frame: pd.DataFrame, varying: list[str]) -> list[str]:
    """Keys that vary inside a sweep (what was swept or searched) first, then keys that only differ between
    sweeps or single runs, seed last; config order otherwise."""
    grouped = frame.groupby(frame["sweep"].fillna(frame["run"]), dropna=False)
    swept = {key for key in varying if (grouped[key].nunique(dropna=False) > 1).any()}
    return sorted(varying, key=lambda key: (key == "seed", key not in swept))


def _baseline_rows(frame: pd.DataFrame, configs: pd.DataFrame, keys: list[str], roots: list[Path],
                   named: Optional[str]) -> pd.Series:
    """True for the baseline's runs (several when it ran with several seeds), False for the others of its
    sweep, NaN where there is none: a named run's config, else each sweep's marked trial 0 or the jobs
    with its multirun.yaml's values."""
    marked = frame["baseline"].eq(True)
    result = pd.Series(np.nan, index=frame.index, dtype=object)
    if named is not None:
        chosen = frame.index[(frame["run"] == named) | (frame["run"] == _relative(Path(named), roots))]
        if chosen.empty:
            raise DataError(f"--baseline {named}: no such run among these; give a `run` value of the leaderboard")
        reference = configs.loc[chosen[0], keys].astype(str)
        return (configs[keys].astype(str) == reference).all(axis=1).astype(object)
    for sweep, rows in frame.groupby("sweep", dropna=True).groups.items():
        if marked[rows].any():
            result[rows] = marked[rows]
            continue
        defaults = _sweep_config(roots, str(sweep))
        swept = [key for key in keys if configs.loc[rows, key].astype(str).nunique(dropna=False) > 1]
        if defaults is None or any(key not in defaults for key in swept):
            continue
        matches = (configs.loc[rows, swept].astype(str) == pd.Series({key: str(defaults[key]) for key in swept})).all(axis=1)
        if matches.any():
            result[rows] = matches
    return result


def _differences_to_baseline(frame: pd.DataFrame, explicit: bool) -> pd.Series:
    """Each row's objective minus its baseline's (the mean over the baseline's completed seeds)."""
    objective = pd.to_numeric(frame["objective"], errors="coerce")
    reference = frame["baseline"].eq(True) & frame["status"].eq("completed")
    groups = [frame.index] if explicit else list(frame.groupby("sweep", dropna=True).groups.values())
    difference = pd.Series(np.nan, index=frame.index)
    for rows in groups:
        base = objective[rows][reference[rows]]
        if base.notna().any():
            difference[rows] = objective[rows] - base.mean()
    return difference


def _ranks(frame: pd.DataFrame) -> pd.Series:
    """1, 2, ... down the sorted rows that have an objective; empty for the others."""
    has_value = pd.to_numeric(frame["objective"], errors="coerce").notna()
    return has_value.cumsum().where(has_value).astype("Int64")


def _sweep_config(roots: list[Path], sweep: str) -> Optional[dict[str, Any]]:
    """A sweep's multirun.yaml as dotted keys (its hydra node left out), or None without one."""
    path = run_folder(sweep, roots) / SWEEP_CONFIG_FILE
    return _flat_yaml(path) if path.is_file() else None


def sort_by_objective(frame: pd.DataFrame) -> pd.DataFrame:
    sign = frame["objective_direction"].map({"maximize": 1.0, "minimize": -1.0}).fillna(1.0)
    score = pd.to_numeric(frame["objective"], errors="coerce") * sign
    return frame.assign(_score=score).sort_values("_score", ascending=False, na_position="last",
                                                   kind="stable").drop(columns="_score")


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over runs that differ only by seed (completed runs only), each configuration's
    difference to the baseline's mean, and Welch's t-test of that difference (p_value; beyond_seed_noise
    when p < 0.05)."""
    done = frame[frame["status"] == "completed"]
    keys = [key for key in config_columns(frame) if key != "seed"]
    measures = [column for column in ("objective", "val_accuracy", "test_accuracy") if done[column].notna().any()]
    numeric = done.assign(**{column: pd.to_numeric(done[column]) for column in measures})
    grouped = numeric.groupby(keys, dropna=False) if keys else numeric.groupby(lambda _: "all")
    table = grouped[measures].agg(["mean", "std", "count"])
    table.columns = [f"{measure}_{statistic}" for measure, statistic in table.columns]
    samples = grouped["objective"].agg(list)
    baseline_counts = grouped["baseline"].agg(lambda values: int(values.eq(True).sum()))
    if baseline_counts.max() > 0:
        baseline = samples.iloc[int(np.argmax(baseline_counts.to_numpy()))]  # by position: keys may be NaN
        tests = [welch_t_test(values, baseline) for values in samples]
        table.insert(3, "vs_baseline", table["objective_mean"] - sum(baseline) / len(baseline))
        table.insert(4, "p_value", [test.p_value if test else np.nan for test in tests])
        table.insert(5, "beyond_seed_noise", [bool(test.p_value < NOISE_LEVEL) if test else np.nan for test in tests])
        table.insert(6, "baseline", baseline_counts > 0)
    table = table.reset_index() if keys else table.reset_index(drop=True)
    direction = done["objective_direction"].dropna()
    ascending = not direction.empty and direction.iloc[0] == "minimize"
    return table.sort_values("objective_mean", ascending=ascending).reset_index(drop=True)


def write_leaderboard(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, frame.to_csv(index=False))


def format_table(frame: pd.DataFrame, top: int = 10) -> str:
    """The first `top` rows with the columns a reader compares, as fixed-width text."""
    wanted = ["rank", "run", "status", "objective", "vs_baseline", *config_columns(frame), "val_accuracy",
              "test_accuracy", "params", "epochs_completed", "train_seconds"]
    shown = frame[[column for column in dict.fromkeys(wanted) if column in frame.columns]].head(top)
    return shown.to_string(index=False, float_format=lambda value: f"{value:.4f}", na_rep="-")


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The varying config keys (seed too, when it varies), in the frame's order."""
    known = set(LEAD_COLUMNS + MAIN_METRICS + REST_COLUMNS)
    seed_varies = "seed" in frame.columns and frame["seed"].astype(str).nunique(dropna=False) > 1
    return [column for column in frame.columns if column not in known or (column == "seed" and seed_varies)]


def _read_run(run_dir: Path, roots: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    row: dict[str, Any] = {"run": _relative(run_dir, roots), "sweep": _sweep_of(run_dir, roots)}
    saved = RunRecord.read(run_dir)
    objective = saved.objective
    row.update({column: saved.fields.get(column) for column in RECORD_FIELDS})
    row.update(
        status=saved.status,
        error=saved.error,
        objective=objective.value if objective else None,
        objective_metric=objective.name if objective else None,
        objective_direction=objective.direction if objective else None,
    )
    return row, _flat_config(run_dir)


def _flat_config(run_dir: Path) -> dict[str, Any]:
    """The run's saved config, with the backend it trained on in place of the saved one (an interpolation
    of $KERAS_BACKEND would otherwise read as a swept setting beside a rerun that pinned it)."""
    config = _flat_yaml(run_dir / ".hydra" / "config.yaml") or {}
    backend = recorded_backend(run_dir)
    if backend and "hardware.backend" in config:
        config["hardware.backend"] = backend
    return config


def _flat_yaml(path: Path) -> Optional[dict[str, Any]]:
    """A saved config as dotted keys, without a hydra node; None where it cannot be read."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except (OSError, OmegaConfBaseException, ValueError):
        return None
    assert isinstance(config, dict)
    config.pop("hydra", None)
    return pd.json_normalize(config, sep=".").iloc[0].to_dict() if config else {}


def is_missing(value: Any) -> bool:
    """An empty leaderboard cell: None, NaN or pandas' NA (never a list or a string)."""
    if isinstance(value, (list, tuple, dict)):
        return False
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # an array: a value
        return False


def run_folder(run: str, roots: list[Path]) -> Path:
    """The folder of a leaderboard row's `run` (a path relative to the parent of one of `roots`)."""
    for root in roots:
        candidate = (root if root.is_dir() else root.parent).resolve().parent / run
        if candidate.is_dir():
            return candidate
    return Path(run)


def _sweep_of(run_dir: Path, roots: list[Path]) -> Optional[str]:
    """The multirun folder a job belongs to (Hydra writes multirun.yaml there), else None."""
    parent = run_dir.parent
    return _relative(parent, roots) if (parent / SWEEP_CONFIG_FILE).is_file() else None


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        base = root if root.is_dir() else root.parent
        try:
            return str(path.resolve().relative_to(base.resolve().parent))
        except ValueError:
            continue
    return str(path)
