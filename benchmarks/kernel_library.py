"""Benchmark: what the kernel library's spaces are worth, read from a collected dataset.

For every kernel in a dataset made by ``edgetune collect`` it prints:

- the valid space size (native target, the most cores collected);
- best/default and best/median speed-ups at two shapes (native, most cores);
- how much the best configuration changes between shapes: the slowdown of using the
  best configuration of one shape at another (geometric mean over shape pairs,
  among configurations measured in both cases), and how often the best differs;
- the same between compiler targets (same shape and cores).

That last pair is why prediction is worth doing: if one configuration were best
everywhere, a table lookup would do.

    .venv/bin/python benchmarks/kernel_library.py [models/data/cpu-...]

It measures nothing itself; the dataset's manifest says which command measured it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from agent.dataset import read_dataset
from agent.kernels.space import config_key

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", help="dataset folder (default: the newest cpu-* under models/data)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    path = Path(args.dataset) if args.dataset else max(DEFAULT.glob("cpu-*"), default=None)
    if path is None:
        print("no dataset given and none under models/data", file=sys.stderr)
        return 1
    dataset = read_dataset(path)
    # case -> {config key: time}; and per case its (kernel, shape, target, cores)
    times: dict[str, dict[str, float]] = defaultdict(dict)
    meta: dict[str, tuple[str, str, str, int]] = {}
    defaults: dict[str, str] = {}
    spaces = dataset.manifest.get("kernels", {})
    for record in dataset.records:
        case = record["case"]
        shape = ",".join(f"{k}={v}" for k, v in sorted(record["shape"].items()))
        meta[case] = (record["kernel"], shape, record["target"], record["cores"] or 0)
        if record["status"] == "correct":
            times[case][config_key(record["config"])] = record["time_s"]
        if case not in defaults:
            params = spaces.get(record["kernel_key"], {}).get("space", {}).get("params", [])
            defaults[case] = config_key({p["name"]: p["default"] for p in params if "default" in p})
    print(f"dataset {path.name}: {dataset.manifest['counts']['records']} records, "
          f"{dataset.manifest['counts']['cases']} cases; made by: {'; '.join(dataset.manifest.get('commands', []))}")
    header = ["kernel", "valid (sampled)", "shape A", "best/default A", "best/median A", "shape B",
              "best/default B", "best/median B", "shape transfer loss", "best differs (shapes)",
              "target transfer loss", "best differs (targets)"]
    rows = []
    for kernel in sorted({m[0] for m in meta.values()}):
        cases = [c for c, m in meta.items() if m[0] == kernel]
        most_cores = max(meta[c][3] for c in cases)
        native = sorted((c for c in cases if meta[c][2] == "native" and meta[c][3] == most_cores),
                        key=lambda c: meta[c][1])
        valid = max((len(times[c]) for c in native), default=0)
        shown = []
        for case in native[:2]:
            measured = times[case]
            best = min(measured.values()) if measured else math.nan
            default = measured.get(defaults[case], math.nan)
            median = statistics.median(measured.values()) if measured else math.nan
            shown.append((meta[case][1], default / best, median / best))
        while len(shown) < 2:
            shown.append(("-", math.nan, math.nan))
        shape_loss, shape_diff = _transfer(times, [[c for c in cases if meta[c][2] == t and meta[c][3] == n]
                                                  for t in {meta[c][2] for c in cases}
                                                  for n in {meta[c][3] for c in cases}])
        target_loss, target_diff = _transfer(times, [[c for c in cases if meta[c][1] == s and meta[c][3] == n]
                                                    for s in {meta[c][1] for c in cases}
                                                    for n in {meta[c][3] for c in cases}])
        rows.append([kernel, str(valid), shown[0][0], _x(shown[0][1]), _x(shown[0][2]), shown[1][0],
                     _x(shown[1][1]), _x(shown[1][2]), _x(shape_loss), shape_diff, _x(target_loss), target_diff])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in rows:
            print("  ".join(f"{h}={v}" for h, v in zip(header, row, strict=True)))
    return 0


def _transfer(times: dict[str, dict[str, float]], groups: list[list[str]]) -> tuple[float, str]:
    """Geometric-mean slowdown of taking case a's best config to case b, over ordered pairs in a group."""
    ratios, differs, pairs = [], 0, 0
    for group in groups:
        for a in group:
            for b in group:
                if a == b or not times[a] or not times[b]:
                    continue
                best_a = min(times[a], key=times[a].__getitem__)
                best_b = min(times[b].values())
                if best_a not in times[b]:
                    continue  # a's best was not sampled (or not legal) in b
                pairs += 1
                ratios.append(times[b][best_a] / best_b)
                differs += best_a != min(times[b], key=times[b].__getitem__)
    if not ratios:
        return math.nan, "-"
    return math.exp(statistics.fmean(math.log(r) for r in ratios)), f"{differs}/{pairs}"


def _x(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
