"""Dataset collection: sweep kernels x shapes x compiler targets x core counts into the store.

Each *case* (kernel, shape, -march target, cores) is one tuning session with strategy
``collect``. Its configurations are the whole legal space when that is small, else the
default plus the configurations first in a seeded hash order, so a re-run draws the
same ones (and cases of one kernel share most of them, and their builds). Every
outcome is stored in its own transaction as it is measured: a re-run after an
interruption measures only what is missing, and a finished case is skipped unless
``remeasure`` is asked for.

Fewer cores than the machine has are emulated by pinning the worker to that many
CPUs and dropping thread counts above it from the space; narrower targets by
compiling for them (their constraints see a narrower ``VECTOR_BITS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.backends import Backend, detect_backend
from agent.bench.measure import MeasureSettings
from agent.budget import COLLECT
from agent.errors import ConfigError
from agent.evaluator import CandidateResult, EvaluationContext, Evaluator
from agent.hardware import HardwareProfile
from agent.hardware.targets import available_targets
from agent.kernels.problem import Problem
from agent.kernels.space import Space, config_key
from agent.settings import CANDIDATE_TIMEOUT_S
from agent.store import Store

__all__ = ["COLLECT_MEASURE", "Case", "CaseResult", "CollectOptions", "CollectReport", "Sweep", "case_configs",
           "case_space", "collect", "collect_case", "detect_backends", "dry_run", "plan_cases", "plan_sweep"]

COLLECT_MEASURE = COLLECT.measure  # shorter than a tuning run's protocol (see agent.budget)


@dataclass(frozen=True)
class Case:
    """One cell of the sweep."""

    problem: Problem
    target: str
    cores: int

    @property
    def label(self) -> str:
        core_word = "core" if self.cores == 1 else "cores"
        return f"{self.problem.spec.name} {self.problem.key} {self.target} {self.cores} {core_word}"

    @property
    def backend_key(self) -> tuple[str, str]:
        """The backend (by name) and target its candidates are built for."""
        return self.problem.spec.backend, self.target


@dataclass(frozen=True)
class CollectOptions:
    """How much of each case to measure, and how."""

    configs_per_case: int = 200  # the whole space when it is at most this big
    seed: int = 0
    remeasure: bool = False
    cache: str = "auto"
    timeout_s: float = CANDIDATE_TIMEOUT_S
    batch_size: int = COLLECT.batch_size  # measured interleaved together; an interruption loses at most one batch
    measure: MeasureSettings = field(default_factory=lambda: COLLECT_MEASURE)


@dataclass(frozen=True)
class CaseResult:
    """What one case holds in the store after collection."""

    case: Case
    tuning_id: int
    state: str  # measured, resumed, skipped (already complete)
    space_size: int
    planned: int
    measured_now: int
    valid: int
    best_s: float | None
    default_s: float | None
    wall_s: float

    @property
    def speedup(self) -> float | None:
        return self.default_s / self.best_s if self.best_s and self.default_s else None

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.case.problem.spec.name, "shape": self.case.problem.key,
                "target": self.case.target, "cores": self.case.cores, "state": self.state,
                "space": self.space_size, "planned": self.planned, "measured_now": self.measured_now,
                "valid": self.valid, "best_s": self.best_s, "default_s": self.default_s,
                "speedup": self.speedup, "wall_s": round(self.wall_s, 2), "tuning_id": self.tuning_id}


@dataclass(frozen=True)
class Sweep:
    """A planned sweep: its cases, and the machine and backends (per backend name and target) that measure them."""

    profile: HardwareProfile
    cases: tuple[Case, ...]
    backends: Mapping[tuple[str, str], Backend]
    targets: tuple[str, ...]
    cores: tuple[int, ...]


@dataclass(frozen=True)
class CollectReport:
    """What one ``collect`` run did, and the dataset it exported (if any)."""

    results: tuple[CaseResult, ...]
    wall_s: float
    export_dir: str | None = None
    manifest: Mapping[str, Any] | None = None

    @property
    def failures(self) -> list[CaseResult]:
        """The cases without a single valid configuration."""
        return [r for r in self.results if r.valid == 0]

    def summary(self) -> dict[str, Any]:
        return {
            "cases": len(self.results), "measured_now": sum(r.measured_now for r in self.results),
            "skipped": sum(r.state == "skipped" for r in self.results), "wall_s": round(self.wall_s, 1),
            "without_valid_config": [r.case.label for r in self.failures],
            "dataset": str(self.export_dir) if self.export_dir else None,
            "records": self.manifest["counts"]["records"] if self.manifest else None,
        }


def plan_sweep(*, kernel_names: Sequence[str] = (), preset: str | None = None, shapes: str | None = None,
               targets: Sequence[str] = (), cores: Sequence[int] = (1, 2), configs_per_case: int = 200,
               compiler: str = "cc") -> Sweep:
    """The cases of a sweep: a preset's layers, or kernels (default: every built-in) at ``shapes``
    (``;``-separated; default: every named shape but 'small'), x targets (default: every -march
    level this CPU runs, and native) x core counts; probes the machine and finds the compilers."""
    from agent import hardware
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel, kernel_dirs
    from agent.kernels.workloads import find_workload

    core_counts = tuple(sorted(set(cores)))
    cores_text = ",".join(str(n) for n in cores)
    if not core_counts or min(core_counts) < 1:
        raise ConfigError(f"--cores {cores_text!r}: core counts must be positive")
    if configs_per_case < 1:
        raise ConfigError(f"--configs {configs_per_case}: must be at least 1")
    if preset and (kernel_names or shapes):
        raise ConfigError("--preset already names kernels and shapes; drop --kernel/--shapes")
    problems = []
    if preset:
        problems = [problem for _, problem in find_workload(preset).problems()]
    else:
        for name in kernel_names or tuple(sorted(kernel_dirs())):
            spec = find_kernel(name)
            wanted = [s.strip() for s in shapes.split(";") if s.strip()] if shapes else \
                [s for s in spec.shapes if s != "small"]
            problems.extend(parse_shape(spec, s) for s in wanted)
    profile = hardware.probe(measure_bandwidth=False, compiler=compiler)
    chosen_targets = tuple(targets) or tuple(available_targets(profile))
    if any(n > profile.logical_cores for n in core_counts):
        raise ConfigError(f"--cores {cores_text}: this machine has {profile.logical_cores} hardware threads")
    cases = tuple(plan_cases(problems, chosen_targets, core_counts))
    return Sweep(profile=profile, cases=cases, backends=detect_backends(cases, compiler=compiler,
                                                                        device=profile.fingerprint()),
                 targets=chosen_targets, cores=core_counts)


def dry_run(sweep: Sweep, *, configs_per_case: int, seed: int) -> list[dict[str, Any]]:
    """One row per case of ``sweep``: its space and how many configurations it would measure."""
    rows = []
    for case in sweep.cases:
        planned, size = case_configs(case_space(case, sweep.profile, sweep.backends[case.backend_key]),
                                     configs_per_case, seed)
        rows.append({"kernel": case.problem.spec.name, "shape": case.problem.key, "target": case.target,
                     "cores": case.cores, "space": size, "planned": len(planned)})
    return rows


def collect(store: Store, *, sweep: Sweep, cache_dir: Path, options: CollectOptions = CollectOptions(),
            export_dir: str | None = None, dataset_name: str | None = None, commands: Sequence[str] = (),
            on_case: Callable[[int, int, CaseResult], None] | None = None) -> CollectReport:
    """Measure what is missing of every case of ``sweep`` (``on_case(index, total, result)`` after
    each), then, with ``export_dir``, write the collected data there as a dataset folder."""
    from agent.dataset import export_dataset

    results = []
    started = time.monotonic()
    for index, case in enumerate(sweep.cases, start=1):
        result = collect_case(case, profile=sweep.profile, store=store, backend=sweep.backends[case.backend_key],
                              cache_dir=cache_dir, options=options)
        results.append(result)
        if on_case is not None:
            on_case(index, len(sweep.cases), result)
    wall_s = time.monotonic() - started
    manifest = None
    if export_dir:
        manifest = export_dataset(
            store, export_dir, name=dataset_name or Path(export_dir).name,
            commands=list(commands), strategy="collect", origin="measured",
            kernels=sorted({c.problem.spec.name for c in sweep.cases}),
            notes={"collect_wall_s_last_run": round(wall_s, 1), "targets": list(sweep.targets),
                   "cores": list(sweep.cores), "configs_per_case": options.configs_per_case, "seed": options.seed})
    return CollectReport(results=tuple(results), wall_s=wall_s, export_dir=export_dir, manifest=manifest)


def case_space(case: Case, profile: HardwareProfile, backend: Backend) -> Space:
    """The legal configurations of a case: its core count and the vector width of its backend's target."""
    return Space.build(case.problem, max_threads=case.cores, vector_bits=backend.vector_bits(profile))


