"""The policy from held-out results: which source a device should rank with, per situation, and how
well its confidence (that source's share of good cases in the situation) tells good from bad.

``edgetune eval`` replays every method on held-out folds; this turns its per-case best-of-5 into
:class:`agent.predict.policy.Policy` and the figures reported beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.predict.policy import GOOD, SITUATIONS, Policy

__all__ = ["DIVERSE_COST_METHOD", "RANDOM_METHOD", "REUSE_METHOD", "choose_policy", "policy_confidence"]

REUSE_METHOD = "reuse (nearest measured case)"
DIVERSE_COST_METHOD = "cost model (ONNX), diversified"
RANDOM_METHOD = "random (exact expectation)"


def _source_methods(deployed: str) -> dict[str, str]:
    """Policy source -> the eval method that replays it (``deployed``: the model as the device runs it)."""
    return {"model": deployed, "reuse": REUSE_METHOD, "cost-model": DIVERSE_COST_METHOD, "random": RANDOM_METHOD}


def choose_policy(merged: dict[str, dict[str, list]], deployed: str) -> Policy:
    """The policy from the held-out best-of-5 of each source a device can run (``deployed``: the model's method)."""
    sources = _source_methods(deployed)
    best_of_5 = {split: {source: [r["best_of"]["5"] for r in methods[method]]
                         for source, method in sources.items() if method in methods}
                 for split, methods in merged.items()}
    return Policy.choose(best_of_5)


def policy_confidence(merged: dict[str, dict[str, list]], policy: Policy, deployed: str) -> dict[str, Any]:
    """How well the policy's confidence (its source's share of good held-out cases in the situation) tells good
    from bad: Brier score against the base rate (also with each case left out of its own share), and AUC."""
    sources = _source_methods(deployed)
    groups: dict[str, list[bool]] = {}
    for situation, splits in SITUATIONS.items():
        method = sources[policy.source(situation)]
        for split in splits:
            rows = merged.get(split, {}).get(method, [])
            groups.setdefault(situation, []).extend(r["best_of"]["5"] >= GOOD for r in rows)
    good = np.array([g for rows in groups.values() for g in rows], dtype=np.float64)
    if len(good) == 0:
        return {}
    share = np.concatenate([np.full(len(rows), np.mean(rows)) for rows in groups.values() if rows])
    left_out = np.concatenate([(np.sum(rows) - np.asarray(rows, dtype=np.float64)) / max(len(rows) - 1, 1)
                               for rows in groups.values() if rows])
    pos, neg = share[good == 1], share[good == 0]
    auc = (float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])) if len(pos) and len(neg) else None)
    base = float(good.mean())
    return {"cases": len(good), "good_share": base, "base_brier": base * (1 - base),
            "brier": float(np.mean((share - good) ** 2)), "brier_left_out": float(np.mean((left_out - good) ** 2)),
            "auc": auc}
