"""Combine the decoder's ranking with the cost model's, and describe how sure the ranking is.

The decoder proposes a wide candidate list (the beam's best :data:`CANDIDATES`); the cost
model predicts each candidate's time; :func:`blend_order` ranks them by the sum of their
two ranks (ties go to the decoder), so a candidate both like comes first.
:func:`ranking_features` are the inputs of the calibrated confidence
(:mod:`agent.predict.confidence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CANDIDATES", "RankingFeatures", "blend_order", "ranking_features"]

CANDIDATES = 32  # how many of the decoder's best the cost model re-ranks, and the features see
TOP = 5


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def blend_order(logp: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the candidates, best first, by decoder rank + cost-model rank.

    ``logp`` is the decoder's log-probability of each candidate (higher is better), ``cost``
    the cost model's predicted log time (lower is better).
    """
    logp, cost = np.asarray(logp, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    if logp.shape != cost.shape:
        raise ValueError(f"logp {logp.shape} and cost {cost.shape} differ")
    decoder_rank = _ranks(-logp)
    return np.lexsort((decoder_rank, decoder_rank + _ranks(cost)))


@dataclass(frozen=True)
class RankingFeatures:
    """How peaked and how agreed-upon a ranking is."""

    top1: float  # decoder probability of its first candidate, normalised over the candidates
    top5: float  # the same for its first five together
    agreement: float | None  # share of the decoder's top 5 in the cost model's top 5 (None: no cost model)

    def vector(self, agreement_default: float) -> list[float]:
        """Inputs of the calibration: logits of top1 and top5, and agreement."""
        def logit(p: float) -> float:
            p = min(max(p, 1e-6), 1 - 1e-6)
            return math.log(p / (1 - p))

        return [logit(self.top1), logit(self.top5),
                agreement_default if self.agreement is None else self.agreement]


def ranking_features(logp: np.ndarray, cost: np.ndarray | None = None) -> RankingFeatures:
    """Features of a candidate list whose decoder log-probabilities ``logp`` are best first."""
    logp = np.asarray(logp, dtype=np.float64)[:CANDIDATES]
    if len(logp) == 0:
        raise ValueError("no candidates")
    p = np.exp(logp - logp.max())
    p /= p.sum()
    agreement = None
    if cost is not None:
        cost = np.asarray(cost, dtype=np.float64)[: len(logp)]
        by_cost = set(np.argsort(cost, kind="stable")[:TOP].tolist())
        top = min(TOP, len(logp))
        agreement = len(by_cost & set(range(top))) / top
    return RankingFeatures(top1=float(p[0]), top5=float(p[:TOP].sum()), agreement=agreement)
