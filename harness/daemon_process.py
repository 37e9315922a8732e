"""The real daemon as a child process, with a real NOTIFY_SOCKET datagram socket standing in for systemd."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_PRESET = """\
name = "tiny"
description = "small layers that tune in seconds"
{layers}
"""

LAYER = """
[[layers]]
label = "{kernel} {shape}"
kernel = "{kernel}"
shape = "{shape}"
weight = {weight}
"""


def write_preset(path: Path, layers: list[tuple[str, str, float]]) -> Path:
    """A workload preset file of (kernel, shape, weight) layers."""
    body = "".join(LAYER.format(kernel=k, shape=s, weight=w) for k, s, w in layers)
    path.write_text(TINY_PRESET.format(layers=body))
    return path


def write_config(path: Path, **daemon: object) -> Path:
    """A config file with a [daemon] table; strings are quoted, numbers are not."""
    lines = ["[daemon]"]
    for key, value in daemon.items():
        lines.append(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}")
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


class DaemonProcess:
    """``edgetune daemon`` under a stand-in for systemd: its notify messages are collected in order."""

    def __init__(self, tmp: Path, env: dict[str, str], *, watchdog_usec: int | None = None,
                 bandwidth: bool = False) -> None:
        self.socket_path = tmp / f"notify-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []  # (monotonic time, one KEY=VALUE assignment)
        self.lock = threading.Lock()
        self.stderr_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(self.socket_path), **env}
        full_env.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        with open(self.stderr_path, "wb") as stderr:
            command = [sys.executable, "-m", "agent.cli", "daemon", *([] if bandwidth else ["--no-bandwidth"])]
            self.process = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
        self._running = True
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self.lock:
                self.messages.extend((now, line) for line in data.decode().split("\n"))

    def assignments(self) -> list[str]:
        with self.lock:
            return [line for _, line in self.messages]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, *, after: int = 0) -> int:
        """Index of the first message (from ``after`` on) that matches; fails with the log on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.assignments()
            for index in range(after, len(seen)):
                if predicate(seen[index]):
                    return index
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no matching notify message within {timeout} s; got {self.assignments()}\n"
                             f"exit: {self.process.poll()}\nlog:\n{self.log()}")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._running = False
        self.reader.join(timeout=2)
        self.sock.close()


def committed_run_ids(db: Path) -> set[int]:
    """The run ids a separate reader sees now (what has been committed)."""
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            return {row[0] for row in conn.execute("select id from runs")}
        except sqlite3.OperationalError:
            return set()
