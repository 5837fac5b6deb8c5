"""Put the project root on Hydra's search path, so `sweeps=<name>` finds `sweeps/<name>.yaml`."""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# src/hydra_plugins/cnnsweep_plugins/search_path.py -> the checkout holding conf/ and sweeps/
PROJECT_ROOT = Path(__file__).resolve().parents[3]


class CnnsweepSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (PROJECT_ROOT / "sweeps").is_dir():
            search_path.append(provider="cnnsweep", path=f"file://{PROJECT_ROOT}")
