"""Search spaces without TensorFlow: Hydra sweep overrides -> Optuna distributions, grid points, and
trial values back to overrides."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cnnsweep.errors import ConfigError
from cnnsweep.search_space import as_override, grid_values, parse_search_space


@pytest.mark.parametrize(("override", "distribution"), [
    ("model.filters=choice(16, 32, 64)", CategoricalDistribution([16, 32, 64])),
    ("optimizer=choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("model.batch_norm=choice(true, false)", CategoricalDistribution([True, False])),
    ("model.filters=16,32", CategoricalDistribution([16, 32])),
    ("model.kernel_size=range(2, 5)", IntDistribution(2, 4)),
    ("model.conv_blocks=range(1, 8, 2)", IntDistribution(1, 7, step=2)),
    ("model.dropout=range(0.0, 0.5, 0.1)", FloatDistribution(0.0, 0.4, step=0.1)),
    ("model.dropout=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
    ("model.dense_units=interval(16, 256)", FloatDistribution(16.0, 256.0)),  # Hydra's intervals are floats
    ("model.dense_units=int(interval(16, 256))", IntDistribution(16, 256)),
    ("optimizer.lr=tag(log, interval(0.0001, 0.01))", FloatDistribution(0.0001, 0.01, log=True)),
    ("model.dense_units=tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
    ("seed=shuffle(range(3))", CategoricalDistribution([0, 1, 2])),
])
def test_sweep_overrides_become_distributions(override: str, distribution) -> None:
    distributions, fixed = parse_search_space([override])
    [(key, parsed)] = distributions.items()
    assert key == override.split("=")[0] and fixed == {}
    if override.startswith("seed=shuffle"):  # shuffled: the same choices in some order
        assert sorted(parsed.choices) == sorted(distribution.choices)
    else:
        assert parsed == distribution


def test_later_overrides_replace_earlier_ones() -> None:
    """A sweeps file's params come first, the command line after: it can fix or widen a key."""
    distributions, fixed = parse_search_space(
        ["model.filters=choice(16, 32)", "optimizer.lr=interval(0.001, 0.01)", "model.filters=64",
         "optimizer.lr=choice(0.001, 0.003)", "training.epochs=3"])
    assert distributions == {"optimizer.lr": CategoricalDistribution([0.001, 0.003])}
    assert fixed == {"model.filters": "64", "training.epochs": "3"}


@pytest.mark.parametrize(("overrides", "grid"), [
    (["a=choice(1, 2)", "b=choice(x, y, z)"], {"a": [1, 2], "b": ["x", "y", "z"]}),
    (["a=range(0, 10, 4)"], {"a": [0, 4, 8]}),
    (["a=range(0.0, 0.3, 0.1)"], {"a": pytest.approx([0.0, 0.1, 0.2])}),
])
def test_grid_points(overrides: list[str], grid: dict) -> None:
    assert grid_values(parse_search_space(overrides)[0]) == grid


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=interval(0.001, 0.1)", "hydra.sweeper.params.optimizer.lr: the grid sampler needs a discrete"),
    ("model.dense_units=tag(log, int(interval(16, 256)))", "hydra.sweeper.params.model.dense_units: the grid sampler"),
])
def test_continuous_spaces_have_no_grid(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        grid_values(parse_search_space([override])[0])


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.filters: model.filters=range\(5, 5\) is an empty range"):
        parse_search_space(["model.filters=range(5, 5)"])


@pytest.mark.parametrize("value", [32, 0.0003, 1e-07, "sgd", True, False, None, "with space"])
def test_trial_values_parse_back_to_themselves(value) -> None:
    [override] = OverridesParser.create().parse_overrides([as_override("key", value)])
    assert override.value() == value
