"""Fit the confidence calibration from held-out evaluation records, and measure it honestly.

Each record is one held-out case of one fold: its ranking features and whether the
deployed method's best-of-5 reached 95% of the optimum. The curve and the threshold come
from cross-fitted probabilities (the logistic model that scores a fold's records never saw
them); the shipped coefficients are then fitted on every record.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.predict.confidence import Calibration
from agent.predict.ranking import RankingFeatures

__all__ = ["SUCCESS_RATIO", "TARGET_PRECISION", "calibrate", "fit_logistic"]

SUCCESS_RATIO = 0.95  # "good" = best-of-5 within 5% of the optimum
TARGET_PRECISION = 0.90  # of the cases called confident, at least this share must be good
L2 = 1.0


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2, iterations: int = 50) -> np.ndarray:
    """Weights [1 + features] (intercept first) of an L2-regularised logistic regression (Newton steps)."""
    x1 = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(x1.shape[1])
    penalty = np.full(len(w), l2)
    penalty[0] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -50, 50)))
        gradient = x1.T @ (p - y) + penalty * w
        hessian = (x1.T * (p * (1 - p))) @ x1 + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(w[0] + x @ w[1:], -50, 50)))


def choose_threshold(probability: np.ndarray, good: np.ndarray, *, precision: float = TARGET_PRECISION) -> float:
    """The lowest threshold whose confident set (probability >= it) is at least ``precision`` good.

    The lowest one asks the cloud least often. 1.0 (never confident) when no threshold reaches it.
    """
    order = np.argsort(-probability, kind="stable")
    hits = np.cumsum(good[order])
    shares = hits / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(shares >= precision)
    if len(ok) == 0:
        return 1.0
    last = ok.max()
    return float(probability[order][last])


def _summary(probability: np.ndarray, good: np.ndarray, threshold: float) -> dict[str, Any]:
    confident = probability >= threshold
    return {"cases": len(good), "good_share": float(good.mean()) if len(good) else None,
            "confident_share": float(confident.mean()) if len(good) else None,
            "precision_when_confident": float(good[confident].mean()) if confident.any() else None,
            "good_among_unconfident": float(good[~confident].mean()) if (~confident).any() else None}


def calibrate(records: Sequence[dict[str, Any]], *, use_cost_model: bool, bins: int = 10) -> tuple[Calibration,
                                                                                                   dict[str, Any]]:
    """Fit a :class:`Calibration` from eval records and report its cross-fitted validation.

    Each record: ``fold``, ``split``, ``best_of_5`` (ratio to the optimum), ``features``
    (a dict of :class:`RankingFeatures` fields).
    """
    if not records:
        raise ValueError("no evaluation records to calibrate on")
    agreements = [r["features"]["agreement"] for r in records if r["features"].get("agreement") is not None]
    agreement_default = float(np.mean(agreements)) if agreements else 0.6
    x = np.array([RankingFeatures(**r["features"]).vector(agreement_default) for r in records])
    good = np.array([r["best_of_5"] >= SUCCESS_RATIO for r in records], dtype=np.float64)
    folds = np.array([r["fold"] for r in records])
    crossfit = np.empty(len(records))
    for fold in np.unique(folds):
        held = folds == fold
        if held.all():  # one fold only: nothing to cross-fit with, fall back to in-sample
            crossfit[held] = _predict(fit_logistic(x, good), x[held])
        else:
            crossfit[held] = _predict(fit_logistic(x[~held], good[~held]), x[held])
    threshold = choose_threshold(crossfit, good.astype(bool))
    edges = np.linspace(0.0, 1.0, bins + 1)
    curve = []
    for lo, hi in itertools.pairwise(edges):
        inside = (crossfit >= lo) & ((crossfit < hi) if hi < 1.0 else (crossfit <= hi))
        if inside.any():
            curve.append({"bin": [round(float(lo), 2), round(float(hi), 2)], "cases": int(inside.sum()),
                          "predicted": float(crossfit[inside].mean()), "observed": float(good[inside].mean())})
    splits = sorted({r["split"] for r in records})
    validation = {"threshold": threshold, "success_ratio": SUCCESS_RATIO, "target_precision": TARGET_PRECISION,
                  "all": _summary(crossfit, good.astype(bool), threshold),
                  "per_split": {s: _summary(crossfit[[r["split"] == s for r in records]],
                                            good.astype(bool)[[r["split"] == s for r in records]], threshold)
                                for s in splits},
                  "curve": curve,
                  "brier": float(np.mean((crossfit - good) ** 2))}
    w = fit_logistic(x, good)
    calibration = Calibration(intercept=float(w[0]), coefficients=(float(w[1]), float(w[2]), float(w[3])),
                              threshold=threshold, use_cost_model=use_cost_model,
                              agreement_default=agreement_default, validation=validation)
    return calibration, validation
