"""Exhaustive search: every legal configuration, in declaration order, until the budget ends."""

from __future__ import annotations

import random

from agent.kernels.space import Space
from agent.tuner import Evaluator


def search(evaluator: Evaluator, space: Space, rng: random.Random) -> None:
    batch = []
    for config in space:
        batch.append(config)
        if len(batch) == evaluator.batch_size:
            evaluator.evaluate(batch)
            batch = []
            if evaluator.exhausted:
                return
    if batch:
        evaluator.evaluate(batch)
