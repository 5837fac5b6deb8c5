"""PNG plots of a leaderboard (and of the Optuna studies behind it) and one self-contained HTML report."""

from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from cnnsweep.records import write_atomic  # noqa: E402
from cnnsweep.study import STUDY_FILE, StudySpec  # noqa: E402

STATUS_COLOURS = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:gray"}


def plot_objective_vs_params(frame: pd.DataFrame, path: Path) -> Optional[Path]:
    """Objective against parameter count, one colour per status: the accuracy/size trade-off."""
    data = frame.assign(objective=pd.to_numeric(frame["objective"]), params=pd.to_numeric(frame["params"]))
    data = data.dropna(subset=["objective", "params"])
    if data.empty:
        return None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for status, group in data.groupby("status"):
        axes.scatter(group["params"], group["objective"], label=status, alpha=0.8,
                     color=STATUS_COLOURS.get(str(status), "tab:purple"))
    metrics = sorted(data["objective_metric"].dropna().unique())
    axes.set(xscale="log", xlabel="parameters", ylabel=" / ".join(metrics) or "objective",
             title="Objective vs model size")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_studies(roots: list[Path], folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances for each study found under `roots`."""
    images: list[Path] = []
    for study_file in sorted({found for root in roots for found in root.rglob(STUDY_FILE)}):
        spec = StudySpec.read(study_file)
        study = optuna.load_study(study_name=spec.study_name, storage=spec.open_storage())
        done = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
        if not done or len(study.directions) > 1:
            continue
        name = spec.study_name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plots = [("history", optuna.visualization.matplotlib.plot_optimization_history)]
            if len(done) >= 2 and study.best_trial.params:
                plots.append(("importance", optuna.visualization.matplotlib.plot_param_importances))
            for kind, plot in plots:
                axes = plot(study)
                path = folder / f"{name}_{kind}.png"
                axes.figure.tight_layout()
                axes.figure.savefig(path, dpi=110)
                plt.close(axes.figure)
                images.append(path)
    return images


def write_plots_and_html(frame: pd.DataFrame, seeds: Optional[pd.DataFrame], roots: list[Path],
                         folder: Path) -> Path:
    """Write the PNGs into `folder`, then report.html embedding them, so the page travels alone."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [path for path in [plot_objective_vs_params(frame, folder / "objective_vs_params.png")] if path]
    images += plot_studies(roots, folder)
    sections = ["<h2>Leaderboard</h2>", frame.to_html(index=False, na_rep="-", float_format="{:.4f}".format)]
    if seeds is not None:
        sections += ["<h2>Over seeds</h2>", seeds.to_html(index=False, na_rep="-", float_format="{:.4f}".format)]
    for image in images:
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        sections.append(f'<h2>{html.escape(image.stem)}</h2><img src="data:image/png;base64,{encoded}">')
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnsweep report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head>"
        f"<body><h1>cnnsweep report</h1><p>{len(frame)} runs from {html.escape(', '.join(map(str, roots)))}</p>"
        + "".join(sections) + "</body></html>\n"
    )
    path = folder / "report.html"
    write_atomic(path, page)
    return path
