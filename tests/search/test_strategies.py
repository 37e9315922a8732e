"""The strategy registry, each strategy's own options, and the effort profiles budgets come from."""

from __future__ import annotations

import pytest

from agent.budget import COLLECT, DEFAULT, EFFORTS, QUICK, Budget, effort
from agent.collect import COLLECT_MEASURE, CollectOptions
from agent.errors import ConfigError
from agent.search import STRATEGIES, Strategy, StrategyOptions, get_strategy, strategy_options
from agent.search.model_guided import ModelOptions, ModelStrategy
from agent.settings import Settings
from agent.tuner import default_budget


def test_every_registered_name_is_a_strategy_class_of_that_name():
    for name in STRATEGIES:
        cls = get_strategy(name)
        assert issubclass(cls, Strategy) and cls.name == name
        assert isinstance(cls().options, StrategyOptions)


def test_an_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'annealing'; choose one of: model, exhaustive"):
        get_strategy("annealing")


def test_an_unknown_strategy_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        strategy_options("model", {"top_k": 3, "temperature": 0.7})
    message = str(caught.value)
    assert "unknown option(s) temperature" in message
    assert "valid: models, cloud, state_dir, top_k, predictor" in message
    with pytest.raises(ConfigError, match="'random': unknown option.*valid: none"):
        strategy_options("random", {"top_k": 3})
    assert strategy_options("model", {"top_k": 3}) == ModelOptions(top_k=3)


def test_a_strategy_takes_only_its_own_options():
    with pytest.raises(ConfigError, match="takes ModelOptions"):
        ModelStrategy(StrategyOptions())


def test_the_model_strategy_is_configured_from_the_settings_then_the_callers_values(tmp_path):
    settings = Settings(db_path=tmp_path / "state" / "e.db", cache_dir=tmp_path, compiler="cc",
                        models_dir=tmp_path / "models")
    options = ModelStrategy.configure({"top_k": 2}, settings=settings)
    assert options == ModelOptions(models=tmp_path / "models", state_dir=tmp_path / "state", top_k=2)


def test_each_strategy_declares_its_default_budget_from_the_effort_profiles():
    assert default_budget("model") == QUICK.budget == Budget(evaluations=5)
    assert default_budget("random") == default_budget("local") == default_budget("opentuner") == DEFAULT.budget
    assert DEFAULT.budget == Budget(evaluations=40)
    assert default_budget("exhaustive") == Budget()  # everything
    assert get_strategy("model").measures_default and not get_strategy("random").measures_default


def test_the_daemon_spends_the_quick_effort_unless_its_config_says_otherwise():
    from agent.daemon.config import DaemonSettings

    assert DaemonSettings().evaluations == QUICK.budget.evaluations == default_budget("model").evaluations


def test_effort_profiles_are_named_once_and_collect_uses_its_own():
    assert list(EFFORTS) == ["quick", "default", "collect"] and effort("collect") is COLLECT
    assert COLLECT_MEASURE == COLLECT.measure and CollectOptions().batch_size == COLLECT.batch_size == 16
    assert COLLECT.budget == Budget() and COLLECT.measure.min_runs == 3
    with pytest.raises(ConfigError, match="unknown effort 'full'; choose one of: quick, default, collect"):
        effort("full")
