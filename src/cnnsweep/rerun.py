"""Rerun a past run from the config it saved, through the same Hydra entry point.

The saved `.hydra/config.yaml` is the fully composed config, so it becomes the primary config
(`--config-path`): the rerun does not depend on today's conf/ defaults, and on CPU it reproduces
history.csv exactly. Extra overrides (`seed=1`, or `-m seed=0,1,2`) apply on top of it.
"""

from __future__ import annotations

from pathlib import Path

from cnnsweep.errors import ConfigError

# Where reruns go; the microsecond timestamp matches conf/config.yaml's run folders.
RERUN_DIR = "outputs/reruns/${now:%Y-%m-%d_%H-%M-%S-%f}"
RERUN_SWEEP_DIR = "outputs/multiruns/${now:%Y-%m-%d_%H-%M-%S-%f}"
USAGE = "usage: uv run python src/rerun.py RUN_DIR [OVERRIDES...]"


def rerun_arguments(argv: list[str]) -> list[str]:
    """Turn `RUN_DIR [OVERRIDES...]` into Hydra command-line arguments that replay that run."""
    if not argv or argv[0].startswith("-"):
        raise ConfigError(f"no run folder given; {USAGE}")
    run_dir, overrides = Path(argv[0]), argv[1:]
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{run_dir}: no saved config at {saved}; pass a run folder written by src/run.py "
            "(outputs/runs/<time> or a multirun job folder)"
        )
    return [
        "--config-path",
        str(saved.parent.resolve()),
        "--config-name",
        "config",
        f"hydra.run.dir={RERUN_DIR}",
        f"hydra.sweep.dir={RERUN_SWEEP_DIR}",
        *overrides,
    ]
