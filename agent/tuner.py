"""The tuning loop: one evaluator that every search strategy goes through, and ``tune()``.

The evaluator enforces the budget, de-duplicates, checks constraints, compiles in
parallel (and only then measures, with nothing else running), verifies every candidate
against the reference in the isolated worker, times the valid ones interleaved, and
stores every outcome, valid or not, in its own transaction.

``tune()`` measures the kernel's default first (the baseline; the model strategy puts it
in its first batch instead, so it compiles beside the predictions), runs the strategy, then
re-measures the best few together with the default, interleaved, to name the winner and
its speed-up honestly. Where the time went (predict, cloud, compile, benchmark) and where
each candidate came from are stored with the tuning.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.bench.compile import Toolchain, compile_many
from agent.bench.measure import TIE_RATIO, Measurement, MeasureSettings, measure_interleaved
from agent.bench.session import CandidateFailed, WorkerSession
from agent.errors import ConfigError
from agent.hardware import HardwareProfile
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import Problem
from agent.kernels.space import Config, Space, config_key
from agent.predict.model_files import model_version
from agent.search import get_strategy
from agent.settings import CANDIDATE_TIMEOUT_S
from agent.store import RunRecord, Store

__all__ = ["Budget", "CandidateResult", "Evaluator", "TuneOptions", "TuneResult", "default_budget", "tune"]

CACHE_MODES = ("auto", "cold", "hot")
FINALISTS = 3


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: a number of evaluations, seconds, or both (None = no limit)."""

    evaluations: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """``"50"`` evaluations, ``"30s"`` or ``"2m"`` of wall time, ``None`` or ``"all"`` unlimited."""
        if text is None or text.strip().lower() in ("", "all", "none"):
            return cls()
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*", text.lower())
        if not match:
            raise ConfigError(f"budget {text!r}: use a number of evaluations (50) or a time (30s, 2m)")
        number, unit = float(match.group(1)), match.group(2)
        if number <= 0:
            raise ConfigError(f"budget {text!r} must be positive")
        if unit is None:
            if not number.is_integer():
                raise ConfigError(f"budget {text!r}: a number of evaluations is a whole number")
            return cls(evaluations=int(number))
        return cls(seconds=number * (60 if unit == "m" else 1))

    def __str__(self) -> str:
        parts = []
        if self.evaluations is not None:
            parts.append(str(self.evaluations))
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        return "+".join(parts) or "all"


def default_budget(strategy: str) -> Budget:
    """What a strategy spends when nobody says: the model 5 evaluations (the default among
    them), exhaustive search everything, the other searches 40."""
    if strategy == "model":
        return Budget(evaluations=5)
    return Budget() if strategy == "exhaustive" else Budget(evaluations=40)


