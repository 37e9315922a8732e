"""Nearest-case reuse: the configurations measured best on the most similar known hardware and shape.

This is the prior a model has to beat (and, where it does not, the one the device uses): for a
kernel the fleet or the shipped data has measured, take the ranking measured on the known case
nearest to this one: same kernel, the most similar hardware (:func:`hardware_distance`), then
the nearest shape (:func:`shape_distance`). The distance is fixed, not fitted: every known
numeric field counts as ``|log2(a / b)|``, every categorical field as 0 or 1, a field known on
one side only as :data:`UNKNOWN_FIELD`, averaged over the fields either side knows.

The same functions rank candidates on the device (:class:`ReuseIndex`, over shipped measured
rankings) and in the held-out evaluation (``agent.train.baselines.reuse_order``), so the figure
the evaluation reports is the one the device gets.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.errors import ModelFileError
from agent.kernels.space import Config, config_key
from agent.predict.model_files import REUSE_FILE, read_model_file
from agent.predict.prompt import HardwareDesc

__all__ = ["REUSE_FILE", "UNKNOWN_FIELD", "MeasuredCase", "ReuseIndex", "case_distance", "hardware_distance",
           "reuse_ranking", "same_hardware", "shape_distance"]

UNKNOWN_FIELD = 0.5  # a field one side knows and the other does not: as unlike as a 1.4x difference
_STRUCTURAL = ("vector_bits", "cores", "l1_bytes", "l2_bytes", "l3_bytes", "multiprocessors", "shared_memory_bytes")
_NUMERIC = (*_STRUCTURAL, "bandwidth_gbs")
MIN_SHARED_FIELDS = 3  # structural fields both descriptions must know to call them the same device
BANDWIDTH_SLACK = 0.25  # measured bandwidths of one kind of device differ from run to run
_CATEGORICAL = ("isa", "vendor", "architecture")
MAX_FILE_BYTES = 16 << 20  # the shipped index is 14 KB; a fleet's could be larger, never this
MAX_INDEX_BYTES = 64 << 20  # unpacked (the shipped one: under 1 MB)
KEEP_PER_CASE = 16  # measured configurations kept per known case: the reuse prior never needs more


@dataclass(frozen=True)
class MeasuredCase:
    """One known case: a kernel at a shape on some hardware, with its best configurations, best first."""

    kernel: str
    shape: Mapping[str, int]
    hardware: HardwareDesc
    ranked: tuple[Config, ...]  # correct configurations only, fastest first
    source: str  # where it was measured (device name / case id), for the record


def hardware_distance(a: HardwareDesc, b: HardwareDesc) -> float:
    """How unlike two devices are (0: every known field equal); ``inf`` across CPU and GPU."""
    if a.kind != b.kind:
        return math.inf
    total, fields = 0.0, 0
    for name in _NUMERIC:
        x, y = getattr(a, name), getattr(b, name)
        if x is None and y is None:
            continue
        fields += 1
        if x is None or y is None or x <= 0 or y <= 0:
            total += UNKNOWN_FIELD
        else:
            total += abs(math.log2(float(x) / float(y)))
    for name in _CATEGORICAL:
        x, y = getattr(a, name), getattr(b, name)
        if x is None and y is None:
            continue
        fields += 1
        total += UNKNOWN_FIELD if x is None or y is None else float(x != y)
    return total / fields if fields else 0.0


def same_hardware(a: HardwareDesc, b: HardwareDesc) -> bool:
    """Whether two descriptions are of the same kind of device: every structural field both know is
    equal (at least :data:`MIN_SHARED_FIELDS` of them), and measured bandwidths, where both have one,
    agree within :data:`BANDWIDTH_SLACK`. A field one side does not know is no evidence either way:
    the shipped data may lack a bandwidth that a device's probe measured."""
    if a.kind != b.kind:
        return False
    shared = 0
    for name in (*_STRUCTURAL, *_CATEGORICAL):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            continue
        if x != y:
            return False
        shared += 1
    x, y = a.bandwidth_gbs, b.bandwidth_gbs
    if x and y and abs(math.log(float(x) / float(y))) > math.log(1 + BANDWIDTH_SLACK):
        return False
    return shared >= MIN_SHARED_FIELDS


