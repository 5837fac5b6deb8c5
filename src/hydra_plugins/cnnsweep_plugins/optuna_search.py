"""`hydra/sweeper=cnnsweep_optuna`: the Optuna search used by sweeps/*.yaml. Its settings are
cnnsweep.search.settings.OptunaSearchConf; the search itself is cnnsweep.search.loop, imported when a search
starts (Hydra imports this module at every start-up, single runs included).

Same `params` syntax as hydra-optuna-sweeper (choice, range, interval, tag(log, ...)), plus what that
plugin lacks: pruning, `n_trials` as the study's total on resume, trials that fail or die recorded
with their error, and no batch barrier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnsweep.search.settings import OptunaSearchConf, register_sampler_configs

if TYPE_CHECKING:
    from cnnsweep.search.loop import Search

ConfigStore.instance().store(group="hydra/sweeper", name="cnnsweep_optuna", node=OptunaSearchConf,
                             provider="cnnsweep")
register_sampler_configs()


class OptunaSearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        plain = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                 for key, value in settings.items() if key != "defaults"}
        self.settings = OptunaSearchConf(**plain)
        self.search: Optional["Search"] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from cnnsweep.credentials import redacted
        from cnnsweep.launch import hydra_internals
        from cnnsweep.launch.contract import trial_launcher
        from cnnsweep.search.loop import Search

        # One sweep folder for the whole search: a copy keeps the ${now:...} values resolved before it was made,
        # not later ones, so unless the folder is resolved here first, the launcher's copy and each batch of
        # trials composed from it would get a folder of their own.
        with open_dict(config):
            config.hydra.sweep.dir = str(config.hydra.sweep.dir)
        # The launcher writes and pickles its config (Slurm, Hydra's own launchers): it never sees the password,
        # which reaches the jobs through their environment (cnnsweep.credentials).
        launcher_config = redacted(config)
        launcher = hydra_internals.instantiate_launcher(hydra_context, task_function, launcher_config)
        self.search = Search(self.settings, trial_launcher(launcher, hydra_context, launcher_config), config,
                             hydra_context)

    def sweep(self, arguments: List[str]) -> None:
        from cnnsweep.callbacks import leaderboard_on_early_end

        assert self.search is not None, "setup() comes first"
        with leaderboard_on_early_end(self.search.sweep_dir):
            self.search.run(arguments)
