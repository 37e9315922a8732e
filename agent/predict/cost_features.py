"""Numeric features of (hardware, kernel, shape, configuration) for the cost model.

One row per configuration: hardware, kernel and shape columns (the same for every row of
a problem), then one column per global configuration field (``tile#0``, ``unroll#1``,
...): log2(1 + value) for numbers, the declared index for categories, NaN where the
kernel has no such parameter. Training (``agent.train``) and the device use this one
function, so a model file never meets features it was not trained on; its layout is
pinned by :data:`FEATURE_VERSION` and :data:`FEATURE_COUNT`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from agent.predict.prompt import ConfigCodec, HardwareDesc, KernelDesc
from agent.predict.vocab import CONFIG_ROLE_ORDER, DTYPES, GPU_ARCHS, GPU_VENDORS, ISAS, KNOWN_KERNELS, MAX_ORDINAL

__all__ = ["FEATURE_COUNT", "FEATURE_VERSION", "config_features", "context_features"]

FEATURE_VERSION = 1
CONFIG_FIELDS = tuple(f"{role}#{i}" for role in CONFIG_ROLE_ORDER for i in range(MAX_ORDINAL))


def _log2(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return math.log2(v) if v > 0 and math.isfinite(v) else math.nan


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _category(value: Any, choices: Sequence[str]) -> float:
    return float(choices.index(value)) if value in choices else math.nan


def _hashable(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def context_features(hardware: HardwareDesc, kernel: KernelDesc, shape: Mapping[str, int]) -> list[float]:
    """Hardware, kernel and shape columns (NaN where unknown)."""
    h, k = hardware, kernel
    row = [float(h.kind == "gpu"), _category(h.isa, ISAS), _num(h.vector_bits), _num(h.cores), _log2(h.l1_bytes),
           _log2(h.l2_bytes), _log2(h.l3_bytes), _log2(h.bandwidth_gbs), _category(h.vendor, GPU_VENDORS),
           _category(h.architecture, GPU_ARCHS), _num(h.multiprocessors), _log2(h.shared_memory_bytes)]
    operations = array_bytes = None
    with contextlib.suppress(Exception):  # a formula that cannot be evaluated at this shape is unknown
        operations = k.operations(shape) if k.operations else None
    with contextlib.suppress(Exception):
        array_bytes = k.array_bytes(shape) if k.array_bytes else None
    row += [_category(k.name, KNOWN_KERNELS), _category(k.element_type, DTYPES), _category(k.output_type, DTYPES),
            float(len(k.dimensions)), _num(k.arrays_read), _num(k.arrays_written), _num(k.reduction),
            _num(k.loop_depth), _num(k.loops), _num(k.vector_code), _num(k.parallel),
            math.nan if k.math_calls is None else float(len(k.math_calls)),
            *(float(k.params_by_role.get(role, 0)) for role in CONFIG_ROLE_ORDER),
            _log2(operations), _log2(array_bytes),
            _log2(operations / array_bytes) if operations and array_bytes else math.nan]
    dims = [_log2(max(1, shape[d])) if d in shape else math.nan for d in k.dimensions[:MAX_ORDINAL]]
    return row + dims + [math.nan] * (MAX_ORDINAL - len(dims))


CONTEXT_COUNT = len(context_features(HardwareDesc(kind="cpu"), KernelDesc(name=None, dimensions=(),
                                                                            params_by_role={}), {}))
FEATURE_COUNT = CONTEXT_COUNT + len(CONFIG_FIELDS)


def config_features(hardware: HardwareDesc, kernel: KernelDesc, shape: Mapping[str, int], codec: ConfigCodec,
                    configs: Sequence[Mapping[str, Any]], *, hide_name: bool = False) -> np.ndarray:
    """[len(configs), FEATURE_COUNT] features (float64); ``hide_name`` leaves the kernel's name out."""
    if hide_name:
        kernel = replace(kernel, name=None)
    out = np.full((len(configs), FEATURE_COUNT), np.nan, dtype=np.float64)
    out[:, :CONTEXT_COUNT] = np.array(context_features(hardware, kernel, shape), dtype=np.float64)
    column = {f: CONTEXT_COUNT + i for i, f in enumerate(CONFIG_FIELDS)}
    for slot in codec.slots:
        mapping: dict[Any, float] = {}
        for i, v in enumerate(slot.values):
            if isinstance(v, str):
                mapping[v] = float(i)
            else:
                mapping[_hashable(v)] = math.log2(1 + float(v)) if float(v) > -1 else math.nan
        col = column[slot.field]
        out[:, col] = [mapping.get(_hashable(c.get(slot.name)), math.nan) for c in configs]
    return out
