"""Benchmark: the priors a model must beat, on honest held-out splits, replayed from the datasets.

No model is trained here: this is the floor under ``edgetune eval``, fast enough to rerun on every
change to the reuse prior or the splits (about a minute on two cores). Per split, every method
gives an evaluation order over each held-out case's measured table; best-of-k is the geometric
mean over cases of best-among-the-first-k / measured optimum.

Splits (nothing of a held-out case is known to any method):

- ``gpu-loo``: one fold per GPU; the known cases are every other GPU's (and every CPU case).
- ``kernel-loo``: one fold per CPU kernel; no case of that kernel is known.
- ``shape``: the ``edgetune eval`` unseen-shape cases (one shape per kernel).
- ``simd``: the ``edgetune eval`` unseen-SIMD cases (x86-64-v3 held out).

Methods: ``random`` (exact expectation), ``nearest case`` (the eval's prompt-distance baseline),
``reuse`` (:mod:`agent.predict.reuse`, what the device does), ``LightGBM`` (the TVM-style cost
model fitted on the fold's known cases), ``reuse + LightGBM`` (alternating picks).

    .venv/bin/python benchmarks/generalization.py [DATASET ...] [--splits gpu-loo kernel-loo ...]
        [--markdown] [--json FILE]

Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from agent.train import baselines
from agent.train.cases import Case, load_cases
from agent.train.splits import make_folds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = [str(p) for p in sorted((ROOT / "models" / "data").iterdir()) if p.is_dir()]
KS = (1, 3, 5)
BUDGET = 5


def folds(cases: Sequence[Case], splits: Sequence[str]) -> list[tuple[str, str, list[Case], list[Case]]]:
    """(split, fold name, known cases, held-out cases) for every fold of ``splits``."""
    out = []
    if "gpu-loo" in splits:
        for gpu in sorted({c.device_name for c in cases if c.kind == "gpu"}):
            test = [c for c in cases if c.kind == "gpu" and c.device_name == gpu]
            out.append(("gpu-loo", gpu, [c for c in cases if c not in test], test))
    if "kernel-loo" in splits:
        for kernel in sorted({c.kernel for c in cases if c.kind == "cpu"}):
            test = [c for c in cases if c.kind == "cpu" and c.kernel == kernel]
            out.append(("kernel-loo", kernel, [c for c in cases if c not in test], test))
    shape_simd = next(f for f in make_folds(cases) if f.name == "shape+simd")  # the eval's own fold
    for split in ("shape", "simd"):
        if split in splits:
            out.append((split, split, shape_simd.train, shape_simd.tests[split]))
    return out


def interleave(*orders: Sequence[int], budget: int) -> list[int]:
    """Picks taken from each order in turn (first of each, then second of each ...), without repeats."""
    out: list[int] = []
    for row in (r for group in zip(*orders, strict=False) for r in group):
        if row not in out:
            out.append(row)
        if len(out) >= budget:
            break
    return out


def run_fold(known: list[Case], tests: list[Case]) -> dict[str, list[dict[int, float]]]:
    """Best-of-k per held-out case for every method."""
    cost = baselines.CostModelBaseline().fit(known)
    methods: dict[str, Callable[[Case], list[int]]] = {
        "nearest case": lambda c: baselines.nearest_case_order(c, known, BUDGET),
        "reuse": lambda c: baselines.reuse_order(c, known, BUDGET),
        "LightGBM": lambda c: cost.order(c, len(c.configs)),
        "reuse + LightGBM": lambda c: interleave(baselines.reuse_order(c, known, BUDGET),
                                                 cost.order(c, len(c.configs)), budget=BUDGET),
    }
    out: dict[str, list[dict[int, float]]] = {"random (exact)": [
        {k: baselines.random_expectation(c.times, k) for k in KS} for c in tests]}
    for name, order in methods.items():
        out[name] = [baselines.order_metrics(c, order(c), ks=KS)["best_of_k"] for c in tests]
    return out


def geomean(values: Sequence[float]) -> float:
    return float(math.exp(np.mean(np.log(np.maximum(values, 1e-9))))) if values else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", default=DEFAULT_DATASETS)
    parser.add_argument("--splits", nargs="+", default=["gpu-loo", "kernel-loo", "shape", "simd"])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.monotonic()
    cases = load_cases(args.datasets)
    merged: dict[str, dict[str, list[dict[int, float]]]] = {}
    per_fold: list[dict] = []
    for split, name, known, tests in folds(cases, args.splits):
        if not tests:
            continue
        result = run_fold(known, tests)
        for method, rows in result.items():
            merged.setdefault(split, {}).setdefault(method, []).extend(rows)
        per_fold.append({"split": split, "fold": name, "cases": len(tests),
                         "best_of_5": {m: geomean([r[5] for r in rows]) for m, rows in result.items()}})
        print(f"[{split}] {name}: {len(tests)} cases ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    table = []
    for split, methods in merged.items():
        for method, rows in methods.items():
            table.append([split, method, str(len(rows))] + [f"{geomean([r[k] for r in rows]):.3f}" for k in KS])
    header = ["split", "method", "cases"] + [f"best-of-{k}" for k in KS]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
        print("\nPer fold, best-of-5:\n")
        methods = list(next(iter(merged.values())))
        print("| split | fold | cases | " + " | ".join(methods) + " |")
        print("|" + "---|" * (3 + len(methods)))
        for f in per_fold:
            print(f"| {f['split']} | {f['fold']} | {f['cases']} | "
                  + " | ".join(f"{f['best_of_5'].get(m, float('nan')):.3f}" for m in methods) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        for row in [header, *table]:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"\n{len(cases)} cases from {', '.join(Path(d).name for d in args.datasets)}; "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"folds": per_fold}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
