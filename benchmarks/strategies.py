"""Benchmark: search strategies side by side on held-out tuning cases, on this machine.

Each case is a built-in kernel at a shape that the committed dataset (models/data/
cpu-epyc-avx512-2026-11-25) does not contain; the script refuses cases that it does. Each
strategy run is a real ``agent.tuner.tune`` in its own temporary store with its own fresh
compile cache, so compile time counts; its wall time, evaluations (compilations; the
kernel's default counts as one) and winner are recorded. Then, per case, every strategy's
winner and the exhaustive winner are measured together, interleaved, against the default in
one manual tuning run, and each strategy gets ``of optimum`` = exhaustive winner's time /
its winner's time from that one measurement (1.0 = found the optimum; below = slower; a
little above = noise). Times of one configuration from different runs are never compared.

    .venv/bin/python benchmarks/strategies.py [--cases KERNEL:SHAPE ...] [--strategies NAME[:BUDGET] ...]
        [--seed 0] [--markdown] [--json FILE] [--quick]

``model-only:N`` is the model strategy without its policy (the student's ranking first in every
situation), for comparing the policy with what the strategy did before it.

``--quick`` is a smoke run: one tiny case, budgets 3 and 10. The default set takes long (a
full exhaustive search per case): see ``DEFAULT_CASES``. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agent.backends.c import CBackend
from agent.bench.compile import Toolchain
from agent.errors import EdgetuneError
from agent.hardware import HardwareProfile, probe
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import Problem, parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space, config_key
from agent.predict.model_files import POLICY_FILE
from agent.search import get_strategy
from agent.search.model_guided import ModelOptions
from agent.settings import Settings
from agent.store import Store
from agent.tuner import Budget, TuneOptions, tune

MODELS = Path(__file__).resolve().parents[1] / "models"
DATASET = MODELS / "data" / "cpu-epyc-avx512-2026-11-25"
# Strategy names this benchmark adds: the model strategy without its policy (the student first everywhere).
VARIANTS = {"model-only": "model"}
# Held-out cases: named shapes of the built-in kernels that the dataset does not hold.
# The first five have the smallest spaces (144-420 legal configurations on 2 threads).
HELD_OUT = {
    "layernorm": "distilbert",         # R=128,C=768      (dataset: bert_small, deit_small, ...)
    "softmax": "deit_tiny_attn",       # R=591,C=197      (dataset: bert_small_attn, whisper, ...)
    "gemv": "smollm_up",               # M=1536,N=576     (dataset has smollm_down, M=576,N=1536)
    "transpose": "mbv2_nhwc_56",       # M=3136,N=144     (dataset: mbv2_nchw_14, whisper, ...)
    "stencil5": "hd_720p",             # H=720,W=1280     (dataset: 224, 256, vga, 512)
    "qgemm": "mbv2_b16_expand",        # M=49,N=960,K=160
    "dwconv3x3": "mnv2_block7_dw",     # C=384,H=W=14
    "conv2d": "resnet18_l2_down",      # C=64,K=128,H=W=14,STRIDE=2
    "gemm": "large",                   # M=N=K=512
}
DEFAULT_CASES = tuple(f"{k}:{s}" for k, s in list(HELD_OUT.items())[:5])
DEFAULT_STRATEGIES = ("exhaustive", "model:5", "random:5", "local:5", "opentuner:5",
                      "random:120", "local:120", "opentuner:120")
QUICK_CASES = ("layernorm:small",)  # R=7,C=13
QUICK_STRATEGIES = ("exhaustive", "model:3", "random:3", "local:3", "opentuner:3",
                    "random:10", "local:10", "opentuner:10")


@dataclass
class Run:
    """One strategy's tuning run on one case."""

    case: str
    strategy: str  # NAME:BUDGET as given
    wall_s: float | None = None
    evaluations: int | None = None
    winner: dict[str, Any] | None = None
    of_optimum: float | None = None  # exhaustive winner's time / this winner's time, same measurement
    error: str = ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", metavar="KERNEL:SHAPE",
                        help=f"named shape or M=..,N=.. text (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--strategies", nargs="+", metavar="NAME[:BUDGET]",
                        help=f"budget in evaluations; none = all (default: {' '.join(DEFAULT_STRATEGIES)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="native")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the raw results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: one tiny case, budgets 3 and 10")
    args = parser.parse_args()
    cases = args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)
    strategies = args.strategies or (QUICK_STRATEGIES if args.quick else DEFAULT_STRATEGIES)

    settings = Settings.from_environ()
    profile = probe(measure_bandwidth=False, compiler=settings.compiler)
    toolchain = Toolchain.detect(settings.compiler, args.target, cpu_tag=profile.fingerprint())
    notes = [f"machine: {profile.model}, {profile.logical_cores} threads, {profile.simd_isa}; "
             f"{toolchain.version}, -march={toolchain.target}; seed {args.seed}"]
    runnable = []
    for text in strategies:
        try:
            get_strategy(VARIANTS.get(text.partition(":")[0], text.partition(":")[0]))
            runnable.append(text)
        except EdgetuneError as exc:
            notes.append(f"skipped {text}: {exc}")
    problems = {text: held_out_problem(text) for text in cases}
    print("\n".join(notes), flush=True)

    results: list[dict[str, Any]] = []
    for text, problem in problems.items():
        space = Space.build(problem, max_threads=profile.logical_cores,
                            vector_bits=target_vector_bits(toolchain.target, profile))
        runs = [run_strategy(text, problem, s, profile, toolchain, args.seed) for s in runnable]
        final = final_times(problem, [r.winner for r in runs if r.winner], profile, toolchain, args.seed)
        optimum = next((r.winner for r in runs if r.strategy.partition(":")[0] == "exhaustive" and r.winner), None)
        for r in runs:
            t_opt = final.get(config_key(optimum)) if optimum else None
            t_run = final.get(config_key(r.winner)) if r.winner else None
            r.of_optimum = t_opt / t_run if t_opt and t_run else None
        results.append({"case": text, "shape": problem.key, "space": space.size(),
                        "runs": [asdict(r) for r in runs], "final_s": final})
        print(table(*case_rows(results[-1]), markdown=args.markdown), "\n", flush=True)
    print(table(*summary_rows(results, runnable), markdown=args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"notes": notes, "cases": results}, indent=2))
    return 0


