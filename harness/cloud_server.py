"""A real loopback HTTP server for the cloud client's tests, backed by a GGUF model, with failure modes.

    python -m harness.cloud_server --mode ok --model models/edgetune-teacher-q8_0.gguf [--token SECRET]

Binds 127.0.0.1 on a free port and prints ``PORT <n>`` as its first stdout line. It exits when its stdin
closes, so a test run that dies leaves no server behind. Endpoints:

* ``POST /v1/rank``: the fleet service's own ranking (:func:`agent.fleet.rank.answer_request` on the model);
* ``POST /v1/completions``: OpenAI-compatible legacy completions with ``echo`` and ``logprobs``: each prompt text
  is split on spaces into vocabulary tokens and run through the model's ``logits``; one token is generated;
* ``GET /stats``: how many POSTs arrived, in all and per path.

Modes: ``ok``; ``hang`` (accepts, never answers); ``trickle`` (headers, then one byte a second); ``error500``;
``error500-once`` (the first POST gets 500, the rest are ok); ``outside`` (answers configurations that are not
candidates); ``garbage`` (a non-JSON body); ``wrong-shape`` (valid JSON, wrong schema). With ``--token`` a POST
without ``Authorization: Bearer <token>`` gets 401.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agent.fleet.rank import TeacherRanker, answer_request
from agent.kernels.features import kernel_features
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space
from agent.predict.prompt import ConfigCodec, HardwareDesc, kernel_desc, prompt_tokens
from agent.predict.rank_protocol import RankProtocolError, RankRequest, request_for
from agent.predict.vocab import vocabulary

ROOT = Path(__file__).resolve().parents[1]

MODES = ("ok", "hang", "trickle", "error500", "error500-once", "outside", "garbage", "wrong-shape")
_MODEL_MODES = ("ok", "error500-once", "outside")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str, ranker: TeacherRanker | None, token: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.ranker, self.token = mode, ranker, token  # the ranker holds the model's lock
        self.lock = threading.Lock()  # guards stats
        self.stats: dict[str, int] = {"requests": 0}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def do_GET(self) -> None:
        if self.path == "/stats":
            with self.server.lock:
                self._json(200, dict(self.server.stats))
        else:
            self._json(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.stats["requests"] += 1
            srv.stats[self.path] = srv.stats.get(self.path, 0) + 1
            first = srv.stats["requests"] == 1
        if self.path not in ("/v1/rank", "/v1/completions"):
            return self._json(404, {"error": f"no such path {self.path}"})
        if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
            return self._json(401, {"error": "missing or wrong bearer token"})
        mode = srv.mode
        if mode == "hang":
            time.sleep(3600)
        elif mode == "trickle":
            self._trickle()
        elif mode == "error500" or (mode == "error500-once" and first):
            self._json(500, {"error": "internal server error"})
        elif mode == "garbage":
            self._send(200, b"<html><body>502 Bad Gateway, or so</body></html>", "text/html")
        elif mode == "wrong-shape":
            self._json(200, {"result": "ranked", "configs": {"BM": 16}, "choices": "none"})
        else:
            try:
                data = (self._rank if self.path == "/v1/rank" else self._completions)(json.loads(body), mode)
            except (RankProtocolError, ValueError, KeyError, TypeError) as exc:
                return self._json(400, {"error": str(exc)})
            self._json(200, data)

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(3600):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass  # the client gave up

    def _rank(self, data: Any, mode: str) -> dict[str, Any]:
        request = RankRequest.from_json(data)
        assert self.server.ranker is not None
        answer = answer_request(self.server.ranker, request).to_json()
        if mode == "outside":
            name = request.slots[0]["name"]
            answer["configs"] = [{**c, name: 999_983} for c in answer["configs"]]
        return answer

    def _completions(self, data: dict[str, Any], mode: str) -> dict[str, Any]:
        prompts = data["prompt"] if isinstance(data["prompt"], list) else [data["prompt"]]
        if not data.get("echo") or data.get("max_tokens") != 1 or data.get("logprobs") is None:
            raise ValueError("this test server only answers echo=true, max_tokens=1, logprobs")
        vocab = vocabulary()
        ranker = self.server.ranker
        assert ranker is not None
        choices = []
        for i, text in enumerate(prompts):
            tokens = text.split(" ")
            ids = [vocab.id(t) for t in tokens]
            unknown = [t for t, k in zip(tokens, ids, strict=True) if vocab.tokens[k] != t]
            if unknown:
                raise ValueError(f"prompt {i}: unknown tokens {unknown[:3]}")
            with ranker.using() as model:
                logits = model.logits(ids).astype(np.float64)
            logp = logits - logits.max(axis=1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
            generated = int(np.argmax(logp[-1]))
            shown = [tokens[0], *(" " + t for t in tokens[1:]), " " + vocab.tokens[generated]]
            offsets = np.cumsum([0, *(len(t) for t in shown[:-1])]).tolist()  # GPT style: a token owns its space
            token_logprobs = [None, *(float(logp[j - 1, ids[j]]) for j in range(1, len(ids))),
                              float(logp[-1, generated])]
            top = [None, *({shown[j]: token_logprobs[j]} for j in range(1, len(shown)))]
            choices.append({"index": i + len(prompts) if mode == "outside" else i, "text": text + shown[-1],
                            "finish_reason": "length",
                            "logprobs": {"tokens": shown, "token_logprobs": token_logprobs, "top_logprobs": top,
                                         "text_offset": offsets}})
        return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()),
                "model": ranker.name, "choices": choices}


def main(argv: list[str] | None = None) -> None:
    """Start the server, print its port, serve until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--model", required=True, help="GGUF model file")
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    ranker = TeacherRanker(args.model, n_threads=1) if args.mode in _MODEL_MODES else None
    if ranker is not None:
        ranker.warm()
    serve_until_stdin_closes(_Server(args.mode, ranker, args.token))


