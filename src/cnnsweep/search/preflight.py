"""What a search checks before any trial trains: its settings, its objective, every searched key (each
choice of a searched config group composed once), and for cnnsweep's own task that its data file exists.
A bad setting is one line here, never a failed trial 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import optuna
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

from cnnsweep.errors import ConfigError, first_line
from cnnsweep.launch import hydra_internals
from cnnsweep.run.config import METRIC_DIRECTIONS, check_metric, holds_out, load_run_config, objective_metric
from cnnsweep.run.data import check_source
from cnnsweep.search.settings import OptunaSearchConf
from cnnsweep.search.space import SearchSpace, as_override, search_space
from cnnsweep.search.study import StudySpec, make_sampler


@dataclass
class SearchPlan:
    """Everything a checked search needs to start its study."""

    space: SearchSpace
    spec: StudySpec  # objectives, storage, pruner
    sampler: optuna.samplers.BaseSampler
    config_values: dict[str, Any]  # the composed config's values of the searched and condition keys
    grid: Optional[dict[str, list[Any]]]  # the grid sampler's points, else None
    total: int  # the study's trials in all: n_trials, at most the grid's size


def check_settings(settings: OptunaSearchConf, slots: int, config: DictConfig) -> int:
    """The settings that need no composition; returns the trials run at once (n_jobs, or the launcher's slots)."""
    n_jobs = slots if settings.n_jobs is None else settings.n_jobs
    if n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={settings.n_jobs}: must be a positive number of trials at once, "
                          "or null for one per launcher slot")
    rate = settings.max_failure_rate
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate}: must be between 0.0 and 1.0")
    chosen = config.hydra.runtime.choices.get("hydra/sweeper/sampler")
    if isinstance(settings.sampler, str) and chosen not in (None, "tpe", settings.sampler):
        raise ConfigError(f"hydra/sweeper/sampler={chosen} is replaced by `sampler: {settings.sampler}` (a sweeps "
                          f"file's short form); choose one: hydra.sweeper.sampler={chosen} replaces it")
    if settings.timeout is not None and settings.timeout <= 0:
        raise ConfigError(f"hydra.sweeper.timeout={settings.timeout}: must be a positive number of seconds, or null")
    if settings.test_top_k is not None and settings.test_top_k < 1:
        raise ConfigError(f"hydra.sweeper.test_top_k={settings.test_top_k}: must be a positive number of trials, or "
                          "null for every trial to evaluate the test set")
    return n_jobs


def plan_search(settings: OptunaSearchConf, config: DictConfig, hydra_context: HydraContext,
                arguments: list[str]) -> SearchPlan:
    """The search space, objectives and sampler, with every key and the data checked."""
    space = search_space(settings.params, arguments, conditional_params=settings.conditional_params,
                         old_search_space=settings.search_space, custom_search_space=settings.custom_search_space)
    job_config = compose(hydra_context, config, space.fixed_overrides())
    spec = study_spec(settings, job_config)
    config_values = check_keys(hydra_context, config, space, job_config)
    if "dataset" in job_config and "model" in job_config and "dataset.path" not in space.distributions:
        task_config = OmegaConf.masked_copy(job_config, [key for key in job_config if key != "hydra"])
        check_source(load_run_config(task_config).dataset)  # cnnsweep's own task: its data file exists
    grid = space.grid() if _is_grid(settings.sampler) else None
    sampler = make_sampler(settings.sampler, dict(settings.sampler_options), settings.seed, grid)
    total = settings.n_trials if grid is None else min(settings.n_trials, math.prod(map(len, grid.values())))
    return SearchPlan(space, spec, sampler, config_values, grid, total)


