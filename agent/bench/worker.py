"""The benchmark worker: a separate process that loads candidate libraries and runs them.

Started by :class:`agent.bench.session.WorkerSession` as ``python -m agent.bench.worker``.
It is a dumb executor: the parent decides what to run and in which order, and applies
time limits. Requests and replies are JSON lines on a private pipe (fd passed in argv),
so whatever a kernel prints on stdout cannot corrupt the protocol.

Commands: ``setup`` (load spec, make inputs, compute the reference), ``load`` (dlopen a
candidate), ``verify`` (run once, check outputs, guard zones and inputs), ``time`` (run
once and return the harness-measured seconds; optionally flush caches first).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import sys
import time
from typing import Any

import numpy as np

from agent.kernels.problem import parse_shape
from agent.kernels.spec import KernelSpec, load_spec

_GUARD = 4096  # bytes of canary before and after every output array
_CANARY = 0xA5
_CTYPES = {"int32": ctypes.c_int32, "int64": ctypes.c_int64,
           "float32": ctypes.c_float, "float64": ctypes.c_double}


class _Harness:
    def __init__(self) -> None:
        self.spec: KernelSpec | None = None
        self.inputs: dict[str, np.ndarray] = {}
        self.pristine: dict[str, np.ndarray] = {}  # inputs as generated; a clobbering kernel can't taint the next
        self.expected: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # raw bytes incl. guard zones, per output array
        self.views: dict[str, np.ndarray] = {}
        self.scalars: dict[str, Any] = {}
        self.functions: dict[str, Any] = {}
        self.flush_buffer: np.ndarray | None = None

    def setup(self, request: dict[str, Any]) -> dict[str, Any]:
        spec = load_spec(request["spec"])
        problem = parse_shape(spec, ",".join(f"{k}={v}" for k, v in request["shape"].items()))
        rng = np.random.default_rng(int(request.get("seed", 0)))
        shapes = problem.array_shapes
        self.spec, self.inputs, self.buffers, self.views, self.scalars = spec, {}, {}, {}, {}
        for arg in spec.args:
            if arg.is_array:
                dtype = np.dtype(arg.dtype)
                if arg.intent in ("in", "inout"):
                    self.inputs[arg.name] = _random_array(rng, shapes[arg.name], dtype)
                if arg.intent in ("out", "inout"):
                    nbytes = int(np.prod(shapes[arg.name])) * dtype.itemsize
                    raw = np.full(nbytes + 2 * _GUARD, _CANARY, dtype=np.uint8)
                    self.buffers[arg.name] = raw
                    self.views[arg.name] = raw[_GUARD:_GUARD + nbytes].view(dtype).reshape(shapes[arg.name])
            elif arg.is_dimension:
                self.scalars[arg.name] = problem.shape[arg.name]
            else:
                self.scalars[arg.name] = arg.value
        self.pristine = {k: v.copy() for k, v in self.inputs.items()}
        self.expected = self._reference(spec)
        flush_bytes = int(request.get("flush_bytes", 0))
        self.flush_buffer = np.zeros(flush_bytes // 8, dtype=np.float64) if flush_bytes else None
        self.functions = {}
        return {"ok": True}

    def _reference(self, spec: KernelSpec) -> dict[str, np.ndarray]:
        module_spec = importlib.util.spec_from_file_location(
            f"edgetune_reference_{spec.name}", spec.reference_path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        function = getattr(module, spec.reference_function)
        kwargs = {**{k: v.copy() for k, v in self.inputs.items()}, **self.scalars}
        result = function(**kwargs)
        outputs = [a for a in spec.args if a.is_array and a.intent in ("out", "inout")]
        if not isinstance(result, dict):
            result = {outputs[0].name: result}
        expected = {}
        for arg in outputs:
            value = np.asarray(result[arg.name])
            if value.shape != self.views[arg.name].shape:
                raise ValueError(f"reference returned shape {value.shape} for {arg.name}, "
                                 f"expected {self.views[arg.name].shape}")
            expected[arg.name] = value
        return expected

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.spec is not None
        library = ctypes.CDLL(request["library"])
        try:
            function = getattr(library, self.spec.entry)
        except AttributeError:
            return {"ok": False, "reason": f"entry function {self.spec.entry} not exported"}
        function.restype = None
        function.argtypes = [ctypes.c_void_p if a.is_array else _CTYPES[a.dtype] for a in self.spec.args]
        self.functions[request["id"]] = function
        return {"ok": True}

    def _prepare(self) -> list[Any]:
        """Reset outputs (canary everywhere, inout arrays from their inputs) and build the call."""
        assert self.spec is not None
        for name, raw in self.buffers.items():
            raw.fill(_CANARY)
            if name in self.inputs:
                self.views[name][...] = self.inputs[name]
        call = []
        for arg in self.spec.args:
            if arg.is_array:
                array = self.views[arg.name] if arg.name in self.views else self.inputs[arg.name]
                call.append(array.ctypes.data)
            else:
                call.append(self.scalars[arg.name])
        return call

    def verify(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.spec is not None
        for name, array in self.inputs.items():
            array[...] = self.pristine[name]
        call = self._prepare()
        self.functions[request["id"]](*call)
        for name, raw in self.buffers.items():
            if (raw[:_GUARD] != _CANARY).any() or (raw[-_GUARD:] != _CANARY).any():
                return {"ok": False, "reason": f"wrote out of bounds of {name}"}
        for name, before in self.pristine.items():
            if name not in self.buffers and not np.array_equal(before, self.inputs[name], equal_nan=True):
                return {"ok": False, "reason": f"modified input array {name}"}
        worst = 0.0
        for name, expected in self.expected.items():
            got = self.views[name]
            if not np.allclose(got, expected, rtol=self.spec.rtol, atol=self.spec.atol):
                diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
                bad = int(np.count_nonzero(~np.isclose(got, expected, rtol=self.spec.rtol,
                                                       atol=self.spec.atol)))
                return {"ok": False, "reason": f"{name} differs from the reference in {bad} of "
                        f"{got.size} elements (max abs error {np.nanmax(diff):.3g})"}
            if got.size:
                worst = max(worst, float(np.nanmax(np.abs(got.astype(np.float64) - expected))))
        return {"ok": True, "max_abs_error": worst}

    def time(self, request: dict[str, Any]) -> dict[str, Any]:
        call = self._prepare()
        function = self.functions[request["id"]]
        if request.get("flush") and self.flush_buffer is not None:
            self.flush_buffer += 1.0  # touch more than the last-level cache
        start = time.perf_counter_ns()
        function(*call)
        elapsed = time.perf_counter_ns() - start
        return {"ok": True, "seconds": elapsed * 1e-9}


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    low, high = (0, 16) if dtype.kind == "u" else (-8, 8)
    return rng.integers(low, high, size=shape).astype(dtype)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no orphan worker keeps running a kernel."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def main() -> None:
    channel_in, channel_out = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing candidate leaves no core file
    os.dup2(2, 1)  # kernels that print go to stderr, never into the protocol
    harness = _Harness()
    handlers = {"setup": harness.setup, "load": harness.load,
                "verify": harness.verify, "time": harness.time}
    with os.fdopen(channel_in, "r") as requests, os.fdopen(channel_out, "w") as replies:
        for line in requests:
            request = json.loads(line)
            try:
                reply = handlers[request["cmd"]](request)
            except Exception as exc:  # reported to the parent, which decides what it means
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


if __name__ == "__main__":
    main()