def serve_until_stdin_closes(server: Any) -> None:
    """Print the server's port for the parent, serve, and exit when the parent closes our stdin."""
    print(f"PORT {server.server_address[1]}", flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


class RankCase(NamedTuple):
    """A ranking question as a device asks it: gemm at 256^3 on a 2-core AVX2 machine, the whole valid space."""

    prompt: list[str]
    codec: ConfigCodec
    space: Space
    configs: list[dict[str, Any]]
    shape: dict[str, int]


def gemm_rank_case() -> RankCase:
    spec = find_kernel("gemm")
    problem = parse_shape(spec, "M=256,N=256,K=256")
    space = Space.build(problem, max_threads=2, vector_bits=256)
    params = [{"name": p.name, "role": p.role, "values": list(p.values)} for p in space.params]
    hardware = HardwareDesc(kind="cpu", isa="x86_64", vector_bits=256, cores=2, l1_bytes=32 << 10,
                            l2_bytes=1 << 20, l3_bytes=32 << 20, bandwidth_gbs=20.0)
    kernel = kernel_desc({"params": params, "dimensions": list(spec.dimensions)}, name="gemm", spec=spec,
                         features=kernel_features(spec))
    return RankCase(prompt_tokens(hardware, kernel, problem.shape), ConfigCodec.for_params(params), space,
                    list(space), dict(problem.shape))


def small_rank_request(case: RankCase) -> RankRequest:
    """16 of the case's candidates, top 5 asked: cheap for the completions endpoint, which runs the
    model once per candidate."""
    return request_for(case.prompt, case.codec, case.configs[::63], 5, kernel="gemm", shape=case.shape)


class Servers:
    """Child processes of harness/cloud_server.py; ``shared`` ones live for the module, ``start`` gives a fresh one."""

    def __init__(self, model: Path) -> None:
        self.model = model
        self.procs: list[subprocess.Popen[str]] = []
        self.by_mode: dict[str, str] = {}

    def start(self, mode: str, *, token: str | None = None) -> str:
        cmd = [sys.executable, "-m", "harness.cloud_server", "--mode", mode, "--model", str(self.model)]
        proc = subprocess.Popen([*cmd, *(["--token", token] if token else [])], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("PORT "), f"cloud_server --mode {mode} did not start: {line!r}"
        return f"http://127.0.0.1:{int(line.split()[1])}"

    def shared(self, mode: str) -> str:
        if mode not in self.by_mode:
            self.by_mode[mode] = self.start(mode)
        return self.by_mode[mode]

    @staticmethod
    def stats_of(url: str) -> int:
        """How many POSTs the server at ``url`` has answered."""
        import httpx

        return int(httpx.get(f"{url}/stats", timeout=5).json()["requests"])

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()  # the server exits when its stdin closes
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


if __name__ == "__main__":
    main()
