"""Random search: distinct legal configurations drawn uniformly, until the budget ends."""

from __future__ import annotations

import random

from agent.evaluator import Evaluator
from agent.kernels.space import Space
from agent.search.base import Strategy, StrategyReport


class RandomSearch(Strategy):
    name = "random"

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        limit = evaluator.remaining_evaluations
        # Draw extra to make up for configurations measured already (the default, at least).
        wanted = space.size() if limit is None else limit + len(evaluator.results)
        order = [c for c in space.sample(wanted, rng) if not evaluator.seen(c)]
        for start in range(0, len(order), evaluator.batch_size):
            evaluator.evaluate(order[start:start + evaluator.batch_size])
            if evaluator.exhausted:
                break
        return StrategyReport()
