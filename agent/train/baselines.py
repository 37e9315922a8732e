"""Baseline search methods, each expressed as an evaluation order over a case's table.

An *order* is a list of distinct row indices into ``case.configs``: the order in which
a method would benchmark configurations. Replay metrics (:func:`order_metrics`) are
computed from orders, so every baseline here only returns one:

* :func:`random_order` (and the exact expectations :func:`random_expectation`,
  :func:`random_expected_evals` of uniform sampling without replacement),
* :func:`nearest_case_order`: reuse the best configurations of the most similar known cases
  (prompt distance, neighbours in turn),
* :func:`reuse_order`: the device's reuse prior (:mod:`agent.predict.reuse`): the nearest known
  case by hardware, then shape, distance, its whole measured ranking first,
* :class:`CostModelBaseline`: a TVM-style gradient-boosted cost model (LightGBM) ranking the table,
* OpenTuner and Kernel Tuner replayed on the table: :mod:`agent.train.search_baselines`.

LightGBM is optional; it is imported only when used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from agent.predict.cost_features import config_features
from agent.predict.reuse import KEEP_PER_CASE, MeasuredCase, reuse_ranking
from agent.train.cases import Case

__all__ = [
    "FAILED_TIME",
    "CostModelBaseline",
    "config_row_key",
    "fill_random",
    "hashable",
    "nearest_case_order",
    "order_metrics",
    "random_expectation",
    "random_expected_evals",
    "random_order",
    "reuse_order",
    "row_index",
]

FAILED_TIME = 1e30  # what search tools are told a failed configuration took


# --------------------------------------------------------------------------- metrics


def _ratios(times: np.ndarray) -> np.ndarray:
    """``optimum / time`` per row; 0 where the row failed (or everything failed)."""
    times = np.asarray(times, dtype=np.float64)
    finite = np.isfinite(times)
    out = np.zeros(len(times))
    if finite.any():
        out[finite] = float(times[finite].min()) / times[finite]
    return out


def _log_comb(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    from math import lgamma

    lg = np.vectorize(lgamma, otypes=[np.float64])
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    return lg(n + 1) - lg(k + 1) - lg(n - k + 1)


def random_expectation(times: np.ndarray, k: int) -> float:
    """Exact expected ``optimum / best of k`` for k uniform draws without replacement (failed rows count 0)."""
    ratios = np.sort(_ratios(times))[::-1]  # best first
    n = len(ratios)
    if n == 0 or k <= 0:
        return 0.0
    k = min(int(k), n)
    i = np.arange(1, n - k + 2)  # the best draw is the i-th best row
    log_p = _log_comb(n - i, k - 1) - _log_comb(n, k)
    return float(np.sum(np.exp(log_p) * ratios[: n - k + 1]))


def random_expected_evals(times: np.ndarray, fraction: float) -> float:
    """Exact expected number of uniform draws without replacement until ``optimum / time >= fraction``.

    ``(n + 1) / (g + 1)`` with ``g`` good rows; ``inf`` when no row is good.
    """
    ratios = _ratios(times)
    good = int(np.sum(ratios >= fraction - 1e-12))
    if good == 0:
        return math.inf
    return (len(ratios) + 1) / (good + 1)


def order_metrics(case: Case, order: Sequence[int], ks: Sequence[int] = (1, 3, 5),
                  fractions: Sequence[float] = (0.95, 0.99)) -> dict[str, dict]:
    """``best_of_k`` (optimum / best of the first k rows of ``order``; 0 if none succeeded) and
    ``evals_to`` (1-based position of the first row reaching each fraction of the optimum, or None)."""
    ratios = _ratios(case.times)
    seen = ratios[np.asarray(list(order), dtype=np.int64)] if len(order) else np.zeros(0)
    best_of_k = {k: float(seen[:k].max()) if len(seen[:k]) else 0.0 for k in ks}
    evals_to: dict[float, int | None] = {}
    for f in fractions:
        hits = np.flatnonzero(seen >= f - 1e-12)
        evals_to[f] = int(hits[0]) + 1 if len(hits) else None
    return {"best_of_k": best_of_k, "evals_to": evals_to}


# --------------------------------------------------------------------------- simple orders


def random_order(case: Case, budget: int, seed: int) -> list[int]:
    """``budget`` distinct rows drawn uniformly (seeded)."""
    n = len(case.configs)
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[: min(budget, n)]]


def hashable(value: Any) -> Any:
    """A configuration value as a table key: numbers as floats (so 16 and 16.0 match), the rest as is."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def config_row_key(config: Mapping[str, Any], names: Sequence[str]) -> tuple | None:
    """The hashable values of ``names`` in ``config``; None when one is missing."""
    try:
        return tuple(hashable(config[n]) for n in names)
    except KeyError:
        return None


