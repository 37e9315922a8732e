"""Random search: distinct legal configurations drawn uniformly, until the budget ends."""

from __future__ import annotations

import random

from agent.kernels.space import Space
from agent.tuner import Evaluator


def search(evaluator: Evaluator, space: Space, rng: random.Random) -> None:
    limit = evaluator.remaining_evaluations
    # Draw extra to make up for configurations measured already (the default, at least).
    wanted = space.size() if limit is None else limit + len(evaluator.results)
    order = [c for c in space.sample(wanted, rng) if not evaluator.seen(c)]
    for start in range(0, len(order), evaluator.batch_size):
        evaluator.evaluate(order[start:start + evaluator.batch_size])
        if evaluator.exhausted:
            return
