"""The report's pictures (PNG): learning curves of the top runs and the baseline, the objective against
each varying config key, a parallel-coordinates view of a sweep, the Pareto front of multi-objective
searches, the accuracy/size trade-off and each study's history and importances.

Points are labelled with their run; failed and pruned runs are drawn, distinct by colour and marker.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from cnnsweep.errors import ConfigError  # noqa: E402
from cnnsweep.review.leaderboard import config_columns, is_missing, run_folder  # noqa: E402
from cnnsweep.run.records import HISTORY_FILE  # noqa: E402
from cnnsweep.search.study import STUDY_FILE, StudySpec  # noqa: E402

log = logging.getLogger(__name__)
STATUS_STYLE = {"completed": ("tab:blue", "o"), "pruned": ("tab:orange", "v"), "failed": ("tab:red", "x"),
                "running": ("tab:gray", "s")}
CURVES = 6  # learning curves drawn: the best runs, plus the baseline
LABELLED = 12  # points labelled with their run name, best first
MAX_KEYS = 9  # varying keys drawn against the objective


def short_name(run: str) -> str:
    """The last two parts of a run's path: the sweep's time and the job, or the run's folder."""
    return "/".join(str(run).split("/")[-2:])


def write_plots(frame: pd.DataFrame, roots: list[Path], folder: Path) -> list[Path]:
    """Every picture that has something to show, as PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [
        learning_curves(frame, roots, folder / "learning_curves.png"),
        objective_vs_keys(frame, folder / "objective_vs_config.png"),
        parallel_coordinates(frame, folder / "parallel_coordinates.png"),
        objective_vs_size(frame, folder / "objective_vs_params.png"),
        *pareto_fronts(frame, roots, folder),
        *study_plots(roots, folder),
    ]
    return [image for image in images if image is not None]


def learning_curves(frame: pd.DataFrame, roots: list[Path], path: Path) -> Optional[Path]:
    """The objective's metric (else validation, else training accuracy) per epoch, from history.csv."""
    ranked = frame[frame["rank"].notna()].head(CURVES)
    baseline = frame[frame["baseline"].eq(True) & ~frame.index.isin(ranked.index)].head(1)
    chosen = pd.concat([ranked, baseline])
    figure, axes = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for _, row in chosen.iterrows():
        try:
            history = pd.read_csv(run_folder(str(row["run"]), roots) / HISTORY_FILE)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        metric = next((name for name in (row.get("objective_metric"), "val_accuracy", "accuracy")
                       if isinstance(name, str) and name in history.columns), None)
        if metric is None:
            continue
        is_baseline = bool(row.get("baseline") == True)  # noqa: E712  (NaN where a sweep has none)
        label = f"{short_name(row['run'])}{' (baseline)' if is_baseline else ''}"
        axes.plot(history["epoch"], history[metric], marker=".", label=f"{label}: {metric}",
                  linestyle="--" if is_baseline else "-", color="black" if is_baseline else None)
        drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    axes.set(xlabel="epoch", ylabel="metric", title=f"Learning curves of the best {min(CURVES, len(ranked))} runs")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def objective_vs_keys(frame: pd.DataFrame, path: Path) -> Optional[Path]:
    """One panel per varying config key: where the good values lie."""
    keys = config_columns(frame)[:MAX_KEYS]
    if not keys:
        return None
    objective = pd.to_numeric(frame["objective"], errors="coerce")
    floor = objective.min() if objective.notna().any() else 0.0
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axes, key in zip(grid.flat, keys):
        values, ticks = _axis_values(frame[key])
        for status, (colour, marker) in STATUS_STYLE.items():
            chosen = frame["status"].eq(status)
            y = objective[chosen].fillna(floor)  # failed runs sit on the floor, marked x
            axes.scatter(values[chosen], y, color=colour, marker=marker, label=status, alpha=0.8)
        if ticks is not None:
            axes.set_xticks(range(len(ticks)), ticks, fontsize=7, rotation=30)
        for index in frame.index[frame["rank"].notna()][:LABELLED]:  # the best runs, by name
            axes.annotate(short_name(frame.loc[index, "run"]), (values[index], objective[index]), fontsize=6)
        axes.set(xlabel=key, ylabel=_objective_label(frame))
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(keys):]:
        axes.axis("off")
    grid.flat[0].legend(fontsize=7)
    figure.suptitle("Objective against each varying config key")
    return _save(figure, path)


def parallel_coordinates(frame: pd.DataFrame, path: Path) -> Optional[Path]:
    """Each run as a line across its varying keys (scaled to 0..1) and its objective; colour: objective."""
    keys = config_columns(frame)[:MAX_KEYS]
    if len(keys) < 2:
        return None
    objective = pd.to_numeric(frame["objective"], errors="coerce")
    columns = [_axis_values(frame[key])[0] for key in keys] + [objective]
    scaled = np.column_stack([_unit(column) for column in columns])
    figure, axes = plt.subplots(figsize=(max(7, 1.3 * len(columns)), 4.5))
    colours = plt.get_cmap("viridis")
    for index, (_, row) in enumerate(frame.iterrows()):
        status = row["status"]
        if status == "completed" and not np.isnan(scaled[index, -1]):
            axes.plot(range(len(columns)), scaled[index], color=colours(scaled[index, -1]), alpha=0.8)
        else:
            axes.plot(range(len(columns) - 1), scaled[index, :-1], color=STATUS_STYLE.get(status, ("tab:gray", ""))[0],
                      linestyle=":", alpha=0.6)
    axes.set_xticks(range(len(columns)), [*keys, _objective_label(frame)], rotation=20, fontsize=8)
    axes.set(yticks=[], title="Parallel coordinates (dotted: pruned, failed, running)")
    return _save(figure, path)