@dataclass(frozen=True)
class TuneOptions:
    """Everything a tuning run can be told; defaults suit a quick run on a small device."""

    strategy: str = "model"
    budget: Budget | None = None  # None: default_budget(strategy)
    target: str = "native"
    seed: int = 0
    cache: str = "auto"  # auto: flush caches when the working set fits in the LLC
    timeout_s: float = CANDIDATE_TIMEOUT_S  # per candidate run
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    batch_size: int = 8
    jobs: int | None = None  # parallel compiles; None = one per core
    configs: tuple[Mapping[str, Any], ...] = ()  # measure exactly these instead of searching
    models: Path | None = None  # model strategy: the folder of the model files (None: the shipped ones)
    cloud: Any = None  # model strategy: agent.predict.cloud.CloudSettings, asked when confidence is low
    state_dir: Path | None = None  # where the cloud client keeps its circuit-breaker state
    top_k: int = 5  # model strategy: predictions benchmarked in the first batch (the budget may cut it)
    predictor: Any = field(default=None, compare=False, repr=False)  # a loaded Predictor to reuse


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


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run found; ``to_dict()`` is what ``--json`` prints."""

    tuning_id: int
    kernel: str
    kernel_key: str
    shape: str
    target: str
    strategy: str
    budget: str
    device: str
    winner: CandidateResult | None
    default: CandidateResult | None
    speedup: float | None
    tie: bool
    evaluations: int
    outcomes: Mapping[str, int]
    wall_s: float
    gflops: float | None
    timings: Mapping[str, float] = field(default_factory=dict)  # predict_s, cloud_s, compile_s, benchmark_s
    winner_source: str | None = None  # model strategy: local, cloud, refine or default
    winner_predicted_rank: int | None = None
    confidence: float | None = None
    cloud: str | None = None  # model strategy: what asking the cloud gave (None: not asked)
    notes: tuple[str, ...] = ()  # warnings, e.g. a fallback from the model to search

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = dict(self.outcomes)
        data["timings"] = dict(self.timings)
        data["notes"] = list(self.notes)
        return data


ProgressCallback = Callable[[CandidateResult, int], None]


class Evaluator:
    """The one path from a proposed configuration to a stored measurement."""

    def __init__(self, *, space: Space, toolchain: Toolchain, session: WorkerSession,
                 store: Store, tuning_id: int, device: str, strategy: str, options: TuneOptions,
                 cache_dir: Path, on_result: ProgressCallback | None = None,
                 profile: HardwareProfile | None = None) -> None:
        self.space = space
        self.problem = space.problem
        self.toolchain = toolchain
        self.session = session
        self.store = store
        self.tuning_id = tuning_id
        self.device = device
        self.strategy = strategy
        self.options = options
        self.cache_dir = cache_dir
        self.on_result = on_result
        self.results: dict[str, CandidateResult] = {}
        self.evaluations = 0  # candidates that reached the compiler
        self.rng = random.Random(options.seed)
        self.started = time.monotonic()
        self.profile = profile
        self.timings = {"predict_s": 0.0, "cloud_s": 0.0, "compile_s": 0.0, "benchmark_s": 0.0}
        self.labels: dict[str, tuple[str, int | None]] = {}  # config key -> (source, predicted rank)
        self.details: dict[str, Any] = {}  # the strategy's record: confidence, cloud outcome
        self.notes: list[str] = []
        self.final_batch: frozenset[str] = frozenset()  # keys measured together with the final protocol

    def label(self, config: Mapping[str, Any], source: str, rank: int | None = None) -> None:
        """Say where a configuration came from before evaluating it (the first label wins)."""
        self.labels.setdefault(config_key(self.space.check(config)), (source, rank))

    def note(self, text: str) -> None:
        """A warning for the user and the tuning record (e.g. a fallback)."""
        self.notes.append(text)

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def remaining_evaluations(self) -> int | None:
        limit = self.options.budget.evaluations
        return None if limit is None else max(0, limit - self.evaluations)

    @property
    def exhausted(self) -> bool:
        budget = self.options.budget
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
        measure = self.options.measure
        return replace(measure, min_runs=max(10, measure.min_runs), budget_s=measure.budget_s * 2,
                       prune_ratio=float("inf"))

    def _evaluate_fresh(self, configs: list[Config], *, final: bool = False) -> None:
        started = time.perf_counter()
        builds = compile_many(self.problem.spec, configs, self.toolchain, self.cache_dir,
                              jobs=self.options.jobs)
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
        settings = self._final_settings() if final else self.options.measure
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
            build = compile_many(self.problem.spec, [result.config], self.toolchain, self.cache_dir)[0]
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
        run_id = self.store.add_run(RunRecord(
            tuning_id=self.tuning_id, device=self.device, kernel_key=self.problem.spec.key,
            kernel=self.problem.spec.name, shape=self.problem.key, config=result.config,
            target=self.toolchain.target, compiler=self.toolchain.version,
            flags=self.toolchain.flags, strategy=self.strategy, status=result.status,
            reason=result.reason, samples=result.samples, median_s=result.median_s,
            compile_s=result.compile_s, phase=phase, source=source, predicted_rank=rank,
        ))
        return replace(result, run_id=run_id)


def _from_measurement(config: Config, measurement: Measurement, compile_s: float | None) -> CandidateResult:
    return CandidateResult(config=config, status=measurement.status, reason=measurement.reason,
                           samples=measurement.samples,
                           median_s=measurement.median if measurement.status == "correct" else None,
                           compile_s=compile_s)


def flush_bytes_for(problem: Problem, profile: HardwareProfile, mode: str) -> tuple[bool, int]:
    """Whether to flush caches between runs, and the size of the buffer that does it."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache mode {mode!r}: choose one of {', '.join(CACHE_MODES)}")
    llc = profile.l3_bytes or profile.l2_bytes or 8 * 2**20
    flush = mode == "cold" or (mode == "auto" and problem.nbytes <= llc)
    return flush, (max(2 * llc, 8 * 2**20) if flush else 0)


