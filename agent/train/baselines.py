"""Baseline search methods, each expressed as an evaluation order over a case's table.

An *order* is a list of distinct row indices into ``case.configs``: the order in which
a method would benchmark configurations. Replay metrics (:func:`order_metrics`) are
computed from orders, so every baseline here only returns one:

* :func:`random_order` (and the exact expectations :func:`random_expectation`,
  :func:`random_expected_evals` of uniform sampling without replacement),
* :func:`nearest_case_order`: reuse the best configurations of the most similar known cases,
* :class:`CostModelBaseline`: a TVM-style gradient-boosted cost model (LightGBM) ranking the table,
* :func:`opentuner_order`: OpenTuner's default ensemble driven through its API,
* :func:`kernel_tuner_order`: Kernel Tuner strategies in simulation mode on a cache file,

OpenTuner, Kernel Tuner and LightGBM are optional; they are imported only when used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.interchange.kerneltuner import write_kernel_tuner
from agent.predict.cost_features import config_features
from agent.search.opentuner_search import opentuner_parameter
from agent.train.cases import Case

__all__ = [
    "KERNEL_TUNER_STRATEGIES",
    "CostModelBaseline",
    "kernel_tuner_cache",
    "kernel_tuner_order",
    "nearest_case_order",
    "opentuner_order",
    "order_metrics",
    "random_expectation",
    "random_expected_evals",
    "random_order",
]

KERNEL_TUNER_STRATEGIES = ("random_sample", "genetic_algorithm", "simulated_annealing", "greedy_ils")
_FAILED_TIME = 1e30  # what search tools are told a failed configuration took


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


def _hashable(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _config_key(config: Mapping[str, Any], names: Sequence[str]) -> tuple | None:
    try:
        return tuple(_hashable(config[n]) for n in names)
    except KeyError:
        return None


def _row_index(case: Case) -> dict[tuple, int]:
    names = [p["name"] for p in case.params]
    index: dict[tuple, int] = {}
    for i, config in enumerate(case.configs):
        index.setdefault(_config_key(config, names), i)  # type: ignore[arg-type]
    return index


def _prompt_distance(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def _fill_random(order: list[int], n: int, budget: int, seed: int) -> None:
    chosen = set(order)
    for i in np.random.default_rng(seed).permutation(n):
        if len(order) >= budget:
            break
        if int(i) not in chosen:
            order.append(int(i))
            chosen.add(int(i))


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
    index = _row_index(case)
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
            i = index.get(_config_key(k.configs[int(row)], names))  # type: ignore[arg-type]
            if i is not None and i not in chosen:
                order.append(i)
                chosen.add(i)
                if len(order) >= budget:
                    break
        pool = [k for k, _ in alive]
        rankings = [r for _, r in alive]
    if len(order) < budget and all("default" in p for p in case.params):
        i = index.get(_config_key({p["name"]: p["default"] for p in case.params}, names))  # type: ignore[arg-type]
        if i is not None and i not in chosen:
            order.append(i)
    _fill_random(order, n, budget, seed)
    return order[:budget]


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


# --------------------------------------------------------------------------- shared by the tuners


@contextlib.contextmanager
def _seeded_quiet(seed: int, loggers: Sequence[str]) -> Iterator[None]:
    """Seed ``random`` and numpy's global generator, silence output; restore all afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    levels = {name: logging.getLogger(name).level for name in loggers}
    random.seed(seed)
    np.random.seed(seed % 2**32)
    for name in loggers:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class _Snapper:
    """Nearest table row to a configuration: log2 distance for positive numbers (scaled by the
    parameter's log2 range), linear otherwise, mismatch = 1 for strings; rows already
    evaluated are skipped, ties go to the lowest row index."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.names = [p["name"] for p in case.params]
        self.index = _row_index(case)
        self.columns: list[tuple[str, np.ndarray, float]] = []
        for p in case.params:
            raw = [c[p["name"]] for c in case.configs]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*raw, *p["values"]]):
                values = np.array([*raw, *p["values"]], dtype=np.float64)
                if (values > 0).all():
                    values = np.log2(values)
                    kind = "log"
                else:
                    kind = "lin"
                span = float(values.max() - values.min()) or 1.0
                self.columns.append((kind, values[: len(raw)] / span, span))
            else:
                self.columns.append(("cat", np.array([str(v) for v in raw], dtype=object), 1.0))
        self.taken = np.zeros(len(case.configs), dtype=bool)

    def snap(self, config: Mapping[str, Any]) -> int:
        exact = self.index.get(_config_key(config, self.names))  # type: ignore[arg-type]
        if exact is not None and not self.taken[exact]:
            return exact
        distance = np.zeros(len(self.case.configs))
        for name, (kind, column, span) in zip(self.names, self.columns, strict=True):
            v = config[name]
            if kind == "cat":
                distance += column != str(v)
            else:
                x = (math.log2(float(v)) if kind == "log" else float(v)) / span
                distance += np.abs(column - x)
        distance[self.taken] = np.inf
        return int(np.argmin(distance))


# --------------------------------------------------------------------------- OpenTuner


def opentuner_order(case: Case, budget: int, seed: int) -> list[int]:
    """OpenTuner's default technique ensemble (AUCBanditMetaTechniqueA) over the declared space.

    One parameter per space parameter with more than one value: IntegerParameter for runs of
    integers, PowerOfTwoParameter for doubling runs, IntegerParameter over the index for
    other ordered numbers, EnumParameter for strings. Each proposal costs one evaluation
    and is answered with the time of the nearest table row *not evaluated yet* (exact row
    when present; see :class:`_Snapper`), so every evaluation adds one new distinct row and
    the order has ``min(budget, rows)`` entries. OpenTuner itself answers exact repeats of a
    configuration from its results database (no evaluation). Failed rows report 1e30 s.
    Runs with an in-memory SQLite database, no log file, output silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy 2.0 deprecation warnings of its models
        import opentuner
        import opentuner.tuningrunmain as tuningrunmain
        from opentuner.api import TuningRunManager
        from opentuner.measurement.interface import DefaultMeasurementInterface
        from opentuner.resultsdb.models import Result
        from opentuner.search.manipulator import ConfigurationManipulator

    n = len(case.configs)
    budget = min(budget, n)
    if budget <= 0:
        return []
    tuningrunmain.init_logging = lambda: None  # it would add a file handler writing ./opentuner.log
    snapper = _Snapper(case)
    fixed = {p["name"]: p["values"][0] for p in case.params if len(p["values"]) == 1}
    tuned = [p for p in case.params if len(p["values"]) > 1]
    order: list[int] = []
    if not tuned:
        order.append(snapper.snap(fixed))
        _fill_random(order, n, budget, seed)
        return order
    with _seeded_quiet(seed, ["opentuner", "sqlalchemy"]):
        manipulator = ConfigurationManipulator()
        for p in tuned:
            manipulator.add_parameter(opentuner_parameter(p["name"], p["values"]))
        args = opentuner.default_argparser().parse_args([])
        args.database = "sqlite://"  # in memory
        args.no_dups = True
        args.label = "edgetune"
        interface = DefaultMeasurementInterface(args=args, manipulator=manipulator, project_name="edgetune",
                                                program_name=case.kernel, program_version="0")
        manager = TuningRunManager(interface, args)
        idle = 0
        while len(order) < budget and idle < 50:
            desired = manager.get_next_desired_result()
            if desired is None:
                idle += 1
                continue
            data = desired.configuration.data
            config = dict(fixed)
            for p in tuned:
                if p["name"] in data:
                    config[p["name"]] = data[p["name"]]
                else:
                    config[p["name"]] = p["values"][int(data[f"{p['name']}#index"])]
            row = snapper.snap(config)
            snapper.taken[row] = True
            order.append(row)
            time = float(case.times[row]) if math.isfinite(case.times[row]) else _FAILED_TIME
            manager.report_result(desired, Result(time=time))
        with contextlib.suppress(Exception):
            manager.session.close()
            manager.engine.dispose()
    _fill_random(order, n, budget, seed)  # only when OpenTuner stopped proposing
    return order


