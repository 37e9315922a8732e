"""The parent side of the benchmark worker: start it, talk to it, survive its death.

Each request has a time limit. When a candidate crashes the worker (segfault, abort)
or overruns its limit (the whole process group is killed), the request raises
:class:`CandidateFailed` with the reason, and the next request transparently starts
a fresh worker, re-running ``setup`` and re-loading the candidates still in use.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import WorkerError
from agent.settings import CANDIDATE_TIMEOUT_S

__all__ = ["CandidateFailed", "WorkerSession"]

SETUP_TIMEOUT_S = 300.0


class CandidateFailed(Exception):
    """A candidate made the worker fail; ``status`` is T4's invalidity (runtime, timeout, correctness)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    requests: Any  # text file: our end of the request pipe
    replies_fd: int
    stderr_path: Path
    buffer: bytes = b""
    closed: bool = False


class WorkerSession:
    """A long-lived worker for one problem (spec + shape). Use as a context manager."""

    def __init__(self, spec_path: Path, shape: Mapping[str, int], *, seed: int = 0,
                 flush_bytes: int = 0, timeout_s: float = CANDIDATE_TIMEOUT_S,
                 cpus: Sequence[int] | None = None, module: str = "agent.bench.worker") -> None:
        self.setup_request = {"cmd": "setup", "spec": str(spec_path), "shape": dict(shape),
                              "seed": seed, "flush_bytes": flush_bytes}
        self.timeout_s = timeout_s
        self.module = module  # the worker's entry point (python -m): the backend's harness
        self.cpus = tuple(cpus) if cpus else None  # pin the worker: emulate a device with fewer cores
        self.libraries: dict[str, str] = {}  # candidate id -> library path, reloaded on respawn
        self._process: _Process | None = None
        self._spawned: _Process | None = None  # started early by start(), not set up yet
        self.restarts = 0

    def __enter__(self) -> WorkerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------

    def load(self, candidate: str, library: Path) -> None:
        """dlopen a candidate's library; a missing entry symbol raises CandidateFailed(compile)."""
        self.libraries[candidate] = str(library)
        try:
            reply = self._call({"cmd": "load", "id": candidate, "library": str(library)},
                               self.timeout_s, candidate)
        except CandidateFailed:
            self.libraries.pop(candidate, None)
            raise
        if not reply.get("ok"):
            self.libraries.pop(candidate, None)
            raise CandidateFailed("compile", reply.get("reason") or reply.get("error", "cannot load"))

    def verify(self, candidate: str) -> float:
        """Run once and compare with the reference; returns the max abs error."""
        reply = self._call({"cmd": "verify", "id": candidate}, self.timeout_s, candidate)
        if not reply.get("ok"):
            self.forget(candidate)
            raise CandidateFailed("correctness", reply.get("reason") or reply.get("error", "?"))
        return float(reply.get("max_abs_error", 0.0))

    def time(self, candidate: str, *, flush: bool) -> float:
        """One timed run, measured in the worker around the call only."""
        reply = self._call({"cmd": "time", "id": candidate, "flush": flush}, self.timeout_s, candidate)
        if not reply.get("ok"):
            self.forget(candidate)
            raise CandidateFailed("runtime", reply.get("error", "?"))
        return float(reply["seconds"])

    def forget(self, candidate: str) -> None:
        """Stop re-loading a candidate after a respawn (it failed or is done)."""
        self.libraries.pop(candidate, None)

    def start(self) -> None:
        """Start the worker process now, so its interpreter and NumPy load while the caller does
        other work (predicting, compiling); it is set up on the first request."""
        if self._process is None and self._spawned is None:
            self._spawned = self._spawn()

    def close(self) -> None:
        for process in (self._process, self._spawned):
            if process is not None:
                self._kill(process)
        self._process = self._spawned = None

    # -- process management -----------------------------------------------------------------

    def _call(self, request: dict[str, Any], timeout_s: float, candidate: str | None) -> dict[str, Any]:
        if self._process is None:
            self._start()
        assert self._process is not None
        try:
            return self._exchange(self._process, request, timeout_s)
        except _Died as died:
            self._process = None
            self.forget(candidate or "")
            raise CandidateFailed(died.status, died.reason) from None

    def _start(self) -> None:
        process, self._spawned = self._spawned or self._spawn(), None
        try:
            reply = self._exchange(process, self.setup_request, SETUP_TIMEOUT_S)
            if not reply.get("ok"):
                raise WorkerError(f"benchmark worker setup failed: {reply.get('error', '?')}")
            for candidate, library in list(self.libraries.items()):
                reply = self._exchange(process, {"cmd": "load", "id": candidate, "library": library},
                                       self.timeout_s)
                if not reply.get("ok"):
                    self.libraries.pop(candidate)
        except _Died as died:
            raise WorkerError(f"benchmark worker died during setup: {died.reason}") from None
        except BaseException:
            self._kill(process)
            raise
        self._process = process
        self.restarts += 1

    def _spawn(self) -> _Process:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        stderr_file = tempfile.NamedTemporaryFile(prefix="edgetune-worker-", suffix=".log", delete=False)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", self.module, str(request_read), str(reply_write)],
                stdin=subprocess.DEVNULL, stdout=stderr_file, stderr=stderr_file,
                pass_fds=(request_read, reply_write), start_new_session=True, env=env,
            )
        except OSError as exc:
            raise WorkerError(f"cannot start the benchmark worker: {exc}") from None
        finally:
            os.close(request_read)
            os.close(reply_write)
            stderr_file.close()
        if self.cpus:
            # Before the worker's first parallel region, so OpenMP's threads inherit it.
            with contextlib.suppress(OSError):
                os.sched_setaffinity(popen.pid, self.cpus)
        return _Process(popen=popen, requests=os.fdopen(request_write, "w"), replies_fd=reply_read,
                        stderr_path=Path(stderr_file.name))

    def _exchange(self, process: _Process, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            process.requests.write(json.dumps(request) + "\n")
            process.requests.flush()
        except (BrokenPipeError, OSError):
            raise self._death(process) from None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in process.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill(process)
                raise _Died("timeout", f"no answer within the {timeout_s:g} s limit")
            ready, _, _ = select.select([process.replies_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(process.replies_fd, 65536)
            if not chunk:
                raise self._death(process)
            process.buffer += chunk
        line, _, process.buffer = process.buffer.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self._kill(process)
            raise WorkerError(f"benchmark worker sent an unreadable reply: {line[:80]!r}") from None

    def _death(self, process: _Process) -> _Died:
        try:
            code = process.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill(process)
            code = process.popen.returncode
        tail = _tail(process.stderr_path)
        self._kill(process)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"crashed with {name}"
        else:
            reason = f"worker exited with status {code}"
        return _Died("runtime", reason + (f": {tail}" if tail else ""))

    @staticmethod
    def _kill(process: _Process) -> None:
        if process.closed:
            return
        process.closed = True
        if process.popen.poll() is None:
            try:
                os.killpg(process.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for closer in (process.requests.close, lambda: os.close(process.replies_fd)):
            try:
                closer()
            except OSError:
                pass
        process.stderr_path.unlink(missing_ok=True)


class _Died(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
