"""The one evaluator every search strategy goes through, and what it works in.

The evaluator enforces the budget, de-duplicates, checks constraints, compiles in parallel
through the backend (and only then measures, with nothing else running), verifies every
candidate against the reference in the isolated worker, times the valid ones interleaved,
and stores every outcome, valid or not, in its own transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.backends import Backend
from agent.bench.measure import Measurement, MeasureSettings, measure_interleaved
from agent.bench.session import CandidateFailed, WorkerSession
from agent.budget import Budget
from agent.hardware import HardwareProfile
from agent.kernels.space import Config, Space, config_key
from agent.store import RunRecord, Store

__all__ = ["CandidateResult", "EvaluationContext", "Evaluator", "ProgressCallback"]


@dataclass(frozen=True)
class CandidateResult:
    """One configuration's outcome in this tuning run."""

    config: Config
    status: str  # T4 invalidity: correct, compile, runtime, timeout, correctness, constraints
    reason: str = ""
    samples: tuple[float, ...] = ()
    median_s: float | None = None
    compile_s: float | None = None
    run_id: int | None = None

    @property
    def key(self) -> str:
        return config_key(self.config)


ProgressCallback = Callable[[CandidateResult, int], None]


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluation works in: one tuning's space, backend, store row, budget and protocol."""

    space: Space
    backend: Backend
    store: Store
    tuning_id: int
    device: str
    strategy: str  # as stored with every run
    budget: Budget
    cache_dir: Path  # the build cache
    seed: int = 0
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    batch_size: int = 8
    jobs: int | None = None  # parallel compiles; None = one per core
    profile: HardwareProfile | None = None


