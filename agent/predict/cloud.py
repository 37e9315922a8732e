"""Ask a bigger model behind a service when the on-device model is unsure.

Two kinds of service:

* ``fleet``: edgetune's own, ``POST {url}/v1/rank`` with a :class:`~agent.predict.rank_protocol.RankRequest`,
  answered with a :class:`~agent.predict.rank_protocol.RankAnswer`;
* ``openai``: any OpenAI-compatible server that echoes log-probabilities, ``POST {url}/v1/completions`` with one
  text per candidate (:func:`completion_text`); a candidate's score is the sum of its configuration tokens'
  log-probabilities, and the probabilities are their softmax over the candidates.

:meth:`CloudClient.ask` never raises for network or server trouble: it returns None and ``last_error`` says why.
The whole ask, retry included, runs under one deadline: each attempt runs in an asyncio loop under ``wait_for``,
which cancels a read in the middle, so a server that hangs or trickles bytes cannot hold the agent (httpx's own
timeouts bound each operation, not the total). A circuit breaker stops asking a service that failed
``breaker_failures`` asks in a row for ``breaker_cooldown_s``; its state lives in a small JSON file because every
``edgetune tune`` is its own process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agent.errors import CloudError
from agent.predict.rank_protocol import RankAnswer, RankProtocolError, RankRequest, candidate_key
from agent.settings import Settings

__all__ = ["KINDS", "CloudAnswer", "CloudClient", "CloudError", "CloudSettings", "cloud_settings_from",
           "completion_text", "merge_rankings"]

KINDS = ("fleet", "openai")
MAX_ANSWER_BYTES = 16 * 2**20
_MIN_ATTEMPT_S = 0.05  # a retry needs at least this much of the budget left
_Ranked = tuple[list[dict[str, Any]], list[float], str, int]  # configs, probs, model, dropped




@dataclass(frozen=True)
class CloudSettings:
    """Where and how to ask; ``timeout_s`` bounds a whole ask, retries included."""

    url: str  # the service's base URL: the fleet's /v1/rank or the server's /v1/completions is appended
    kind: str = "fleet"
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    model: str | None = None  # the OpenAI model name (left out of the request when None)
    timeout_s: float = 1.5
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CloudError(f"cloud kind {self.kind!r} is unknown; valid kinds: {', '.join(KINDS)}")
        try:
            url = httpx.URL(self.url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise CloudError(f"cloud url {self.url!r} is invalid ({exc})") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise CloudError(f"cloud url {self.url!r} must be http:// or https:// with a host")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s < math.inf):
            raise CloudError(f"cloud timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 5):
            raise CloudError(f"cloud retries must be 0 to 5, got {self.retries!r}")
        if not (isinstance(self.breaker_failures, int) and self.breaker_failures >= 1):
            raise CloudError(f"cloud breaker_failures must be at least 1, got {self.breaker_failures!r}")
        if not (isinstance(self.breaker_cooldown_s, (int, float)) and 0 <= self.breaker_cooldown_s < math.inf):
            raise CloudError(f"cloud breaker_cooldown_s must be 0 or more seconds, got {self.breaker_cooldown_s!r}")

    @property
    def endpoint(self) -> str:
        """The URL an ask posts to."""
        return self.url.rstrip("/") + ("/v1/rank" if self.kind == "fleet" else "/v1/completions")


@dataclass(frozen=True)
class CloudAnswer:
    """The service's best configurations (all among the request's candidates), probabilities descending."""

    configs: list[dict[str, Any]]
    probs: list[float]
    model: str
    elapsed_s: float
    attempts: int
    dropped: int = 0  # configurations it answered that were not among the candidates


def cloud_settings_from(settings: Settings, url: str | None = None, kind: str | None = None) -> CloudSettings | None:
    """The client's settings: ``url``/``kind`` where given, else ``EDGETUNE_CLOUD_*``; None when no URL is set."""
    url = url or settings.cloud_url
    if not url:
        return None
    return CloudSettings(url=url, kind=kind or settings.cloud_kind, token=settings.cloud_token,
                         model=settings.cloud_model)


