"""A stand-in for a GPU training job, for benchmarks/scheduling.py: composes the project's config (so
`launcher=parallel launcher.gpus=[...]` and the sweepers work unchanged), then holds its "GPU" for a
length that depends on `seed`, and records a run like a real trial (metrics.json, status completed).

    uv run python benchmarks/fake_trial.py -m launcher=parallel 'launcher.gpus=[0,1,2,3]' seed=range(16)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnsweep.errors import run_with_one_line_errors
from cnnsweep.run.records import RunRecord

SHORTEST, LONGEST, LENGTHS = 5.0, 20.0, 16  # seconds: 16 lengths, evenly spread over a 4x range


def length(seed: int) -> float:
    """Seeds 0..15 map to the 16 lengths in a scrambled order, so long and short trials mix."""
    step = (seed * 7) % LENGTHS
    return SHORTEST + (LONGEST - SHORTEST) * step / (LENGTHS - 1)


@hydra.main(config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config", version_base="1.3")
def fake_trial(cfg: DictConfig) -> float:
    seconds = length(int(cfg.seed))
    record = RunRecord(Path(HydraConfig.get().runtime.output_dir), seed=int(cfg.seed))
    time.sleep(seconds)
    score = 1.0 - seconds / 100  # any value; the searches need one
    record.finish("completed", val_accuracy=score, test_accuracy=score, train_seconds=seconds,
                  gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return score


if __name__ == "__main__":
    run_with_one_line_errors(fake_trial)
