"""The tuning loop: ``tune()`` runs one strategy through the one evaluator and names the winner.

``tune()`` measures the kernel's default first (the baseline; the model strategy puts it
in its first batch instead, so it compiles beside the predictions), runs the strategy, then
re-measures the best few together with the default, interleaved, to name the winner and
its speed-up honestly. Where the time went (predict, cloud, compile, benchmark) and where
each candidate came from are stored with the tuning. The backend builds and runs the
candidates; the evaluator (:mod:`agent.evaluator`) owns budget, checks and storage.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.backends import Backend
from agent.bench.measure import TIE_RATIO, MeasureSettings
from agent.budget import Budget
from agent.evaluator import CandidateResult, EvaluationContext, Evaluator, ProgressCallback
from agent.hardware import HardwareProfile
from agent.kernels.problem import Problem
from agent.kernels.space import Space, config_key
from agent.search import StrategyOptions, StrategyReport, get_strategy
from agent.settings import CANDIDATE_TIMEOUT_S
from agent.store import Store

__all__ = ["Budget", "CandidateResult", "Evaluator", "TuneOptions", "TuneResult", "default_budget", "tune"]

FINALISTS = 3


def default_budget(strategy: str) -> Budget:
    """What strategy ``strategy`` spends when nobody says (it declares it; see :mod:`agent.budget`)."""
    return get_strategy(strategy).default_budget


@dataclass(frozen=True)
class TuneOptions:
    """Everything a tuning run can be told; defaults suit a quick run on a small device."""

    strategy: str = "model"
    budget: Budget | None = None  # None: the strategy's default budget
    target: str = "native"
    seed: int = 0
    cache: str = "auto"  # auto: flush caches when the working set fits in the LLC
    timeout_s: float = CANDIDATE_TIMEOUT_S  # per candidate run
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    batch_size: int = 8
    jobs: int | None = None  # parallel compiles; None = one per core
    configs: tuple[Mapping[str, Any], ...] = ()  # measure exactly these instead of searching
    strategy_options: StrategyOptions | None = None  # the strategy's own (None: its defaults)


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
    situation: str | None = None  # model strategy: seen, unseen-device, unseen-kernel (agent.predict.policy)
    ranked_by: str | None = None  # model strategy: the source its first candidates came from there
    notes: tuple[str, ...] = ()  # warnings, e.g. a fallback from the model to search

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = dict(self.outcomes)
        data["timings"] = dict(self.timings)
        data["notes"] = list(self.notes)
        return data


def tune(problem: Problem, *, profile: HardwareProfile, store: Store, backend: Backend,
         cache_dir: Path, options: TuneOptions = TuneOptions(),
         on_result: ProgressCallback | None = None) -> TuneResult:
    """Tune ``problem`` on this device with ``options.strategy``; every outcome is stored."""
    search = get_strategy(options.strategy)(options.strategy_options)
    budget = options.budget if options.budget is not None else search.default_budget
    spec = problem.spec
    space = Space.build(problem, max_threads=profile.logical_cores, vector_bits=backend.vector_bits(profile))
    requested = [space.check(c) for c in options.configs]  # bad names/values fail before any work
    strategy = "manual" if requested else options.strategy
    flush, flush_bytes = backend.flush(problem, profile, options.cache)
    started = time.monotonic()
    device = profile.fingerprint()
    store.upsert_device(device, profile.to_dict())
    store.upsert_kernel(spec.key, spec.name, spec.source_hash, spec.space_summary(), str(spec.directory))
    tuning_id = store.start_tuning(device=device, kernel_key=spec.key, kernel=spec.name,
                                   shape=problem.key, target=backend.target, backend=backend.name,
                                   compiler=backend.version, strategy=strategy,
                                   budget=str(budget), seed=options.seed,
                                   model_version=None if requested else search.model_version())
    context = EvaluationContext(space=space, backend=backend, store=store, tuning_id=tuning_id, device=device,
                                strategy=strategy, budget=budget, cache_dir=cache_dir / "build", seed=options.seed,
                                measure=replace(options.measure, flush=flush), batch_size=options.batch_size,
                                jobs=options.jobs, profile=profile)
    report = StrategyReport()
    try:
        with backend.worker(spec, problem.shape, seed=options.seed, flush_bytes=flush_bytes,
                            timeout_s=options.timeout_s) as session:
            session.start()  # its start-up overlaps the strategy's first steps (predicting, compiling)
            evaluator = Evaluator(context, session, on_result)
            default = space.default()
            if space.is_valid(default):
                evaluator.label(default, "default")
                if requested or not search.measures_default:
                    evaluator.evaluate([default])
            if requested:
                evaluator.evaluate(requested)
            else:
                report = search.search(evaluator, space, random.Random(options.seed))
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
    timings = {k: round(v, 4) for k, v in {"predict_s": report.timings.get("predict_s", 0.0),
                                            "cloud_s": report.timings.get("cloud_s", 0.0),
                                            **evaluator.timings}.items()}
    store.finish_tuning(
        tuning_id, evaluations=evaluator.evaluations, wall_s=wall_s,
        winner_run=winner.run_id if winner else None, winner_config=winner.config if winner else None,
        winner_median_s=winner.median_s if winner else None,
        default_median_s=final_default.median_s if final_default else None, speedup=speedup, tie=tie,
        details={**timings, "confidence": report.confidence, "cloud": report.cloud,
                 "situation": report.situation, "ranked_by": report.ranked_by,
                 "winner_source": winner_source, "winner_predicted_rank": winner_rank,
                 "note": "; ".join(report.notes) or None},
    )
    outcomes = Counter(r.status for r in evaluator.results.values())
    gflops = None
    if winner and winner.median_s and spec.flops is not None:
        gflops = float(spec.flops.evaluate(problem.shape)) / winner.median_s / 1e9
    return TuneResult(
        tuning_id=tuning_id, kernel=spec.name, kernel_key=spec.key, shape=problem.key,
        target=backend.target, strategy=strategy, budget=str(budget),
        device=device, winner=winner, default=final_default, speedup=speedup, tie=tie,
        evaluations=evaluator.evaluations, outcomes=dict(outcomes), wall_s=wall_s, gflops=gflops,
        timings=timings, winner_source=winner_source, winner_predicted_rank=winner_rank,
        confidence=report.confidence, cloud=report.cloud, situation=report.situation, ranked_by=report.ranked_by,
        notes=report.notes,
    )
