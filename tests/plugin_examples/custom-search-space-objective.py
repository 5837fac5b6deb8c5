"""hydra-optuna-sweeper's example/custom-search-space-objective.py in shape: `configure` suggests z
within a distance of the searched x, and a new key +w, after the `params` space is drawn."""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="custom-search-space", config_name="config")
def multi_dimensional_sphere(cfg: DictConfig) -> float:
    return float(cfg.w) ** 2 + float(cfg.x) ** 2 + float(cfg.y) ** 2 + float(cfg.z) ** 2


def configure(cfg: DictConfig, trial: Trial) -> None:
    x_value = trial.params["x"]
    trial.suggest_float("z", x_value - cfg.max_z_difference_from_x, x_value + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)  # +w: a key the config does not have


if __name__ == "__main__":
    multi_dimensional_sphere()
