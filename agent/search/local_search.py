"""Local search: steepest-descent hill climbing over neighbouring values, with random restarts.

Starts at the kernel's default configuration, measures all its neighbours (one parameter
moved one step), moves to the best if it is faster by more than a tie, and restarts from a
random configuration not measured yet at a local optimum, until the budget ends or the
space has nothing new to offer.
"""

from __future__ import annotations

import random

from agent.bench.measure import TIE_RATIO
from agent.evaluator import Evaluator
from agent.kernels.space import Config, Space
from agent.search.base import Strategy, StrategyReport


class LocalSearch(Strategy):
    name = "local"

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        climb(evaluator, space, rng)
        return StrategyReport()


def climb(evaluator: Evaluator, space: Space, rng: random.Random) -> None:
    """Hill-climb from the default (or a random start) until the budget ends or the space runs dry."""
    start = space.default()
    if not space.is_valid(start):
        start = space.sample(1, rng)[0]
    current, current_time = _measure_one(evaluator, start)
    fruitless_restarts = 0
    while not evaluator.exhausted:
        unseen = [n for n in space.neighbours(current) if not evaluator.seen(n)]
        timed = [(t, r.config) for r in evaluator.evaluate(unseen)
                 if (t := evaluator.time_of(r)) is not None]
        if timed:
            best_time, best_config = min(timed, key=lambda pair: pair[0])
            if current_time is None or best_time < current_time * (1 - TIE_RATIO):
                current, current_time = dict(best_config), best_time
                continue
        fresh = [c for c in space.sample(64, rng) if not evaluator.seen(c)]
        if not fresh:
            fruitless_restarts += 1
            if fruitless_restarts > 3:
                return
            continue
        current, current_time = _measure_one(evaluator, fresh[0])


def _measure_one(evaluator: Evaluator, config: Config) -> tuple[Config, float | None]:
    results = evaluator.evaluate([config])
    return config, (evaluator.time_of(results[0]) if results else None)
