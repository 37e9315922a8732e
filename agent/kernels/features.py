"""Structural features of a kernel, read from its spec and its C source.

The predictor describes a kernel by what it does, not by its name, so that an unseen
kernel with a familiar structure (a three-deep loop nest with a reduction over fp32
arrays, tile and vector parameters) still gets sensible predictions.

The C source is run through the preprocessor with the default configuration (so the
code that is analysed is code that really compiles), then a small statement parser
walks every function: loop depth is the deepest nest of ``for``/``while``/``do``
loops, counting the loops of functions called inside a loop (the helpers that a
kernel's entry calls are usually where its inner loops are).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cache, lru_cache
from typing import Any

from agent.errors import SpecError
from agent.kernels.spec import KernelSpec

__all__ = ["KernelFeatures", "SourceFeatures", "arithmetic_intensity", "array_bytes", "kernel_features",
           "source_features"]

_ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "float64": 8}
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|->|\+\+|--|[-+*/%&|^<>!=]=|&&|\|\||<<|>>|\S")
_LOOPS = ("for", "while")
_MATH = {"expf", "exp", "logf", "log", "sqrtf", "sqrt", "tanhf", "tanh", "powf", "pow", "erff", "erf"}
_KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "do", "else", "case"}


@dataclass(frozen=True)
class SourceFeatures:
    """What the C source shows: loop structure, reductions, vector code, math calls."""

    loop_depth: int  # deepest loop nest through the call graph from the entry
    loops: int  # loop statements in the code reachable from the entry
    functions: int  # functions reachable from the entry (itself included)
    reduction: bool  # a compound accumulation (+= *= ...) or a max/min update inside a loop
    vector_code: bool  # GCC vector extensions (vector_size)
    math_calls: tuple[str, ...]  # libm functions called, sorted
    parallel: bool  # an OpenMP parallel region


@dataclass(frozen=True)
class KernelFeatures:
    """Everything the model may know about a kernel apart from its name."""

    element_type: str  # dtype of the first input array
    output_type: str  # dtype of the first output array
    dimensions: int
    arrays_read: int
    arrays_written: int
    roles: tuple[str, ...]  # the roles its parameters have, sorted, each once
    params_by_role: Mapping[str, int]
    space_size: int  # raw combinations of declared values
    reduction: bool  # from the source, or a dimension that no output is indexed by
    source: SourceFeatures | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params_by_role"] = dict(self.params_by_role)
        return data


def kernel_features(spec: KernelSpec, *, compiler: str = "cc") -> KernelFeatures:
    """Derive the features of ``spec`` (its C source is preprocessed with ``compiler``)."""
    inputs = [a for a in spec.args if a.is_array and a.intent in ("in", "inout")]
    outputs = [a for a in spec.args if a.is_array and a.intent in ("out", "inout")]
    by_role: dict[str, int] = {}
    for p in spec.params:
        by_role[p.role] = by_role.get(p.role, 0) + 1
    size = 1
    for p in spec.params:
        size *= len(p.values)
    source = source_features(spec, compiler=compiler)
    output_dims = {name for a in outputs for expr in (a.shape or ()) for name in expr.names}
    reduced_dimension = any(d not in output_dims for d in spec.dimensions)
    return KernelFeatures(
        element_type=(inputs or outputs)[0].dtype,
        output_type=outputs[0].dtype,
        dimensions=len(spec.dimensions),
        arrays_read=len(inputs),
        arrays_written=len(outputs),
        roles=tuple(sorted(by_role)),
        params_by_role=dict(sorted(by_role.items())),
        space_size=size,
        reduction=reduced_dimension or (source.reduction if source else False),
        source=source,
    )


def arithmetic_intensity(spec: KernelSpec, shape: Mapping[str, int]) -> float | None:
    """Floating-point (or integer) operations per byte of the arrays, for one shape.

    A compulsory-traffic estimate: every array read or written once. None when the
    spec gives no ``flops``.
    """
    if spec.flops is None:
        return None
    total = array_bytes(spec, shape)
    flops = float(spec.flops.evaluate(shape))
    return flops / total if total else math.inf


def array_bytes(spec: KernelSpec, shape: Mapping[str, int]) -> int:
    """Bytes of all the kernel's arrays at ``shape`` (its working set, read or written once)."""
    total = 0
    for arg in spec.args:
        if arg.is_array:
            count = 1
            for expr in arg.shape or ():
                count *= int(expr.evaluate(shape))
            total += count * _ITEMSIZE[arg.dtype]
    return total


