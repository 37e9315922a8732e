"""The wire format of the fleet service's ``POST /v1/rank``, and the service's answer to it.

The device sends its prompt and its parameters as vocabulary *strings*, never ids, with the
version and digest of its vocabulary, so a service built from another edgetune refuses
what it does not speak instead of ranking nonsense::

    device: request_for(prompt, codec, candidates, k) ── RankRequest.to_json() ──► POST /v1/rank
    service: RankRequest.from_json(body) ─► rank_with_model(teacher, request) ─► RankAnswer.to_json()

Both messages are validated whenever one is made, from JSON or in code: every problem is a
one-line :class:`RankProtocolError` naming the field. Unknown keys are ignored, so either side
may add optional fields without breaking the other.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from agent.errors import RankProtocolError
from agent.predict.prompt import ConfigCodec
from agent.predict.vocab import Vocabulary, vocabulary

__all__ = ["FULL_SPACE_LIMIT", "MAX_CANDIDATES", "MAX_K", "MAX_PROMPT", "MAX_SLOTS", "RankAnswer",
           "RankProtocolError", "RankRequest", "candidate_key", "rank_with_model", "request_for"]

MAX_CANDIDATES = 4096
MAX_K = 64
MAX_PROMPT = 256  # prompt tokens, without <s> and <cfg>
MAX_SLOTS = 64
FULL_SPACE_LIMIT = 2048  # the device sends its whole valid space up to this size, else its wider beam
_FIELD = re.compile(r"[a-z]+#[0-9]+")
_DIGEST = re.compile(r"[0-9a-f]{64}")




def _fail(what: str, name: str, problem: str) -> NoReturn:
    raise RankProtocolError(f"{what}: field {name!r} {problem}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_scalar(value: Any) -> bool:
    if isinstance(value, int):  # JSON allows any integer; one beyond a float's range cannot be compared as a number
        return abs(value) <= 2**63
    return isinstance(value, str) or (isinstance(value, float) and math.isfinite(value))


def _value_key(value: Any) -> tuple[str, Any]:
    """Equal for values JSON may have turned into each other (64 and 64.0); bools stay apart."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    return ("s", value)


def candidate_key(config: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, Any]], ...]:
    """A hashable identity of a configuration that survives a JSON round trip."""
    return tuple(sorted((name, _value_key(value)) for name, value in config.items()))


