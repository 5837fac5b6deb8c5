"""What a search explores: Hydra sweep overrides (`choice`, `range`, `interval`, `tag(log, ...)`), the
old `search_space` dict form, parameters searched only under a condition, and a custom Python function,
turned into Optuna distributions and, per trial, back into Hydra overrides.

The meanings are hydra-optuna-sweeper's (`range(1, 8)` includes 8 except for the grid sampler, which
takes Hydra's points 1..7; a fixed value beats a sweep of the same key), mapped to Optuna's current
distribution classes so studies carry no deprecated distributions and print no warnings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from hydra._internal.utils import _locate
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import BaseTrial

from cnnsweep.errors import ConfigError, first_line

log = logging.getLogger(__name__)

CustomSpace = Callable[[DictConfig, BaseTrial], None]
_MISSING = object()


@dataclass(frozen=True)
class Condition:
    """`key=value`: a block of conditional_params is searched only in trials where key has this value."""

    key: str
    value: Any
    text: str

    @classmethod
    def parse(cls, text: str) -> "Condition":
        try:
            [override] = OverridesParser.create().parse_overrides([text])
        except Exception as error:  # Hydra's multi-line parser report
            raise ConfigError(f"hydra.sweeper.conditional_params: {text!r} is not a condition; "
                              "write key=value, e.g. 'optimizer=sgd'") from error
        if override.is_sweep_override():
            raise ConfigError(f"hydra.sweeper.conditional_params: {text!r} must name one value, e.g. 'optimizer=sgd'")
        return cls(override.get_key_element(), override.value(), text)

    def holds(self, values: Mapping[str, Any]) -> bool:
        return values.get(self.key, _MISSING) == self.value


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution]  # searched in every trial, in this order
    fixed: dict[str, str] = field(default_factory=dict)  # key -> value every trial's job gets
    fixed_values: dict[str, Any] = field(default_factory=dict)  # the same, parsed (for conditions)
    conditional: list[tuple[Condition, dict[str, BaseDistribution]]] = field(default_factory=list)
    grid_points: dict[str, Optional[list[Any]]] = field(default_factory=dict)  # None: not discrete
    custom: Optional[CustomSpace] = None  # module.function(cfg, trial) from custom_search_space

    def fixed_overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.fixed.items()]

    def searched(self) -> dict[str, BaseDistribution]:
        """Every parameter the space can search, conditional ones included."""
        every = dict(self.distributions)
        for _, distributions in self.conditional:
            every.update(distributions)
        return every

    def grid(self) -> dict[str, list[Any]]:
        """Every point of the space, for Optuna's GridSampler."""
        if self.conditional or self.custom:
            raise ConfigError("hydra.sweeper.sampler=grid covers `params` only; conditional_params and "
                              "custom_search_space need another sampler (tpe, random, ...)")
        grid: dict[str, list[Any]] = {}
        for key, points in self.grid_points.items():
            if points is None:
                raise ConfigError(f"hydra.sweeper.params.{key}: the grid sampler needs a discrete choice() or "
                                  "range(), not a continuous interval")
            grid[key] = points
        return grid

    def suggest(self, trial: BaseTrial, sweep_config: DictConfig, config_values: Mapping[str, Any]) -> None:
        """The parameters beyond `distributions` (which `study.ask` has already drawn): the conditional
        ones whose condition holds, then the custom function's."""
        values = {**config_values, **self.fixed_values, **trial.params}
        for condition, distributions in self.conditional:
            if condition.holds(values):
                for key, distribution in distributions.items():
                    values[key] = suggest(trial, key, distribution)
        if self.custom is not None:
            self.custom(sweep_config, trial)

    def baseline(self, config_values: Mapping[str, Any],
                 grid: Optional[Mapping[str, list[Any]]] = None) -> tuple[dict[str, Any], Optional[str]]:
        """The composed config's values of the searched keys (the baseline trial's parameters), or the
        reason it cannot be a trial of this space (or of its grid)."""
        params: dict[str, Any] = {}
        values = {**config_values, **self.fixed_values}
        blocks = [(None, self.distributions), *self.conditional]
        for condition, distributions in blocks:
            if condition is not None and not condition.holds(values):
                continue
            for key, distribution in distributions.items():
                value = config_values.get(key, _MISSING)
                if value is _MISSING:
                    return {}, f"{key} is not in the composed config"
                if not contains(distribution, value):
                    return {}, f"{key}={value} is outside {describe(distribution)}"
                if grid is not None and not any(_same_kind(value, point) and value == point for point in grid[key]):
                    return {}, f"{key}={value} is not a point of the grid {grid[key]}"
                params[key] = values[key] = value
        return params, None

    def check_unchanged(self, study_name: str, recorded: Mapping[str, BaseDistribution]) -> None:
        """A resumed study must search each parameter as it did (Optuna cannot change a choice's values)."""
        for key, distribution in self.searched().items():
            old = recorded.get(key)
            if old is None:
                continue
            try:
                check_distribution_compatibility(old, distribution)
                same_kind = type(old) is type(distribution)
            except ValueError:
                same_kind = False
            if not same_kind or (isinstance(old, CategoricalDistribution) and old != distribution):
                raise ConfigError(
                    f"hydra.sweeper.params.{key}: study {study_name} searched it as {describe(old)}, now "
                    f"{describe(distribution)}; search the old values, or start a new study with "
                    "hydra.sweeper.study_name=<new name>"
                )