def models_without_policy() -> Path:
    """The shipped model folder without ``policy.json``: the student ranks first in every situation."""
    folder = Path(tempfile.gettempdir()) / f"edgetune-models-without-policy-{os.getpid()}"
    if not folder.is_dir():
        folder.mkdir()
        for path in MODELS.iterdir():
            if path.is_file() and path.name != POLICY_FILE:
                (folder / path.name).symlink_to(path)
    return folder


def held_out_problem(text: str) -> Problem:
    """``KERNEL:SHAPE`` as a problem; refuses a shape the committed dataset holds for that kernel."""
    kernel, _, shape = text.partition(":")
    problem = parse_shape(find_kernel(kernel), shape or None)
    if (kernel, problem.key) in dataset_cases():
        sys.exit(f"{text} ({problem.key}) is in the dataset {DATASET.name}: choose a held-out shape")
    return problem


def dataset_cases() -> set[tuple[str, str]]:
    """(kernel, shape key) of every record of the committed CPU dataset."""
    path = DATASET / "records.jsonl.gz"
    if not path.exists():
        return set()
    with gzip.open(path, "rt") as lines:
        records = (json.loads(line) for line in lines)
        return {(r["kernel"], ",".join(f"{k}={v}" for k, v in sorted(r["shape"].items()))) for r in records}


def run_strategy(case: str, problem: Problem, text: str, profile: HardwareProfile, toolchain: Toolchain,
                 seed: int) -> Run:
    """One tuning run in its own temporary store and compile cache; errors are recorded, not raised."""
    name, _, budget = text.partition(":")
    run = Run(case=case, strategy=text)
    options = TuneOptions(strategy=VARIANTS.get(name, name), budget=Budget.parse(budget or "all"), seed=seed)
    if name == "model-only":
        options = replace(options, strategy_options=ModelOptions(models=models_without_policy()))
    with tempfile.TemporaryDirectory(prefix="edgetune-strategies-") as tmp, \
            Store.open(Path(tmp) / "tune.db") as store:
        started = time.perf_counter()
        try:
            result = tune(problem, profile=profile, store=store, backend=CBackend(toolchain), cache_dir=Path(tmp),
                          options=options)
        except EdgetuneError as exc:
            run.error = str(exc)
            return run
        run.wall_s = time.perf_counter() - started
    run.evaluations = result.evaluations
    run.winner = dict(result.winner.config) if result.winner else None
    print(f"  {case} {text}: {run.wall_s:.1f} s, {run.evaluations} evaluations", file=sys.stderr, flush=True)
    return run


def final_times(problem: Problem, winners: list[dict[str, Any]], profile: HardwareProfile, toolchain: Toolchain,
                seed: int) -> dict[str, float]:
    """Median time of each distinct winner, all measured together with the default, interleaved.

    A manual tuning run (``TuneOptions(configs=...)``) re-measures every configuration it was
    given in its final phase, so every time comes from one interleaved measurement.
    """
    distinct = list({config_key(w): w for w in winners}.values())
    if not distinct:
        return {}
    # the strategy is only named (the run is "manual"): configs are measured, nothing is searched
    options = TuneOptions(strategy="exhaustive", configs=tuple(distinct), budget=Budget(), seed=seed)
    with tempfile.TemporaryDirectory(prefix="edgetune-strategies-") as tmp, \
            Store.open(Path(tmp) / "final.db") as store:
        result = tune(problem, profile=profile, store=store, backend=CBackend(toolchain), cache_dir=Path(tmp),
                      options=options)
        rows = store.runs(tuning_id=result.tuning_id, limit=100_000)
    return {config_key(json.loads(r["config_json"])): r["median_s"] for r in rows
            if r["phase"] == "final" and r["median_s"] is not None}


def case_rows(case: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["case", "space", "strategy", "wall s", "evals", "of optimum", "winner"]
    rows = []
    for r in case["runs"]:
        rows.append([case["case"], str(case["space"]), r["strategy"], _num(r["wall_s"], ".1f"),
                     _num(r["evaluations"], "d"), _num(r["of_optimum"], ".3f"),
                     r["error"] or (config_key(r["winner"]) if r["winner"] else "-")])
    return headers, rows


def summary_rows(results: list[dict[str, Any]], strategies: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["strategy", "cases", "median wall s", "median evals", "geomean of optimum"]
    rows = []
    for text in strategies:
        runs = [r for case in results for r in case["runs"] if r["strategy"] == text and not r["error"]]
        walls = [r["wall_s"] for r in runs]
        evals = [r["evaluations"] for r in runs]
        ratios = [r["of_optimum"] for r in runs if r["of_optimum"]]
        geomean = math.exp(statistics.fmean(math.log(x) for x in ratios)) if ratios else None
        rows.append([text, str(len(runs)), _num(statistics.median(walls) if walls else None, ".1f"),
                     _num(statistics.median(evals) if evals else None, "g"),
                     _num(geomean, ".3f") + (f" ({len(ratios)})" if len(ratios) != len(runs) else "")])
    return headers, rows


def table(headers: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                          *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [headers, *rows])


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