class Evaluator:
    """The one path from a proposed configuration to a stored measurement."""

    def __init__(self, context: EvaluationContext, session: WorkerSession,
                 on_result: ProgressCallback | None = None) -> None:
        self.context = context
        self.space = context.space
        self.problem = context.space.problem
        self.session = session
        self.on_result = on_result
        self.results: dict[str, CandidateResult] = {}
        self.evaluations = 0  # candidates that reached the compiler
        self.rng = random.Random(context.seed)
        self.started = time.monotonic()
        self.timings = {"compile_s": 0.0, "benchmark_s": 0.0}
        self.labels: dict[str, tuple[str, int | None]] = {}  # config key -> (source, predicted rank)
        self.final_batch: frozenset[str] = frozenset()  # keys measured together with the final protocol

    def label(self, config: Mapping[str, Any], source: str, rank: int | None = None) -> None:
        """Say where a configuration came from before evaluating it (the first label wins)."""
        self.labels.setdefault(config_key(self.space.check(config)), (source, rank))

    @property
    def budget(self) -> Budget:
        return self.context.budget

    @property
    def batch_size(self) -> int:
        return self.context.batch_size

    @property
    def remaining_evaluations(self) -> int | None:
        limit = self.budget.evaluations
        return None if limit is None else max(0, limit - self.evaluations)

    @property
    def exhausted(self) -> bool:
        budget = self.budget
        if budget.evaluations is not None and self.evaluations >= budget.evaluations:
            return True
        return budget.seconds is not None and time.monotonic() - self.started >= budget.seconds

    def seen(self, config: Mapping[str, Any]) -> bool:
        return config_key(config) in self.results

    @staticmethod
    def time_of(result: CandidateResult) -> float | None:
        return result.median_s if result.status == "correct" else None

    def best(self) -> list[CandidateResult]:
        """Valid results, fastest first."""
        valid = [r for r in self.results.values() if r.median_s is not None and r.status == "correct"]
        return sorted(valid, key=lambda r: r.median_s or 0.0)

    def evaluate(self, configs: Sequence[Mapping[str, Any]], *, final: bool = False) -> list[CandidateResult]:
        """Evaluate configurations not seen yet (within budget); returns results for all known ones.

        ``final``: time them with the final protocol (at least 10 rounds, twice the budget, no
        pruning). A strategy whose whole budget is this one batch uses it: when the finalists
        were all measured in it, side by side, ``tune`` does not measure them again.
        """
        fresh: list[Config] = []
        for config in configs:
            full = self.space.check(config)
            if config_key(full) in self.results or any(config_key(f) == config_key(full) for f in fresh):
                continue
            violated = self.space.violated(full)
            if violated is not None:
                self._record(CandidateResult(full, "constraints", f"violates {violated}"))
                continue
            if self.exhausted or (self.remaining_evaluations is not None
                                  and len(fresh) >= self.remaining_evaluations):
                break
            fresh.append(full)
        if fresh:
            self.evaluations += len(fresh)
            self._evaluate_fresh(fresh, final=final)
        return [self.results[k] for k in (config_key(self.space.check(c)) for c in configs)
                if k in self.results]

    def _final_settings(self) -> MeasureSettings:
        measure = self.context.measure
        return replace(measure, min_runs=max(10, measure.min_runs), budget_s=measure.budget_s * 2,
                       prune_ratio=float("inf"))

    def _evaluate_fresh(self, configs: list[Config], *, final: bool = False) -> None:
        started = time.perf_counter()
        builds = self.context.backend.compile(self.problem.spec, configs, self.context.cache_dir,
                                              jobs=self.context.jobs)
        self.timings["compile_s"] += time.perf_counter() - started
        started = time.perf_counter()
        verified: dict[str, tuple[Config, float]] = {}
        for config, build in zip(configs, builds, strict=True):
            key = config_key(config)
            if build.library is None:
                self._record(CandidateResult(config, "compile", build.error, compile_s=build.seconds))
                continue
            try:
                self.session.load(key, build.library)
                self.session.verify(key)
            except CandidateFailed as exc:
                self._record(CandidateResult(config, exc.status, exc.reason, compile_s=build.seconds))
                continue
            verified[key] = (config, build.seconds)
        settings = self._final_settings() if final else self.context.measure
        measured = measure_interleaved(self.session, list(verified), settings, self.rng)
        if final:
            self.final_batch = frozenset(verified)
        for key, (config, compile_s) in verified.items():
            self._record(_from_measurement(config, measured[key], compile_s))
            self.session.forget(key)
        self.timings["benchmark_s"] += time.perf_counter() - started

    def measure_finalists(self, finalists: Sequence[CandidateResult]) -> list[CandidateResult]:
        """Re-measure finalists together, interleaved, with a longer budget; stored as phase 'final'."""
        ids = {}
        started = time.perf_counter()
        for result in finalists:
            build = self.context.backend.compile(self.problem.spec, [result.config], self.context.cache_dir)[0]
            if build.library is None:
                continue
            try:
                self.session.load(result.key, build.library)
            except CandidateFailed:
                continue
            ids[result.key] = result
        measured = measure_interleaved(self.session, list(ids), self._final_settings(), self.rng)
        final = []
        for key, result in ids.items():
            candidate = _from_measurement(result.config, measured[key], result.compile_s)
            final.append(self._store(candidate, phase="final"))
            self.session.forget(key)
        self.timings["benchmark_s"] += time.perf_counter() - started  # cached builds: loading and timing
        return final

    def _record(self, result: CandidateResult) -> None:
        stored = self._store(result, phase="search")
        self.results[stored.key] = stored
        if self.on_result is not None:
            self.on_result(stored, self.evaluations)

    def _store(self, result: CandidateResult, phase: str) -> CandidateResult:
        source, rank = self.labels.get(result.key, (None, None))
        ctx, spec = self.context, self.problem.spec
        run_id = ctx.store.add_run(RunRecord(
            tuning_id=ctx.tuning_id, device=ctx.device, kernel_key=spec.key,
            kernel=spec.name, shape=self.problem.key, config=result.config,
            target=ctx.backend.target, backend=ctx.backend.name, compiler=ctx.backend.version,
            flags=ctx.backend.flags, strategy=ctx.strategy, status=result.status,
            reason=result.reason, samples=result.samples, median_s=result.median_s,
            compile_s=result.compile_s, phase=phase, source=source, predicted_rank=rank,
        ))
        return replace(result, run_id=run_id)


def _from_measurement(config: Config, measurement: Measurement, compile_s: float | None) -> CandidateResult:
    return CandidateResult(config=config, status=measurement.status, reason=measurement.reason,
                           samples=measurement.samples,
                           median_s=measurement.median if measurement.status == "correct" else None,
                           compile_s=compile_s)
