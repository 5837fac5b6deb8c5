"""Put the project root on Hydra's search path, so `sweeps=<name>` finds `sweeps/<name>.yaml`; and store
cnnsweep's `hydra/sweeper/sampler` configs once more, after every plugin module has been imported."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from cnnsweep.project import PROJECT_ROOT, SWEEPS_DIR
from cnnsweep.search.settings import register_sampler_configs


class CnnsweepSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # hydra-optuna-sweeper, where installed, stores the same names as typed configs that refuse another
        # sampler's fields; whichever plugin Hydra imported last would win. Hydra calls this hook after
        # importing them all, so the group is cnnsweep's (same fields, same defaults) either way.
        register_sampler_configs()
        if SWEEPS_DIR.is_dir():
            search_path.append(provider="cnnsweep", path=f"file://{PROJECT_ROOT}")
