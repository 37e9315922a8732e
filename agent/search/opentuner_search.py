"""OpenTuner search: OpenTuner 0.8.8's default ensemble (an AUC bandit over differential
evolution, random Nelder-Mead and two greedy mutations) driven through its ask/tell API.

Each space parameter with more than one value becomes one OpenTuner parameter (see
:func:`opentuner_parameter`; the replay baseline in ``agent.train.baselines`` maps the same
way). OpenTuner proposes a small batch at a time (its ``parallelism``), so the batch
compiles in parallel in one ``evaluator.evaluate`` call; every proposal is answered with its
measured median, or ``FAILED_TIME`` when it broke a constraint or failed. OpenTuner is
seeded with the kernel's default (measured already) and answers its own repeats from its
results database. The search ends when the budget is spent or after ``IDLE_ROUNDS``
batches in a row that cost no evaluation (a small space runs dry).

Seeded from ``rng``: OpenTuner's global ``random``/numpy state is kept apart from the
caller's and swapped in only around its own calls. Its database is in memory, its logging
and output are silenced, and it writes no files.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import random
import warnings
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import numpy as np

from agent.errors import ConfigError
from agent.evaluator import Evaluator
from agent.kernels.space import Config, Space, config_key
from agent.kernels.spec import Param
from agent.search.base import Strategy, StrategyReport

FAILED_TIME = 1e30  # seconds reported to OpenTuner for an illegal or failed configuration
BATCH = 4  # proposals per round (at most the evaluator's batch size)
IDLE_ROUNDS = 50  # rounds in a row without a new evaluation before giving up
MISSING = "the opentuner strategy needs OpenTuner 0.8.8: pip install 'edgetune[train]'"
_LOGGERS = ("opentuner", "sqlalchemy")


class OpenTunerSearch(Strategy):
    name = "opentuner"

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        _search(evaluator, space, rng)
        return StrategyReport()


def _search(evaluator: Evaluator, space: Space, rng: random.Random) -> None:
    api = _import_opentuner()
    tuned = [p for p in space.params if len(p.values) > 1]
    if not tuned:  # nothing to choose: the default (measured already) is the only point
        evaluator.evaluate([space.default()])
        return
    isolated = _Isolated(api, rng.getrandbits(32))
    with isolated():
        manager = _manager(api, space, tuned, min(BATCH, evaluator.batch_size))
    try:
        idle = 0
        while not evaluator.exhausted and idle < IDLE_ROUNDS:
            with isolated():
                desired = manager.get_desired_results()
            proposals = [(d, _config(space, tuned, d.configuration.data)) for d in desired]
            before = evaluator.evaluations
            results = {r.key: r for r in evaluator.evaluate([c for _, c in proposals])}
            idle = 0 if evaluator.evaluations > before else idle + 1
            with isolated():
                for d, config in proposals:
                    result = results.get(config_key(config))
                    if result is None:  # left out: the budget ran out within this batch
                        continue
                    seconds = evaluator.time_of(result)
                    manager.report_result(d, api.Result(time=FAILED_TIME if seconds is None else seconds))
    finally:
        with isolated(), contextlib.suppress(Exception):
            manager.session.close()
            manager.engine.dispose()


class _API:
    """The few OpenTuner names this strategy uses, imported once."""

    def __init__(self) -> None:
        import opentuner
        import opentuner.tuningrunmain as tuningrunmain
        from opentuner.api import TuningRunManager
        from opentuner.measurement.interface import DefaultMeasurementInterface
        from opentuner.resultsdb.models import Result
        from opentuner.search import differentialevolution
        from opentuner.search.manipulator import ConfigurationManipulator

        self.differentialevolution = differentialevolution
        self.opentuner, self.tuningrunmain = opentuner, tuningrunmain
        self.TuningRunManager, self.DefaultMeasurementInterface = TuningRunManager, DefaultMeasurementInterface
        self.Result, self.ConfigurationManipulator = Result, ConfigurationManipulator


def _import_opentuner() -> _API:
    formatter = logging.Formatter  # OpenTuner replaces logging.Formatter when imported; put it back
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy deprecation warnings of its models
            return _API()
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    finally:
        logging.Formatter = formatter


def opentuner_parameter(name: str, values: Sequence[Any]) -> Any:
    """IntegerParameter for a run of integers, PowerOfTwoParameter for a doubling run,
    IntegerParameter over the index (``NAME#index``) for other numbers, in declared order,
    EnumParameter for strings. (Replay in ``agent.train.baselines`` maps parameters the same way.)"""
    from opentuner.search.manipulator import EnumParameter, IntegerParameter, PowerOfTwoParameter

    values = list(values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and all(float(v).is_integer() for v in values):
        ints = sorted(int(v) for v in values)
        if ints == list(range(ints[0], ints[-1] + 1)):
            return IntegerParameter(name, ints[0], ints[-1])
        if ints[0] > 0 and all(b == 2 * a for a, b in itertools.pairwise(ints)):
            return PowerOfTwoParameter(name, ints[0], ints[-1])
    if numeric:  # ordered, irregular steps: search the index, keep the order
        return IntegerParameter(f"{name}#index", 0, len(values) - 1)
    return EnumParameter(name, values)


def _manager(api: _API, space: Space, tuned: list[Param], parallelism: int) -> Any:
    """A TuningRunManager over ``tuned`` with an in-memory database, seeded with the default."""
    manipulator = api.ConfigurationManipulator()
    for p in tuned:
        manipulator.add_parameter(opentuner_parameter(p.name, p.values))
    args = api.opentuner.default_argparser().parse_args([])
    args.database = "sqlite://"  # in memory
    args.no_dups = True
    args.label = "edgetune"
    args.parallelism = parallelism
    interface = api.DefaultMeasurementInterface(args=args, manipulator=manipulator, project_name="edgetune",
                                                program_name=space.problem.spec.name, program_version="0")
    direct = {q.name for q in manipulator.params}
    seed = {}
    for p in tuned:
        value = space.default()[p.name]
        if p.name in direct:
            seed[p.name] = value
        else:
            seed[f"{p.name}#index"] = p.values.index(value)
    interface.seed_configurations = lambda: [seed]
    # init_logging would add a console handler and a file handler writing ./opentuner.log
    with mock.patch.object(api.tuningrunmain, "init_logging", lambda: None):
        return api.TuningRunManager(interface, args)


def _config(space: Space, tuned: list[Param], data: dict[str, Any]) -> Config:
    """The space configuration of an OpenTuner configuration (index parameters decoded)."""
    chosen = {p.name: data[p.name] if p.name in data else p.values[int(data[f"{p.name}#index"])] for p in tuned}
    return space.check(chosen)


class _Clock:
    """Stands in for ``time`` in OpenTuner's differential evolution: a counter, not the wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


class _Isolated:
    """Global ``random`` and numpy state, logging and output for OpenTuner alone.

    Calling it gives a context that swaps OpenTuner's generator state in (and the caller's
    out), silences its loggers, warnings, stdout and stderr, and swaps everything back. It
    also makes differential evolution deterministic: it orders its population by
    ``time.time()`` and draws parents from a set of members hashed by address; inside the
    context both come from a counter.
    """

    def __init__(self, api: _API, seed: int) -> None:
        self.api = api
        self.clock = _Clock()
        saved = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        self.state = random.getstate(), np.random.get_state()
        random.setstate(saved[0])
        np.random.set_state(saved[1])

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        saved = random.getstate(), np.random.get_state()
        levels = {name: logging.getLogger(name).level for name in _LOGGERS}
        random.setstate(self.state[0])
        np.random.set_state(self.state[1])
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        de = self.api.differentialevolution
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()), mock.patch.object(de, "time", self.clock), \
                    mock.patch.object(de.PopulationMember, "__hash__", lambda member: hash(member.timestamp)):
                warnings.simplefilter("ignore")
                yield
        finally:
            self.state = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
