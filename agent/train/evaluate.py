"""``edgetune eval``: train on each fold, replay the held-out cases, compare with the baselines.

For every held-out case each method gives an evaluation order over the measured table
(the configurations it would benchmark, in turn). From the order: best-of-k over the
exhaustive optimum for k = 1, 3, 5, and how many evaluations reach 95% and 99% of it.
Random search is scored by its exact expectation, not by a sample.

The methods that need no trained decoder (reuse of the nearest measured case, the cost model
over the whole table, diversified) are replayed afresh for every fold, also for folds reused
from disk: they take seconds. From all of it, the policy (:mod:`agent.predict.policy`): per
situation, the source a device should rank with.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.predict.cost_features import config_features
from agent.predict.cost_model import CostModel
from agent.predict.local_model import LocalModel
from agent.predict.model_files import COST_MODEL_FILE
from agent.predict.ranking import CANDIDATES, blend_order, diversified_order, ranking_features
from agent.predict.vocab import vocabulary
from agent.train import baselines, search_baselines
from agent.train.calibrate import calibrate
from agent.train.cases import Case, load_cases
from agent.train.cost_model import export_onnx, fit_cost_model
from agent.train.fit import TrainRun, slot_allowed, train_model
from agent.train.gguf_export import quantize_gguf, write_gguf
from agent.train.model import Decoder
from agent.train.policy_eval import DIVERSE_COST_METHOD, RANDOM_METHOD, REUSE_METHOD, choose_policy, policy_confidence
from agent.train.rank import model_order, table_order
from agent.train.splits import SPLITS, Fold, make_folds

__all__ = ["EvalOptions", "evaluate", "summarise"]

KS = (1, 3, 5)
Q4_METHOD = "student Q4 (llama.cpp)"
COST_METHOD = "cost model (ONNX)"
BLEND_METHOD = "student Q4 + cost model re-rank"
MODEL_FREE = (REUSE_METHOD, DIVERSE_COST_METHOD)
FRACTIONS = (0.95, 0.99)
CALIBRATION_FILE = "calibration.json"
POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class EvalOptions:
    run: TrainRun = field(default_factory=TrainRun)
    budget: int = 5
    long_budget: int = 120
    kt_strategies: tuple[str, ...] = ("random_sample", "genetic_algorithm", "simulated_annealing", "greedy_ils")
    opentuner: bool = True
    quantized: bool = True
    folds: tuple[str, ...] = ()  # only these folds (default: all)
    max_cases: int = 0  # per split per fold, for a quick look (0: all)


def _metrics(case: Case, order: Sequence[int], wall_s: float) -> dict[str, Any]:
    found = baselines.order_metrics(case, list(order), ks=KS, fractions=FRACTIONS)
    return {"case": case.case_id, "best_of": {str(k): found["best_of_k"][k] for k in KS},
            "evals_to": {str(f): found["evals_to"][f] for f in FRACTIONS}, "rows": len(case.configs),
            "wall_s": wall_s}


def _random_metrics(case: Case) -> dict[str, Any]:
    return {"case": case.case_id,
            "best_of": {str(k): baselines.random_expectation(case.times, k) for k in KS},
            "evals_to": {str(f): baselines.random_expected_evals(case.times, f) for f in FRACTIONS},
            "rows": len(case.configs), "wall_s": 0.0}


def _exhaustive_metrics(case: Case) -> dict[str, Any]:
    """Exhaustive search knows it has the optimum only after every row: no best-of-k, n evaluations."""
    n = len(case.configs)
    return {"case": case.case_id, "best_of": {str(k): None for k in KS},
            "evals_to": {str(f): n for f in FRACTIONS}, "rows": n, "wall_s": 0.0}


def _timed(fn: Callable[..., Sequence[int]], *args: Any) -> tuple[list[int], float]:
    started = time.perf_counter()
    order = list(fn(*args))
    return order, time.perf_counter() - started


def _model_order(model: Decoder, case: Case, hide_name: bool) -> list[int]:
    return model_order(model, case, hide_name=hide_name)


def _q4_order(local: LocalModel, case: Case, hide_name: bool) -> list[int]:
    """The quantised student's order through llama.cpp (whole table, or its beam for large ones)."""
    prompt = case.prompt(hide_name=hide_name)
    allowed = slot_allowed(case)
    return table_order(case, lambda: local.score(prompt, case.tokens, allowed),
                       beam_search=lambda width: local.beam(prompt, case.tokens, allowed, width=width))


