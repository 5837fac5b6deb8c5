"""Search spaces without TensorFlow: Hydra sweep overrides and hydra-optuna-sweeper's dict form -> Optuna
distributions (that plugin's own test table, then ours), grid points, conditional parameters, the
baseline trial's parameters, a changed space on resume, and trial values back to overrides."""

from __future__ import annotations

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cnnsweep.errors import ConfigError
from cnnsweep.search.space import as_override, contains, describe, search_space

# hydra-optuna-sweeper 1.3's tests (test_create_optuna_distribution_from_override), with its deprecated
# classes as their current equivalents: Uniform -> Float, IntUniform -> Int, DiscreteUniform -> Float(step).
PLUGIN_TABLE = [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
    ("key=range(1,3)", IntDistribution(1, 3)),
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
]
OUR_TABLE = [
    ("model.filters=choice(16, 32, 64)", CategoricalDistribution([16, 32, 64])),
    ("optimizer=choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("model.filters=16,32", CategoricalDistribution([16, 32])),
    ("model.kernel_size=range(2, 5)", IntDistribution(2, 5)),
    ("model.conv_blocks=range(1, 8, 2)", IntDistribution(1, 7, step=2)),
    ("model.conv_blocks=range(1, 9, 2)", IntDistribution(1, 9, step=2)),
    ("model.dropout=range(0.0, 0.5, 0.1)", FloatDistribution(0.0, 0.5, step=0.1)),
    ("model.dense_units=interval(16, 256)", FloatDistribution(16.0, 256.0)),  # Hydra's intervals are floats
    ("optimizer.lr=tag(log, interval(0.0001, 0.01))", FloatDistribution(0.0001, 0.01, log=True)),
]


@pytest.mark.parametrize(("override", "distribution"), PLUGIN_TABLE + OUR_TABLE)
def test_sweep_overrides_become_distributions(override: str, distribution) -> None:
    space = search_space(None, [override])
    [(key, parsed)] = space.distributions.items()
    assert key == override.split("=")[0] and space.fixed == {}
    if "shuffle" in override:  # shuffled: the same choices in some order
        assert sorted(parsed.choices) == sorted(distribution.choices)
    else:
        assert parsed == distribution


# hydra-optuna-sweeper 1.3's test_create_params_from_overrides
@pytest.mark.parametrize(("overrides", "distributions", "fixed"), [
    (["key=choice(1,2)"], {"key": CategoricalDistribution([1, 2])}, {}),
    (["key=5"], {}, {"key": "5"}),
    (["key1=choice(1,2)", "key2=5"], {"key1": CategoricalDistribution([1, 2])}, {"key2": "5"}),
    (["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
     {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)}, {"key2": "5"}),
])
def test_overrides_split_into_searched_and_fixed(overrides, distributions, fixed) -> None:
    space = search_space(None, overrides)
    assert (space.distributions, space.fixed) == (distributions, fixed)


# hydra-optuna-sweeper 1.3's test_create_optuna_distribution_from_config (the deprecated search_space form)
@pytest.mark.parametrize(("description", "distribution"), [
    ({"type": "categorical", "choices": [1, 2, 3]}, CategoricalDistribution([1, 2, 3])),
    ({"type": "int", "low": 0, "high": 10}, IntDistribution(0, 10)),
    ({"type": "int", "low": 0, "high": 10, "step": 2}, IntDistribution(0, 10, step=2)),
    ({"type": "int", "low": 1, "high": 100, "log": True}, IntDistribution(1, 100, log=True)),
    ({"type": "float", "low": 0, "high": 1}, FloatDistribution(0, 1)),
    ({"type": "float", "low": 0, "high": 10, "step": 2}, FloatDistribution(0, 10, step=2)),
    ({"type": "float", "low": 1, "high": 100, "log": True}, FloatDistribution(1, 100, log=True)),
])
def test_the_old_search_space_form(description, distribution) -> None:
    assert search_space(None, [], old_search_space={"x": description}).distributions == {"x": distribution}


def test_params_win_over_the_old_form() -> None:
    space = search_space({"y": "choice(1, 2)"}, [], old_search_space={"x": {"type": "int", "low": 0, "high": 3}})
    assert list(space.distributions) == ["y"]


def test_later_sweeps_replace_earlier_ones_and_fixed_values_win() -> None:
    """The sweeps file's params come first, the command line after; a fixed value beats a sweep of the
    same key wherever it stands (hydra-optuna-sweeper's rule)."""
    space = search_space({"model.filters": "choice(16, 32)", "optimizer.lr": "interval(0.001, 0.01)",
                          "training.epochs": 3},
                         ["model.filters=64", "optimizer.lr=choice(0.001, 0.003)", "model.dense_units=8",
                          "model.dense_units=choice(8, 16)"])
    assert space.distributions == {"optimizer.lr": CategoricalDistribution([0.001, 0.003])}
    assert space.fixed == {"training.epochs": "3", "model.filters": "64", "model.dense_units": "8"}


@pytest.mark.parametrize(("overrides", "grid"), [
    (["a=choice(1, 2)", "b=choice(x, y, z)"], {"a": [1, 2], "b": ["x", "y", "z"]}),
    (["a=range(0, 10, 4)"], {"a": [0, 4, 8]}),
    (["a=range(1, 4)"], {"a": [1, 2, 3]}),  # Hydra's points, as hydra-optuna-sweeper's grid takes them
    (["a=range(0.0, 0.3, 0.1)"], {"a": pytest.approx([0.0, 0.1, 0.2])}),
    (["a=int(interval(1, 3))"], {"a": [1, 2, 3]}),
])
def test_grid_points(overrides: list[str], grid: dict) -> None:
    assert search_space(None, overrides).grid() == grid


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=interval(0.001, 0.1)", "hydra.sweeper.params.optimizer.lr: the grid sampler needs a discrete"),
    ("model.dense_units=tag(log, int(interval(16, 256)))", "hydra.sweeper.params.model.dense_units: the grid sampler"),
])
def test_continuous_spaces_have_no_grid(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space(None, [override]).grid()


@pytest.mark.parametrize(("override", "message"), [
    ("model.filters=range(5, 5)", r"model.filters: model.filters=range\(5, 5\) is an empty range"),
    ("model.filters=range(8, 1)", r"model.filters: model.filters=range\(8, 1\) is an empty range"),
    ("model.dropout=interval(0.5, 0.1)", r"model.dropout=interval\(0.5, 0.1\) is empty or reversed"),
    ("model.dropout=interval(0.2, 0.2)", r"is empty or reversed; write interval\(low, high\) with low < high"),
    ("optimizer.lr=tag(log, interval(0.0, 0.1))", r"hydra.sweeper.params.optimizer.lr: .*log"),
    ("model.filters=choice(", r"hydra.sweeper.params: .*override grammar"),
])
def test_empty_reversed_and_invalid_spaces_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space(None, [override])


CONDITIONAL = {"optimizer=sgd": {"optimizer.momentum": "interval(0.0, 0.95)"},
               "model.conv_blocks=2": {"model.kernel_size": "range(2, 5)"},
               "model.conv_blocks=3": {"model.kernel_size": "range(2, 4)"}}


def test_conditional_parameters_are_searched_only_where_their_condition_holds() -> None:
    space = search_space({"optimizer": "choice(adam, sgd)", "model.conv_blocks": "choice(2, 3)"}, [],
                         conditional_params=CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask(fixed_distributions=space.distributions)
        space.suggest(trial, None, {})
        params = trial.params
        seen.append(params)
        assert ("optimizer.momentum" in params) == (params["optimizer"] == "sgd")
        assert params["model.kernel_size"] <= {2: 5, 3: 4}[params["model.conv_blocks"]]
        study.tell(trial, 0.0)
    assert {p["optimizer"] for p in seen} == {"adam", "sgd"} and {p["model.conv_blocks"] for p in seen} == {2, 3}


def test_a_condition_on_a_fixed_or_unsearched_key() -> None:
    """A condition reads the fixed value, else the composed config's value."""
    fixed = search_space({}, ["optimizer=sgd"], conditional_params=CONDITIONAL)
    trial = optuna.create_study().ask()
    fixed.suggest(trial, None, {"optimizer": "adam", "model.conv_blocks": 3})
    assert set(trial.params) == {"optimizer.momentum", "model.kernel_size"} and trial.params["model.kernel_size"] <= 4


@pytest.mark.parametrize(("conditional", "message"), [
    ({"optimizer=sgd": {"optimizer.momentum": "choice(0.0, 0.9)"},
      "optimizer=rmsprop": {"optimizer.momentum": "choice(0.0, 0.5)"}},
     r"conditional_params.optimizer=rmsprop.optimizer.momentum: choice\(0.0, 0.5\) differs from choice\(0.0, 0.9\)"),
    ({"optimizer=choice(sgd, adam)": {"optimizer.momentum": "interval(0, 1)"}}, "must name one value"),
    ({"optimizer=sgd": {"optimizer.lr": "interval(0.1, 0.01)"}},
     r"conditional_params.optimizer=sgd.optimizer.lr: optimizer.lr=interval\(0.1, 0.01\) is empty or reversed"),
])
def test_conditional_spaces_that_cannot_work_are_refused(conditional, message) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space({"optimizer": "choice(adam, sgd, rmsprop)"}, [], conditional_params=conditional)


def test_a_grid_has_no_conditional_parameters() -> None:
    space = search_space({"optimizer": "choice(adam, sgd)"}, [], conditional_params=CONDITIONAL)
    with pytest.raises(ConfigError, match="sampler=grid covers `params` only"):
        space.grid()


@pytest.mark.parametrize(("values", "params", "reason"), [
    ({"optimizer": "adam", "model.filters": 32, "model.conv_blocks": 3, "model.kernel_size": 3},
     {"optimizer": "adam", "model.filters": 32, "model.conv_blocks": 3, "model.kernel_size": 3}, None),
    ({"optimizer": "sgd", "optimizer.momentum": 0.0, "model.filters": 32, "model.conv_blocks": 2, "model.kernel_size": 5},
     {"optimizer": "sgd", "optimizer.momentum": 0.0, "model.filters": 32, "model.conv_blocks": 2, "model.kernel_size": 5},
     None),
    ({"optimizer": "adam", "model.filters": 24, "model.conv_blocks": 3, "model.kernel_size": 3}, {},
     "model.filters=24 is outside choice(16, 32, 64)"),
    ({"optimizer": "adam", "model.filters": 32, "model.conv_blocks": 3, "model.kernel_size": 5}, {},
     "model.kernel_size=5 is outside range(2, 4)"),
])
def test_the_baseline_is_the_composed_config_within_the_space(values, params, reason) -> None:
    space = search_space({"optimizer": "choice(adam, sgd)", "model.filters": "choice(16, 32, 64)",
                          "model.conv_blocks": "choice(2, 3)"}, [], conditional_params=CONDITIONAL)
    assert space.baseline(values) == (params, reason)


@pytest.mark.parametrize(("distribution", "value", "inside"), [
    (CategoricalDistribution([16, 32]), 32, True), (CategoricalDistribution([16, 32]), 24, False),
    (CategoricalDistribution([True, False]), 1, False), (CategoricalDistribution([0.5, 1.0]), 1, True),
    (IntDistribution(2, 8, step=2), 6, True), (IntDistribution(2, 8, step=2), 5, False),
    (FloatDistribution(0.0, 0.5), 0.5, True), (FloatDistribution(0.0, 0.5), 0.6, False),
    (FloatDistribution(-5.5, 5.5, step=0.5), 1, True), (FloatDistribution(1e-4, 1e-2, log=True), "x", False),
])
def test_contains(distribution, value, inside) -> None:
    assert contains(distribution, value) is inside


@pytest.mark.parametrize("override", ["k=choice(8, 16, 32)", "k=range(2, 5)", "k=range(1, 9, step=2)",
                                      "k=tag(log, interval(0.0001, 0.01))", "k=int(interval(16, 256))",
                                      "k=tag(log, int(interval(16, 256)))", "k=range(0.0, 0.5, step=0.1)",
                                      "k=interval(0.0, 0.5)", "k=choice(adam, sgd)"])
def test_a_distribution_is_described_in_the_syntax_that_makes_it(override: str) -> None:
    distribution = search_space(None, [override]).distributions["k"]
    assert search_space(None, [f"k={describe(distribution)}"]).distributions["k"] == distribution


def test_a_changed_space_on_resume_names_the_parameter_and_the_ways_on() -> None:
    old = {"model.filters": CategoricalDistribution([8, 16, 32]), "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    search_space(None, ["model.filters=choice(8, 16, 32)", "optimizer.lr=tag(log, interval(0.001, 0.1))"]
                 ).check_unchanged("quick", old)  # a numeric range may move
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.model.filters: study quick searched it as "
                                          r"choice\(8, 16, 32\), now choice\(4, 12\); search the old values, or "
                                          r"start a new study with hydra.sweeper.study_name=<new name>"):
        search_space(None, ["model.filters=choice(4, 12)"]).check_unchanged("quick", old)
    with pytest.raises(ConfigError, match="optimizer.lr: study quick searched it as tag"):
        search_space(None, ["optimizer.lr=choice(0.001, 0.01)"]).check_unchanged("quick", old)


def test_an_unimportable_custom_space_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"hydra.sweeper.custom_search_space=nowhere.configure: cannot import it "
                                          r"\(.*\); give module.function\(cfg, trial\)"):
        search_space(None, [], custom_search_space="nowhere.configure")


@pytest.mark.parametrize("value", [32, 0.0003, 1e-07, "sgd", True, False, None, "with space"])
def test_trial_values_parse_back_to_themselves(value) -> None:
    [override] = OverridesParser.create().parse_overrides([as_override("key", value)])
    assert override.value() == value
