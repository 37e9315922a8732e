"""Search strategies, by name. Each is a :class:`~agent.search.base.Strategy` subclass whose
``search(evaluator, space, rng)`` proposes configurations to the evaluator until the
evaluator says the budget is spent, and returns a :class:`~agent.search.base.StrategyReport`.

The evaluator (``agent.evaluator.Evaluator``) owns budget, de-duplication, constraint
checks, measurement and storage, so a strategy only decides *what* to try next.

To add one: a module under ``agent.search`` with a ``Strategy`` subclass (its options a
frozen dataclass, its default budget an effort profile's), and a line in :data:`STRATEGIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from agent.errors import ConfigError
from agent.search.base import Strategy, StrategyOptions, StrategyReport

__all__ = ["STRATEGIES", "Strategy", "StrategyOptions", "StrategyReport", "get_strategy", "strategy_options"]

# name -> "module:class" under agent.search; imported only when asked for.
STRATEGIES = {
    "model": "model_guided:ModelStrategy",
    "exhaustive": "exhaustive:ExhaustiveSearch",
    "random": "random_search:RandomSearch",
    "local": "local_search:LocalSearch",
    "opentuner": "opentuner_search:OpenTunerSearch",
}


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class called ``name``; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    module, _, cls = STRATEGIES[name].partition(":")
    strategy: type[Strategy] = getattr(importlib.import_module(f"agent.search.{module}"), cls)
    return strategy


def strategy_options(name: str, values: Mapping[str, Any] | None = None) -> StrategyOptions:
    """Strategy ``name``'s options from a mapping; unknown names (strategy or option) list the valid ones."""
    return get_strategy(name).make_options(values)