def _int(what: str, name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(what, name, f"must be an integer, got {_short(value)}")
    if not lo <= value <= hi:
        _fail(what, name, f"must be {lo} to {hi}, got {value}")


def _text(what: str, name: str, value: Any, *, limit: int = 200) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        _fail(what, name, f"must be a non-empty string of at most {limit} characters, got {_short(value)}")


def _list(what: str, name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, list):
        _fail(what, name, f"must be a list, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        _fail(what, name, f"must have {lo} to {hi} entries, has {len(value)}")


def _token(what: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or "=" not in value or len(value) > 64 or any(c.isspace() for c in value):
        _fail(what, name, f"must be a field=value token without spaces, got {_short(value)}")


def _config(what: str, name: str, value: Any) -> None:
    if not isinstance(value, dict) or not value:
        _fail(what, name, f"must be a non-empty object of parameter values, got {_short(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not _is_scalar(item):
            _fail(what, name, f"has {_short(key)}={_short(item)}: values must be strings or finite numbers")


def _object(what: str, data: Mapping[str, Any] | str | bytes, required: Sequence[str]) -> dict[str, Any]:
    if isinstance(data, (str, bytes, bytearray)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise RankProtocolError(f"{what}: not JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise RankProtocolError(f"{what}: must be a JSON object, got {type(data).__name__}")
    for name in required:
        if name not in data:
            _fail(what, name, "is missing")
    return dict(data)


@dataclass(frozen=True)
class RankRequest:
    """What the device asks: rank ``candidates`` (configurations) for ``prompt``, return the best ``k``."""

    vocab_version: int
    vocab_digest: str
    prompt: list[str]  # prompt token strings, without <s> and <cfg>
    slots: list[dict[str, Any]]  # {"name", "field", "values", "tokens"} per parameter, in codec order
    candidates: list[dict[str, Any]]
    k: int
    kernel: str | None = None
    shape: dict[str, int] | None = None

    def __post_init__(self) -> None:
        what = "rank request"
        _int(what, "vocab_version", self.vocab_version, 1, 2**31)
        if not isinstance(self.vocab_digest, str) or not _DIGEST.fullmatch(self.vocab_digest):
            _fail(what, "vocab_digest", f"must be 64 lowercase hex digits, got {_short(self.vocab_digest)}")
        _list(what, "prompt", self.prompt, 1, MAX_PROMPT)
        for i, token in enumerate(self.prompt):
            _token(what, f"prompt[{i}]", token)
        _list(what, "slots", self.slots, 1, MAX_SLOTS)
        names = [_check_slot(what, j, slot) for j, slot in enumerate(self.slots)]
        if len(set(names)) != len(names):
            _fail(what, "slots", "has two slots with one name")
        _list(what, "candidates", self.candidates, 1, MAX_CANDIDATES)
        values = {s["name"]: {_value_key(v) for v in s["values"]} for s in self.slots}
        seen: set[tuple[Any, ...]] = set()
        for i, config in enumerate(self.candidates):
            name = f"candidates[{i}]"
            _config(what, name, config)
            if config.keys() != values.keys():
                extra, lacking = sorted(config.keys() - values.keys()), sorted(values.keys() - config.keys())
                _fail(what, name, f"has unknown parameters {extra}" if extra else f"lacks parameters {lacking}")
            for param, value in config.items():
                if _value_key(value) not in values[param]:
                    _fail(what, name, f"has {param}={_short(value)}, not among the slot's values")
            key = candidate_key(config)
            if key in seen:
                _fail(what, name, "repeats an earlier candidate")
            seen.add(key)
        _int(what, "k", self.k, 1, MAX_K)
        if self.kernel is not None:
            _text(what, "kernel", self.kernel)
        if self.shape is not None:
            if not isinstance(self.shape, dict) or len(self.shape) > 16:
                _fail(what, "shape", f"must be an object of at most 16 dimensions, got {_short(self.shape)}")
            for dim, extent in self.shape.items():
                _text(what, "shape", dim, limit=64)
                _int(what, f"shape.{dim}", extent, 0, 2**62)

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON-ready dict (what ``from_json`` reads back)."""
        data: dict[str, Any] = {"vocab_version": self.vocab_version, "vocab_digest": self.vocab_digest,
                                "prompt": list(self.prompt), "slots": [dict(s) for s in self.slots],
                                "candidates": [dict(c) for c in self.candidates], "k": self.k}
        if self.kernel is not None:
            data["kernel"] = self.kernel
        if self.shape is not None:
            data["shape"] = dict(self.shape)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> RankRequest:
        """Parse and validate a request (a decoded dict, or JSON text); RankProtocolError names a bad field."""
        obj = _object("rank request", data, ("vocab_version", "vocab_digest", "prompt", "slots", "candidates", "k"))
        return cls(vocab_version=obj["vocab_version"], vocab_digest=obj["vocab_digest"], prompt=obj["prompt"],
                   slots=obj["slots"], candidates=obj["candidates"], k=obj["k"], kernel=obj.get("kernel"),
                   shape=obj.get("shape"))

    def candidate_tokens(self) -> list[list[str]]:
        """The configuration token strings of each candidate, in slot order."""
        lookups = [{_value_key(v): t for v, t in zip(s["values"], s["tokens"], strict=True)} for s in self.slots]
        return [[lookup[_value_key(c[s["name"]])] for s, lookup in zip(self.slots, lookups, strict=True)]
                for c in self.candidates]


def _check_slot(what: str, j: int, slot: Any) -> str:
    name = f"slots[{j}]"
    if not isinstance(slot, dict):
        _fail(what, name, f"must be an object, got {type(slot).__name__}")
    for key in ("name", "field", "values", "tokens"):
        if key not in slot:
            _fail(what, f"{name}.{key}", "is missing")
    _text(what, f"{name}.name", slot["name"], limit=64)
    if not isinstance(slot["field"], str) or not _FIELD.fullmatch(slot["field"]):
        _fail(what, f"{name}.field", f"must look like role#i, got {_short(slot['field'])}")
    _list(what, f"{name}.values", slot["values"], 1, 1024)
    if not all(_is_scalar(v) for v in slot["values"]):
        _fail(what, f"{name}.values", "must hold strings or finite numbers")
    if len({_value_key(v) for v in slot["values"]}) != len(slot["values"]):
        _fail(what, f"{name}.values", "repeats a value")
    _list(what, f"{name}.tokens", slot["tokens"], len(slot["values"]), len(slot["values"]))
    for i, token in enumerate(slot["tokens"]):
        _token(what, f"{name}.tokens[{i}]", token)
        if not token.startswith(slot["field"] + "="):
            _fail(what, f"{name}.tokens[{i}]", f"{token!r} is not a token of field {slot['field']!r}")
    return slot["name"]


@dataclass(frozen=True)
class RankAnswer:
    """The service's best configurations with their probabilities (descending), and the model that ranked them."""

    configs: list[dict[str, Any]]
    probs: list[float]
    model: str

    def __post_init__(self) -> None:
        what = "rank answer"
        _list(what, "configs", self.configs, 1, MAX_CANDIDATES)
        for i, config in enumerate(self.configs):
            _config(what, f"configs[{i}]", config)
        _list(what, "probs", self.probs, len(self.configs), len(self.configs))
        for i, p in enumerate(self.probs):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                _fail(what, f"probs[{i}]", f"must be a probability in [0, 1], got {_short(p)}")
            if i and p > self.probs[i - 1]:
                _fail(what, "probs", f"must be descending; entry {i} ({p}) exceeds entry {i - 1}")
        if sum(self.probs) > 1.0 + 1e-6:
            _fail(what, "probs", f"sum to {sum(self.probs):.6f}, more than 1")
        _text(what, "model", self.model)

    def to_json(self) -> dict[str, Any]:
        """The answer as a JSON-ready dict."""
        return {"configs": [dict(c) for c in self.configs], "probs": [float(p) for p in self.probs],
                "model": self.model}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> RankAnswer:
        """Parse and validate an answer (a decoded dict, or JSON text)."""
        obj = _object("rank answer", data, ("configs", "probs", "model"))
        return cls(configs=obj["configs"], probs=obj["probs"], model=obj["model"])


def _token_id(vocab: Vocabulary, token: str, name: str) -> int:
    found = vocab.id(token)
    if vocab.tokens[found] != token:
        _fail("rank request", name, f"is {token!r}, not a token of vocabulary version {vocab.version}")
    return found


def rank_with_model(model: Any, request: RankRequest) -> RankAnswer:
    """Score every candidate with ``model`` (a :class:`~agent.predict.local_model.LocalModel`); the best ``k``.

    Probabilities are the softmax of the model's log-probabilities over the candidates. Raises
    RankProtocolError for another vocabulary, an unknown token, or a prompt the model cannot hold.
    """
    vocab = vocabulary()
    if request.vocab_version != vocab.version:
        _fail("rank request", "vocab_version", f"is {request.vocab_version}; this service speaks {vocab.version}")
    if request.vocab_digest != vocab.digest():
        _fail("rank request", "vocab_digest", f"is {request.vocab_digest[:12]}...; this service has "
                                              f"{vocab.digest()[:12]}... for version {vocab.version}")
    prompt = [vocab.bos, *(_token_id(vocab, t, f"prompt[{i}]") for i, t in enumerate(request.prompt)),
              vocab.config_mark]
    if len(prompt) + len(request.slots) - 1 > model.context:
        _fail("rank request", "prompt", f"of {len(request.prompt)} tokens with {len(request.slots)} slots exceeds "
                                        f"the model's context of {model.context}")
    ids = {t: _token_id(vocab, t, f"slots[{j}].tokens[{i}]")
           for j, s in enumerate(request.slots) for i, t in enumerate(s["tokens"])}
    allowed = [list(dict.fromkeys(ids[t] for t in s["tokens"])) for s in request.slots]
    rows = np.array([[ids[t] for t in row] for row in request.candidate_tokens()], dtype=np.int64)
    logp = np.asarray(model.score(prompt, rows, allowed), dtype=np.float64)
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    order = np.argsort(-logp, kind="stable")[: request.k]
    return RankAnswer(configs=[dict(request.candidates[i]) for i in order],
                      probs=[min(1.0, float(probs[i])) for i in order], model=model.path.stem)


def request_for(prompt_tokens: Sequence[str], codec: ConfigCodec, candidates: Sequence[Mapping[str, Any]], k: int,
                kernel: str | None = None, shape: Mapping[str, int] | None = None) -> RankRequest:
    """The request a device sends: its prompt (``prompt_tokens()``), its codec's slots, the candidates to rank."""
    vocab = vocabulary()
    slots = [{"name": s.name, "field": s.field, "values": list(s.values),
              "tokens": [vocab.tokens[t] for t in s.token_ids]} for s in codec.slots]
    return RankRequest(vocab_version=vocab.version, vocab_digest=vocab.digest(), prompt=list(prompt_tokens),
                       slots=slots, candidates=[dict(c) for c in candidates], k=k, kernel=kernel,
                       shape=dict(shape) if shape is not None else None)