def _failure(where: dict[str, str], method: str, exc: Exception, log: Callable[[str], None]) -> dict[str, str]:
    """The error record of one method failing on one case (logged; the run goes on)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    message = f"{type(exc).__name__}: {exc} ({Path(frame.filename).name}:{frame.lineno})"
    log(f"[{where['fold']}] {method} failed on {where['case']}: {message}")
    return {**where, "method": method, "error": message}


def _cost_model_methods(case: Case, hide: bool, cost: CostModel, local: LocalModel, q4_order: list[int],
                        q4_wall: float) -> dict[str, Any]:
    """The cost model alone, and re-ranking the student's best candidates with it (the ablation).

    Also returns the ranking features of the student's candidates, for the confidence calibration.
    """
    started = time.perf_counter()
    features = config_features(case.hardware, case.kernel_info, case.shape, case.codec, case.configs,
                               hide_name=hide)
    predicted = cost.predict(features)
    cost_order = [int(i) for i in np.argsort(predicted, kind="stable")]
    cost_wall = time.perf_counter() - started
    started = time.perf_counter()
    top = np.asarray(q4_order[:CANDIDATES])
    logp = local.score(case.prompt(hide_name=hide), case.tokens[top], slot_allowed(case))
    blended = [int(top[i]) for i in blend_order(logp, predicted[top])] + list(q4_order[CANDIDATES:])
    blend_wall = q4_wall + cost_wall + time.perf_counter() - started
    return {COST_METHOD: _metrics(case, cost_order, cost_wall), BLEND_METHOD: _metrics(case, blended, blend_wall),
            "features": asdict(ranking_features(logp, predicted[top]))}


def _quantised(model: Decoder, workdir: Path, name: str) -> LocalModel:
    f32 = write_gguf(model, vocabulary(), workdir / f"{name}-f32.gguf", name=name)
    return LocalModel(quantize_gguf(f32, workdir / f"{name}-q4_0.gguf"))


def evaluate_fold(fold: Fold, options: EvalOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Train the fold's teacher and student, then replay every held-out case with every method.

    Returns ``{"splits": {split: {method: [per-case metrics]}}, "errors": [...], ...}``; a
    method that fails on a case is logged and listed in ``errors``, and the rest go on.
    """
    started = time.monotonic()
    log(f"[{fold.name}] teacher on {len(fold.train)} cases")
    teacher = train_model(fold.train, options.run.teacher, options.run.teacher_train, log=log)
    log(f"[{fold.name}] student (distilled)")
    student = train_model(fold.train, options.run.student, options.run.student_train, teacher=teacher, log=log)
    cost_model = baselines.CostModelBaseline()
    cost_model.fit(fold.train)
    results: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgetune-eval-") as tmp:
        local = _quantised(student, Path(tmp), f"student-{fold.name}") if options.quantized else None
        log(f"[{fold.name}] cost model (ONNX)")
        cost = CostModel(export_onnx(fit_cost_model(fold.train), Path(tmp) / COST_MODEL_FILE))
        for split, tests in fold.tests.items():
            hide = split in fold.hidden_names
            tests = _replayed(tests, options)
            per_method = results.setdefault(split, {})
            for number, case in enumerate(tests, start=1):
                plans: dict[str, tuple[Callable[..., Sequence[int]], tuple]] = {
                    "teacher": (_model_order, (teacher, case, hide)),
                    "student": (_model_order, (student, case, hide)),
                    "nearest case": (baselines.nearest_case_order, (case, fold.train, options.budget)),
                    "cost model (LightGBM)": (cost_model.order, (case, len(case.configs))),
                }
                if local is not None:
                    plans[Q4_METHOD] = (_q4_order, (local, case, hide))
                if options.opentuner:
                    for budget in (options.budget, options.long_budget):
                        plans[f"OpenTuner {budget}"] = (search_baselines.opentuner_order, (case, budget, 0))
                for strategy in options.kt_strategies:
                    plans[f"Kernel Tuner {strategy}"] = (search_baselines.kernel_tuner_order,
                                                         (case, strategy, options.budget, 0))
                orders: dict[str, tuple[list[int], float]] = {}
                where = {"fold": fold.name, "split": split, "case": case.case_id}
                for method, (fn, args) in plans.items():
                    try:
                        orders[method] = _timed(fn, *args)
                        per_method.setdefault(method, []).append(_metrics(case, *orders[method]))
                    except Exception as exc:  # one method failing on one case must not sink the run
                        errors.append(_failure(where, method, exc, log))
                if local is not None and Q4_METHOD in orders:
                    try:
                        extra = _cost_model_methods(case, hide, cost, local, *orders[Q4_METHOD])
                    except Exception as exc:
                        errors.append(_failure(where, BLEND_METHOD, exc, log))
                    else:
                        features = extra.pop("features")
                        for method, metrics in extra.items():
                            per_method.setdefault(method, []).append(metrics)
                        for method in (Q4_METHOD, BLEND_METHOD):
                            per_method[method][-1].update(fold=fold.name, features=features)
                per_method.setdefault(RANDOM_METHOD, []).append(_random_metrics(case))
                per_method.setdefault("exhaustive", []).append(_exhaustive_metrics(case))
                if number % 10 == 0 or number == len(tests):
                    log(f"[{fold.name}] {split}: {number}/{len(tests)} cases ({time.monotonic() - started:.0f} s)")
        if local is not None:
            local.close()
    return {"splits": results, "errors": errors, "train_cases": len(fold.train),
            "wall_s": round(time.monotonic() - started, 1)}


