"""The fleet's side of the telemetry wire protocol: validating envelopes and records, and the answer.

``POST /v1/telemetry`` (device token) carries an envelope of records (``agent.telemetry.record``
defines both, and the versions). Each record is judged on its own:

- accepted: stored; data fields this fleet does not know are kept beside it (``extra``);
- rejected: it is invalid (a wrong type, a bad value, a missing field); the device moves it to
  ``dead_letter``;
- deferred: this fleet cannot place it yet (a kind it does not know, or an envelope version newer
  than it reads); the device keeps it and sends it again later, when the fleet may be upgraded.

Version 1 envelopes (no ``"protocol"``) get version 1's answer (``accepted``, ``duplicates``,
``rejected``) and their unknown kinds are rejected, as before: such a device cannot defer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.telemetry.record import ENVELOPE_FIELDS, KINDS, PROTOCOLS, RECORD_FIELDS, STATUSES, Field

__all__ = [
    "IDEMPOTENCY_HEADER",
    "MAX_BODY_BYTES",
    "MAX_RECORDS",
    "Acceptance",
    "Verdict",
    "ack_summary",
    "check_record",
    "envelope_version",
    "idempotency_key",
    "validate_envelope",
]

MAX_RECORDS = 1000
MAX_BODY_BYTES = 8 * 1024 * 1024  # of the JSON, after gunzip too
MAX_KEY_CHARS = 256
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_CHARS = (8, 128)

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


_CHECKS: dict[str, Check] = {"text": _text, "number": _number, "seconds": _non_negative, "integer": _integer,
                             "config": _config, "samples": _samples, "status": _status}


def _check(field: Field) -> Check:
    check = _CHECKS[field.type]
    return _optional(check) if field.optional else check


@dataclass(frozen=True)
class Acceptance:
    """What a fleet can place: the envelope versions it reads and the record kinds (with their fields)."""

    protocols: tuple[int, ...] = PROTOCOLS
    kinds: Mapping[str, tuple[Field, ...]] = field(default_factory=lambda: KINDS)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/protocol`` and every versioned answer tell a device."""
        return {"protocols": list(self.protocols), "kinds": sorted(self.kinds)}


@dataclass(frozen=True)
class Verdict:
    """One record's fate: ``accept`` (its known ``data``, its unknown fields in ``extra``), ``reject`` or ``defer``."""

    outcome: str
    reason: str = ""
    data: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


def _timestamp(value: Any) -> str | None:
    if _text(value):
        return "must be an ISO-8601 timestamp"
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "must be an ISO-8601 timestamp"
    return None


def envelope_version(body: Any) -> int | str:
    """The envelope's protocol version (1 when absent), or why its ``protocol`` field is not one."""
    if not isinstance(body, dict) or "protocol" not in body:
        return 1
    version = body["protocol"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return "protocol must be an integer >= 1"
    return version


def validate_envelope(body: Any) -> str | None:
    """Why ``body`` is not a telemetry batch of a version this code reads (the server answers 400), or None.

    Only the envelope: the records' own contents are judged one by one by :func:`check_record`.
    """
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    version = envelope_version(body)
    if isinstance(version, str):
        return version
    missing = {"fingerprint", "profile", "records"} - set(body)
    if missing:
        return f"the body lacks {', '.join(sorted(missing))}"
    unknown = set(body) - set(ENVELOPE_FIELDS)
    if unknown:
        return f"unknown fields in the body: {', '.join(sorted(map(str, unknown)))[:200]}"
    if _text(body["fingerprint"]) or not body["fingerprint"] or len(body["fingerprint"]) > MAX_KEY_CHARS:
        return f"fingerprint must be a string of 1 to {MAX_KEY_CHARS} characters"
    if not isinstance(body["profile"], dict):
        return "profile must be an object"
    if not isinstance(body["records"], list):
        return "records must be a list"
    return None


def check_record(record: Any, *, protocol: int, acceptance: Acceptance) -> Verdict:
    """Judge one record of an envelope of version ``protocol``: accept, reject or defer it."""
    if not isinstance(record, dict):
        return Verdict("reject", "a record must be an object")
    key = record.get("key")
    problem = _text(key)
    if problem:
        return Verdict("reject", f"key {problem}")
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        return Verdict("reject", f"key must be 1 to {MAX_KEY_CHARS} characters")
    kind = record.get("kind")
    if kind not in acceptance.kinds:
        known = ", ".join(sorted(acceptance.kinds))
        if protocol < 2 or _text(kind):  # a version-1 device cannot defer; a kind that is no text is invalid
            return Verdict("reject", f"kind must be one of {known}")
        return Verdict("defer", f"kind {kind[:40]!r} is not one this fleet reads yet ({known})")
    problem = _timestamp(record.get("created_at"))
    if problem:
        return Verdict("reject", f"created_at {problem}")
    data = record.get("data")
    if not isinstance(data, dict):
        return Verdict("reject", "data must be an object")
    fields = acceptance.kinds[kind]
    missing = {f.name for f in fields if f.since <= protocol} - set(data)
    if missing:
        return Verdict("reject", f"data lacks {', '.join(sorted(missing))}")
    for f in fields:
        problem = _check(f)(data[f.name]) if f.name in data else None
        if problem:
            return Verdict("reject", f"data.{f.name} {problem}")
    names = {f.name for f in fields}
    extra = {"data": {k: v for k, v in data.items() if k not in names},
             "record": {k: v for k, v in record.items() if k not in RECORD_FIELDS}}
    extra = {part: values for part, values in extra.items() if values}
    try:
        json.dumps(extra)
    except (RecursionError, ValueError):
        return Verdict("reject", "unknown fields must be plain JSON")
    return Verdict("accept", data={k: v for k, v in data.items() if k in names}, extra=extra or None)


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


def ack_summary(accepted: int, duplicates: int, rejected: Sequence[Mapping[str, Any]], *, protocol: int = 1,
                deferred: Sequence[Mapping[str, Any]] = (), acceptance: Acceptance | None = None) -> dict[str, Any]:
    """The 200 answer to a telemetry batch, in the envelope's version (2 adds ``deferred`` and ``protocols``)."""
    answer: dict[str, Any] = {"accepted": accepted, "duplicates": duplicates, "rejected": list(rejected)}
    if protocol >= 2:
        answer["deferred"] = list(deferred)
        answer["protocols"] = list((acceptance or Acceptance()).protocols)
    return answer