def study_spec(settings: OptunaSearchConf, job_config: DictConfig) -> StudySpec:
    """The study's objectives: hydra.sweeper.metric/direction, else the run's own objective (the
    composed job config's objective.metric and objective.direction), else, for an app that is not a
    cnnsweep run, the task's return value (minimised unless a direction says otherwise)."""
    dataset = job_config.get("dataset")
    validated = holds_out(dataset.get("path"), float(dataset.val_size)) if dataset is not None and \
        "val_size" in dataset else None
    objective = job_config.get("objective")
    if settings.metric is None and objective is None:
        directions = _as_list(settings.direction if settings.direction is not None else "minimize")
        metrics: list[str] = []
    else:
        if settings.metric is None:
            metrics, key = [objective_metric(objective.metric, bool(validated))], "objective.metric"
        else:
            metrics, key = _as_list(settings.metric), "hydra.sweeper.metric"
        if settings.direction is not None:
            directions = _as_list(settings.direction)
        elif settings.metric is None and objective.direction is not None:
            directions = [objective.direction]
        else:
            directions = [METRIC_DIRECTIONS.get(metric, "maximize") for metric in metrics]
        if len(directions) != len(metrics):
            raise ConfigError(f"hydra.sweeper: {len(metrics)} metric(s) {metrics} but {len(directions)} direction(s) "
                              f"{directions}; give one direction per metric")
        for metric in metrics:
            if metric.startswith("test_"):
                raise ConfigError(f"{key}={metric}: searches never optimise the test set; "
                                  "set dataset.val_size=N and search val_accuracy (or val_loss)")
            if validated is not None:
                check_metric(metric, validated, key)
    for direction in directions:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: must be maximize or minimize")
    return StudySpec(settings.storage, settings.study_name, directions, metrics, settings.pruner,
                     dict(settings.pruner_options or {}), settings.heartbeat_interval, settings.grace_period,
                     settings.test_top_k)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def compose(hydra_context: HydraContext, config: DictConfig, overrides: list[str]) -> DictConfig:
    try:
        return hydra_internals.compose_job_config(hydra_context, config, overrides, 0)
    except Exception as error:  # Hydra's composition report, several lines
        raise ConfigError(f"hydra.sweeper.params: {' '.join(overrides)}: {first_line(error)}") from error


def check_keys(hydra_context: HydraContext, config: DictConfig, space: SearchSpace, job_config: DictConfig) -> dict[str, Any]:
    """Every searched key exists (each choice of a config group too), before any trial trains; returns
    the composed config's values of the searched and condition keys."""
    keys = [*space.distributions, *(condition.key for condition, _ in space.conditional)]
    values = {key: config_value(job_config, key) for key in keys}
    for key, distribution in space.distributions.items():
        _check_key(hydra_context, config, key, distribution, job_config, space.fixed_overrides(), "hydra.sweeper.params")
    for condition, distributions in space.conditional:
        overrides = [*space.fixed_overrides(), condition.text]
        condition_config = compose(hydra_context, config, overrides)
        for key, distribution in distributions.items():
            _check_key(hydra_context, config, key, distribution, condition_config, overrides,
                            f"hydra.sweeper.conditional_params.{condition.text}")
            values.setdefault(key, config_value(job_config, key))
    return {key: value for key, value in values.items() if value is not MISSING_VALUE}

def _check_key(hydra_context: HydraContext, config: DictConfig, key: str, distribution: BaseDistribution, job_config: DictConfig, overrides: list[str],
               setting: str) -> None:
    if key.startswith(("+", "~")):
        return
    if config_value(job_config, key) is MISSING_VALUE:
        raise ConfigError(f"{setting}.{key}: no such key in the composed config; check its spelling, or "
                          f"write +{key} to add a new one")
    if key in job_config.hydra.runtime.choices and isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            compose(hydra_context, config, [*overrides, as_override(key, choice)])

MISSING_VALUE = object()


def config_value(job_config: DictConfig, key: str) -> Any:
    """A key's value in a composed config: a config group's chosen option, else the node's value."""
    choices = job_config.hydra.runtime.choices
    if key in choices:
        return choices[key]
    value = OmegaConf.select(job_config, key, default=MISSING_VALUE)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _is_grid(sampler: Any) -> bool:
    target = sampler if isinstance(sampler, str) else str(sampler.get("_target_", ""))
    return target in ("grid", "optuna.samplers.GridSampler")
