"""Random search: distinct legal configurations drawn uniformly, until the budget ends."""

from __future__ import annotations

import random

from agent.kernels.space import Space
from agent.tuner import Evaluator


def search(evaluator: Evaluator, space: Space, rng: random.Random) -> None:
    limit = evaluator.remaining_evaluations
    order = space.sample(limit if limit is not None else space.size(), rng)
    for start in range(0, len(order), evaluator.batch_size):
        evaluator.evaluate(order[start:start + evaluator.batch_size])
        if evaluator.exhausted:
            return