def source_features(spec: KernelSpec, *, compiler: str = "cc") -> SourceFeatures | None:
    """Features of the preprocessed C source; None if the preprocessor is not available."""
    macros = []
    for name, value in spec.default_config().items():
        macros.append(f"-D{name}={value}")
        if isinstance(value, str):
            macros.append(f"-D{name}_{value}=1")
    found = _analyse(str(spec.source_path), spec.source_hash, compiler, tuple(macros), spec.entry)
    if found is None:
        return None
    # Whether the kernel can vectorise or go parallel at all, not just in its default.
    return replace(found, vector_code=found.vector_code or "vector_size" in spec.source,
                   parallel=found.parallel or "omp parallel" in spec.source)


@lru_cache(maxsize=64)
def _analyse(path: str, _source_hash: str, compiler: str, macros: tuple[str, ...],
             entry: str) -> SourceFeatures | None:
    try:
        result = subprocess.run([compiler, "-E", "-P", "-fopenmp", *macros, path],
                                capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no message"])[0]
        raise SpecError(f"{path}: the preprocessor rejects the default configuration: {first}")
    return analyse_c(result.stdout, entry)


@dataclass
class _Function:
    loops: int = 0
    depth: int = 0
    reduction: bool = False
    calls: list[tuple[str, int]] | None = None  # (callee, loop depth at the call)


def analyse_c(text: str, entry: str) -> SourceFeatures:
    """Analyse preprocessed C text (exposed for tests)."""
    parallel = "omp parallel" in text
    vector_code = "vector_size" in text
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    tokens = _TOKEN.findall("\n".join(lines))
    functions = _split_functions(tokens)
    parsed: dict[str, _Function] = {}
    math_calls: set[str] = set()
    for name, body in functions.items():
        info = _Function(calls=[])
        _Parser(body, info, set(functions), math_calls).block()
        parsed[name] = info

    @cache
    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        info = parsed[name]
        deepest = info.depth
        for callee, at in info.calls or []:
            if callee in parsed and callee not in seen:
                deepest = max(deepest, at + depth(callee, seen | {name}))
        return deepest

    reachable: set[str] = set()
    stack = [entry] if entry in parsed else []
    while stack:
        name = stack.pop()
        if name in reachable:
            continue
        reachable.add(name)
        stack.extend(c for c, _ in parsed[name].calls or [] if c in parsed)
    if not reachable:
        reachable = set(parsed)
    return SourceFeatures(
        loop_depth=depth(entry) if entry in parsed else max((p.depth for p in parsed.values()), default=0),
        loops=sum(parsed[n].loops for n in reachable),
        functions=len(reachable),
        reduction=any(parsed[n].reduction for n in reachable),
        vector_code=vector_code,
        math_calls=tuple(sorted(math_calls)),
        parallel=parallel,
    )


def _split_functions(tokens: list[str]) -> dict[str, list[str]]:
    """Top-level ``name(...) { body }`` definitions -> body tokens (without the outer braces)."""
    functions: dict[str, list[str]] = {}
    i, level = 0, 0
    while i < len(tokens):
        token = tokens[i]
        if token == "{" and level == 0:
            end = _matching(tokens, i)
            # A definition: ... name ( params ) [attributes] { ... }
            j = i - 1
            while j >= 0 and tokens[j] != ")":
                j -= 1
            name = _callee_before_paren(tokens, j)
            if name is not None and tokens[i - 1] != "=":
                functions[name] = tokens[i + 1:end]
            i = end + 1
            continue
        i += 1
    return functions


def _callee_before_paren(tokens: list[str], close: int) -> str | None:
    """The identifier before the ``(`` matching the ``)`` at ``close``."""
    if close < 0:
        return None
    level = 0
    for k in range(close, -1, -1):
        if tokens[k] == ")":
            level += 1
        elif tokens[k] == "(":
            level -= 1
            if level == 0:
                name = tokens[k - 1] if k > 0 else ""
                return name if re.match(r"^[A-Za-z_]\w*$", name) else None
    return None


def _matching(tokens: list[str], start: int) -> int:
    opener = tokens[start]
    closer = {"{": "}", "(": ")", "[": "]"}[opener]
    level = 0
    for k in range(start, len(tokens)):
        if tokens[k] == opener:
            level += 1
        elif tokens[k] == closer:
            level -= 1
            if level == 0:
                return k
    return len(tokens) - 1


class _Parser:
    """A statement walker: enough of C to follow loop nesting, calls and accumulations."""

    def __init__(self, tokens: list[str], info: _Function, known: set[str], math_calls: set[str]) -> None:
        self.t, self.i, self.info, self.known, self.math = tokens, 0, info, known, math_calls
        self.loop = 0

    def block(self) -> None:
        while self.i < len(self.t):
            self.statement()

    def statement(self) -> None:
        t = self.t
        if self.i >= len(t):
            return
        token = t[self.i]
        if token == "{":
            end = _matching(t, self.i)
            saved, self.t = self.t, t[self.i + 1:end]
            saved_i, self.i = end + 1, 0
            self.block()
            self.t, self.i = saved, saved_i
        elif token in _LOOPS and self.i + 1 < len(t) and t[self.i + 1] == "(":
            close = _matching(t, self.i + 1)
            self._expression(self.i + 2, close, header=True)  # "k += 4" there is no accumulation
            self.i = close + 1
            self._loop_body()
        elif token == "do":
            self.i += 1
            self._loop_body()
            if self.i < len(t) and t[self.i] == "while":
                close = _matching(t, self.i + 1)
                self.i = close + 2  # past ")" and ";"
        elif token in ("if", "switch") and self.i + 1 < len(t) and t[self.i + 1] == "(":
            close = _matching(t, self.i + 1)
            self._expression(self.i + 2, close)
            self.i = close + 1
            self.statement()
            if self.i < len(t) and t[self.i] == "else":
                self.i += 1
                self.statement()
        elif token == ";":
            self.i += 1
        else:
            end = self.i
            while end < len(t) and t[end] != ";":
                if t[end] in "({[":
                    end = _matching(t, end)
                end += 1
            self._expression(self.i, end)
            self.i = end + 1

    def _loop_body(self) -> None:
        self.info.loops += 1
        self.loop += 1
        self.info.depth = max(self.info.depth, self.loop)
        self.statement()
        self.loop -= 1

    def _expression(self, start: int, end: int, header: bool = False) -> None:
        t = self.t
        for k in range(start, min(end, len(t))):
            token = t[k]
            if k + 1 < len(t) and t[k + 1] == "(" and re.match(r"^[A-Za-z_]\w*$", token) \
                    and token not in _KEYWORDS:
                if token in self.known:
                    assert self.info.calls is not None
                    self.info.calls.append((token, self.loop))
                if token in _MATH:
                    self.math.add(token)
                if token in ("fmaxf", "fminf", "fmax", "fmin") and self.loop:
                    self.info.reduction = True
            if self.loop and not header and token in ("+=", "*=", "|=", "&=", "^=", "-="):
                self.info.reduction = True
