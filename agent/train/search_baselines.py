"""OpenTuner and Kernel Tuner replayed on a case's measured table, as evaluation orders.

* :func:`opentuner_order`: OpenTuner's default ensemble driven through its API,
* :func:`kernel_tuner_order`: Kernel Tuner strategies in simulation mode on a cache file.

Both are optional; they are imported only when used. An order is what
:func:`agent.train.baselines.order_metrics` scores.
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
from agent.search.opentuner_search import opentuner_parameter
from agent.train.baselines import FAILED_TIME, config_row_key, fill_random, hashable, row_index
from agent.train.cases import Case

__all__ = ["KERNEL_TUNER_STRATEGIES", "kernel_tuner_cache", "kernel_tuner_order", "opentuner_order"]

KERNEL_TUNER_STRATEGIES = ("random_sample", "genetic_algorithm", "simulated_annealing", "greedy_ils")


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
        self.index = row_index(case)
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
        exact = self.index.get(config_row_key(config, self.names))  # type: ignore[arg-type]
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
        fill_random(order, n, budget, seed)
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
            time = float(case.times[row]) if math.isfinite(case.times[row]) else FAILED_TIME
            manager.report_result(desired, Result(time=time))
        with contextlib.suppress(Exception):
            manager.session.close()
            manager.engine.dispose()
    fill_random(order, n, budget, seed)  # only when OpenTuner stopped proposing
    return order


# --------------------------------------------------------------------------- Kernel Tuner


def kernel_tuner_cache(case: Case) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The case as a Kernel Tuner cache (times in ms, failures as ``RuntimeFailedConfig``),
    and the row of each cache configuration (a tuple of declared values, in ``params`` order).

    Written by the exporter's :func:`~agent.interchange.kerneltuner.write_kernel_tuner`; a
    configuration that occurs twice keeps its first row."""
    keys = [p["name"] for p in case.params]
    declared = [{hashable(v): v for v in p["values"]} for p in case.params]
    runs: list[dict[str, Any]] = []
    rows: dict[tuple, int] = {}
    seen: set[str] = set()  # the cache's keys
    for i, (config, t) in enumerate(zip(case.configs, case.times, strict=True)):
        values = tuple(d.get(hashable(config[k]), config[k]) for k, d in zip(keys, declared, strict=True))
        key = ",".join(str(v) for v in values)
        if key in seen:
            continue
        seen.add(key)
        rows[tuple(hashable(v) for v in values)] = i
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
        return tuple(hashable(v) for v in values) in valid

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
        row = rows.get(tuple(hashable(result[k]) for k in keys))
        if row is not None and row not in seen:
            seen.add(row)
            order.append(row)
    order = order[:budget]
    if pad:
        fill_random(order, len(case.configs), budget, seed)
    return order
