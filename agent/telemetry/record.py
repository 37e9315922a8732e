"""The telemetry record: the one definition of what a device sends the fleet.

An upload is an envelope ``{"protocol", "fingerprint", "profile", "records"}``; each record is
``{"key", "kind", "created_at", "data"}``, and ``data`` holds the fields of its kind below. The
device's store builds records with :func:`run_data` and :func:`tuning_data`; the fleet's validator
(``agent.fleet.protocol``) checks them against the same fields.

Versions: ``PROTOCOL`` is the version this code speaks. An envelope without ``"protocol"`` is
version 1 (devices from before versioning). A field says the version that added it: a record of an
older version may lack it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "ENVELOPE_FIELDS",
    "FIELD_TYPES",
    "KINDS",
    "PROTOCOL",
    "PROTOCOLS",
    "RECORD_FIELDS",
    "RUN_FIELDS",
    "STATUSES",
    "TUNING_FIELDS",
    "Field",
    "envelope",
    "record",
    "run_data",
    "tuning_data",
]

PROTOCOL = 3  # 2: the envelope names its version; runs and tunings carry ``backend``; 3: tunings carry
# ``situation`` and ``ranked_by`` (agent.predict.policy)
PROTOCOLS = (1, 2, 3)  # the versions this code reads

# T4's "invalidity" vocabulary: why a configuration has no valid time ("correct": it has one).
STATUSES = ("correct", "compile", "runtime", "timeout", "correctness", "constraints")

# text: a string; number: finite, not a bool; seconds: a number >= 0; integer: not a bool;
# config: parameter name -> integer or string; samples: a list of numbers; status: one of STATUSES.
FIELD_TYPES = ("text", "number", "seconds", "integer", "config", "samples", "status")


@dataclass(frozen=True)
class Field:
    """One field of a record's ``data``: its name, type (one of FIELD_TYPES), null allowed, version added."""

    name: str
    type: str
    optional: bool = False
    since: int = 1

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name}: type {self.type!r} is not one of {', '.join(FIELD_TYPES)}")


RUN_FIELDS: tuple[Field, ...] = (
    Field("kernel", "text"), Field("kernel_key", "text"), Field("shape", "text"), Field("target", "text"),
    Field("compiler", "text"), Field("strategy", "text"), Field("phase", "text"), Field("config", "config"),
    Field("status", "status"), Field("reason", "text"), Field("median_s", "seconds", optional=True),
    Field("samples", "samples"), Field("compile_s", "seconds", optional=True), Field("source", "text", optional=True),
    Field("predicted_rank", "integer", optional=True), Field("tuning_id", "integer", optional=True),
    Field("backend", "text", since=2),
)

TUNING_FIELDS: tuple[Field, ...] = (
    Field("kernel", "text"), Field("shape", "text"), Field("target", "text"), Field("strategy", "text"),
    Field("budget", "text", optional=True), Field("evaluations", "integer", optional=True),
    Field("wall_s", "seconds", optional=True), Field("winner_config", "config", optional=True),
    Field("winner_median_s", "seconds", optional=True), Field("speedup", "seconds", optional=True),
    Field("predict_s", "seconds", optional=True), Field("cloud_s", "seconds", optional=True),
    Field("compile_s", "seconds", optional=True), Field("benchmark_s", "seconds", optional=True),
    Field("confidence", "number", optional=True), Field("cloud", "text", optional=True),
    Field("winner_source", "text", optional=True), Field("winner_predicted_rank", "integer", optional=True),
    Field("backend", "text", since=2),
    Field("situation", "text", optional=True, since=3), Field("ranked_by", "text", optional=True, since=3),
)

KINDS: Mapping[str, tuple[Field, ...]] = MappingProxyType({"run": RUN_FIELDS, "tuning": TUNING_FIELDS})
ENVELOPE_FIELDS = ("protocol", "fingerprint", "profile", "records")
RECORD_FIELDS = ("key", "kind", "created_at", "data")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def run_data(run: Any) -> dict[str, Any]:
    """A run's ``data`` (from a ``RunRecord`` or anything with the RUN_FIELDS as attributes)."""
    return {field.name: _plain(getattr(run, field.name)) for field in RUN_FIELDS}


def tuning_data(tuning: Mapping[str, Any]) -> dict[str, Any]:
    """A finished tuning's ``data``, from its ``tunings`` row (``winner_config`` decoded from JSON)."""
    data = {field.name: tuning[field.name] for field in TUNING_FIELDS}
    data["winner_config"] = json.loads(tuning["winner_config"]) if tuning["winner_config"] else None
    return data


def record(key: str, kind: str, created_at: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """One telemetry record."""
    return {"key": key, "kind": kind, "created_at": created_at, "data": dict(data)}


def envelope(fingerprint: str, profile: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body of one upload, in this code's protocol version."""
    return {"protocol": PROTOCOL, "fingerprint": fingerprint, "profile": dict(profile), "records": list(records)}