def shape_distance(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Sum of ``|log2(a_d / b_d)|`` over the dimensions; ``inf`` when they are not the same dimensions."""
    if set(a) != set(b):
        return math.inf
    return sum(abs(math.log2(max(int(a[d]), 1) / max(int(b[d]), 1))) for d in a)


def case_distance(known: MeasuredCase, hardware: HardwareDesc, shape: Mapping[str, int]) -> tuple[float, float]:
    """(hardware distance, shape distance): hardware first, as a device's kind matters most."""
    return hardware_distance(known.hardware, hardware), shape_distance(known.shape, shape)


def reuse_ranking(known: Iterable[MeasuredCase], kernel: str, hardware: HardwareDesc, shape: Mapping[str, int],
                  *, valid: Callable[[Config], bool] | None = None,
                  limit: int = 32) -> list[tuple[Config, MeasuredCase]]:
    """Configurations to try, best first: the nearest known case's ranking, then the next nearest's.

    Only cases of ``kernel`` count. A configuration is kept once, and only where ``valid`` says it
    is legal here (another machine's vector width or core count may not be).
    """
    pool = [(case_distance(k, hardware, shape), k.source, k) for k in known if k.kernel == kernel]
    pool = [p for p in pool if math.isfinite(p[0][0]) and math.isfinite(p[0][1])]
    pool.sort(key=lambda p: (p[0], p[1]))
    out: list[tuple[Config, MeasuredCase]] = []
    seen: set[str] = set()
    for _, _, case in pool:
        for config in case.ranked:
            key = config_key(config)
            if key in seen or (valid is not None and not valid(config)):
                continue
            seen.add(key)
            out.append((dict(config), case))
            if len(out) >= limit:
                return out
    return out


class ReuseIndex:
    """The measured rankings shipped beside the models (``reuse.json.gz``), for :func:`reuse_ranking`."""

    def __init__(self, cases: Sequence[MeasuredCase]) -> None:
        self.cases = list(cases)
        self.kernels = {c.kernel for c in self.cases}

    @classmethod
    def load(cls, path: Path) -> ReuseIndex:
        """Read an index written by :meth:`save`; ModelFileError naming the file when it is unusable."""
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(read_model_file(path, MAX_FILE_BYTES))) as handle:
                text = handle.read(MAX_INDEX_BYTES + 1)
            if len(text) > MAX_INDEX_BYTES:
                raise ValueError(f"unpacks to more than {MAX_INDEX_BYTES} bytes")
            data = json.loads(text)
            cases = [_measured_case(c) for c in data["cases"]]
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no measured rankings to reuse") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: not a reuse index ({type(exc).__name__}: {exc})") from None
        return cls(cases)

    def save(self, path: Path) -> None:
        """Write the index (gzip JSON, keys sorted: the same data gives the same bytes)."""
        data = {"version": 1, "cases": [{"kernel": c.kernel, "shape": dict(c.shape), "hardware": asdict(c.hardware),
                                         "ranked": [dict(r) for r in c.ranked], "source": c.source}
                                        for c in sorted(self.cases, key=lambda c: c.source)]}
        text = json.dumps(data, sort_keys=True, default=_plain)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(text.encode("utf-8"))  # no name or time in the header: the same data, the same bytes
        os.replace(partial, path)

    def ranking(self, kernel: str, hardware: HardwareDesc, shape: Mapping[str, int], *,
                valid: Callable[[Config], bool] | None = None, limit: int = 32) -> list[tuple[Config, MeasuredCase]]:
        return reuse_ranking(self.cases, kernel, hardware, shape, valid=valid, limit=limit)


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _measured_case(data: Mapping[str, Any]) -> MeasuredCase:
    """One case of the index file, its types checked (a wrong one is a TypeError naming the field)."""
    hardware = dict(data["hardware"])
    for name, value in hardware.items():
        if name in _NUMERIC:
            if value is not None and not _positive_number(value):
                raise TypeError(f"hardware field {name!r} is {value!r}, not a positive number")
        elif name in (*_CATEGORICAL, "kind"):
            if not isinstance(value, str) and not (value is None and name != "kind"):
                raise TypeError(f"hardware field {name!r} is {value!r}, not text")
        else:
            raise TypeError(f"unknown hardware field {name!r}")
    shape = dict(data["shape"])
    if not all(isinstance(k, str) and isinstance(v, int) and _positive_number(v) for k, v in shape.items()):
        raise TypeError(f"shape {shape!r} is not dimension names and positive integers")
    ranked = tuple(dict(r) for r in data["ranked"])
    if not all(isinstance(k, str) and isinstance(v, (int, float, str)) and not isinstance(v, bool)
               for r in ranked for k, v in r.items()):
        raise TypeError("a configuration is not parameter names and values")
    if not isinstance(data["kernel"], str) or not isinstance(data["source"], str):
        raise TypeError("kernel and source must be text")
    return MeasuredCase(kernel=data["kernel"], shape=shape, hardware=HardwareDesc(**hardware), ranked=ranked,
                        source=data["source"])


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    raise TypeError(f"{type(value).__name__} is not JSON")