class _Failure(Exception):
    def __init__(self, problem: str, *, retry: bool) -> None:
        super().__init__(problem)
        self.retry = retry


def completion_text(prompt: Sequence[str], config: Sequence[str]) -> tuple[str, int]:
    """The ``openai`` kind's text for one candidate, and the offset where its configuration starts.

    The text is ``"<s> "`` + the prompt tokens + ``" <cfg> "`` + the configuration tokens, every token separated
    by one space. The offset is just after ``<cfg>``, so a configuration token counts whether the server puts the
    separating space at the start of the token (GPT-style ``" BM=64"``) or drops it.
    """
    head = " ".join(["<s>", *prompt, "<cfg>"])
    return f"{head} {' '.join(config)}", len(head)


class CloudClient:
    """Asks one service; ``state_path`` keeps the circuit breaker across processes (None: in memory only)."""

    def __init__(self, settings: CloudSettings, *, state_path: Path | None = None) -> None:
        self.settings = settings
        self.state_path = Path(state_path) if state_path is not None else None
        self.last_error: str | None = None
        self._memory: dict[str, float] = {}
        # One TLS context for every ask (httpx would build one per client, ~25 ms); plain http has no TLS to verify.
        https = httpx.URL(settings.url).scheme == "https"
        self._verify: ssl.SSLContext | bool = ssl.create_default_context() if https else False

    def ask(self, request: RankRequest) -> CloudAnswer | None:
        """The service's best configurations among ``request.candidates``, or None (``last_error`` says why)."""
        s = self.settings
        failures, open_until = self.breaker_state()
        if open_until > time.time():
            self.last_error = (f"{s.kind} {s.endpoint}: circuit breaker open until {_clock(open_until)} "
                               f"after {failures} failed asks in a row")
            return None
        start = time.monotonic()
        deadline = start + s.timeout_s
        attempts = 0
        while True:
            attempts += 1
            try:
                configs, probs, model, dropped = self._attempt(request, deadline)
            except _Failure as exc:
                problem = str(exc)
                if not exc.retry or attempts > s.retries or deadline - time.monotonic() < _MIN_ATTEMPT_S:
                    break
            else:
                self.last_error = None
                if failures or open_until:
                    self._save(0, 0.0)
                return CloudAnswer(configs, probs, model, time.monotonic() - start, attempts, dropped)
        failures += 1
        self._save(failures, time.time() + s.breaker_cooldown_s if failures >= s.breaker_failures else 0.0)
        self.last_error = f"{s.kind} {s.endpoint}: {problem}" + (f" ({attempts} attempts)" if attempts > 1 else "")
        return None

    def breaker_state(self) -> tuple[int, float]:
        """(failed asks in a row, wall-clock time the breaker is open until, 0.0 when closed)."""
        entry: Any = self._memory if self.state_path is None else _read_state(self.state_path).get(
            self.settings.endpoint)
        try:
            failures, open_until = int(entry["failures"]), float(entry["open_until"])
        except (TypeError, ValueError, KeyError):
            return 0, 0.0
        return (failures, open_until) if failures >= 0 and math.isfinite(open_until) else (0, 0.0)

    def _save(self, failures: int, open_until: float) -> None:
        entry = {"failures": failures, "open_until": open_until}
        if self.state_path is None:
            self._memory = entry
            return
        services = _read_state(self.state_path)
        services[self.settings.endpoint] = entry
        with contextlib.suppress(OSError):  # the breaker only saves requests: a read-only disk must not stop tuning
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".cloud-state-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"version": 1, "services": services}, f)
                os.replace(tmp, self.state_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _attempt(self, request: RankRequest, deadline: float) -> _Ranked:
        s = self.settings
        texts: list[tuple[str, int]] = []
        if s.kind == "fleet":
            body = request.to_json()
        else:
            texts = [completion_text(request.prompt, row) for row in request.candidate_tokens()]
            body = {"prompt": [t for t, _ in texts], "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
            if s.model:
                body = {"model": s.model, **body}
        raw = self._post(body, deadline)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _Failure(f"answer is not JSON (starts {raw[:40]!r})", retry=False) from exc
        try:
            if s.kind == "fleet":
                answer = RankAnswer.from_json(data)
                return _keep(request, answer.configs, answer.probs, answer.model)
            return _openai_answer(request, texts, data, s.model)
        except RankProtocolError as exc:
            raise _Failure(f"bad answer: {exc}", retry=False) from exc

    def _post(self, body: dict[str, Any], deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._post_in_new_loop(body, remaining)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code: run our loop beside it
            return pool.submit(self._post_in_new_loop, body, remaining).result()

    def _post_in_new_loop(self, body: dict[str, Any], remaining: float) -> bytes:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(self._post_async(body, remaining), max(remaining, 0.0)))
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            raise _Failure(f"no answer within the {self.settings.timeout_s:g} s budget", retry=True) from exc
        except httpx.ConnectError as exc:
            raise _Failure(_connect_problem(exc), retry=True) from exc
        except (httpx.HTTPError, OSError) as exc:  # the connection broke mid-way, or the system refused a socket
            raise _Failure(f"{type(exc).__name__} ({_one_line(exc)})", retry=True) from exc
        finally:
            loop.close()  # does not wait for a stray resolver thread

    async def _post_async(self, body: dict[str, Any], remaining: float) -> bytes:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
        async with httpx.AsyncClient(verify=self._verify, timeout=remaining) as client, \
                client.stream("POST", s.endpoint, json=body, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise _Failure(f"answer is larger than {MAX_ANSWER_BYTES} bytes", retry=False)
                chunks.append(chunk)
            status = response.status_code
        raw = b"".join(chunks)
        if status != 200:
            detail = _one_line(raw.decode(errors="replace"))[:120]
            raise _Failure(f"HTTP {status}" + (f": {detail}" if detail else ""), retry=status >= 500)
        return raw


def _keep(request: RankRequest, configs: Sequence[Mapping[str, Any]], probs: Sequence[float], model: str) -> _Ranked:
    """Only the answered configurations that are among the candidates (as the device's own dicts), first of each."""
    known = {candidate_key(c): c for c in request.candidates}
    kept: list[dict[str, Any]] = []
    kept_probs: list[float] = []
    for config, p in zip(configs, probs, strict=True):
        key = candidate_key(config)
        if key in known:
            kept.append(dict(known.pop(key)))
            kept_probs.append(float(p))
    if not kept:
        raise _Failure(f"none of the {len(configs)} configurations it answered is among the candidates", retry=False)
    return kept, kept_probs, model, len(configs) - len(kept)


def _openai_answer(request: RankRequest, texts: Sequence[tuple[str, int]], data: Any, model: str | None) -> _Ranked:
    """Score each candidate by the log-probabilities of its configuration tokens; softmax; the best ``k``."""
    what = "completions answer"
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise RankProtocolError(f"{what}: field 'choices' must be a non-empty list")
    scores: dict[int, float] = {}
    for n, choice in enumerate(choices):
        index = choice.get("index") if isinstance(choice, dict) else None
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise RankProtocolError(f"{what}: field 'choices[{n}].index' must be an integer")
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        offsets = logprobs.get("text_offset") if isinstance(logprobs, dict) else None
        if not isinstance(values, list) or not isinstance(offsets, list) or len(values) != len(offsets):
            raise RankProtocolError(f"{what}: field 'choices[{n}].logprobs' must hold token_logprobs and "
                                    "text_offset lists of one length")
        if not 0 <= index < len(texts) or index in scores:
            continue  # not one of the candidates: dropped
        text, start = texts[index]
        total, counted = 0.0, 0
        for value, offset in zip(values, offsets, strict=True):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise RankProtocolError(f"{what}: field 'choices[{n}].logprobs.text_offset' must hold integers")
            if start <= offset < len(text):  # the configuration, not the prompt nor the generated token
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise RankProtocolError(f"{what}: field 'choices[{n}].logprobs.token_logprobs' has {value!r} "
                                            "for a configuration token")
                total += value
                counted += 1
        if not counted:
            raise RankProtocolError(f"{what}: field 'choices[{n}].logprobs' has no token at or after offset {start}")
        scores[index] = total
    if not scores:
        raise _Failure(f"none of the {len(choices)} choices it answered is one of the candidates", retry=False)
    top = max(scores.values())
    weights = {i: math.exp(v - top) for i, v in scores.items()}
    norm = sum(weights.values())
    best = sorted(weights, key=lambda i: (-weights[i], i))[: request.k]
    name = data.get("model") if isinstance(data.get("model"), str) and data.get("model") else model or "openai"
    return ([dict(request.candidates[i]) for i in best], [weights[i] / norm for i in best], name,
            len(choices) - len(scores))


def merge_rankings(local: Sequence[tuple[Mapping[str, Any], float]], answer: CloudAnswer | None, *,
                   cloud_weight: float = 0.5) -> list[tuple[dict[str, Any], float, str]]:
    """Merge the local ranking (config, log-prob; best first) with the cloud's: (config, score, source), best first.

    The score is ``(1 - cloud_weight) * log p_local + cloud_weight * log p_cloud``, where ``p_local`` is the local
    probability normalised over the local list. A configuration one side does not rank gets that side's smallest
    log-probability minus log 2. ``source`` is "cloud" for configurations only the cloud proposed. With no answer
    the local list comes back unchanged (its own log-probs, source "local").
    """
    if not 0.0 <= cloud_weight <= 1.0:
        raise ValueError(f"cloud_weight must lie in [0, 1], got {cloud_weight}")
    if answer is None or not answer.configs:
        return [(dict(config), float(score), "local") for config, score in local]
    local_log = _log_normalised([float(score) for _, score in local])
    cloud_log = [math.log(max(float(p), 1e-300)) for p in answer.probs]
    local_by: dict[Any, float] = {}
    for (config, _), value in zip(local, local_log, strict=True):
        local_by.setdefault(candidate_key(config), value)
    cloud_by: dict[Any, float] = {}
    for config, value in zip(answer.configs, cloud_log, strict=True):
        cloud_by.setdefault(candidate_key(config), value)
    local_missing = min(local_log) - math.log(2) if local_log else 0.0
    cloud_missing = min(cloud_log) - math.log(2)
    merged: list[tuple[dict[str, Any], float, str]] = []
    seen: set[Any] = set()
    for config, source in [*((c, "local") for c, _ in local), *((c, "cloud") for c in answer.configs)]:
        key = candidate_key(config)
        if key in seen:
            continue
        seen.add(key)
        score = (1 - cloud_weight) * local_by.get(key, local_missing) + cloud_weight * cloud_by.get(key, cloud_missing)
        merged.append((dict(config), score, source))
    merged.sort(key=lambda item: -item[1])  # stable: ties keep the local order
    return merged


def _log_normalised(scores: Sequence[float]) -> list[float]:
    top = max(scores, default=0.0)
    if not math.isfinite(top):
        return [0.0] * len(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [s - log_norm for s in scores]


def _read_state(path: Path) -> dict[str, Any]:
    """The breaker file's services; anything unreadable or corrupt reads as no state (breaker closed)."""
    try:
        services = json.loads(path.read_text())["services"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return services if isinstance(services, dict) else {}


def _clock(when: float) -> str:
    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:200]


def _connect_problem(exc: BaseException) -> str:
    """'connection refused', 'cannot resolve the host (...)' or 'cannot connect (...)', from the cause chain."""
    stack: list[BaseException] = [exc]
    for _ in range(50):
        if not stack:
            break
        error = stack.pop()
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return f"cannot resolve the host ({error.strerror or error})"
        stack.extend(getattr(error, "exceptions", ()))  # an ExceptionGroup of several addresses' failures
        if error.__cause__ is not None or error.__context__ is not None:
            stack.append(error.__cause__ or error.__context__)  # type: ignore[arg-type]
    return f"cannot connect ({_one_line(exc)})"
