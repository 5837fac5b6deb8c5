"""Rerun a past run from its saved config: `uv run python src/rerun.py RUN_DIR [OVERRIDES...]`.

Examples: `uv run python src/rerun.py outputs/runs/2026-11-25_19-47-09-091342` (same history on CPU),
`uv run python src/rerun.py outputs/multiruns/<time>/3 -m seed=1,2,3` (the same config, more seeds).
"""

import sys

from run import main

from cnnsweep.cli import run_with_one_line_errors
from cnnsweep.rerun import rerun_arguments


def rerun() -> None:
    sys.argv = [sys.argv[0], *rerun_arguments(sys.argv[1:])]
    main()


if __name__ == "__main__":
    run_with_one_line_errors(rerun)
