"""Benchmark: the built-in GEMM's space at three shapes, searched exhaustively on this machine.

Prints, per shape: the size of the legal space, the wall time of an exhaustive search
(compile + verify + time, compile cache cold for the first shape), the best/default and
best/naive speed-ups from the final interleaved comparison, and the noise of repeated
measurement of one configuration (the spread of medians over repeated, separate
measurements, and the spread of samples within one).

    .venv/bin/python benchmarks/gemm_space.py [--shapes M=128,N=128,K=128 ...] [--repeats 10]

Not a test: nothing here asserts. Figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.backends.c import CBackend, flush_bytes_for
from agent.bench.compile import Toolchain, compile_candidate
from agent.bench.measure import MeasureSettings, measure_interleaved
from agent.bench.session import WorkerSession
from agent.hardware import probe
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space, config_key
from agent.store import Store
from agent.tuner import Budget, TuneOptions, tune

DEFAULT_SHAPES = ["M=128,N=128,K=128", "M=196,N=256,K=128", "M=256,N=256,K=256"]
NAIVE = {"ORDER": "ijk", "UNROLL": 1, "VEC": 1, "PREFETCH": 0, "THREADS": 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES)
    parser.add_argument("--repeats", type=int, default=10, help="separate measurements for the noise figure")
    parser.add_argument("--target", default="native")
    args = parser.parse_args()

    profile = probe(measure_bandwidth=False)
    toolchain = Toolchain.detect("cc", args.target, cpu_tag=profile.fingerprint())
    spec = find_kernel("gemm")
    print(f"machine: {profile.model} ({profile.logical_cores} threads, {profile.simd_isa}), "
          f"compiler {toolchain.version}, -march={toolchain.target}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        cache = Path(tmp)
        with Store.open(cache / "bench.db") as store:
            for shape in args.shapes:
                problem = parse_shape(spec, shape)
                space = Space.build(problem, max_threads=profile.logical_cores,
                                    vector_bits=target_vector_bits(toolchain.target, profile))
                size = space.size()
                started = time.perf_counter()
                result = tune(problem, profile=profile, store=store, backend=CBackend(toolchain), cache_dir=cache,
                              options=TuneOptions(strategy="exhaustive", budget=Budget()))
                wall = time.perf_counter() - started
                assert result.winner is not None and result.winner.median_s is not None
                naive = {**space.default(), **NAIVE}
                spread = noise(problem, profile, toolchain, cache, [result.winner.config, naive], args.repeats)
                naive_median, winner_median = spread[config_key(naive)][0], spread[config_key(result.winner.config)][0]
                rows.append({
                    "shape": problem.key, "valid": size, "cartesian": space.cartesian_size,
                    "evaluated": result.evaluations, "outcomes": dict(result.outcomes),
                    "exhaustive_s": wall, "best": result.winner.key, "best_s": result.winner.median_s,
                    "gflops": result.gflops, "best_over_default": result.speedup,
                    "best_over_naive": naive_median / winner_median,
                    "noise_best": spread[config_key(result.winner.config)][1:],
                    "noise_naive": spread[config_key(naive)][1:],
                })
                print_row(rows[-1])
                sys.stdout.flush()
    print()
    print("| shape | valid configs | exhaustive wall | best | GFLOP/s | best/default | best/naive | "
          "noise best (medians p90-p10, samples IQR) | noise naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['valid']} of {r['cartesian']} | {r['exhaustive_s']:.0f} s | {r['best']} | "
              f"{r['gflops']:.1f} | {r['best_over_default']:.2f}x | {r['best_over_naive']:.2f}x | "
              f"{r['noise_best'][0]:.1%}, {r['noise_best'][1]:.1%} | "
              f"{r['noise_naive'][0]:.1%}, {r['noise_naive'][1]:.1%} |")
    return 0


def noise(problem, profile, toolchain, cache, configs, repeats):
    """Measure each config ``repeats`` times, separately; returns key -> (median of medians,
    (p90 - p10) / median over the medians, median within-run IQR / median)."""
    flush, flush_bytes = flush_bytes_for(problem, profile, "auto")
    settings = MeasureSettings(flush=flush, prune_ratio=float("inf"))
    medians: dict[str, list[float]] = {config_key(c): [] for c in configs}
    iqrs: dict[str, list[float]] = {config_key(c): [] for c in configs}
    with WorkerSession(problem.spec.spec_path, problem.shape, flush_bytes=flush_bytes) as session:
        for config in configs:
            build = compile_candidate(problem.spec, config, toolchain, cache / "build")
            assert build.library is not None, build.error
            session.load(config_key(config), build.library)
            session.verify(config_key(config))
        rng = random.Random(0)
        for _ in range(repeats):
            for config in configs:  # separately, one after the other: the worst case for drift
                key = config_key(config)
                samples = measure_interleaved(session, [key], settings, rng)[key].samples
                medians[key].append(statistics.median(samples))
                q = statistics.quantiles(samples, n=4)
                iqrs[key].append((q[2] - q[0]) / statistics.median(samples))
    out = {}
    for key, values in medians.items():
        deciles = statistics.quantiles(values, n=10)
        centre = statistics.median(values)
        out[key] = (centre, (deciles[8] - deciles[0]) / centre, statistics.median(iqrs[key]))
    return out


def print_row(r: dict) -> None:
    print(f"{r['shape']}: {r['valid']} legal configs ({r['cartesian']} raw), {r['evaluated']} evaluated "
          f"{r['outcomes']}, exhaustive search {r['exhaustive_s']:.1f} s; best {r['best']} "
          f"{r['best_s'] * 1e3:.3f} ms ({r['gflops']:.1f} GFLOP/s), best/default {r['best_over_default']:.2f}x, "
          f"best/naive {r['best_over_naive']:.2f}x; noise of best: medians spread {r['noise_best'][0]:.1%}, "
          f"samples IQR {r['noise_best'][1]:.1%}")


if __name__ == "__main__":
    sys.exit(main())
