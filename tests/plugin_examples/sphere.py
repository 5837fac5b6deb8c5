"""A TensorFlow-free Hydra app in the shape of hydra-optuna-sweeper's example/sphere.py: the task returns
its objective. tests/test_plugin_compat.py runs the plugin's example configs against it with
`hydra/sweeper=cnnsweep_optuna`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error"):
        raise RuntimeError("cfg.error is True")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    sphere()
