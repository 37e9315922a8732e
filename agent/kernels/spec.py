"""Kernel specs: a C source template plus a TOML file that a user writes without Python.

A spec directory holds ``kernel.toml``, the C source it names, and a NumPy reference::

    name = "gemm"
    backend = "c"                  # optional: how candidates are built and run (agent.backends)
    source = "gemm.c"              # C file beside kernel.toml
    entry = "gemm"                 # the exported function
    reference = "reference.py:gemm"
    rtol = 1e-4                    # tolerances of the output check
    atol = 1e-4
    constraints = ["BK % UNROLL == 0", "VEC == 1 or ORDER != 'ijk'"]
    default_shape = "medium"
    flops = "2 * M * N * K"        # optional: lets results be shown as GFLOP/s

    [[args]]                       # the C signature, in order
    name = "M"                     # an integer scalar is a problem-shape dimension
    dtype = "int32"
    [[args]]
    name = "A"
    dtype = "float32"
    shape = ["M", "K"]             # expressions over the dimensions
    intent = "in"                  # in | out | inout

    [[params]]
    name = "BM"
    role = "tile"                  # tile unroll vector prefetch order threads flag (GPU: block warps stages)
    values = [16, 32, 64]
    default = 32

    [shapes]
    medium = { M = 256, N = 256, K = 256 }

Parameters reach the compiler only as ``-DNAME=value`` (and ``-DNAME_value=1`` for
identifier values), and every value is checked against a strict pattern at load time.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from agent.backends import BACKENDS, DEFAULT_BACKEND
from agent.errors import ExpressionError, SpecError
from agent.kernels.expr import Expression, compile_expression

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ARRAY_DTYPES",
    "ROLES",
    "SCALAR_DTYPES",
    "TARGET_VECTOR_NAME",
    "Arg",
    "KernelSpec",
    "Param",
    "load_spec",
]

ParamValue = Union[int, str]

# block, warps and stages are the GPU roles (threads per block, warps, pipeline stages).
ROLES = ("tile", "unroll", "vector", "prefetch", "order", "threads", "flag", "block", "warps", "stages")
SCALAR_DTYPES = ("int32", "int64", "float32", "float64")
ARRAY_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32", "float64")
INTENTS = ("in", "out", "inout")

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Macro names the compiler or libc own; a parameter must not redefine them.
_RESERVED = re.compile(r"^(_.*|__.*|[A-Z]+_H|NDEBUG|linux|unix|i386|x86_64|aarch64)$")
_MAX_VALUES = 64
# The name constraints use for the compile target's SIMD register width, in bits.
TARGET_VECTOR_NAME = "VECTOR_BITS"
_MAX_PARAMS = 32


@dataclass(frozen=True)
class Arg:
    """One argument of the entry function: a scalar or an array with a shape expression."""

    name: str
    dtype: str
    shape: tuple[Expression, ...] | None = None  # None for scalars
    intent: str = "in"
    value: float | None = None  # fixed value of a non-dimension scalar

    @property
    def is_array(self) -> bool:
        return self.shape is not None

    @property
    def is_dimension(self) -> bool:
        """Integer scalars without a fixed value are the problem-shape dimensions."""
        return self.shape is None and self.dtype.startswith("int") and self.value is None


@dataclass(frozen=True)
class Param:
    """A tuning parameter: its values in search order, its role and its default."""

    name: str
    role: str
    values: tuple[ParamValue, ...]
    default: ParamValue
    description: str = ""


@dataclass(frozen=True)
class KernelSpec:
    """A loaded, validated kernel spec."""

    name: str
    spec_path: Path  # the kernel.toml
    directory: Path
    source_path: Path
    source: str
    entry: str
    reference_path: Path
    reference_function: str
    args: tuple[Arg, ...]
    params: tuple[Param, ...]
    constraints: tuple[Expression, ...]
    shapes: Mapping[str, Mapping[str, int]]
    default_shape: str | None
    rtol: float
    atol: float
    description: str = ""
    flops: Expression | None = None  # floating-point operations per call, over the dimensions
    source_hash: str = field(default="", compare=False)
    backend: str = DEFAULT_BACKEND  # the name of the backend that builds and runs it (agent.backends)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Names of the problem-shape dimensions, in signature order."""
        return tuple(a.name for a in self.args if a.is_dimension)

    @property
    def key(self) -> str:
        """Identity of this exact kernel version: name plus a hash of source, spec and reference."""
        return f"{self.name}-{self.source_hash[:12]}"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def default_config(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.params}

    def space_summary(self) -> dict[str, Any]:
        """A JSON-able description of the parameters and constraints (stored with the kernel)."""
        return {
            "params": [
                {"name": p.name, "role": p.role, "values": list(p.values), "default": p.default}
                for p in self.params
            ],
            "constraints": [c.text for c in self.constraints],
            "dimensions": list(self.dimensions),
        }


