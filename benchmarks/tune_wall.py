"""Benchmark: wall time and peak memory of the real ``edgetune tune`` command, seen from outside.

Runs ``python -m agent.cli --db TMP tune KERNEL --shape S --strategy STRATEGY --json`` N times
per case (held-out shapes: not in the committed dataset; see ``strategies.HELD_OUT``), each
with a fresh store and a fresh ``EDGETUNE_CACHE`` so compiles count. Per case it prints the
median wall time (process start to exit), evaluations (compilations, from the JSON), and the
peak resident memory of the whole process tree (the CLI, its benchmark worker and the
compilers it starts: RSS summed over the tree every 20 ms, the maximum kept; shared pages
count once per process) and of the CLI process alone.

    .venv/bin/python benchmarks/tune_wall.py [--cases KERNEL:SHAPE ...] [--strategy model] [--budget N]
        [--runs 5] [--markdown]

Not a test: nothing asserts. Figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from agent.errors import EdgetuneError
from agent.search import get_strategy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from strategies import HELD_OUT, table  # noqa: E402  (a sibling script, not a package)

DEFAULT_CASES = tuple(f"{k}:{HELD_OUT[k]}" for k in ("layernorm", "gemv", "transpose"))
SAMPLE_S = 0.02
MIB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="KERNEL:SHAPE")
    parser.add_argument("--strategy", default="model", help="search strategy (use local where model is missing)")
    parser.add_argument("--budget", help="evaluations or time, as edgetune tune --budget (default: its own)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    try:
        get_strategy(args.strategy)
    except EdgetuneError as exc:
        sys.exit(f"{exc} (try --strategy local)")

    headers = ["case", "strategy", "runs", "median wall s", "median evals", "peak tree MiB (median, max)",
               "peak CLI MiB (median)"]
    rows = []
    for case in args.cases:
        kernel, _, shape = case.partition(":")
        runs = [run_once(kernel, shape, args.strategy, args.budget) for _ in range(args.runs)]
        for r in runs:
            print(f"  {case}: {r['wall_s']:.2f} s, {r['evaluations']} evaluations, "
                  f"tree {r['tree_rss'] / MIB:.0f} MiB, CLI {r['cli_rss'] / MIB:.0f} MiB", file=sys.stderr, flush=True)
        tree = [r["tree_rss"] / MIB for r in runs]
        rows.append([case, args.strategy, str(len(runs)), f"{statistics.median(r['wall_s'] for r in runs):.2f}",
                     f"{statistics.median(r['evaluations'] for r in runs):g}",
                     f"{statistics.median(tree):.0f}, {max(tree):.0f}",
                     f"{statistics.median(r['cli_rss'] / MIB for r in runs):.0f}"])
    print(table(headers, rows, markdown=args.markdown))
    return 0


def run_once(kernel: str, shape: str, strategy: str, budget: str | None) -> dict:
    """One ``edgetune tune`` in a fresh store and cache: wall time, evaluations, peak RSS (bytes)."""
    with tempfile.TemporaryDirectory(prefix="edgetune-wall-") as tmp:
        command = [sys.executable, "-m", "agent.cli", "--db", str(Path(tmp) / "tune.db"), "tune", kernel,
                   "--strategy", strategy, "--json", *(["--shape", shape] if shape else []),
                   *(["--budget", budget] if budget else [])]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGETUNE_CACHE": str(Path(tmp) / "cache")}
        with open(Path(tmp) / "out", "w+") as out, open(Path(tmp) / "err", "w+") as err:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
            peaks = {"tree": 0, "cli": 0}
            sampler = threading.Thread(target=_sample, args=(process, peaks), daemon=True)
            sampler.start()
            code = process.wait()
            wall = time.perf_counter() - started
            sampler.join()
            out.seek(0)
            err.seek(0)
            if code != 0:
                raise SystemExit(f"{' '.join(command)} exited {code}: {err.read().strip()[-2000:]}")
            result = json.loads(out.read())
    return {"wall_s": wall, "evaluations": result["evaluations"], "tree_rss": peaks["tree"], "cli_rss": peaks["cli"]}


def _sample(process: subprocess.Popen, peaks: dict[str, int]) -> None:
    """Every 20 ms until ``process`` exits: the RSS of it and of all its descendants, summed."""
    try:
        root = psutil.Process(process.pid)
    except psutil.NoSuchProcess:
        return
    while process.poll() is None:
        total = 0
        try:
            cli = root.memory_info().rss
            children = root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        total = cli
        for child in children:
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        peaks["cli"] = max(peaks["cli"], cli)
        peaks["tree"] = max(peaks["tree"], total)
        time.sleep(SAMPLE_S)


if __name__ == "__main__":
    sys.exit(main())
