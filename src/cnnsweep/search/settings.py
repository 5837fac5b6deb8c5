"""Settings of cnnsweep's Optuna sweeper: the one definition of each, with its default and meaning.

Registered in Hydra's ConfigStore by the plugin fronts (src/hydra_plugins/cnnsweep_plugins), so
`hydra.sweeper.*` are type-checked overrides; the search reads this same object.

`OptunaSearchConf` accepts every key of hydra-optuna-sweeper 1.3 with the same meaning, and the
`hydra/sweeper/sampler` group holds that plugin's sampler configs with its field defaults, so a
config written for `hydra/sweeper=optuna` runs with `hydra/sweeper=cnnsweep_optuna` unchanged (and
the two registrations are interchangeable where both plugins are installed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    """`hydra/sweeper/sampler=tpe` (optuna.samplers.TPESampler)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: bool = True  # this and the next three: kept for old configs; Optuna fixed them
    prior_weight: float = 1.0
    consider_magic_clip: bool = True
    consider_endpoints: bool = False
    n_startup_trials: int = 10  # random trials before TPE starts modelling the results
    n_ei_candidates: int = 24  # candidates scored per suggestion
    multivariate: bool = False  # true: model the parameters jointly (Optuna's own default)
    warn_independent_sampling: bool = True


@dataclass
class RandomSamplerConf:
    """`hydra/sweeper/sampler=random` (optuna.samplers.RandomSampler)."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    """`hydra/sweeper/sampler=cmaes` (optuna.samplers.CmaEsSampler; numeric parameters only)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    x0: Optional[Dict[str, Any]] = None  # the starting point; null: the middle of the space
    sigma0: Optional[float] = None  # the initial step size; null: a sixth of the narrowest range
    independent_sampler: Optional[Any] = None  # for categorical parameters; null: random
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[Any] = None  # ipop | bipop
    inc_popsize: int = 2  # population growth factor per restart
    use_separable_cma: bool = False
    source_trials: Optional[Any] = None


@dataclass
class NSGAIISamplerConf:
    """`hydra/sweeper/sampler=nsgaii` (optuna.samplers.NSGAIISampler; for several objectives)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None  # null: 1 / number of parameters
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None


@dataclass
class MOTPESamplerConf:
    """`hydra/sweeper/sampler=motpe`: Optuna 4 removed MOTPESampler; the search says to use tpe."""

    _target_: str = "optuna.samplers.MOTPESampler"
    seed: Optional[int] = None
    consider_prior: bool = True
    prior_weight: float = 1.0
    consider_magic_clip: bool = True
    consider_endpoints: bool = False
    n_startup_trials: int = 10
    n_ehvi_candidates: int = 24


@dataclass
class GridSamplerConf:
    """`hydra/sweeper/sampler=grid` (optuna.samplers.GridSampler): every point of the discrete space
    given by `params`, filled in by the search; `n_trials` is capped at the grid's size."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # hydra-optuna-sweeper instantiates it before the grid is known
    seed: Optional[int] = None  # the order in which grid points are tried


@dataclass
class QMCSamplerConf:
    """`hydra/sweeper/sampler=qmc` (optuna.samplers.QMCSampler): low-discrepancy points, no model."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"  # sobol | halton
    scramble: bool = False


def register_sampler_configs() -> None:
    """The `hydra/sweeper/sampler` group, untyped so that a sweeps file may still say `sampler: tpe` and
    fields of one sampler survive a switch to another (the search drops them with a warning)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    for name, node in SAMPLER_CONFIGS.items():
        ConfigStore.instance().store(group="hydra/sweeper/sampler", name=name,
                                     node=OmegaConf.to_container(OmegaConf.structured(node)), provider="cnnsweep")


SAMPLER_CONFIGS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "cmaes": CmaEsSamplerConf,
                   "nsgaii": NSGAIISamplerConf, "motpe": MOTPESamplerConf, "grid": GridSamplerConf,
                   "qmc": QMCSamplerConf}


@dataclass
class WarmStartConf:
    """`hydra.sweeper.warm_start`: a new study starts from an earlier one's best trials."""

    source: Optional[str] = None  # a sweep folder (its study.json names the study), or an Optuna storage URL
    study_name: Optional[str] = None  # with a storage URL: the earlier study (null: the storage's only one)
    best: int = 5  # the earlier study's best completed trials that fit this space run first


