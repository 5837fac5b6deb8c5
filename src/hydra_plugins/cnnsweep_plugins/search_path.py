"""Put the project root on Hydra's search path, so `sweeps=<name>` finds `sweeps/<name>.yaml`."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from cnnsweep.project import PROJECT_ROOT, SWEEPS_DIR


class CnnsweepSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if SWEEPS_DIR.is_dir():
            search_path.append(provider="cnnsweep", path=f"file://{PROJECT_ROOT}")
