"""The fleet's ``POST /v1/rank``: the server side of the device's cloud fallback.

A ranker answers a validated :class:`~agent.predict.rank_protocol.RankRequest` (the device built it with
``request_for``; the service parses it with ``RankRequest.from_json``, the same validation) with a
:class:`~agent.predict.rank_protocol.RankAnswer`:

* :class:`TeacherRanker` scores every candidate with the teacher GGUF (llama.cpp through
  :class:`~agent.predict.local_model.LocalModel`), loaded once per process; one lock serializes the
  model, since a llama.cpp context serves one call at a time;
* :class:`UpstreamRanker` asks an OpenAI-compatible completions server that echoes log-probabilities, through
  the device's own client (:class:`~agent.predict.cloud.CloudClient`, kind ``openai``): one code path for both.

Before either, :func:`screen` checks the request against this service's vocabulary and, when it names a
built-in kernel, drops the candidates outside that kernel's widest space (every thread count, 512-bit vectors);
after, :func:`only_candidates` keeps only configurations the request offered. :class:`RankService` runs all of
it in a worker thread under a per-request deadline: past it, or when the model is busy that long,
:class:`RankBusy` (the service answers 503 with ``Retry-After``). A request's problems are
:class:`~agent.predict.rank_protocol.RankProtocolError` (400).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from agent.errors import ConfigError, EdgetuneError, RankBusy
from agent.predict.model_files import TEACHER_FILE
from agent.predict.rank_protocol import RankAnswer, RankProtocolError, RankRequest, candidate_key, rank_with_model
from agent.predict.vocab import vocabulary
from agent.settings import RANK_DEADLINE_S

__all__ = ["DEFAULT_DEADLINE_S", "TEACHER_FILE", "RankBusy", "RankService", "Ranker", "TeacherRanker",
           "UpstreamRanker", "answer_request", "default_teacher", "only_candidates", "rank_service", "screen"]

DEFAULT_DEADLINE_S = RANK_DEADLINE_S
_KERNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a built-in's name, never a path
_WHAT = "rank request"




class Ranker(Protocol):
    name: str

    def warm(self) -> None:
        """Get ready for the first request (load a model); never raises."""

    def rank(self, request: RankRequest, deadline: float) -> RankAnswer:
        """The best ``request.k`` candidates; RankBusy past ``deadline`` (time.monotonic)."""

    def close(self) -> None:
        """Free what ``warm`` took."""


def default_teacher(models_dir: Path) -> Path:
    """The teacher in the models folder (:attr:`agent.settings.Settings.models_dir`)."""
    return models_dir / TEACHER_FILE


def rank_service(*, models_dir: Path, teacher: Path | None = None, upstream: str | None = None,
                 upstream_model: str | None = None, upstream_token: str | None = None,
                 deadline_s: float = DEFAULT_DEADLINE_S) -> RankService:
    """The service that answers ``/v1/rank``: an OpenAI-compatible ``upstream``, else the ``teacher``
    (default: the one in ``models_dir``); ConfigError if both are named or the teacher is missing."""
    if upstream and teacher:
        raise ConfigError("--teacher and --rank-upstream are exclusive: /v1/rank is answered by one of them")
    if teacher is not None and not teacher.is_file():
        raise ConfigError(f"--teacher {teacher}: no such file")
    ranker: Ranker = (UpstreamRanker(upstream, token=upstream_token, model=upstream_model, timeout_s=deadline_s)
                      if upstream else TeacherRanker(teacher or default_teacher(models_dir)))
    return RankService(ranker, deadline_s=deadline_s)


def _known_token(name: str, token: str) -> None:
    vocab = vocabulary()
    if vocab.tokens[vocab.id(token)] != token:
        raise RankProtocolError(f"{_WHAT}: field {name!r} is {token[:64]!r}, not a token of vocabulary "
                                f"version {vocab.version}")


def screen(request: RankRequest) -> RankRequest:
    """The request as this service ranks it, or RankProtocolError (400).

    Its vocabulary must be this service's, every token known. When ``kernel`` names a built-in kernel, the
    slots must be its parameters and candidates outside its widest space at ``shape`` are dropped (none left:
    refused). A kernel this service does not ship (a device's own), or a request without a shape, is ranked
    as sent.
    """
    vocab = vocabulary()
    if request.vocab_version != vocab.version:
        raise RankProtocolError(f"{_WHAT}: field 'vocab_version' is {request.vocab_version}; this service "
                                f"speaks {vocab.version}")
    if request.vocab_digest != vocab.digest():
        raise RankProtocolError(f"{_WHAT}: field 'vocab_digest' is {request.vocab_digest[:12]}...; this service "
                                f"has {vocab.digest()[:12]}... for version {vocab.version}")
    for i, token in enumerate(request.prompt):
        _known_token(f"prompt[{i}]", token)
    for j, slot in enumerate(request.slots):
        for i, token in enumerate(slot["tokens"]):
            _known_token(f"slots[{j}].tokens[{i}]", token)
    if request.kernel is None or not request.shape or not _KERNEL_NAME.fullmatch(request.kernel):
        return request
    from agent.errors import KernelNotFound
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel
    from agent.kernels.space import WIDEST_VECTOR_BITS, Space

    try:
        spec = find_kernel(request.kernel)
    except KernelNotFound:
        return request
    except EdgetuneError as exc:  # a built-in that does not load is this service's problem, not the device's
        raise RankBusy(f"kernel {request.kernel!r} does not load here: {exc}", retry_after=60) from None
    try:
        shape = ",".join(f"{dim}={extent}" for dim, extent in request.shape.items())
        space = Space.build(parse_shape(spec, shape), vector_bits=WIDEST_VECTOR_BITS)  # declared values only
    except EdgetuneError as exc:
        raise RankProtocolError(f"{_WHAT}: field 'shape' does not fit kernel {spec.name!r}: {exc}") from None
    params = {p.name: p.values for p in space.params}
    names = [slot["name"] for slot in request.slots]
    if set(names) != set(params):
        raise RankProtocolError(f"{_WHAT}: field 'slots' names {sorted(names)}, but kernel {spec.name!r} has "
                                f"parameters {sorted(params)}")

    allowed = {name: {candidate_key({name: value}) for value in values} for name, values in params.items()}

    def inside(config: dict[str, Any]) -> bool:
        if not all(candidate_key({name: value}) in allowed[name] for name, value in config.items()):
            return False
        try:
            return space.is_valid(config)
        except (EdgetuneError, ArithmeticError, TypeError, ValueError):
            return False

    kept = [config for config in request.candidates if inside(config)]
    if not kept:
        raise RankProtocolError(f"{_WHAT}: field 'candidates' has no configuration inside kernel "
                                f"{spec.name!r}'s space at this shape")
    return request if len(kept) == len(request.candidates) else dataclasses.replace(request, candidates=kept)


def only_candidates(request: RankRequest, answer: RankAnswer) -> RankAnswer:
    """``answer`` without configurations ``request`` did not offer (nor repeats), each as the request wrote it."""
    offered = {candidate_key(c): c for c in request.candidates}
    configs: list[dict[str, Any]] = []
    probs: list[float] = []
    for config, p in zip(answer.configs, answer.probs, strict=True):
        found = offered.pop(candidate_key(config), None)
        if found is not None:
            configs.append(dict(found))
            probs.append(p)
    if not configs:
        raise RankBusy(f"{answer.model} answered no configuration among the candidates")
    return answer if len(configs) == len(answer.configs) else RankAnswer(configs, probs, answer.model)


def answer_request(ranker: Ranker, request: RankRequest, deadline: float = math.inf) -> RankAnswer:
    """Screen, rank, keep only candidates: the whole answer to one request, in the calling thread."""
    screened = screen(request)
    return only_candidates(screened, ranker.rank(screened, deadline))


class TeacherRanker:
    """The teacher GGUF in this process: loaded once (by ``warm`` or the first request), one call at a time."""

    def __init__(self, path: str | os.PathLike[str], *, n_threads: int | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.n_threads = n_threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._error: str | None = None

    def warm(self) -> None:
        with self._lock:
            self._load()

    def _load(self) -> Any:
        """The model (the lock is held); RankBusy if it cannot be loaded (not retried: fix it and restart)."""
        if self._model is None and self._error is None:
            from agent.predict.local_model import LocalModel

            try:
                self._model = LocalModel(self.path, n_threads=self.n_threads)
            except (EdgetuneError, OSError, ImportError) as exc:
                self._error = str(exc)
        if self._model is None:
            raise RankBusy(f"the ranking model is unavailable: {self._error}", retry_after=300)
        return self._model

    @contextmanager
    def using(self, deadline: float = math.inf) -> Iterator[Any]:
        """The loaded model, alone: waits for the lock until ``deadline`` (then RankBusy)."""
        wait = deadline - time.monotonic()
        if not (self._lock.acquire() if math.isinf(wait) else self._lock.acquire(timeout=max(wait, 0.0))):
            raise RankBusy("the ranking model is busy with other requests")
        try:
            if time.monotonic() >= deadline:
                raise RankBusy("the ranking model is busy with other requests")
            yield self._load()
        finally:
            self._lock.release()

    def rank(self, request: RankRequest, deadline: float = math.inf) -> RankAnswer:
        with self.using(deadline) as model:
            return rank_with_model(model, request)

    def close(self) -> None:
        with self._lock:
            if self._model is not None:
                self._model.close()
                self._model = None


class UpstreamRanker:
    """An OpenAI-compatible ``/v1/completions`` server with logprobs, asked with the device's cloud client."""

    def __init__(self, url: str, *, token: str | None = None, model: str | None = None,
                 timeout_s: float = DEFAULT_DEADLINE_S) -> None:
        from agent.predict.cloud import CloudClient, CloudSettings

        # One retry within the deadline; after 3 failed asks in a row, 30 s of fast 503s instead of waiting.
        settings = CloudSettings(url, kind="openai", token=token or None, model=model or None, timeout_s=timeout_s,
                                 retries=1, breaker_failures=3, breaker_cooldown_s=30.0)
        self.client = CloudClient(settings)  # breaker state in memory: one per server process
        self.name = model or "upstream"

    def warm(self) -> None:
        pass

    def rank(self, request: RankRequest, deadline: float = math.inf) -> RankAnswer:
        answer = self.client.ask(request)
        if answer is None:
            _, open_until = self.client.breaker_state()
            raise RankBusy(f"upstream ranking failed: {self.client.last_error}",
                           retry_after=math.ceil(max(1.0, open_until - time.time())))
        return RankAnswer(answer.configs, answer.probs, answer.model)

    def close(self) -> None:
        pass


class RankService:
    """One process's ranking: ``answer`` runs off the event loop, under ``deadline_s`` per request."""

    def __init__(self, ranker: Ranker, *, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        if not 0 < deadline_s < math.inf:
            raise ValueError(f"the rank deadline must be a positive number of seconds, got {deadline_s!r}")
        self.ranker = ranker
        self.deadline_s = deadline_s

    def start(self) -> None:
        """Load the model in the background, so the first device does not wait for it."""
        threading.Thread(target=self.ranker.warm, name="rank-warm", daemon=True).start()

    async def answer(self, request: RankRequest) -> RankAnswer:
        """The answer, RankProtocolError (400), or RankBusy (503) at the deadline; the event loop never blocks."""
        from starlette.concurrency import run_in_threadpool

        deadline = time.monotonic() + self.deadline_s
        task = asyncio.ensure_future(run_in_threadpool(answer_request, self.ranker, request, deadline))
        try:
            # shield: a worker thread cannot be cancelled; it finishes (and frees the model) on its own.
            return await asyncio.wait_for(asyncio.shield(task), self.deadline_s)
        except asyncio.TimeoutError:
            task.add_done_callback(_discard)
            raise RankBusy(f"no answer within the {self.deadline_s:g} s deadline; the model is busy") from None

    def close(self) -> None:
        self.ranker.close()


def _discard(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it
