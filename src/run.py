"""Train one configuration: `uv run python src/run.py [OVERRIDES]`, or a sweep with `-m`.

Examples: `uv run python src/run.py model.filters=64 optimizer=sgd`,
`uv run python src/run.py -m model.filters=32,64`. Reports and reruns: `uv run cnnsweep --help`.
"""

import hydra
from omegaconf import DictConfig

from cnnsweep.app import train_task
from cnnsweep.errors import run_with_one_line_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return train_task(cfg)


if __name__ == "__main__":
    run_with_one_line_errors(main)