def plan_cases(problems: Sequence[Problem], targets: Sequence[str], cores: Sequence[int]) -> list[Case]:
    """The sweep in the order it runs: by kernel and shape, then target, then cores."""
    return [Case(problem, target, n) for problem in problems for target in targets for n in cores]


def detect_backends(cases: Sequence[Case], *, compiler: str, device: str) -> dict[tuple[str, str], Backend]:
    """The backend of every (backend name, target) the cases need, each detected once."""
    found: dict[tuple[str, str], Backend] = {}
    for case in cases:
        if case.backend_key not in found:
            name, target = case.backend_key
            found[case.backend_key] = detect_backend(name, compiler=compiler, target=target, device=device)
    return found


def case_configs(space: Space, count: int, seed: int) -> tuple[list[dict], int]:
    """The configurations a case measures, and how many legal ones there are.

    All legal ones when they are at most ``count``; else the default plus the legal
    configurations whose seeded hash is smallest. Hash order, not a fresh sample per
    case, so the cases of one kernel share most configurations and their compiled
    libraries (a build depends on configuration and target, not on shape or cores).
    """
    legal = list(space)
    if len(legal) <= count:
        return legal, len(legal)
    prefix = f"{seed}:{space.problem.spec.name}:".encode()
    ranked = sorted(legal, key=lambda c: hashlib.blake2b(prefix + config_key(c).encode(), digest_size=8).digest())
    chosen = ranked[:count]
    default = space.default()
    if space.is_valid(default) and config_key(default) not in {config_key(c) for c in chosen}:
        chosen[-1] = default
    return chosen, len(legal)