def load_spec(path: str | Path) -> KernelSpec:
    """Load ``kernel.toml`` (or a directory holding one) and validate everything in it."""
    path = Path(path)
    toml_path = path / "kernel.toml" if path.is_dir() else path
    try:
        text = toml_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read kernel spec {toml_path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{toml_path}: TOML syntax error: {exc}") from None
    try:
        return _build(data, toml_path, text)
    except ExpressionError as exc:
        raise ExpressionError(f"{toml_path}: {exc}") from None
    except SpecError as exc:
        raise SpecError(f"{toml_path}: {exc}") from None


_TOP_KEYS = {
    "name", "description", "source", "entry", "reference", "rtol", "atol",
    "constraints", "default_shape", "args", "params", "shapes", "flops", "backend",
}


def _build(data: dict[str, Any], toml_path: Path, toml_text: str) -> KernelSpec:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    directory = toml_path.resolve().parent
    name = _identifier(_require(data, "name", str), "kernel name")
    backend = data.get("backend", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    entry = _identifier(data.get("entry", name), "entry")
    source_path = _sibling(directory, _require(data, "source", str), "source")
    try:
        source = source_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read source {source_path.name}: {exc.strerror or exc}") from None
    ref = _require(data, "reference", str)
    ref_file, sep, ref_func = ref.partition(":")
    if not sep or not ref_func:
        raise SpecError(f"reference must look like 'file.py:function', got {ref!r}")
    reference_path = _sibling(directory, ref_file, "reference")
    _identifier(ref_func, "reference function")
    reference_text = reference_path.read_text(encoding="utf-8")

    args = _parse_args(data.get("args"))
    dims = {a.name for a in args if a.is_dimension}
    params = _parse_params(data.get("params"), reserved={a.name for a in args})
    param_names = {p.name for p in params}
    constraint_texts = data.get("constraints", [])
    if not isinstance(constraint_texts, list):
        raise SpecError("constraints must be a list of expression strings")
    # Constraints may use parameters, the problem dimensions (e.g. "BM <= M") and the
    # target's vector width in bits (e.g. "VEC * 32 <= VECTOR_BITS").
    constraints = tuple(compile_expression(c, param_names | dims | {TARGET_VECTOR_NAME})
                        for c in constraint_texts)

    shapes = _parse_shapes(data.get("shapes", {}), dims)
    default_shape = data.get("default_shape")
    if default_shape is not None and default_shape not in shapes:
        raise SpecError(f"default_shape {default_shape!r} is not one of the shapes: {', '.join(shapes)}")

    flops = compile_expression(str(data["flops"]), dims) if "flops" in data else None
    rtol, atol = float(data.get("rtol", 1e-5)), float(data.get("atol", 1e-6))
    digest = hashlib.sha256()
    for part in (toml_text, source, reference_text):
        digest.update(part.encode())
        digest.update(b"\0")
    spec = KernelSpec(
        name=name,
        spec_path=toml_path.resolve(),
        directory=directory,
        source_path=source_path,
        source=source,
        entry=entry,
        reference_path=reference_path,
        reference_function=ref_func,
        args=args,
        params=params,
        constraints=constraints,
        shapes=shapes,
        default_shape=default_shape,
        rtol=rtol,
        atol=atol,
        description=str(data.get("description", "")),
        flops=flops,
        source_hash=digest.hexdigest(),
        backend=backend,
    )
    return spec


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in data:
        raise SpecError(f"missing required key {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise SpecError(f"{key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise SpecError(f"{what} must be a C identifier (letters, digits, _), got {value!r}")
    return value


def _sibling(directory: Path, name: str, what: str) -> Path:
    """Resolve a file named in the spec; it must stay inside the spec's directory."""
    candidate = (directory / name).resolve()
    if candidate.parent != directory.resolve() or not candidate.is_file():
        raise SpecError(f"{what} file {name!r} must be an existing file beside kernel.toml")
    return candidate


def _parse_args(raw: Any) -> tuple[Arg, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("args must be a non-empty list of [[args]] tables (the C signature)")
    seen: set[str] = set()
    scalars: list[Arg] = []
    arrays: list[tuple[dict[str, Any], int]] = []
    ordered: list[Any] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SpecError(f"args[{index}] must be a table")
        extra = sorted(set(item) - {"name", "dtype", "shape", "intent", "value"})
        if extra:
            raise SpecError(f"args[{index}]: unknown key(s) {', '.join(extra)}")
        name = _identifier(item.get("name"), f"args[{index}].name")
        if name in seen:
            raise SpecError(f"argument {name!r} declared twice")
        seen.add(name)
        dtype = item.get("dtype")
        if "shape" in item:
            if dtype not in ARRAY_DTYPES:
                raise SpecError(f"argument {name}: array dtype must be one of {', '.join(ARRAY_DTYPES)}")
            intent = item.get("intent", "in")
            if intent not in INTENTS:
                raise SpecError(f"argument {name}: intent must be one of {', '.join(INTENTS)}")
            arrays.append((item, index))
            ordered.append(None)
        else:
            if dtype not in SCALAR_DTYPES:
                raise SpecError(f"argument {name}: scalar dtype must be one of {', '.join(SCALAR_DTYPES)}")
            value = item.get("value")
            if value is not None and not isinstance(value, (int, float)):
                raise SpecError(f"argument {name}: value must be a number")
            arg = Arg(name=name, dtype=dtype, value=None if value is None else float(value))
            scalars.append(arg)
            ordered.append(arg)
    dims = {a.name for a in scalars if a.is_dimension}
    for item, index in arrays:
        shape = item["shape"]
        if not isinstance(shape, list) or not shape or len(shape) > 8:
            raise SpecError(f"argument {item['name']}: shape must be a list of 1 to 8 expressions")
        exprs = tuple(compile_expression(str(s), dims) for s in shape)
        ordered[index] = Arg(name=item["name"], dtype=item["dtype"], shape=exprs,
                             intent=item.get("intent", "in"))
    if not any(a.is_array and a.intent in ("out", "inout") for a in ordered):
        raise SpecError("the signature needs at least one array with intent 'out' or 'inout'")
    return tuple(ordered)


def _parse_params(raw: Any, reserved: set[str]) -> tuple[Param, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > _MAX_PARAMS:
        raise SpecError(f"params must be a list of at most {_MAX_PARAMS} [[params]] tables")
    params: list[Param] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SpecError(f"params[{index}] must be a table")
        extra = sorted(set(item) - {"name", "role", "values", "default", "description"})
        if extra:
            raise SpecError(f"params[{index}]: unknown key(s) {', '.join(extra)}")
        name = _identifier(item.get("name"), f"params[{index}].name")
        taken = name == TARGET_VECTOR_NAME or name in reserved or any(p.name == name for p in params)
        if _RESERVED.match(name) or taken:
            raise SpecError(f"parameter name {name!r} is reserved, an argument name, or declared twice")
        role = item.get("role")
        if role not in ROLES:
            raise SpecError(f"parameter {name}: role must be one of {', '.join(ROLES)}, got {role!r}")
        values = item.get("values")
        if not isinstance(values, list) or not values or len(values) > _MAX_VALUES:
            raise SpecError(f"parameter {name}: values must be a list of 1 to {_MAX_VALUES} values")
        checked = tuple(_param_value(name, v) for v in values)
        if len(set(checked)) != len(checked):
            raise SpecError(f"parameter {name}: duplicate values")
        default = item.get("default", checked[0])
        if default not in checked:
            raise SpecError(f"parameter {name}: default {default!r} is not one of its values")
        params.append(Param(name, role, checked, default, str(item.get("description", ""))))
    return tuple(params)


def _param_value(name: str, value: Any) -> ParamValue:
    """Values become -D macro definitions, so only plain integers and identifiers pass."""
    if isinstance(value, bool):
        raise SpecError(f"parameter {name}: booleans are not allowed, use 0/1")
    if isinstance(value, int):
        if abs(value) > 2**31 - 1:
            raise SpecError(f"parameter {name}: value {value} does not fit in 32 bits")
        return value
    if isinstance(value, str) and IDENTIFIER.match(value):
        return value
    raise SpecError(
        f"parameter {name}: value {value!r} must be an integer or an identifier "
        "(letters, digits, _): it becomes a -D macro"
    )


def _parse_shapes(raw: Any, dims: set[str]) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise SpecError("shapes must be a table of named shapes")
    shapes: dict[str, dict[str, int]] = {}
    for shape_name, shape in raw.items():
        if not isinstance(shape, dict) or set(shape) != dims:
            raise SpecError(f"shape {shape_name!r} must give exactly the dimensions {', '.join(sorted(dims))}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape.values()):
            raise SpecError(f"shape {shape_name!r}: dimensions must be positive integers")
        shapes[str(shape_name)] = dict(shape)
    return shapes
