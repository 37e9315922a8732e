"""Search strategies, by name. Each is a function ``search(evaluator, space, rng)`` that
proposes configurations to the evaluator until the evaluator says the budget is spent.

The evaluator (``agent.tuner.Evaluator``) owns budget, de-duplication, constraint checks,
measurement and storage, so a strategy only decides *what* to try next.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    import random

    from agent.kernels.space import Space
    from agent.tuner import Evaluator

__all__ = ["STRATEGIES", "get_strategy"]

SearchFunction = Callable[["Evaluator", "Space", "random.Random"], None]

# name -> module under agent.search; imported only when asked for.
STRATEGIES = {
    "model": "model_guided",
    "exhaustive": "exhaustive",
    "random": "random_search",
    "local": "local_search",
    "opentuner": "opentuner_search",
}


def get_strategy(name: str) -> SearchFunction:
    """The search function of strategy ``name``; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    module = importlib.import_module(f"agent.search.{STRATEGIES[name]}")
    return module.search
