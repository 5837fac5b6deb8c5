"""The report: leaderboard.csv, a readable top-N table, seed aggregates, PNG plots and one HTML page
for every run folder below some paths (`uv run cnnsweep report`, see cnnsweep.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from cnnsweep.errors import DataError
from cnnsweep.review.leaderboard import (
    LEADERBOARD_FILE,
    aggregate_seeds,
    build_leaderboard,
    format_table,
    write_leaderboard,
)


def write_report(paths: list[Path], output: Optional[Path] = None, top: int = 10, seeds: bool = False,
                 plots: bool = True, baseline: Optional[str] = None) -> None:
    missing = [str(path) for path in paths if not path.is_dir()]
    if missing:
        raise DataError(f"no such folder: {', '.join(missing)}; pass folders that hold run folders, e.g. outputs/")
    frame = build_leaderboard(paths, baseline)
    if frame.empty:
        raise DataError(
            f"no run folders (folders with metrics.json) under {', '.join(map(str, paths))}; "
            "train with `uv run python src/run.py` first"
        )
    output = output or paths[0] / LEADERBOARD_FILE
    write_leaderboard(frame, output)
    print(f"{len(frame)} runs -> {output}")
    print(format_table(frame, top))

    over_seeds = None
    if seeds:
        over_seeds = aggregate_seeds(frame)
        seeds_path = output.with_name(f"{output.stem}_seeds.csv")
        write_leaderboard(over_seeds, seeds_path)
        print(f"\nover seeds -> {seeds_path}")
        print(over_seeds.head(top).to_string(index=False, float_format=lambda value: f"{value:.4f}", na_rep="-"))

    if plots:
        from cnnsweep.review.plots import write_plots  # matplotlib loads only when plots are wanted
        from cnnsweep.review.report_page import PAGE_FILE, write_page

        images = write_plots(frame, paths, output.parent)
        page = write_page(frame, over_seeds, paths, images, output.parent / PAGE_FILE)
        print(f"\n{len(images)} pictures and the report -> {page}")
