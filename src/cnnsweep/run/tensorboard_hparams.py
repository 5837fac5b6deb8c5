"""A run's hyperparameters and final metrics for TensorBoard's HParams dashboard, beside the per-epoch
curves that Keras' TensorBoard callback writes, so the runs of a sweep compare in one view:

    uv run tensorboard --logdir outputs/multiruns/<time>

Written when `training.tensorboard=true`, into `<run>/tensorboard` (the callback uses its `train` and
`validation` subfolders).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cnnsweep.run.config import RunConfig

TENSORBOARD_DIR = "tensorboard"
FINAL_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "params", "train_seconds")


def flat_hparams(config: RunConfig) -> dict[str, Any]:
    """The run config as dotted keys with the scalar values HParams takes (bool, int, float, str)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                walk(f"{prefix}{item.name}.", getattr(value, item.name))
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix[:-1]] = value
        elif value is not None and hasattr(value, "value"):  # enums
            flat[prefix[:-1]] = str(value.value)

    walk("", config)
    return flat


def write_hparams(run_dir: Path, config: RunConfig, metrics: dict[str, Any]) -> None:
    """One HParams session per run (named by its folder), with its final metrics as scalars."""
    import tensorflow as tf  # its summary writer, on any Keras backend (hardware.select_backend checks it is here)
    from tensorboard.plugins.hparams import api as hparams_api  # only for runs that asked for TensorBoard

    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR))
    with writer.as_default():
        hparams_api.hparams(flat_hparams(config), trial_id=run_dir.name)
        for name in FINAL_METRICS:
            if isinstance(metrics.get(name), (int, float)):
                tf.summary.scalar(name, float(metrics[name]), step=int(metrics["epochs_completed"]))
    writer.close()
