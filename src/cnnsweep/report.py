"""The report command: leaderboard.csv, a readable top-N table, PNG plots and one HTML page.

    uv run python src/report.py [PATH ...] [--output FILE] [--top N] [--aggregate-seeds] [--no-plots]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from cnnsweep.errors import DataError
from cnnsweep.leaderboard import (
    LEADERBOARD_FILE,
    aggregate_seeds,
    build_leaderboard,
    format_table,
    write_leaderboard,
)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="src/report.py",
        description="Gather every run folder below PATHs into one leaderboard, best objective first.",
    )
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("outputs")],
                        help="folders to search for run folders (default: outputs/)")
    parser.add_argument("--output", type=Path, help="the CSV to write (default: PATH/leaderboard.csv)")
    parser.add_argument("--top", type=int, default=10, help="rows to print (default: 10)")
    parser.add_argument("--aggregate-seeds", action="store_true",
                        help="also write <output>_seeds.csv: mean, std and count over runs differing only by seed")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots and the HTML report")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    missing = [str(path) for path in args.paths if not path.is_dir()]
    if missing:
        raise DataError(f"no such folder: {', '.join(missing)}; pass folders that hold run folders, e.g. outputs/")
    frame = build_leaderboard(args.paths)
    if frame.empty:
        raise DataError(
            f"no run folders (folders with metrics.json) under {', '.join(map(str, args.paths))}; "
            "train with `uv run python src/run.py` first"
        )
    output = args.output or args.paths[0] / LEADERBOARD_FILE
    write_leaderboard(frame, output)
    print(f"{len(frame)} runs -> {output}")
    print(format_table(frame, args.top))

    seeds = None
    if args.aggregate_seeds:
        seeds = aggregate_seeds(frame)
        seeds_path = output.with_name(f"{output.stem}_seeds.csv")
        write_leaderboard(seeds, seeds_path)
        print(f"\nover seeds -> {seeds_path}")
        print(seeds.head(args.top).to_string(index=False, float_format=lambda value: f"{value:.4f}", na_rep="-"))

    if not args.no_plots:
        from cnnsweep.plots import write_plots_and_html  # matplotlib loads only when plots are wanted

        html = write_plots_and_html(frame, seeds, args.paths, output.parent)
        print(f"\nreport -> {html}")


if __name__ == "__main__":
    sys.exit(main())
