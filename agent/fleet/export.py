"""Operator exports of the fleet's telemetry: JSON lines, CSV, or a T4 results document.

``export_chunks(store, fmt, ...)`` yields the export as text pieces, reading the database a page at
a time, so an export of any size is never built whole in memory (``GET /v1/telemetry/export``
streams it). ``jsonl`` is every matching record (runs and tunings) as ``GET /v1/telemetry`` gives
it, one per line (with ``extra``, the fields a newer device sent that this fleet does not know);
``csv`` is one row per run with the configuration and samples as JSON strings (``backend`` empty for
runs from devices before protocol 2);
``t4`` is the runs as one T4 tuning-results document, each run through ``agent.interchange.t4``'s
writer, with the kernel, shape, target and device in ``metadata`` when all runs share them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from agent.dataset import parse_shape_key
from agent.fleet.storage import FleetStore
from agent.interchange.t4 import SCHEMA_VERSION, write_t4

__all__ = ["CSV_COLUMNS", "FORMATS", "MEDIA_TYPES", "export_chunks"]

FORMATS = ("jsonl", "csv", "t4")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "t4": "application/json"}
PAGE = 1000
CSV_COLUMNS = ("cursor", "device", "key", "created_at", "received_at", "kernel", "kernel_key", "shape", "target",
               "compiler", "backend", "strategy", "phase", "config", "status", "reason", "median_s", "samples",
               "compile_s", "source", "predicted_rank", "tuning_id")
_JSON_COLUMNS = {"config", "samples"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _records(store: FleetStore, *, since: int, device: str | None, kernel: str | None) -> Iterator[dict[str, Any]]:
    while True:
        page = store.records(since=since, device=device, kernel=kernel, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        since = int(page[-1]["cursor"])


def _runs(store: FleetStore, **filters: Any) -> Iterator[dict[str, Any]]:
    return (r for r in _records(store, **filters) if r["kind"] == "run")


def export_chunks(store: FleetStore, fmt: str, *, since: int = 0, device: str | None = None,
                  kernel: str | None = None) -> Iterator[str]:
    """The export in format ``fmt`` (one of FORMATS), piece by piece; ValueError for another format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    filters = {"since": since, "device": device, "kernel": kernel}
    return {"jsonl": _jsonl, "csv": _csv, "t4": _t4}[fmt](store, filters)


def _jsonl(store: FleetStore, filters: dict[str, Any]) -> Iterator[str]:
    for record in _records(store, **filters):
        yield _dumps(record) + "\n"


def _csv(store: FleetStore, filters: dict[str, Any]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def row(values: Any) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield row(CSV_COLUMNS)
    for record in _runs(store, **filters):
        flat = {**record["data"], **{k: record[k] for k in ("cursor", "device", "key", "created_at", "received_at")}}
        yield row(_dumps(flat.get(c)) if c in _JSON_COLUMNS else ("" if flat.get(c) is None else flat[c])
                  for c in CSV_COLUMNS)


def _t4(store: FleetStore, filters: dict[str, Any]) -> Iterator[str]:
    profiles = {d["name"]: d for d in store.devices()}
    shared: dict[str, set[str]] = {"kernel": set(), "kernel_key": set(), "shape": set(), "target": set(),
                                   "compiler": set(), "device": set()}
    count = 0
    yield f'{{"schema_version":{_dumps(SCHEMA_VERSION)},"results":['
    for record in _runs(store, **filters):
        data = record["data"]
        result = write_t4([{**data, "created_at": record["created_at"]}], {})["results"][0]
        yield ("," if count else "") + "\n" + _dumps(result)
        count += 1
        for name in shared:
            shared[name].add(record["device"] if name == "device" else data[name])
    metadata: dict[str, Any] = {"exported_from": "edgetune fleet", "runs": count,
                                "filters": {k: v for k, v in filters.items() if v}}
    one = {name: next(iter(values)) for name, values in shared.items() if len(values) == 1}
    for name in ("kernel", "kernel_key", "target", "compiler"):
        if name in one:
            metadata[name] = one[name]
    if "shape" in one:
        try:
            metadata["shape"] = parse_shape_key(one["shape"])
        except ValueError:
            pass
    if "device" in one:
        known = profiles.get(one["device"], {})
        metadata["device"] = {"name": one["device"], "fingerprint": known.get("fingerprint"),
                              "profile": known.get("profile") or {"name": one["device"]}}
    yield "\n]," + f'"metadata":{_dumps(metadata)}}}\n'
