"""Compile candidate kernels into shared libraries, with a content-addressed cache.

The compiler is always called with an argument list (never a shell). Parameter values
reach it only as ``-DNAME=value`` macros, and were checked against a strict pattern
when the spec was loaded; ``macro_flags`` checks them again, so a config built by hand
cannot smuggle a flag in either.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError, ToolchainError
from agent.hardware.probe import usable_cpus
from agent.kernels.spec import IDENTIFIER, KernelSpec, ParamValue

__all__ = ["Build", "Toolchain", "compile_candidate", "compile_many", "macro_flags"]

_TARGET = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,63}$")
COMPILE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Toolchain:
    """A C compiler and the code-generation target every candidate is built for."""

    compiler: str  # absolute path
    version: str
    target: str  # the -march value: native, x86-64-v3, armv8.2-a ...
    cpu_tag: str = ""  # for target "native": the hardware fingerprint, so caches never mix CPUs

    @classmethod
    def detect(cls, compiler: str = "cc", target: str = "native", cpu_tag: str = "") -> Toolchain:
        """Find ``compiler``, read its version and check it accepts ``-march=target``."""
        if not _TARGET.match(target):
            raise ToolchainError(f"target {target!r} is not a valid -march value")
        path = shutil.which(compiler)
        if path is None:
            raise ToolchainError(f"C compiler {compiler!r} not found on PATH (set --cc or $CC)")
        try:
            out = subprocess.run([path, "-dumpfullversion", "-dumpversion"], capture_output=True,
                                 text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolchainError(f"C compiler {compiler!r} does not run: {exc}") from None
        version = (out.stdout.strip().splitlines() or ["unknown"])[0]
        toolchain = cls(compiler=path, version=f"{Path(path).name} {version}", target=target,
                        cpu_tag=cpu_tag if target == "native" else "")
        toolchain._check_target()
        return toolchain

    @property
    def flags(self) -> tuple[str, ...]:
        """Code-generation flags shared by every candidate (macros excluded)."""
        return ("-O3", f"-march={self.target}", "-fPIC", "-shared", "-fopenmp")

    def _check_target(self) -> None:
        with tempfile.TemporaryDirectory(prefix="edgetune-cc-") as tmp:
            src = Path(tmp) / "probe.c"
            src.write_text("int edgetune_probe(int x) { return x + 1; }\n")
            try:
                result = subprocess.run([self.compiler, *self.flags, str(src), "-o",
                                         str(Path(tmp) / "probe.so")],
                                        capture_output=True, text=True, timeout=60, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ToolchainError(f"C compiler {self.compiler} failed to run: {exc}") from None
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no message"])[0]
            raise ToolchainError(f"{Path(self.compiler).name} cannot build for -march={self.target} "
                                 f"with OpenMP: {first}")


@dataclass(frozen=True)
class Build:
    """The outcome of compiling one candidate: a library path, or the compiler's error."""

    library: Path | None
    error: str
    seconds: float
    cached: bool


def macro_flags(spec: KernelSpec, config: Mapping[str, ParamValue]) -> list[str]:
    """``-DNAME=value`` for each parameter; identifier values also get ``-DNAME_value=1``."""
    flags = []
    for param in spec.params:
        value = config[param.name]
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and IDENTIFIER.match(value))):
            raise ConfigError(f"{param.name}={value!r}: only integers and identifiers may reach the compiler")
        flags.append(f"-D{param.name}={value}")
        if isinstance(value, str):
            flags.append(f"-D{param.name}_{value}=1")
    return flags


def compile_candidate(spec: KernelSpec, config: Mapping[str, ParamValue], toolchain: Toolchain,
                      cache_dir: Path) -> Build:
    """Build one candidate (or reuse the cached library built from identical inputs)."""
    macros = macro_flags(spec, config)
    argv_tail = [*toolchain.flags, *macros, "-lm"]
    digest = hashlib.sha256()
    for part in (spec.source, toolchain.compiler, toolchain.version, toolchain.cpu_tag, *argv_tail):
        digest.update(part.encode())
        digest.update(b"\0")
    key = digest.hexdigest()[:32]
    library = cache_dir / key[:2] / f"{spec.name}-{key}.so"
    if library.is_file():
        return Build(library=library, error="", seconds=0.0, cached=True)
    library.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Build under a temporary name and rename, so a killed compile never leaves a torn library.
    fd, partial = tempfile.mkstemp(prefix=f".{spec.name}-", suffix=".so", dir=library.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [toolchain.compiler, *toolchain.flags, *macros, str(spec.source_path), "-o", partial, "-lm"],
            capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False,
            cwd=spec.directory,
        )
    except subprocess.TimeoutExpired:
        os.unlink(partial)
        return Build(None, f"compiler timed out after {COMPILE_TIMEOUT_S:.0f} s",
                     time.perf_counter() - started, False)
    except OSError as exc:
        os.unlink(partial)
        raise ToolchainError(f"cannot run {toolchain.compiler}: {exc}") from None
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        os.unlink(partial)
        return Build(None, _first_error(result.stderr), seconds, False)
    os.replace(partial, library)
    return Build(library=library, error="", seconds=seconds, cached=False)


def compile_many(spec: KernelSpec, configs: Sequence[Mapping[str, ParamValue]],
                 toolchain: Toolchain, cache_dir: Path, jobs: int | None = None) -> list[Build]:
    """Compile candidates in parallel (one compiler process per core), results in input order."""
    jobs = jobs or usable_cpus()
    if len(configs) <= 1 or jobs == 1:
        return [compile_candidate(spec, c, toolchain, cache_dir) for c in configs]
    with ThreadPoolExecutor(max_workers=min(jobs, len(configs))) as pool:
        return list(pool.map(lambda c: compile_candidate(spec, c, toolchain, cache_dir), configs))


def _first_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error" in line.lower()] or stderr.splitlines()
    return (lines[0].strip() if lines else "compiler failed without a message")[:300]
