"""The C backend: the system C compiler (``-march`` target, OpenMP), candidates run through ctypes.

It delegates to ``agent.bench``: :mod:`agent.bench.compile` builds, :mod:`agent.bench.session`
starts the worker (:mod:`agent.bench.worker` loads the libraries with ctypes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agent.bench.compile import Build, Toolchain, compile_many
from agent.bench.session import WorkerSession
from agent.errors import ConfigError
from agent.hardware import HardwareProfile
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import Problem
from agent.kernels.spec import KernelSpec, ParamValue

__all__ = ["CACHE_MODES", "CBackend", "flush_bytes_for"]

CACHE_MODES = ("auto", "cold", "hot")
WORKER = "agent.bench.worker"  # dlopens candidate libraries and calls them through ctypes


@dataclass(frozen=True)
class CBackend:
    """A C compiler and the ``-march`` target every candidate is built for."""

    name: ClassVar[str] = "c"
    toolchain: Toolchain

    @classmethod
    def detect(cls, *, compiler: str = "cc", target: str = "native", device: str = "") -> CBackend:
        """Find ``compiler`` and check it builds for ``-march=target`` (``device`` keys the native build cache)."""
        return cls(Toolchain.detect(compiler, target, cpu_tag=device))

    @property
    def target(self) -> str:
        return self.toolchain.target

    @property
    def version(self) -> str:
        return self.toolchain.version

    @property
    def flags(self) -> tuple[str, ...]:
        return self.toolchain.flags

    def vector_bits(self, profile: HardwareProfile) -> int:
        """The target's vector width: what ``-march`` lets the compiler use on this CPU."""
        return target_vector_bits(self.target, profile)

    def flush(self, problem: Problem, profile: HardwareProfile, mode: str) -> tuple[bool, int]:
        """Flush the CPU caches when the working set fits in the last-level cache (``auto``)."""
        return flush_bytes_for(problem, profile, mode)

    def compile(self, spec: KernelSpec, configs: Sequence[Mapping[str, ParamValue]], cache_dir: Path, *,
                jobs: int | None = None) -> list[Build]:
        """Compile candidates in parallel into shared libraries (content-addressed cache)."""
        return compile_many(spec, configs, self.toolchain, cache_dir, jobs=jobs)

    def worker(self, spec: KernelSpec, shape: Mapping[str, int], *, seed: int, flush_bytes: int,
               timeout_s: float, cpus: Sequence[int] | None = None) -> WorkerSession:
        """A worker process that dlopens the candidates and calls them through ctypes."""
        return WorkerSession(spec.spec_path, shape, seed=seed, flush_bytes=flush_bytes, timeout_s=timeout_s,
                             cpus=cpus, module=WORKER)


def flush_bytes_for(problem: Problem, profile: HardwareProfile, mode: str) -> tuple[bool, int]:
    """Whether to flush caches between runs, and the size of the buffer that does it."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache mode {mode!r}: choose one of {', '.join(CACHE_MODES)}")
    llc = profile.l3_bytes or profile.l2_bytes or 8 * 2**20
    flush = mode == "cold" or (mode == "auto" and problem.nbytes <= llc)
    return flush, (max(2 * llc, 8 * 2**20) if flush else 0)