def objective_vs_size(frame: pd.DataFrame, path: Path) -> Optional[Path]:
    """Objective against parameter count: the accuracy/size trade-off, best runs labelled."""
    data = frame.assign(objective=pd.to_numeric(frame["objective"], errors="coerce"),
                        params=pd.to_numeric(frame["params"], errors="coerce")).dropna(subset=["objective", "params"])
    if data.empty:
        return None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for status, group in data.groupby("status"):
        colour, marker = STATUS_STYLE.get(str(status), ("tab:purple", "o"))
        axes.scatter(group["params"], group["objective"], label=status, color=colour, marker=marker, alpha=0.8)
    for _, row in data.head(LABELLED).iterrows():
        axes.annotate(short_name(row["run"]), (row["params"], row["objective"]), fontsize=6)
    axes.set(xscale="log", xlabel="parameters", ylabel=_objective_label(frame), title="Objective vs model size")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def pareto_fronts(frame: pd.DataFrame, roots: list[Path], folder: Path) -> list[Path]:
    """For each multi-objective study: its first two metrics for every run, the front joined up."""
    images = []
    for spec in _study_specs(roots):
        if len(spec.metrics) < 2 or not all(metric in frame.columns for metric in spec.metrics[:2]):
            continue
        (x_metric, y_metric), (x_way, y_way) = spec.metrics[:2], spec.directions[:2]
        data = frame.assign(**{metric: pd.to_numeric(frame[metric], errors="coerce") for metric in (x_metric, y_metric)})
        data = data.dropna(subset=[x_metric, y_metric])
        if data.empty:
            continue
        front = _front(data, x_metric, y_metric, x_way, y_way)
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for status, group in data.groupby("status"):
            colour, marker = STATUS_STYLE.get(str(status), ("tab:purple", "o"))
            axes.scatter(group[x_metric], group[y_metric], color=colour, marker=marker, label=status, alpha=0.6)
        ordered = front.sort_values(x_metric)
        axes.plot(ordered[x_metric], ordered[y_metric], color="black", marker="o", label="Pareto front")
        for _, row in ordered.iterrows():
            axes.annotate(short_name(row["run"]), (row[x_metric], row[y_metric]), fontsize=6)
        axes.set(xlabel=f"{x_metric} ({x_way})", ylabel=f"{y_metric} ({y_way})", title=f"Pareto front of {spec.study_name}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        images.append(_save(figure, folder / f"{spec.study_name}_pareto.png"))
    return images


def study_plots(roots: list[Path], folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances for each single-objective study."""
    images: list[Path] = []
    for spec in _study_specs(roots):
        try:
            study = optuna.load_study(study_name=spec.study_name, storage=spec.open_storage())
        except (ConfigError, KeyError) as error:  # a server out of reach, a password only the sweep had
            log.warning("study %s: %s; its history and importance plots are left out", spec.study_name, error)
            continue
        done = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
        if not done or len(study.directions) > 1:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plots = [("history", optuna.visualization.matplotlib.plot_optimization_history)]
            if len(done) >= 2 and study.best_trial.params:
                plots.append(("importance", optuna.visualization.matplotlib.plot_param_importances))
            for kind, plot in plots:
                axes = plot(study)
                images.append(_save(axes.figure, folder / f"{spec.study_name}_{kind}.png"))
    return images


def _study_specs(roots: list[Path]) -> list[StudySpec]:
    specs = {}
    for study_file in sorted({found for root in roots for found in root.rglob(STUDY_FILE)}):
        spec = StudySpec.read(study_file)
        specs.setdefault(spec.study_name, spec)
    return list(specs.values())


def _front(data: pd.DataFrame, x: str, y: str, x_way: str, y_way: str) -> pd.DataFrame:
    """The rows no other row beats in both metrics."""
    xs = data[x].to_numpy() * (1 if x_way == "maximize" else -1)
    ys = data[y].to_numpy() * (1 if y_way == "maximize" else -1)
    keep = [not np.any((xs >= xs[i]) & (ys >= ys[i]) & ((xs > xs[i]) | (ys > ys[i]))) for i in range(len(xs))]
    return data[keep]


def _axis_values(column: pd.Series) -> tuple[pd.Series, Optional[list[str]]]:
    """Numbers as they are (a run without the key: NaN, not drawn); anything else as positions of its
    sorted distinct values, with those values as tick labels ("-": the run has no such key)."""
    present = column[~column.map(is_missing)]
    numeric = pd.to_numeric(present, errors="coerce")
    if len(present) and numeric.notna().all() and not present.map(lambda value: isinstance(value, bool)).any():
        return pd.to_numeric(column.where(~column.map(is_missing)), errors="coerce"), None
    text = column.map(lambda value: "-" if is_missing(value) else str(value))
    labels = sorted(text.unique())
    return text.map({label: index for index, label in enumerate(labels)}).astype(float), labels


def _unit(column: pd.Series) -> np.ndarray:
    values = column.to_numpy(dtype=float)
    low, high = np.nanmin(values) if np.isfinite(values).any() else 0.0, np.nanmax(values) if np.isfinite(values).any() else 1.0
    return (values - low) / (high - low) if high > low else np.full_like(values, 0.5)


def _objective_label(frame: pd.DataFrame) -> str:
    return " / ".join(sorted(frame["objective_metric"].dropna().astype(str).unique())) or "objective"


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