# --------------------------------------------------------------------------- Kernel Tuner


def kernel_tuner_cache(case: Case) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The case as a Kernel Tuner cache (times in ms, failures as ``RuntimeFailedConfig``),
    and the row of each cache configuration (a tuple of declared values, in ``params`` order).

    Written by the exporter's :func:`~agent.interchange.kerneltuner.write_kernel_tuner`; a
    configuration that occurs twice keeps its first row."""
    keys = [p["name"] for p in case.params]
    declared = [{_hashable(v): v for v in p["values"]} for p in case.params]
    runs: list[dict[str, Any]] = []
    rows: dict[tuple, int] = {}
    seen: set[str] = set()  # the cache's keys
    for i, (config, t) in enumerate(zip(case.configs, case.times, strict=True)):
        values = tuple(d.get(_hashable(config[k]), config[k]) for k, d in zip(keys, declared, strict=True))
        key = ",".join(str(v) for v in values)
        if key in seen:
            continue
        seen.add(key)
        rows[tuple(_hashable(v) for v in values)] = i
        finite = math.isfinite(t)
        runs.append({"config": dict(zip(keys, values, strict=True)), "status": "correct" if finite else "runtime",
                     "median_s": float(t) if finite else None})
    shape = {k: int(v) for k, v in case.shape.items()} or {"size": 1}
    data = write_kernel_tuner(runs, device_name=case.device_name, kernel_name=case.kernel, shape=shape,
                              params=case.params)
    return data, rows


def _kt_fevals(strategy: str, budget: int, size: int) -> int:
    # KT's simulated annealing cools to T_min after 3/4 of max_fevals and stops there
    # (T = 0.1 * alpha ** (max_iter * evals / max_fevals) with max_iter set by T_min, not T_min / T):
    # ask for 4/3 of the budget so its first ``budget`` evaluations fill the order.
    if strategy == "simulated_annealing":
        return min(size, math.ceil(budget * 4 / 3) + 1)
    return budget


def kernel_tuner_order(case: Case, strategy: str, budget: int, seed: int, *, pad: bool = True) -> list[int]:
    """Rows in the order Kernel Tuner's ``strategy`` evaluates them, replaying the case in simulation mode.

    The space is the declared values restricted to the table's rows (failed rows included:
    they cost an evaluation and report ``RuntimeFailedConfig``), so no proposal falls outside
    the table. ``max_fevals = budget`` counts distinct configurations, as Kernel Tuner does;
    the order is the first appearance of each configuration in KT's results. Simulated
    annealing is given 4/3 of the budget because it stops at 3/4 of ``max_fevals`` (its order
    is cut to ``budget``). Strategies may still stop early on tiny tables (the genetic
    algorithm stops once its evaluation count, repeats included, nears the space size); then
    ``pad`` continues with seeded random rows not yet evaluated, else the order is shorter.
    Seeded through ``random`` and numpy's global generator (restored afterwards); all output
    silenced; the cache lives in a temp dir.
    """
    import kernel_tuner
    from constraint import FunctionConstraint
    from kernel_tuner.interface import strategy_map

    if strategy not in strategy_map:
        raise ValueError(f"unknown Kernel Tuner strategy {strategy!r}; it has {', '.join(strategy_map)}")
    budget = min(budget, len(case.configs))
    if budget <= 0:
        return []
    data, rows = kernel_tuner_cache(case)
    valid = set(rows)

    def in_table(*values: Any) -> bool:
        return tuple(_hashable(v) for v in values) in valid

    keys = data["tune_params_keys"]
    order: list[int] = []
    seen: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="edgetune-kt-") as tmp, \
            _seeded_quiet(seed, ["kernel_tuner", ""]):
        path = Path(tmp) / "cache.json"
        path.write_text(json.dumps(data))
        results, _ = kernel_tuner.tune_kernel(
            data["kernel_name"], "", tuple(data["problem_size"]), [], data["tune_params"],
            restrictions=[FunctionConstraint(in_table)], simulation_mode=True, cache=str(path), strategy=strategy,
            strategy_options={"max_fevals": _kt_fevals(strategy, budget, len(rows))}, quiet=True, verbose=False)
    for result in results:
        row = rows.get(tuple(_hashable(result[k]) for k in keys))
        if row is not None and row not in seen:
            seen.add(row)
            order.append(row)
    order = order[:budget]
    if pad:
        _fill_random(order, len(case.configs), budget, seed)
    return order
