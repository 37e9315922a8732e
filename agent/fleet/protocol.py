"""The fleet's telemetry wire protocol, shared by the server (``agent.fleet.app``) and the uploader.

``POST /v1/telemetry`` (device token) carries ``{"fingerprint", "profile", "records": [...]}``; each
record is ``{"key", "kind": "run" | "tuning", "created_at", "data"}``. The server validates every
record on its own: a bad record is rejected with a reason, the others are stored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "IDEMPOTENCY_HEADER",
    "KINDS",
    "MAX_BODY_BYTES",
    "MAX_RECORDS",
    "RUN_FIELDS",
    "TUNING_FIELDS",
    "idempotency_key",
    "validate_envelope",
    "validate_record",
]

MAX_RECORDS = 1000
MAX_BODY_BYTES = 8 * 1024 * 1024  # of the JSON, after gunzip too
MAX_KEY_CHARS = 256
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_CHARS = (8, 128)
KINDS = ("run", "tuning")
STATUSES = ("correct", "compile", "runtime", "timeout", "correctness", "constraints")

Check = Callable[[Any], str | None]  # None when the value is fine, else why not


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 text"
    if "\x00" in value:
        return "must not contain NUL characters"
    return None


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "must be a number"
    return None


def _non_negative(value: Any) -> str | None:
    return _number(value) or ("must be >= 0" if value < 0 else None)


def _integer(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"


def _optional(check: Check) -> Check:
    def optional(value: Any) -> str | None:
        return None if value is None else check(value)
    return optional


def _config(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of parameter -> integer or string"
    for name, item in value.items():
        if _text(name) or (_integer(item) and _text(item)):
            return "must be an object of parameter -> integer or string"
    return None


def _samples(value: Any) -> str | None:
    if not isinstance(value, list) or any(_number(v) for v in value):
        return "must be a list of numbers"
    return None


def _status(value: Any) -> str | None:
    return None if value in STATUSES else f"must be one of {', '.join(STATUSES)}"


RUN_FIELDS: dict[str, Check] = {
    "kernel": _text, "kernel_key": _text, "shape": _text, "target": _text, "compiler": _text,
    "strategy": _text, "phase": _text, "config": _config, "status": _status, "reason": _text,
    "median_s": _optional(_non_negative), "samples": _samples, "compile_s": _optional(_non_negative),
    "source": _optional(_text), "predicted_rank": _optional(_integer), "tuning_id": _optional(_integer),
}

TUNING_FIELDS: dict[str, Check] = {
    "kernel": _text, "shape": _text, "target": _text, "strategy": _text, "budget": _optional(_text),
    "evaluations": _optional(_integer), "wall_s": _optional(_non_negative),
    "winner_config": _optional(_config), "winner_median_s": _optional(_non_negative),
    "speedup": _optional(_non_negative), "predict_s": _optional(_non_negative),
    "cloud_s": _optional(_non_negative), "compile_s": _optional(_non_negative),
    "benchmark_s": _optional(_non_negative), "confidence": _optional(_number), "cloud": _optional(_text),
    "winner_source": _optional(_text), "winner_predicted_rank": _optional(_integer),
}

_FIELDS = {"run": RUN_FIELDS, "tuning": TUNING_FIELDS}


def _timestamp(value: Any) -> str | None:
    if _text(value):
        return "must be an ISO-8601 timestamp"
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "must be an ISO-8601 timestamp"
    return None


def validate_envelope(body: Any) -> str | None:
    """Why ``body`` is not a telemetry batch (the server answers 400), or None.

    Only the envelope: the records' own contents are checked one by one by :func:`validate_record`.
    """
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    missing = {"fingerprint", "profile", "records"} - set(body)
    if missing:
        return f"the body lacks {', '.join(sorted(missing))}"
    unknown = set(body) - {"fingerprint", "profile", "records"}
    if unknown:
        return f"unknown fields in the body: {', '.join(sorted(map(str, unknown)))[:200]}"
    if _text(body["fingerprint"]) or not body["fingerprint"] or len(body["fingerprint"]) > MAX_KEY_CHARS:
        return f"fingerprint must be a string of 1 to {MAX_KEY_CHARS} characters"
    if not isinstance(body["profile"], dict):
        return "profile must be an object"
    if not isinstance(body["records"], list):
        return "records must be a list"
    return None


def validate_record(record: Any) -> str | None:
    """Why one record cannot be stored (it is rejected on its own), or None."""
    if not isinstance(record, dict):
        return "a record must be an object"
    unknown = set(record) - {"key", "kind", "created_at", "data"}
    if unknown:
        return f"unknown record fields: {', '.join(sorted(map(str, unknown)))[:200]}"
    key = record.get("key")
    problem = _text(key)
    if problem:
        return f"key {problem}"
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        return f"key must be 1 to {MAX_KEY_CHARS} characters"
    kind = record.get("kind")
    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    problem = _timestamp(record.get("created_at"))
    if problem:
        return f"created_at {problem}"
    data = record.get("data")
    if not isinstance(data, dict):
        return "data must be an object"
    fields = _FIELDS[kind]
    missing = set(fields) - set(data)
    if missing:
        return f"data lacks {', '.join(sorted(missing))}"
    unknown = set(data) - set(fields)
    if unknown:
        return f"unknown data fields: {', '.join(sorted(map(str, unknown)))[:200]}"
    for name, check in fields.items():
        problem = check(data[name])
        if problem:
            return f"data.{name} {problem}"
    return None


def idempotency_key(record_keys: Sequence[str]) -> str:
    """The Idempotency-Key of a batch: a hash of its record keys, so a resend reuses it."""
    digest = hashlib.sha256("\n".join(record_keys).encode("utf-8")).hexdigest()
    return f"batch-{digest[:48]}"


def valid_idempotency_key(value: str | None) -> bool:
    """An Idempotency-Key header is 8 to 128 printable ASCII characters."""
    low, high = IDEMPOTENCY_CHARS
    return value is not None and low <= len(value) <= high and value.isascii() and value.isprintable()


def parse_retry_after(value: str | None, *, cap_s: float = 60.0) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds only), capped; None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(max(seconds, 0.0), cap_s) if math.isfinite(seconds) else None


def ack_summary(accepted: int, duplicates: int, rejected: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The 200 answer to a telemetry batch."""
    return {"accepted": accepted, "duplicates": duplicates, "rejected": list(rejected)}
