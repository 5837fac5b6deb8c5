"""Hydra sweep overrides (`choice`, `range`, `interval`, `tag(log, ...)`) as Optuna distributions.

The same syntax as hydra-optuna-sweeper, mapped to Optuna's current distribution classes
(Float/Int/Categorical), so studies carry no deprecated distributions and print no warnings.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnnsweep.errors import ConfigError


def parse_search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Split overrides into searched distributions and fixed `key=value` settings.

    A later override of a key replaces an earlier one, so command-line arguments (after the sweep
    file's `params`) can narrow a search (`optimizer.lr=0.001` fixes it) or widen it.
    """
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = _distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return distributions, fixed


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}: {override.input_line} is an empty range")
        if all(isinstance(item, int) for item in values):
            return IntDistribution(values[0], values[-1], step=int(value.step or 1))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step or 1))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{key}: {override.input_line} is not a sweep Optuna can search; use choice, range or interval")


def grid_values(distributions: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every point of a discrete search space, for Optuna's GridSampler."""
    grid: dict[str, list[Any]] = {}
    for key, distribution in distributions.items():
        if isinstance(distribution, CategoricalDistribution):
            grid[key] = list(distribution.choices)
        elif isinstance(distribution, IntDistribution) and not distribution.log:
            grid[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
        elif isinstance(distribution, FloatDistribution) and distribution.step is not None:
            count = int(round((distribution.high - distribution.low) / distribution.step)) + 1
            grid[key] = [distribution.low + index * distribution.step for index in range(count)]
        else:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: the grid sampler needs a discrete choice() or range(), "
                "not a continuous interval"
            )
    return grid


def as_override(key: str, value: Any) -> str:
    """A trial's value as a Hydra override that parses back to the same value."""
    if isinstance(value, str):
        return f"{key}={value}"
    if isinstance(value, bool) or value is None:
        return f"{key}={str(value).lower() if value is not None else 'null'}"
    return f"{key}={value!r}"
