"""Benchmark: how long the on-device model takes to load and to propose configurations.

Prints the model's load time (median of 5 fresh ``LocalModel`` constructions), then per
built-in kernel at its default shape on this machine: the valid space's size and enumeration
time, the median time of a ``LocalModel.beam`` top-5 (widths 32 and 8) with a new prompt (its
decode included) and with the prompt cached from the call before, and of ``score`` over the
whole space, for each llama.cpp thread count.

    .venv/bin/python benchmarks/predict_latency.py [--kernels gemm softmax] [--threads 1 2] [--markdown]

Not a test: nothing here asserts. Figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.hardware import HardwareProfile, probe
from agent.hardware.targets import target_vector_bits
from agent.kernels.features import kernel_features
from agent.kernels.problem import Problem, parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space
from agent.predict.local_model import LocalModel
from agent.predict.prompt import ConfigCodec, encode_prompt, hardware_desc, kernel_desc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KERNELS = ["gemm", "conv2d", "dwconv3x3", "stencil5", "softmax", "layernorm"]
HEADER = ["threads", "kernel", "shape", "rows", "slots", "enumerate ms", "beam w32 ms new/cached",
          "beam w8 ms new/cached", "score all ms"]


def model_query(problem: Problem, profile: HardwareProfile, bits: int) -> tuple[list[int], np.ndarray,
                                                                             list[list[int]], float]:
    """What the predictor asks the model for ``problem`` on this machine: the prompt, every valid
    configuration's tokens, the allowed ids per slot, and how long enumerating the space took (ms)."""
    spec = problem.spec
    space = Space.build(problem, max_threads=profile.logical_cores, vector_bits=bits)
    started = time.perf_counter()
    configs = list(space)
    enumerate_ms = (time.perf_counter() - started) * 1000
    params = [{"name": p.name, "role": p.role, "values": p.values} for p in space.params]
    codec = ConfigCodec.for_params(params)
    rows = np.array([codec.encode(c) for c in configs], dtype=np.int64)
    kernel = kernel_desc({"params": params, "dimensions": spec.dimensions}, name=spec.name, spec=spec,
                         features=kernel_features(spec))
    prompt = encode_prompt(hardware_desc(profile.to_dict(), vector_bits=bits), kernel, problem.shape)
    return prompt, rows, [list(dict.fromkeys(s.token_ids)) for s in codec.slots], enumerate_ms


def _ms(fn: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` in ms; ``before`` runs untimed ahead of each call."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _figures(model: LocalModel, prompt: list[int], rows: np.ndarray, allowed: list[list[int]], repeats: int,
             score_repeats: int) -> list[str]:
    """Beam top-5 ms (new prompt / cached prompt) at widths 32 and 8, and whole-space score ms."""
    def forget() -> None:
        model.logits([0])  # clears the cached prompt

    out = []
    for width in (32, 8):
        def top5(width: int = width) -> list[int]:
            return model.beam(prompt, rows, allowed, width=width)[0][:5].tolist()

        out.append(f"{_ms(top5, repeats, forget):.1f} / {_ms(top5, repeats):.1f}")
    out.append(f"{_ms(lambda: model.score(prompt, rows, allowed), score_repeats, forget):.0f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "edgetune-student-q4_0.gguf"))
    parser.add_argument("--kernels", nargs="+", default=DEFAULT_KERNELS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="llama.cpp threads")
    parser.add_argument("--repeats", type=int, default=20, help="beam calls per figure")
    parser.add_argument("--score-repeats", type=int, default=3, help="whole-space score calls per figure")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    profile = probe(measure_bandwidth=False)
    bits = target_vector_bits("native", profile)
    print(f"machine: {profile.model} ({profile.logical_cores} threads, {profile.simd_isa}), model {args.model}")
    load = _ms(lambda: LocalModel(args.model, n_threads=args.threads[0]).close(), 5)
    print(f"model load: {load:.1f} ms (median of 5)")

    queries = []
    for name in args.kernels:
        spec = find_kernel(name)
        problem = parse_shape(spec, None)
        prompt, rows, allowed, enumerate_ms = model_query(problem, profile, bits)
        queries.append((name, problem.key, enumerate_ms, prompt, rows, allowed))

    table = []
    for threads in args.threads:
        with LocalModel(args.model, n_threads=threads) as model:
            for name, shape, enumerate_ms, prompt, rows, allowed in queries:
                figures = _figures(model, prompt, rows, allowed, args.repeats, args.score_repeats)
                table.append([str(threads), name, shape, str(len(rows)), str(rows.shape[1]), f"{enumerate_ms:.1f}",
                              *figures])
                if not args.markdown:
                    print("  ".join(f"{h}={v}" for h, v in zip(HEADER, table[-1], strict=True)), flush=True)
    if args.markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
        for row in table:
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
