"""Benchmark: predict latency of two llama.cpp builds side by side (the Debian package's portable
build against one made for this machine's CPU).

Each build is a folder of llama.cpp libraries that llama-cpp-python loads through
``LLAMA_CPP_LIB_PATH`` (the default build: the venv's own ``llama_cpp/lib``). Rounds alternate
the builds (A B A B ...) in fresh processes, so drift on a noisy machine hits both alike. Each
process loads the student, then times ``LocalModel.beam`` top-5 (width 8, a new prompt each call,
its decode included: what one tuning pays) per kernel; the figure per build is the median over
rounds of each round's median. Also prints which CPU variant a GGML_BACKEND_DL build loaded.

    .venv/bin/python benchmarks/llama_builds.py --build native= --build portable=/path/to/llama_cpp/lib

Not a test: nothing here asserts. Figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KERNELS = ["gemm", "conv2d", "softmax", "layernorm"]


def child(kernels: list[str], repeats: int, threads: int) -> dict[str, object]:
    """One process's figures: median beam ms per kernel, and the llama.cpp CPU library it mapped."""
    from predict_latency import model_query  # a sibling script, not a package

    from agent.hardware import probe
    from agent.hardware.targets import target_vector_bits
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel
    from agent.predict.local_model import LocalModel

    profile = probe(measure_bandwidth=False)
    bits = target_vector_bits("native", profile)
    figures: dict[str, float] = {}
    with LocalModel(ROOT / "models" / "edgetune-student-q4_0.gguf", n_threads=threads) as model:
        for name in kernels:
            prompt, rows, allowed, _ = model_query(parse_shape(find_kernel(name), None), profile, bits)
            samples = []
            for _ in range(repeats):
                model.logits([prompt[0]])  # another prompt in the cache: each beam decodes its prompt anew
                started = time.perf_counter()
                model.beam(prompt, rows, allowed, width=8)
                samples.append((time.perf_counter() - started) * 1000)
            figures[name] = statistics.median(samples)
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    variant = sorted({Path(line.split()[-1]).name for line in maps.splitlines() if "libggml-cpu" in line})
    return {"ms": figures, "cpu_library": variant}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", default=[], metavar="NAME=LIBDIR",
                        help="a build: its name and its llama_cpp/lib folder (empty: the venv's own); twice or more")
    parser.add_argument("--kernels", nargs="+", default=DEFAULT_KERNELS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="beam calls per kernel per round")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.kernels, args.repeats, args.threads)))
        return 0
    if len(args.build) < 2:
        parser.error("name two builds or more with --build NAME=LIBDIR")

    builds = dict(b.split("=", 1) for b in args.build)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    libraries: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, libdir in builds.items():
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            env.pop("LLAMA_CPP_LIB_PATH", None)
            if libdir:
                env["LLAMA_CPP_LIB_PATH"] = libdir
            done = subprocess.run([sys.executable, __file__, "--child", "--kernels", *args.kernels, "--repeats",
                                   str(args.repeats), "--threads", str(args.threads)],
                                  capture_output=True, text=True, env=env, check=True)
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            rounds[name].append(answer["ms"])
            libraries[name] = answer["cpu_library"]
    first = next(iter(builds))
    print(f"beam top-5 (width 8, new prompt), {args.threads} thread(s), median of {args.rounds} rounds "
          f"x {args.repeats} calls, ms; ratio against {first}")
    print("| kernel | " + " | ".join(builds) + " | " + " | ".join(f"{n}/{first}" for n in list(builds)[1:]) + " |")
    print("|---|" + "---|" * (2 * len(builds) - 1))
    for kernel in args.kernels:
        med = {name: statistics.median(r[kernel] for r in rounds[name]) for name in builds}
        ratios = [f"{med[n] / med[first]:.2f}" for n in list(builds)[1:]]
        print(f"| {kernel} | " + " | ".join(f"{med[n]:.1f}" for n in builds) + " | " + " | ".join(ratios) + " |")
    for name in builds:
        print(f"{name}: CPU library {', '.join(libraries[name]) or 'linked into libggml (no GGML_BACKEND_DL)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