@dataclass
class OptunaSearchConf:
    """`hydra/sweeper=cnnsweep_optuna`, selected by every sweeps/*.yaml."""

    _target_: str = "hydra_plugins.cnnsweep_plugins.optuna_search.OptunaSearchSweeper"
    _recursive_: bool = False  # samplers and `_target_` storages are built by the search, not by Hydra
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # A `hydra/sweeper/sampler` config (`_target_` and its fields), or a sampler's short name:
    # tpe | random | grid | cmaes | nsgaii | qmc (then `sampler_options` holds its keyword arguments).
    sampler: Any = MISSING  # from the defaults list: hydra/sweeper/sampler=tpe
    sampler_options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments on top of `sampler`
    seed: Optional[int] = None  # the sampler's seed (same as sampler.seed)
    # null: the study lives with this sweep only (a journal file in its folder), as an in-memory study
    # would, while its trials can still report to it; else any Optuna storage URL (sqlite:///...,
    # postgresql+psycopg://...) or a `_target_` storage config, shared and resumable.
    storage: Any = "sqlite:///outputs/optuna.db"
    study_name: Optional[str] = "cnnsweep"  # null: a new study with a generated name
    # The metrics.json field(s) optimised, never a test metric; null: the run's objective.metric, or
    # for an app without one (any Hydra app) the task's return value, as hydra-optuna-sweeper does.
    # A list, with one direction each, makes a multi-objective (Pareto) search.
    metric: Any = None
    # maximize | minimize, or a list; null: the run's objective.direction, else minimize.
    direction: Any = None
    n_trials: int = 20  # the study's total: a resumed search runs only the trials still missing
    n_jobs: Optional[int] = None  # trials at once; null: as many as the launcher runs at once
    timeout: Optional[float] = None  # seconds: no trial starts later than this after the search began
    # median | hyperband | successive_halving | rechecked_halving (cnnsweep.search.pruners) | percentile |
    # threshold | none
    pruner: str = "median"
    # Keyword arguments of the pruner class; null: its defaults (what switching pruners on the command line needs)
    pruner_options: Optional[Dict[str, Any]] = field(default_factory=dict)
    # Seconds between heartbeats of each running trial in an SQLite or PostgreSQL study: a trial silent for
    # grace_period (null: twice the interval) is failed and queued again by any worker of the study.
    # Null: off (journal storages have none; a sweep on the same host settles its dead trials at start).
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    # Shrink TPE's random start-up and the median/percentile pruner's start-up to a share of the trials the
    # budget buys (n_trials, or fewer when `timeout` runs out first); never above what is configured.
    fit_budget: bool = True
    # A trial evaluates the test set only when fewer than K completed trials beat it (so the best K always
    # have test figures) and never when pruned; null: every trial evaluates it.
    test_top_k: Optional[int] = 3
    max_failures: int = 5  # failed trials this run tolerates before it stops launching new ones
    # Failed / finished trials of this run above which it stops launching; set, it replaces max_failures.
    max_failure_rate: Optional[float] = None
    params: Optional[Dict[str, Any]] = None  # key: choice(...) | range(...) | interval(...) | a fixed value
    # Parameters searched only when another has a value: {"optimizer=sgd": {optimizer.momentum: interval(0, 0.95)}}
    conditional_params: Optional[Dict[str, Dict[str, Any]]] = None
    # The old dict form of hydra-optuna-sweeper: key: {type: int|float|categorical, low, high, step, log, choices}
    search_space: Optional[Dict[str, Any]] = None
    # module.function(cfg, trial) that suggests more parameters after `params`, as in hydra-optuna-sweeper
    custom_search_space: Optional[str] = None
    # Trial 0 of a new study is the composed config itself (the baseline every other trial is compared to).
    enqueue_baseline: bool = True
    warm_start: WarmStartConf = field(default_factory=WarmStartConf)

    def __post_init__(self) -> None:
        if isinstance(self.warm_start, dict):  # as the plugin front hands it over, from Hydra's config
            self.warm_start = WarmStartConf(**self.warm_start)
