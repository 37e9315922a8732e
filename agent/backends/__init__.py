"""Backends, by name: how a kernel's candidates are built, where they run, and what they are tuned for.

A kernel names its backend in ``kernel.toml`` (``backend = "c"``, the default). Everything
above the backend (spec, space, prediction, strategies, evaluator, store) is shared; a
backend answers the few questions that differ between a C compiler and, later, Triton:

- ``detect``: find the toolchain for a target on this device (raises ``ToolchainError``);
- ``compile``: build candidates (or load them from the build cache), in input order;
- ``worker``: the isolated process the candidates run in (a ``WorkerSession`` over the
  backend's own harness module: C's loads libraries with ctypes, Triton's would own the GPU context);
- ``flush``: the cache-flush policy between timed runs;
- ``vector_bits``: the vector width the space is built for;
- ``name``, ``target``, ``version``, ``flags``: what a tuning records, and what the daemon's
  staleness check compares (``version`` per target).

To add one: a module under ``agent.backends`` with a class that follows :class:`Backend`,
and a line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.bench.compile import Build
    from agent.bench.session import WorkerSession
    from agent.hardware import HardwareProfile
    from agent.kernels.problem import Problem
    from agent.kernels.spec import KernelSpec, ParamValue

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "detect_backend", "get_backend"]

DEFAULT_BACKEND = "c"
# name -> "module:class"; the module is imported only when the backend is asked for.
BACKENDS = {
    "c": "agent.backends.c:CBackend",
}


class Backend(Protocol):
    """A toolchain ready to build and run candidates for one target."""

    name: ClassVar[str]

    @property
    def target(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def flags(self) -> tuple[str, ...]: ...

    @classmethod
    def detect(cls, *, compiler: str, target: str, device: str) -> Backend:
        """The toolchain for ``target`` on the device with fingerprint ``device``."""
        ...

    def vector_bits(self, profile: HardwareProfile) -> int:
        """The vector width (bits) the space is built for (``VECTOR_BITS`` in constraints)."""
        ...

    def flush(self, problem: Problem, profile: HardwareProfile, mode: str) -> tuple[bool, int]:
        """Whether to flush caches between timed runs, and the size of what does it."""
        ...

    def compile(self, spec: KernelSpec, configs: Sequence[Mapping[str, ParamValue]], cache_dir: Path, *,
                jobs: int | None = None) -> list[Build]:
        """Build candidates in parallel (cached), results in input order."""
        ...

    def worker(self, spec: KernelSpec, shape: Mapping[str, int], *, seed: int, flush_bytes: int,
               timeout_s: float, cpus: Sequence[int] | None = None) -> WorkerSession:
        """The isolated worker the candidates of one problem run in."""
        ...


def get_backend(name: str) -> type[Backend]:
    """The backend class called ``name``; an unknown name lists the valid ones."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    backend: type[Backend] = getattr(importlib.import_module(module), cls)
    return backend


def detect_backend(name: str, *, compiler: str, target: str, device: str) -> Backend:
    """Backend ``name``'s toolchain for ``target`` on this device."""
    return get_backend(name).detect(compiler=compiler, target=target, device=device)
