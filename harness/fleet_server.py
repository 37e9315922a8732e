"""Real processes for the fleet tests: the fleet service, and a loopback proxy in front of it with failure modes.

The service is ``python -m agent.cli fleet serve`` on a free 127.0.0.1 port. The proxy is

    python -m harness.fleet_server --upstream URL --mode slow|429-once|503-once [--delay 0.05]

which prints ``PORT <n>``, forwards every request to ``URL`` (``slow``: after ``--delay`` seconds;
``429-once``/``503-once``: the first POST is answered with that status and ``Retry-After: 1``
instead), serves ``GET /stats`` (the monotonic times POSTs arrived, and their answers' statuses),
and exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from harness.cloud_server import serve_until_stdin_closes

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_TOKEN = "operator-secret-for-tests"
MODES = ("slow", "429-once", "503-once")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


class FleetServer:
    """``edgetune fleet serve`` as a child process; ``kill`` and ``start`` again on the same port and database.

    ``db`` is what ``--db`` takes: a SQLite path or a PostgreSQL URL. ``newer`` runs
    ``harness/newer_fleet.py`` instead: the fleet one protocol version ahead.
    """

    def __init__(self, db: str | Path, port: int | None = None, *, newer: bool = False) -> None:
        self.db, self.port = db, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.serve_args: list[str] = []  # more ``fleet serve`` options (--teacher, --rank-upstream, ...)
        self.serve_env: dict[str, str] = {}
        self.newer = newer

    def start(self, timeout: float = 30.0) -> FleetServer:
        program = ["harness.newer_fleet"] if self.newer else ["agent.cli", "fleet", "serve"]
        cmd = [sys.executable, "-m", *program, "--db", str(self.db), "--port", str(self.port), *self.serve_args]
        env = child_env(EDGETUNE_FLEET_OPERATOR_TOKEN=OPERATOR_TOKEN, **self.serve_env)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"fleet serve exited: {error}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("fleet serve did not answer /v1/health")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def operator(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10)

    def all_records(self, **filters: str) -> list[dict[str, Any]]:
        """Every stored record, following the cursor."""
        records: list[dict[str, Any]] = []
        since = "0"
        with self.operator() as client:
            while since is not None:
                page = client.get("/v1/telemetry", params={"since": since, "limit": 1000, **filters})
                page.raise_for_status()
                records += page.json()["records"]
                since = page.json()["next"]
        return records


class Proxy:
    """harness/fleet_server.py as a child process in front of ``upstream``."""

    def __init__(self, upstream: str, mode: str, delay: float = 0.0) -> None:
        cmd = [sys.executable, "-m", "harness.fleet_server", "--upstream", upstream, "--mode", mode,
               "--delay", str(delay)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("PORT "), f"proxy did not start: {line!r}"
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, mode: str, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.mode, self.delay = upstream.rstrip("/"), mode, delay
        self.lock = threading.Lock()
        self.posts: list[dict[str, Any]] = []


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/stats":
            import json

            with self.server.lock:
                body = json.dumps({"posts": self.server.posts}).encode()
            return self._send(200, body, {"Content-Type": "application/json"})
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        with srv.lock:
            first = not srv.posts
            entry = {"at": time.monotonic(), "status": 0}
            srv.posts.append(entry)
        if first and srv.mode in ("429-once", "503-once"):
            entry["status"] = int(srv.mode[:3])
            return self._send(entry["status"], b'{"error": "busy"}',
                              {"Content-Type": "application/json", "Retry-After": "1"})
        entry["status"] = self._forward(body)

    def _forward(self, body: bytes) -> int:
        if self.server.mode == "slow":
            time.sleep(self.server.delay)
        skip = {"host", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        try:
            answer = httpx.request(self.command, self.server.upstream + self.path, content=body or None,
                                   headers=headers, timeout=30)
        except httpx.TransportError:
            self._send(502, b'{"error": "upstream down"}', {"Content-Type": "application/json"})
            return 502
        self._send(answer.status_code, answer.content, {"Content-Type": answer.headers.get("content-type", "")})
        return answer.status_code


def main(argv: list[str] | None = None) -> None:
    """Start the proxy, print its port, serve until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    serve_until_stdin_closes(_ProxyServer(args.upstream, args.mode, args.delay))


if __name__ == "__main__":
    main()


def register_device(server: FleetServer, name: str | None = None) -> tuple[str, str]:
    """A new device registered through the real CLI: (name, token)."""
    name = name or f"device-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-m", "agent.cli", "fleet", "add-device", name, "--db", str(server.db)],
                          capture_output=True, text=True, timeout=60, env=child_env(), check=False)
    assert done.returncode == 0, done.stderr
    return name, done.stdout.strip()
