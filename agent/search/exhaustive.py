"""Exhaustive search: every legal configuration, in declaration order, until the budget ends."""

from __future__ import annotations

import random
from typing import ClassVar

from agent.budget import Budget
from agent.evaluator import Evaluator
from agent.kernels.space import Space
from agent.search.base import Strategy, StrategyReport


class ExhaustiveSearch(Strategy):
    name = "exhaustive"
    default_budget: ClassVar[Budget] = Budget()  # everything: that is what exhaustive means

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        batch = []
        for config in space:
            batch.append(config)
            if len(batch) == evaluator.batch_size:
                evaluator.evaluate(batch)
                batch = []
                if evaluator.exhausted:
                    return StrategyReport()
        if batch:
            evaluator.evaluate(batch)
        return StrategyReport()
