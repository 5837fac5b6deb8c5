"""`hydra/sweeper=cnnsweep_optuna`: the Optuna search used by sweeps/*.yaml (see cnnsweep.search).

Same `params` syntax as hydra-optuna-sweeper (choice, range, interval, tag(log, ...)), plus what that
plugin lacks: pruning, `n_trials` as the study's total on resume, trials that fail or die recorded
with their error, and no batch barrier with the process launcher.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cnnsweep.search import Search, SearchSettings


@dataclass
class OptunaSearchConf:
    _target_: str = "hydra_plugins.cnnsweep_plugins.optuna_search.OptunaSearchSweeper"
    _recursive_: bool = False  # a `_target_` storage is built by the search (and each trial), not by Hydra
    study_name: str = "cnnsweep"
    # Any Optuna storage URL (sqlite:///..., postgresql+psycopg://...), or a `_target_` storage config.
    storage: Any = "sqlite:///outputs/optuna.db"
    direction: Any = "maximize"  # or a list, one per metric, for a multi-objective (Pareto) search
    metric: Any = "val_accuracy"  # the metrics.json field(s) optimised; never a test metric
    n_trials: int = 20  # the study's total: a resumed search runs only the trials still missing
    n_jobs: Optional[int] = None  # trials at once; null: as many as the launcher runs at once (launcher=parallel)
    sampler: str = "tpe"  # tpe | random | grid | cmaes | nsgaii | qmc
    sampler_options: Dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None  # the sampler's seed
    pruner: str = "median"  # median | hyperband | successive_halving | percentile | none
    pruner_options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the pruner class
    max_failures: int = 5  # failed trials this run tolerates before it stops launching new ones
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="cnnsweep_optuna", node=OptunaSearchConf,
                             provider="cnnsweep")


class OptunaSearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        plain = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                 for key, value in settings.items()}
        self.settings = SearchSettings(**plain)
        self.search: Optional[Search] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.search = Search(self.settings, launcher, config)

    def sweep(self, arguments: List[str]) -> None:
        assert self.search is not None
        self.search.run(arguments)
