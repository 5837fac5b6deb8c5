"""The `cnnsweep` command: everything besides training itself, which stays `uv run python src/run.py`.

    uv run cnnsweep report [PATH ...] [--output FILE] [--top N] [--aggregate-seeds] [--baseline RUN] [--no-plots]
    uv run cnnsweep rerun RUN_DIR [--resume] [OVERRIDES ...]

Every subcommand keeps the one-line error contract of cnnsweep.errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from cnnsweep.errors import run_with_one_line_errors


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="cnnsweep", description="Review and rerun cnnsweep runs. "
                                   "Train with `uv run python src/run.py [-m] [OVERRIDES]`.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="one leaderboard of every run folder below PATHs",
                                 description="Gather every run folder below PATHs into one leaderboard, "
                                             "best objective first, with plots and an HTML page.")
    report.add_argument("paths", nargs="*", type=Path, default=[Path("outputs")],
                        help="folders to search for run folders (default: outputs/)")
    report.add_argument("--output", type=Path, help="the CSV to write (default: PATH/leaderboard.csv)")
    report.add_argument("--top", type=int, default=10, help="rows to print (default: 10)")
    report.add_argument("--aggregate-seeds", action="store_true",
                        help="also write <output>_seeds.csv: mean, std and count over runs differing only by seed")
    report.add_argument("--baseline", metavar="RUN",
                        help="the run every row is compared with (a `run` value of the leaderboard); default: "
                             "each sweep's own (a search's trial 0, a grid's job with the sweep's defaults)")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots and the HTML report")

    rerun = commands.add_parser("rerun", help="train a past run again from its saved config",
                                description="Train a past run again from its saved .hydra/config.yaml; "
                                            "Hydra overrides (also -m) apply on top.")
    rerun.add_argument("run_dir", type=Path, help="a run folder (outputs/runs/<time> or a multirun job folder)")
    rerun.add_argument("--resume", action="store_true",
                       help="continue a killed or interrupted run in its own folder after its last finished epoch")
    rerun.add_argument("overrides", nargs=argparse.REMAINDER,
                       help="Hydra overrides, e.g. seed=1, or -m seed=0,1,2 (launcher=NAME: another conf/launcher preset)")
    return main


def main(argv: Optional[list[str]] = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "report":
        from cnnsweep.review.report import write_report

        run_with_one_line_errors(lambda: write_report(args.paths, args.output, args.top, args.aggregate_seeds,
                                                      not args.no_plots, args.baseline))
    else:
        from cnnsweep.rerun import other_cpu_note, replay, rerun_arguments

        # RUN_DIR's overrides take the rest of the line, so `--resume` may come after it too
        resume = args.resume or "--resume" in args.overrides
        overrides = [item for item in args.overrides if item != "--resume"]
        arguments = run_with_one_line_errors(lambda: rerun_arguments(args.run_dir, overrides, resume))
        note = other_cpu_note(args.run_dir)
        if note:
            print(note, file=sys.stderr, flush=True)
        replay(arguments)