def tune(problem: Problem, *, profile: HardwareProfile, store: Store, toolchain: Toolchain,
         cache_dir: Path, options: TuneOptions = TuneOptions(),
         on_result: ProgressCallback | None = None) -> TuneResult:
    """Tune ``problem`` on this device with ``options.strategy``; every outcome is stored."""
    search = get_strategy(options.strategy)
    if options.budget is None:
        options = replace(options, budget=default_budget(options.strategy))
    assert options.budget is not None
    spec = problem.spec
    space = Space.build(problem, max_threads=profile.logical_cores,
                        vector_bits=target_vector_bits(toolchain.target, profile))
    requested = [space.check(c) for c in options.configs]  # bad names/values fail before any work
    strategy = "manual" if requested else options.strategy
    started = time.monotonic()
    device = profile.fingerprint()
    store.upsert_device(device, profile.to_dict())
    store.upsert_kernel(spec.key, spec.name, spec.source_hash, spec.space_summary(), str(spec.directory))
    tuning_id = store.start_tuning(device=device, kernel_key=spec.key, kernel=spec.name,
                                   shape=problem.key, target=toolchain.target,
                                   compiler=toolchain.version, strategy=strategy,
                                   budget=str(options.budget), seed=options.seed,
                                   model_version=model_version(options.models) if strategy == "model" else None)
    flush, flush_bytes = flush_bytes_for(problem, profile, options.cache)
    measure = replace(options.measure, flush=flush)
    options = replace(options, measure=measure)
    try:
        with WorkerSession(spec.spec_path, problem.shape, seed=options.seed,
                           flush_bytes=flush_bytes, timeout_s=options.timeout_s) as session:
            session.start()  # its start-up overlaps the strategy's first steps (predicting, compiling)
            evaluator = Evaluator(space=space, toolchain=toolchain, session=session, store=store,
                                  tuning_id=tuning_id, device=device, strategy=strategy,
                                  options=options, cache_dir=cache_dir / "build", on_result=on_result,
                                  profile=profile)
            default = space.default()
            if space.is_valid(default):
                evaluator.label(default, "default")
                if requested or not getattr(search, "measures_default", False):
                    evaluator.evaluate([default])
            if requested:
                evaluator.evaluate(requested)
            else:
                search(evaluator, space, random.Random(options.seed))
            default_result = evaluator.results.get(config_key(default))
            # Asked-for configurations are all re-measured together; a search's best few are.
            finalists = evaluator.best() if requested else evaluator.best()[:FINALISTS]
            if default_result is not None and default_result.status == "correct" and \
                    default_result.key not in {f.key for f in finalists}:
                finalists.append(default_result)
            if finalists and {f.key for f in finalists} <= evaluator.final_batch:
                final = finalists  # already measured side by side with the final protocol
            else:
                final = evaluator.measure_finalists(finalists) if finalists else []
    except BaseException:
        store.fail_tuning(tuning_id, "interrupted")
        raise
    ranked = sorted((f for f in final if f.median_s is not None), key=lambda r: r.median_s or 0.0)
    winner = ranked[0] if ranked else None
    final_default = next((f for f in final if f.key == config_key(default)), None)
    speedup = (final_default.median_s / winner.median_s
               if winner and final_default and final_default.median_s and winner.median_s else None)
    tie = bool(len(ranked) > 1 and ranked[1].median_s and winner and winner.median_s
               and ranked[1].median_s <= winner.median_s * (1 + TIE_RATIO))
    wall_s = time.monotonic() - started
    winner_source, winner_rank = evaluator.labels.get(winner.key, (None, None)) if winner else (None, None)
    timings = {k: round(v, 4) for k, v in evaluator.timings.items()}
    store.finish_tuning(
        tuning_id, evaluations=evaluator.evaluations, wall_s=wall_s,
        winner_run=winner.run_id if winner else None, winner_config=winner.config if winner else None,
        winner_median_s=winner.median_s if winner else None,
        default_median_s=final_default.median_s if final_default else None, speedup=speedup, tie=tie,
        details={**timings, "confidence": evaluator.details.get("confidence"),
                 "cloud": evaluator.details.get("cloud"), "winner_source": winner_source,
                 "winner_predicted_rank": winner_rank, "note": "; ".join(evaluator.notes) or None},
    )
    outcomes = Counter(r.status for r in evaluator.results.values())
    gflops = None
    if winner and winner.median_s and spec.flops is not None:
        gflops = float(spec.flops.evaluate(problem.shape)) / winner.median_s / 1e9
    return TuneResult(
        tuning_id=tuning_id, kernel=spec.name, kernel_key=spec.key, shape=problem.key,
        target=toolchain.target, strategy=strategy, budget=str(options.budget),
        device=device, winner=winner, default=final_default, speedup=speedup, tie=tie,
        evaluations=evaluator.evaluations, outcomes=dict(outcomes), wall_s=wall_s, gflops=gflops,
        timings=timings, winner_source=winner_source, winner_predicted_rank=winner_rank,
        confidence=evaluator.details.get("confidence"), cloud=evaluator.details.get("cloud"),
        notes=tuple(evaluator.notes),
    )