def search_space(params: Optional[Mapping[str, Any]], arguments: Sequence[str], *,
                 conditional_params: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 old_search_space: Optional[Mapping[str, Any]] = None,
                 custom_search_space: Optional[str] = None) -> SearchSpace:
    """The space of a search from its sweeper settings and the command line's overrides.

    The sweeps file's `params` come first, the command line after, so a later sweep of a key replaces
    an earlier one; a fixed value of a key beats any sweep of it (`optimizer.lr=0.001` fixes a searched
    key), as in hydra-optuna-sweeper. `search_space` is that plugin's deprecated dict form, used only
    when `params` is not set.
    """
    space = SearchSpace({})
    if old_search_space and params is not None:
        log.warning("hydra.sweeper.search_space is ignored: hydra.sweeper.params is set (as in hydra-optuna-sweeper)")
    elif old_search_space:
        for key, description in old_search_space.items():
            space.distributions[key] = _from_description(key, description)
            space.grid_points[key] = _points(space.distributions[key])
    overrides = [f"{key}={_as_text(value)}" for key, value in (params or {}).items()] + list(arguments)
    for override in _parse(overrides, "hydra.sweeper.params"):
        key = override.get_key_element()
        if override.is_sweep_override():
            space.distributions.pop(key, None)
            space.distributions[key], space.grid_points[key] = _distribution(override, f"hydra.sweeper.params.{key}")
        else:
            space.fixed[key] = override.get_value_element_as_str()
            space.fixed_values[key] = override.value()
    for key in space.fixed:
        space.distributions.pop(key, None)
        space.grid_points.pop(key, None)
    for text, block in (conditional_params or {}).items():
        condition = Condition.parse(text)
        prefix = f"hydra.sweeper.conditional_params.{text}"
        lines = [f"{key}={_as_text(value)}" for key, value in block.items()]
        distributions = {override.get_key_element(): _distribution(override, f"{prefix}.{override.get_key_element()}")[0]
                         for override in _parse(lines, prefix)}
        space.conditional.append((condition, distributions))
    _check_one_kind_per_key(space)
    if custom_search_space:
        space.custom = load_custom_space(custom_search_space)
    return space


def load_custom_space(path: str) -> CustomSpace:
    """hydra-optuna-sweeper's `custom_search_space`: `module.function`, importable from the app's folder
    (a leading dot, as that plugin's example writes it, means the same)."""
    try:
        function = _locate(path.lstrip("."))
    except Exception as error:  # Hydra's multi-line ImportError
        reason = str(error.__cause__ or error).strip().splitlines()[-1]
        raise ConfigError(f"hydra.sweeper.custom_search_space={path}: cannot import it ({reason}); give "
                          "module.function(cfg, trial) importable from the app's folder") from error
    if not callable(function):
        raise ConfigError(f"hydra.sweeper.custom_search_space={path}: not a function of (cfg, trial)")
    return function


def suggest(trial: BaseTrial, key: str, distribution: BaseDistribution) -> Any:
    """Draw one parameter through the trial's public suggest API."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    assert isinstance(distribution, FloatDistribution)
    return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def contains(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return any(_same_kind(value, choice) and value == choice for choice in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    if isinstance(distribution, IntDistribution) and value != int(value):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step
    return step is None or math.isclose((value - distribution.low) / step, round((value - distribution.low) / step),
                                        abs_tol=1e-8)


def _same_kind(a: Any, b: Any) -> bool:
    """True for two numbers (32 and 32.0) or two values of one type; never a bool and a number."""
    def kind(value: Any) -> Any:
        return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)
    return kind(a) == kind(b)


def describe(distribution: BaseDistribution) -> str:
    """A distribution in the override syntax that makes it."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(_as_text(choice) for choice in distribution.choices)})"
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    if distribution.step is not None and not distribution.log:
        step = "" if distribution.step == 1 and isinstance(distribution, IntDistribution) else f", step={distribution.step}"
        return f"range({distribution.low}, {distribution.high}{step})"
    text = f"interval({distribution.low}, {distribution.high})"
    if isinstance(distribution, IntDistribution):
        text = f"int({text})"
    return f"tag(log, {text})" if distribution.log else text


