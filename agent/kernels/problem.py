"""Problem shapes: parse ``M=256,N=256,K=256`` or a named shape, and check it fits a spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from agent.errors import ExpressionError, ShapeError
from agent.kernels.spec import KernelSpec

__all__ = ["MAX_PROBLEM_BYTES", "Problem", "parse_shape", "shape_key"]

# A problem whose arrays need more than this is refused before any compile or allocation.
MAX_PROBLEM_BYTES = 4 * 2**30
# The worker holds inputs, pristine copies, guarded outputs and the reference's result.
WORKING_COPIES = 3

_ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class Problem:
    """A kernel at one concrete shape: the array shapes and sizes follow from it."""

    spec: KernelSpec
    shape: Mapping[str, int]

    @property
    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        return _array_shapes(self.spec, self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays together (the working set, before cache effects)."""
        total = 0
        shapes = self.array_shapes
        for arg in self.spec.args:
            if arg.is_array:
                count = 1
                for extent in shapes[arg.name]:
                    count *= extent
                total += count * _ITEMSIZE[arg.dtype]
        return total

    @property
    def key(self) -> str:
        return shape_key(self.shape)


def shape_key(shape: Mapping[str, int]) -> str:
    """Canonical text of a shape, e.g. ``K=64,M=32,N=16`` (sorted, so stable as a DB key)."""
    return ",".join(f"{k}={shape[k]}" for k in sorted(shape))


def parse_shape(spec: KernelSpec, text: str | None) -> Problem:
    """Turn ``M=256,N=256,K=256`` or a named shape of the spec into a checked Problem."""
    if text is None or text == "":
        if spec.default_shape is None:
            raise ShapeError(f"kernel {spec.name} has no default shape; pass --shape "
                             + ",".join(f"{d}=..." for d in spec.dimensions))
        return _checked(spec, spec.shapes[spec.default_shape])
    if text in spec.shapes:
        return _checked(spec, spec.shapes[text])
    shape: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep:
            names = ", ".join(spec.shapes) or "none"
            raise ShapeError(f"shape {text!r}: expected NAME=VALUE pairs like "
                             f"{','.join(d + '=64' for d in spec.dimensions)} or a named shape ({names})")
        if name in shape:
            raise ShapeError(f"shape {text!r}: dimension {name} given twice")
        try:
            shape[name] = int(value.strip())
        except ValueError:
            raise ShapeError(f"shape {text!r}: {name}={value.strip()!r} is not an integer") from None
    return _checked(spec, shape)


def _checked(spec: KernelSpec, shape: Mapping[str, int]) -> Problem:
    dims = set(spec.dimensions)
    unknown = sorted(set(shape) - dims)
    missing = [d for d in spec.dimensions if d not in shape]
    if unknown:
        raise ShapeError(f"kernel {spec.name} has no dimension(s) {', '.join(unknown)}; "
                         f"its dimensions are {', '.join(spec.dimensions)}")
    if missing:
        raise ShapeError(f"shape for kernel {spec.name} is missing {', '.join(missing)}")
    for name, value in shape.items():
        if value < 1:
            raise ShapeError(f"dimension {name}={value} must be a positive integer")
        if value > 2**31 - 1:
            raise ShapeError(f"dimension {name}={value} does not fit the int32 signature")
    problem = Problem(spec=spec, shape={d: int(shape[d]) for d in spec.dimensions})
    if problem.nbytes > MAX_PROBLEM_BYTES:
        raise ShapeError(f"shape {problem.key} needs {problem.nbytes / 2**30:.1f} GiB of arrays; "
                         f"the limit is {MAX_PROBLEM_BYTES / 2**30:.0f} GiB")
    available = psutil.virtual_memory().available
    if problem.nbytes * WORKING_COPIES > available:
        raise ShapeError(f"shape {problem.key} needs {problem.nbytes / 2**20:.0f} MiB of arrays, about "
                         f"{problem.nbytes * WORKING_COPIES / 2**20:.0f} MiB with the reference's copies; "
                         f"this machine has {available / 2**20:.0f} MiB available")
    return problem


def _array_shapes(spec: KernelSpec, shape: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for arg in spec.args:
        if not arg.is_array:
            continue
        assert arg.shape is not None
        extents = []
        for expr in arg.shape:
            try:
                value = expr.evaluate(shape)
            except ExpressionError as exc:
                raise ShapeError(f"array {arg.name}: {exc}") from None
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ShapeError(f"array {arg.name}: extent {expr.text} = {value!r} is not a positive integer")
            extents.append(value)
        shapes[arg.name] = tuple(extents)
    return shapes
