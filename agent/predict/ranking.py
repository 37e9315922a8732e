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

__all__ = ["CANDIDATES", "DIVERSITY", "RankingFeatures", "blend_order", "diversified_order", "ranking_features"]

CANDIDATES = 32  # how many of the decoder's best the cost model re-ranks, and the features see
TOP = 5
DIVERSITY = 1.0  # weight of "shares values with a pick already made" against the standardised score
DIVERSE_POOL = 64  # diversified picks come from this many of the best-scored


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


def diversified_order(scores: np.ndarray, tokens: np.ndarray, k: int = TOP, *, weight: float = DIVERSITY,
                      pool: int = DIVERSE_POOL) -> list[int]:
    """Rows to try, best first: the best-scored, then each pick the best trade of score against
    likeness to the picks so far (maximal marginal relevance), for ``k`` picks; then the rest by score.

    ``scores``: higher is better, one per row; ``tokens``: [rows, slots] value ids, so likeness is
    the share of parameters whose value equals a pick's. Five near-copies of one guess cost five
    evaluations to learn one thing; this spends them on different guesses the score still likes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    by_score = [int(i) for i in np.argsort(-scores, kind="stable")]
    if len(by_score) <= 1 or k <= 1:
        return by_score
    candidates = np.asarray(by_score[:pool])
    z = (scores[candidates] - scores[candidates].mean()) / (scores[candidates].std() + 1e-12)
    rows = np.asarray(tokens)[candidates]
    likeness = np.zeros(len(candidates))
    picked = [0]
    while len(picked) < min(k, len(candidates)):
        likeness = np.maximum(likeness, (rows == rows[picked[-1]]).mean(axis=1))
        value = z - weight * 3.0 * likeness
        value[picked] = -np.inf
        picked.append(int(np.argmax(value)))
    first = [int(candidates[i]) for i in picked]
    chosen = set(first)
    return first + [i for i in by_score if i not in chosen]


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