def _replayed(tests: list[Case], options: EvalOptions) -> list[Case]:
    """The held-out cases a fold replays (an even spread of ``max_cases`` of them when set)."""
    if options.max_cases:
        return tests[:: max(1, len(tests) // options.max_cases)][: options.max_cases]
    return tests


def model_free_methods(fold: Fold, options: EvalOptions, log: Callable[[str], None]) -> dict[str, dict[str, list]]:
    """Replay the methods that need no decoder on ``fold``: ``{split: {method: [per-case metrics]}}``.

    Reuse is the device's own prior (:func:`agent.train.baselines.reuse_order`); the diversified
    cost model is what the device runs over a whole space (:func:`agent.predict.ranking.diversified_order`
    over the fold's own ONNX cost model's predictions).
    """
    started = time.monotonic()
    out: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="edgetune-eval-") as tmp:
        cost = CostModel(export_onnx(fit_cost_model(fold.train), Path(tmp) / COST_MODEL_FILE))
        for split, tests in fold.tests.items():
            hide = split in fold.hidden_names
            per_method = out.setdefault(split, {})
            for case in _replayed(tests, options):
                order, wall = _timed(baselines.reuse_order, case, fold.train, options.budget)
                per_method.setdefault(REUSE_METHOD, []).append(_metrics(case, order, wall))
                t0 = time.perf_counter()
                predicted = cost.predict(config_features(case.hardware, case.kernel_info, case.shape, case.codec,
                                                         case.configs, hide_name=hide))
                order = diversified_order(-predicted, case.tokens)
                per_method.setdefault(DIVERSE_COST_METHOD, []).append(
                    _metrics(case, order, time.perf_counter() - t0))
    log(f"[{fold.name}] model-free methods in {time.monotonic() - started:.0f} s")
    return out


def summarise(per_case: list[dict[str, Any]]) -> dict[str, Any]:
    """Geometric mean of best-of-k, median evaluations to each fraction, share reaching it."""
    out: dict[str, Any] = {"cases": len(per_case)}
    for k in KS:
        values = [max(r["best_of"][str(k)], 1e-9) for r in per_case if r["best_of"][str(k)] is not None]
        out[f"best_of_{k}"] = float(math.exp(np.mean(np.log(values)))) if values else None
    for f in FRACTIONS:
        evals = [r["evals_to"][str(f)] for r in per_case]
        reached = [e for e in evals if e is not None]
        padded = [e if e is not None else r["rows"] + 1 for e, r in zip(evals, per_case, strict=False)]
        out[f"evals_to_{f}"] = float(np.median(padded)) if padded else None
        out[f"reached_{f}"] = len(reached) / len(evals) if evals else None
    out["wall_ms_median"] = float(np.median([r["wall_s"] for r in per_case]) * 1000) if per_case else None
    return out


def _fold_in_process(datasets: list[str], fold_name: str, options: EvalOptions) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    fold = next(f for f in make_folds(load_cases(datasets)) if f.name == fold_name)
    return evaluate_fold(fold, options, lambda line: print(line, file=sys.stderr, flush=True))


def _fold_file(out_dir: Path, name: str) -> Path:
    return out_dir / "folds" / f"{name}.json"


def _save_fold(out_dir: Path, name: str, outcome: dict[str, Any]) -> None:
    path = _fold_file(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(outcome) + "\n", encoding="utf-8")
    os.replace(partial, path)


def evaluate(datasets: Sequence[str], out_dir: str | Path, options: EvalOptions,
             log: Callable[[str], None] = print, *, jobs: int = 1, fresh: bool = False) -> dict[str, Any]:
    """Run every fold (``jobs`` at a time) and write ``report.json``, ``report.md`` and ``report.png``."""
    cases = load_cases(datasets)
    folds = [f for f in make_folds(cases) if not options.folds or f.name in options.folds]
    time.monotonic()
    merged: dict[str, dict[str, list]] = {}
    out = Path(out_dir)
    # Each finished fold is saved at once; a rerun reuses saved folds unless ``fresh``.
    outcomes: dict[str, dict[str, Any]] = {}
    for fold in folds:
        saved = _fold_file(out, fold.name)
        if saved.is_file() and not fresh:
            outcomes[fold.name] = json.loads(saved.read_text(encoding="utf-8"))
            log(f"[{fold.name}] reusing {saved}")
    todo = [f for f in folds if f.name not in outcomes]
    if jobs > 1 and len(todo) > 1:
        # One process per fold, one thread each: two cores run two folds side by side.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_fold_in_process, list(datasets), fold.name, options): fold.name for fold in todo}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                _save_fold(out, futures[future], outcomes[futures[future]])
    else:
        for fold in todo:
            outcomes[fold.name] = evaluate_fold(fold, options, log)
            _save_fold(out, fold.name, outcomes[fold.name])
    for fold in folds:
        fresh_rows = model_free_methods(fold, options, log)
        for split, methods in outcomes[fold.name]["splits"].items():
            methods = {**{m: r for m, r in methods.items() if m not in MODEL_FREE}, **fresh_rows.get(split, {})}
            for method, rows in methods.items():
                merged.setdefault(split, {}).setdefault(method, []).extend(rows)
    report = {
        "datasets": list(datasets),
        "options": _jsonable(asdict(options)),
        "splits": {split: {"description": SPLITS[split],
                           "methods": {m: summarise(rows) for m, rows in methods.items()}}
                   for split, methods in merged.items()},
        "per_case": merged,
        "folds": [{"name": f.name, "train_cases": len(f.train), "wall_s": outcomes[f.name].get("wall_s"),
                   "test_cases": {s: len(t) for s, t in f.tests.items()}} for f in folds],
        "errors": [e for f in folds for e in outcomes[f.name].get("errors", [])],
        # Training and replay of every fold, summed (folds reused from disk count what they took then).
        "wall_s": round(sum(outcomes[f.name].get("wall_s") or 0.0 for f in folds), 1),
    }
    ablation = cost_model_ablation(merged)
    if ablation is not None:
        report["ablation"] = ablation
        deployed = BLEND_METHOD if ablation["use_cost_model"] else Q4_METHOD
        records = [{"fold": r["fold"], "split": split, "best_of_5": r["best_of"]["5"], "features": r["features"]}
                   for split, methods in merged.items() for r in methods.get(deployed, []) if "features" in r]
        if records:
            calibration, validation = calibrate(records, use_cost_model=ablation["use_cost_model"])
            report["confidence"] = {"method": deployed, **validation}
            calibration.save(out / CALIBRATION_FILE)
        policy = choose_policy(merged, deployed)
        report["policy"] = {"choices": dict(policy.choices), "evidence": dict(policy.evidence), "model": deployed,
                            "confidence": policy_confidence(merged, policy, deployed)}
        policy.save(out / POLICY_FILE)
    from agent.train.report import write_report

    write_report(report, Path(out_dir))
    return report


def cost_model_ablation(merged: dict[str, dict[str, list]]) -> dict[str, Any] | None:
    """Does re-ranking the student's candidates with the cost model help? Pooled over every held-out case.

    The rule, fixed before the run: keep the cost model if the geometric mean of best-of-5 over all
    held-out cases (every split) is higher with it than without.
    """
    pooled: dict[str, list[float]] = {Q4_METHOD: [], BLEND_METHOD: [], COST_METHOD: []}
    for methods in merged.values():
        by_case = {m: {r["case"]: r for r in methods.get(m, [])} for m in pooled}
        shared = set(by_case[Q4_METHOD]) & set(by_case[BLEND_METHOD])
        for m in pooled:
            pooled[m] += [max(by_case[m][c]["best_of"]["5"], 1e-9) for c in sorted(shared) if c in by_case[m]]
    if not pooled[Q4_METHOD] or not pooled[BLEND_METHOD]:
        return None
    means = {m: float(math.exp(np.mean(np.log(v)))) if v else None for m, v in pooled.items()}
    return {"cases": len(pooled[Q4_METHOD]), "best_of_5": means,
            "use_cost_model": bool(means[BLEND_METHOD] > means[Q4_METHOD]),
            "rule": "keep the cost model if it raises the pooled geometric-mean best-of-5"}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
