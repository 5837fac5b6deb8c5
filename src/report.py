"""Leaderboard of every run below PATHs: `uv run python src/report.py [PATH ...]` (default outputs/)."""

from cnnsweep.cli import run_with_one_line_errors
from cnnsweep.report import main

if __name__ == "__main__":
    run_with_one_line_errors(main)