def row_index(case: Case) -> dict[tuple, int]:
    """The first row of each configuration of the case's table, by :func:`config_row_key`."""
    names = [p["name"] for p in case.params]
    index: dict[tuple, int] = {}
    for i, config in enumerate(case.configs):
        index.setdefault(config_row_key(config, names), i)  # type: ignore[arg-type]
    return index


def _prompt_distance(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def fill_random(order: list[int], n: int, budget: int, seed: int) -> None:
    """Append seeded random rows of ``n`` not in ``order`` until it holds ``budget``."""
    chosen = set(order)
    for i in np.random.default_rng(seed).permutation(n):
        if len(order) >= budget:
            break
        if int(i) not in chosen:
            order.append(int(i))
            chosen.add(int(i))


def _then_default_and_random(case: Case, order: list[int], budget: int, seed: int) -> list[int]:
    """``order`` filled up to ``budget``: the space's default configuration next, then seeded random rows."""
    names = [p["name"] for p in case.params]
    if len(order) < budget and all("default" in p for p in case.params):
        i = row_index(case).get(config_row_key({p["name"]: p["default"] for p in case.params}, names))  # type: ignore[arg-type]
        if i is not None and i not in order:
            order.append(i)
    fill_random(order, len(case.configs), budget, seed)
    return order[:budget]


def nearest_case_order(case: Case, known: Sequence[Case], budget: int, seed: int = 0) -> list[int]:
    """Reuse the best configurations of the nearest known cases.

    Known cases are those of the same kernel name (else those with the same parameter
    names), never ``case`` itself, sorted by prompt distance (differing tokens position
    by position plus the length difference; ties by case_id). The order takes each
    neighbour's best configuration in turn (when it is a row of this table and not taken
    yet), then each neighbour's 2nd best, 3rd best ... (rank by rank, neighbours nearest
    first), then the space's default configuration, then seeded random rows.
    """
    n = len(case.configs)
    budget = min(budget, n)
    others = [k for k in known if k.case_id != case.case_id]
    names = [p["name"] for p in case.params]
    pool = [k for k in others if k.kernel == case.kernel]
    if not pool:
        pool = [k for k in others if sorted(p["name"] for p in k.params) == sorted(names)]
    prompt = case.prompt()
    pool.sort(key=lambda k: (_prompt_distance(prompt, k.prompt()), k.case_id))
    index = row_index(case)
    order: list[int] = []
    chosen: set[int] = set()
    rankings: list[Iterator[int]] = []
    for k in pool:
        finite = np.flatnonzero(np.isfinite(k.times))
        ranked = finite[np.argsort(k.times[finite], kind="stable")]
        rankings.append(iter(ranked))
    while len(order) < budget and rankings:
        alive = []
        for k, ranked in zip(pool, rankings, strict=True):
            row = next(ranked, None)
            if row is None:
                continue
            alive.append((k, ranked))
            i = index.get(config_row_key(k.configs[int(row)], names))  # type: ignore[arg-type]
            if i is not None and i not in chosen:
                order.append(i)
                chosen.add(i)
                if len(order) >= budget:
                    break
        pool = [k for k, _ in alive]
        rankings = [r for _, r in alive]
    return _then_default_and_random(case, order, budget, seed)


def measured_case(case: Case, keep: int = KEEP_PER_CASE) -> MeasuredCase:
    """``case`` as the reuse prior sees a known case: its ``keep`` fastest correct configurations."""
    finite = np.flatnonzero(np.isfinite(case.times))
    ranked = finite[np.argsort(case.times[finite], kind="stable")][:keep]
    return MeasuredCase(kernel=case.kernel, shape=dict(case.shape), hardware=case.hardware,
                        ranked=tuple(dict(case.configs[int(i)]) for i in ranked), source=case.case_id)


def reuse_order(case: Case, known: Sequence[Case], budget: int, seed: int = 0) -> list[int]:
    """The device's reuse prior replayed: :func:`agent.predict.reuse.reuse_ranking` over ``known``
    (never ``case`` itself), rows of this table only, then the default, then seeded random rows."""
    n = len(case.configs)
    budget = min(budget, n)
    names = [p["name"] for p in case.params]
    index = row_index(case)
    pool = [measured_case(k) for k in known if k.case_id != case.case_id and k.kernel == case.kernel]

    def in_table(config: Mapping[str, Any]) -> bool:
        return config_row_key(config, names) in index

    order: list[int] = []
    for config, _ in reuse_ranking(pool, case.kernel, case.hardware, case.shape, valid=in_table, limit=budget):
        order.append(index[config_row_key(config, names)])  # type: ignore[index]
    return _then_default_and_random(case, order, budget, seed)


# --------------------------------------------------------------------------- cost model


def _case_features(case: Case) -> np.ndarray:
    """[configs, features] of a case's table (see :mod:`agent.predict.cost_features`)."""
    return config_features(case.hardware, case.kernel_info, case.shape, case.codec, case.configs)


class CostModelBaseline:
    """A TVM-style cost model: gradient-boosted trees (LightGBM) over hardware, kernel, shape
    and configuration features, trained on known cases, ranking a whole table.

    ``objective="lambdarank"`` (default) learns to rank within a case (relevance 0..30 from
    ``best / time``); ``"regression"`` predicts ``log(time / best)``. Training uses at most
    ``per_case`` rows of each case (``large_case`` for tables over 1000 rows): the best
    ``per_case / 2``, then seeded random correct rows. ``num_threads=1`` by default: on a
    shared 2-core machine 2 threads made one fit 20x slower (OpenMP spinning).
    """

    def __init__(self, *, objective: str = "lambdarank", per_case: int = 128, large_case: int = 512,
                 n_estimators: int = 200, seed: int = 0, num_threads: int = 1) -> None:
        if objective not in ("lambdarank", "regression"):
            raise ValueError(f"objective must be 'lambdarank' or 'regression', not {objective!r}")
        self.objective = objective
        self.per_case = per_case
        self.large_case = large_case
        self.n_estimators = n_estimators
        self.seed = seed
        self.num_threads = num_threads
        self.model: Any = None
        self._features: dict[str, np.ndarray] = {}

    def _features_of(self, case: Case) -> np.ndarray:
        if case.case_id not in self._features:
            self._features[case.case_id] = _case_features(case)
        return self._features[case.case_id]

    def _rows(self, case: Case, rng: np.random.Generator) -> np.ndarray:
        finite = np.flatnonzero(np.isfinite(case.times))
        size = self.per_case if len(case.configs) <= 1000 else self.large_case
        if len(finite) <= size:
            return finite
        ranked = finite[np.argsort(case.times[finite], kind="stable")]
        top = ranked[: self.per_case // 2]
        rest = rng.choice(ranked[len(top):], size=size - len(top), replace=False)
        return np.sort(np.concatenate([top, rest]))

    def fit(self, known: Sequence[Case]) -> CostModelBaseline:
        """Train on the correct rows of ``known`` (a subsample per case)."""
        import lightgbm as lgb

        rng = np.random.default_rng(self.seed)
        xs, ys, groups = [], [], []
        for case in sorted(known, key=lambda c: c.case_id):
            rows = self._rows(case, rng)
            if len(rows) < 2:
                continue
            xs.append(self._features_of(case)[rows])
            ratio = case.best_time / case.times[rows]
            ys.append(np.floor(30 * ratio).astype(np.int64) if self.objective == "lambdarank" else -np.log(ratio))
            groups.append(len(rows))
        if not xs:
            raise ValueError("no known case has two correct configurations to learn from")
        params = dict(n_estimators=self.n_estimators, learning_rate=0.05, num_leaves=31, min_child_samples=10,
                      subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=self.seed,
                      deterministic=True, force_row_wise=True, num_threads=self.num_threads, verbose=-1)
        x, y = np.concatenate(xs), np.concatenate(ys)
        if self.objective == "lambdarank":
            self.model = lgb.LGBMRanker(objective="lambdarank", **params)
            self.model.fit(x, y, group=groups)
        else:
            self.model = lgb.LGBMRegressor(objective="regression", **params)
            self.model.fit(x, y)
        return self

    def scores(self, case: Case) -> np.ndarray:
        """Predicted goodness of every row (higher is better)."""
        if self.model is None:
            raise RuntimeError("CostModelBaseline.fit must be called before ranking")
        predicted = np.asarray(self.model.predict(self._features_of(case)), dtype=np.float64)
        return predicted if self.objective == "lambdarank" else -predicted

    def order(self, case: Case, budget: int) -> list[int]:
        """The ``budget`` rows with the best predictions, best first (ties by row index)."""
        scores = self.scores(case)
        return [int(i) for i in np.argsort(-scores, kind="stable")[: min(budget, len(scores))]]