def as_override(key: str, value: Any) -> str:
    """A trial's value as a Hydra override that parses back to the same value."""
    return f"{key}={_as_text(value)}"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return repr(value)


def _parse(lines: list[str], key: str) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except Exception as error:  # Hydra's multi-line parser report
        raise ConfigError(f"{key}: {first_line(error)}; see Hydra's override grammar (choice, range, interval)") from error


def _distribution(override: Override, key: str) -> tuple[BaseDistribution, Optional[list[Any]]]:
    """The distribution of a sweep override, and its grid points (None for a continuous interval)."""
    value = override.value()
    line = override.input_line or ""
    try:
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if not choices:
                raise ConfigError(f"{key}: {line} has no values")
            return CategoricalDistribution(choices), choices
        if isinstance(value, RangeSweep):
            points = list(override.sweep_iterator())
            if not points:
                raise ConfigError(f"{key}: {line} is an empty range (start {value.start}, stop {value.stop}, "
                                  f"step {value.step}); write range(low, high) with low < high")
            step = value.step or 1
            if all(isinstance(item, int) for item in (value.start, value.stop, step)):
                # hydra-optuna-sweeper's meaning: range(1, 8) searches 1..8, except for the grid (1..7)
                high = value.start + (value.stop - value.start) // step * step
                return IntDistribution(value.start, high, step=step), points
            return FloatDistribution(float(value.start), float(value.stop), step=float(step)), points
        if isinstance(value, IntervalSweep):
            if value.start >= value.end:
                raise ConfigError(f"{key}: {line} is empty or reversed; write interval(low, high) with low < high")
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                distribution = IntDistribution(value.start, value.end, log=log_scale)
                return distribution, None if log_scale else list(range(value.start, value.end + 1))
            return FloatDistribution(float(value.start), float(value.end), log=log_scale), None
    except ValueError as error:  # Optuna's checks, e.g. a log scale from 0
        raise ConfigError(f"{key}: {line}: {error}") from error
    raise ConfigError(f"{key}: {line} is not a sweep Optuna can search; use choice, range or interval")


def _from_description(key: str, description: Any) -> BaseDistribution:
    """hydra-optuna-sweeper's `search_space` entry: {type, low, high, step, log, choices}."""
    fields = OmegaConf.to_container(description) if OmegaConf.is_config(description) else dict(description)
    kind = str(fields.get("type"))
    try:
        if kind == "categorical":
            return CategoricalDistribution(list(fields["choices"]))
        low, high, step, log_scale = fields["low"], fields["high"], fields.get("step"), bool(fields.get("log", False))
        if kind == "int":
            return IntDistribution(int(low), int(high), step=int(step or 1), log=log_scale)
        if kind == "float":
            return FloatDistribution(float(low), float(high), step=None if step is None else float(step), log=log_scale)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"hydra.sweeper.search_space.{key}: {type(error).__name__}: {error}; give type and "
                          "low/high (int, float) or choices (categorical)") from error
    raise ConfigError(f"hydra.sweeper.search_space.{key}.type={kind}: use int, float or categorical")


def _points(distribution: BaseDistribution) -> Optional[list[Any]]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = int(round((distribution.high - distribution.low) / distribution.step)) + 1
        return [distribution.low + index * distribution.step for index in range(count)]
    return None


def _check_one_kind_per_key(space: SearchSpace) -> None:
    """A key searched under several conditions keeps one kind, and one set of choices: Optuna stores one
    distribution per parameter name."""
    seen = dict(space.distributions)
    for condition, distributions in space.conditional:
        for key, distribution in distributions.items():
            if key in space.fixed:
                raise ConfigError(f"hydra.sweeper.conditional_params.{condition.text}.{key}: {key} is fixed to "
                                  f"{space.fixed[key]}; drop one of them")
            old = seen.setdefault(key, distribution)
            if type(old) is not type(distribution) or (
                    isinstance(old, CategoricalDistribution) and old != distribution):
                raise ConfigError(f"hydra.sweeper.conditional_params.{condition.text}.{key}: {describe(distribution)} "
                                  f"differs from {describe(old)} elsewhere; a parameter keeps one kind and one set of "
                                  "choices (use ranges of one kind, or two names)")