def collect_case(case: Case, *, profile: HardwareProfile, store: Store, backend: Backend,
                 cache_dir: Path, options: CollectOptions = CollectOptions(),
                 on_result: Callable[[CandidateResult, int], None] | None = None) -> CaseResult:
    """Measure what is missing of one case; returns the case's totals from the store."""
    started = time.monotonic()
    spec, problem = case.problem.spec, case.problem
    device = profile.fingerprint()
    space = case_space(case, profile, backend)
    configs, space_size = case_configs(space, options.configs_per_case, options.seed)
    store.upsert_device(device, profile.to_dict())
    store.upsert_kernel(spec.key, spec.name, spec.source_hash, spec.space_summary(), str(spec.directory))
    existing = store.find_tuning(device=device, kernel_key=spec.key, shape=problem.key, target=case.target,
                                 strategy="collect", cores=case.cores)
    if existing is not None and options.remeasure:
        store.delete_tuning(existing["id"])
        existing = None
    if existing is not None and existing["state"] == "finished":
        return _summary(store, case, space, existing["id"], "skipped", len(configs), 0, time.monotonic() - started,
                        space_size)
    if existing is None:
        tuning_id = store.start_tuning(device=device, kernel_key=spec.key, kernel=spec.name, shape=problem.key,
                                       target=case.target, backend=backend.name, compiler=backend.version,
                                       strategy="collect",
                                       budget=str(options.configs_per_case), seed=options.seed,
                                       cores=case.cores)
        state, done = "measured", set()
    else:
        tuning_id = existing["id"]
        store.reopen_tuning(tuning_id)
        state, done = "resumed", store.run_configs(tuning_id)
    todo = [c for c in configs if config_key(c) not in done]

    flush, flush_bytes = backend.flush(problem, profile, options.cache)
    context = EvaluationContext(space=space, backend=backend, store=store, tuning_id=tuning_id, device=device,
                                strategy="collect", budget=COLLECT.budget, cache_dir=cache_dir / "build",
                                seed=options.seed, measure=replace(options.measure, flush=flush),
                                batch_size=options.batch_size)
    cpus = sorted(os.sched_getaffinity(0))[:case.cores] if case.cores < len(os.sched_getaffinity(0)) else None
    try:
        if todo:
            with backend.worker(spec, problem.shape, seed=options.seed, flush_bytes=flush_bytes,
                                timeout_s=options.timeout_s, cpus=cpus) as session:
                evaluator = Evaluator(context, session, on_result)
                for start in range(0, len(todo), options.batch_size):
                    evaluator.evaluate(todo[start:start + options.batch_size])
    except BaseException:
        store.fail_tuning(tuning_id, "interrupted")
        raise
    wall_s = time.monotonic() - started
    result = _summary(store, case, space, tuning_id, state, len(configs), len(todo), wall_s, space_size)
    winner = _winner(store, tuning_id)
    store.finish_tuning(
        tuning_id, evaluations=len(configs), wall_s=wall_s,
        winner_run=winner["id"] if winner else None,
        winner_config=json.loads(winner["config_json"]) if winner else None,
        winner_median_s=winner["median_s"] if winner else None,
        default_median_s=result.default_s,
        speedup=result.speedup, tie=False,
        update_best=case.cores >= profile.logical_cores,
    )
    return result


def _winner(store: Store, tuning_id: int) -> dict | None:
    return next(iter(store.db.query(
        "select id, config, config_json, median_s from runs where tuning_id = ? and status = 'correct' "
        "order by median_s limit 1", [tuning_id])), None)


def _summary(store: Store, case: Case, space: Space, tuning_id: int, state: str, planned: int,
             measured_now: int, wall_s: float, space_size: int) -> CaseResult:
    rows = list(store.db.query(
        "select config, status, median_s from runs where tuning_id = ? and phase = 'search'", [tuning_id]))
    valid = [r for r in rows if r["status"] == "correct" and r["median_s"] is not None]
    default_key = config_key(space.default())
    default = next((r["median_s"] for r in valid if r["config"] == default_key), None)
    return CaseResult(case=case, tuning_id=tuning_id, state=state, space_size=space_size, planned=planned,
                      measured_now=measured_now, valid=len(valid),
                      best_s=min((r["median_s"] for r in valid), default=None), default_s=default,
                      wall_s=wall_s)
