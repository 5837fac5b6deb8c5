"""Settings of cnnsweep's Hydra plugins: the one definition of each, with its default and meaning.

Registered in Hydra's ConfigStore by the plugin fronts (src/hydra_plugins/cnnsweep_plugins), so
`hydra.sweeper.*` and `hydra.launcher.*` are type-checked overrides; the search reads this same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class OptunaSearchConf:
    """`hydra/sweeper=cnnsweep_optuna`, selected by every sweeps/*.yaml."""

    _target_: str = "hydra_plugins.cnnsweep_plugins.optuna_search.OptunaSearchSweeper"
    _recursive_: bool = False  # a `_target_` storage is built by the search (and each trial), not by Hydra
    study_name: str = "cnnsweep"
    # Any Optuna storage URL (sqlite:///..., postgresql+psycopg://...), or a `_target_` storage config.
    storage: Any = "sqlite:///outputs/optuna.db"
    # The metrics.json field(s) optimised, never a test metric; null: the run's objective.metric.
    # A list, with one direction each, makes a multi-objective (Pareto) search.
    metric: Any = None
    direction: Any = None  # maximize | minimize, or a list; null: the run's objective.direction
    n_trials: int = 20  # the study's total: a resumed search runs only the trials still missing
    n_jobs: Optional[int] = None  # trials at once; null: as many as the launcher runs at once
    sampler: str = "tpe"  # tpe | random | grid | cmaes | nsgaii | qmc
    sampler_options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler class
    seed: Optional[int] = None  # the sampler's seed
    pruner: str = "median"  # median | hyperband | successive_halving | percentile | threshold | none
    pruner_options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the pruner class
    max_failures: int = 5  # failed trials this run tolerates before it stops launching new ones
    params: Dict[str, str] = field(default_factory=dict)  # key: choice(...) | range(...) | interval(...)


@dataclass
class ProcessLauncherConf:
    """`hydra/launcher=cnnsweep_process`, selected by launcher=local and launcher=parallel."""

    _target_: str = "hydra_plugins.cnnsweep_plugins.process_launcher.ProcessLauncher"
    jobs: Optional[int] = 1  # jobs at once; null: one per GPU (see gpus), or 2 without GPUs
    gpus: Any = None  # null: no GPU assignment; auto: every visible GPU; N: the first N; [ids]: these
    jobs_per_worker: int = 50  # jobs a slot's warm process runs before a fresh one takes over; 1: always fresh
    job_timeout_min: Optional[float] = None  # a job running longer fails and its process is replaced
    worker_max_memory_gb: Optional[float] = None  # a process larger than this after a job is replaced
