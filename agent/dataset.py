"""The versioned tuning dataset: a folder with ``records.jsonl.gz`` and ``manifest.json``.

Training reads datasets, never the live store, so it is reproducible from committed
files. A dataset can come from ``edgetune collect`` on this machine, from another
machine's export, or from imported public files; the format is the same.

One record per measured configuration (JSON, one per line)::

    {"case": "<device>/<kernel_key>/<shape>/<target>/<cores>", "device": "...",
     "kernel": "gemm", "kernel_key": "gemm-0123abcd4567", "shape": {"M": 64, ...},
     "target": "x86-64-v3", "cores": 2, "config": {"BM": 64, ...},
     "status": "correct", "time_s": 1.2e-05, "samples": [...], "origin": "measured"}

``status`` is T4's vocabulary; ``time_s`` is null unless the status is ``correct``.
The manifest holds the format version, the devices' profiles, the kernels' spaces and
features, counts, the commands that made the data and the records file's SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import DatasetError
from agent.store import INVALIDITY, Store, utc_now

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "Dataset", "DatasetError", "export_dataset", "parse_shape_key",
           "read_dataset", "write_dataset"]

DATASET_FORMAT = "edgetune-dataset"
DATASET_VERSION = 1
RECORDS_FILE = "records.jsonl.gz"
MANIFEST_FILE = "manifest.json"
_RECORD_KEYS = {"case", "device", "kernel", "kernel_key", "shape", "target", "cores", "config", "status",
                "time_s", "origin"}




@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its manifest and its records (dicts in the format above)."""

    path: Path
    manifest: Mapping[str, Any]
    records: list[dict[str, Any]]

    def cases(self) -> dict[str, list[dict[str, Any]]]:
        """Records grouped by case, in file order."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            grouped.setdefault(record["case"], []).append(record)
        return grouped


def parse_shape_key(text: str) -> dict[str, int]:
    """``K=64,M=32`` -> ``{"K": 64, "M": 32}`` (the store's shape keys)."""
    shape = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        shape[name] = int(value)
    return shape


def export_dataset(store: Store, out_dir: str | os.PathLike[str], *, name: str, commands: Sequence[str] = (),
                   kernels: Sequence[str] = (), origin: str | None = None, strategy: str | None = None,
                   notes: Mapping[str, Any] | None = None, samples: bool = True) -> dict[str, Any]:
    """Write the store's measurements (search phase) as a dataset; returns the manifest.

    Times keep 6 significant digits and samples 4 (the noise is larger); ``samples=False``
    leaves samples out (imported public data, where the median is what matters).
    ``origin`` keeps tunings whose origin starts with it (``measured``, ``kernel-tuner``);
    ``strategy`` keeps one strategy (``collect``); ``kernels`` keeps those kernel names.
    """
    def records() -> Iterator[dict[str, Any]]:
        for row in store.export_runs(kernels=kernels, origin=origin, strategy=strategy):
            yield {
                "case": f"{row['device']}/{row['kernel_key']}/{row['shape']}/{row['target']}/{row['cores']}",
                "device": row["device"], "kernel": row["kernel"], "kernel_key": row["kernel_key"],
                "shape": parse_shape_key(row["shape"]), "target": row["target"], "cores": row["cores"],
                "config": row["config"], "status": row["status"],
                "time_s": _round(row["median_s"], 6) if row["status"] == "correct" else None,
                "samples": [_round(x, 4) for x in row["samples"]] if samples else [],
                "origin": row["origin"],
            }

    devices = {row["fingerprint"]: json.loads(row["profile"]) for row in store.devices()}
    known_kernels = {row["key"]: row for row in store.kernels()}
    return write_dataset(out_dir, records(), name=name, commands=commands, devices=devices,
                         kernels=known_kernels, notes=notes)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def write_dataset(out_dir: str | os.PathLike[str], records: Iterable[Mapping[str, Any]], *, name: str,
                  commands: Sequence[str], devices: Mapping[str, Any], kernels: Mapping[str, Mapping[str, Any]],
                  notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write records and a manifest; files are replaced atomically (a killed export leaves the old one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("kernel", "target", "status", "device", "origin")}
    cases: set[str] = set()
    used_devices: set[str] = set()
    used_kernels: set[str] = set()
    partial = out / (RECORDS_FILE + ".partial")
    total = 0
    # mtime=0: the same records give the same bytes, so a re-export makes no git diff.
    with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for record in records:
            _check_record(record, f"record {total + 1}")
            gz.write(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
            total += 1
            cases.add(record["case"])
            used_devices.add(record["device"])
            used_kernels.add(record["kernel_key"])
            for key in counts:
                counts[key][str(record[key])] += 1
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "name": name,
        "created_at": utc_now(),
        "records_file": RECORDS_FILE,
        "sha256": digest,
        "counts": {"records": total, "cases": len(cases),
                   **{f"by_{k}": dict(sorted(v.items())) for k, v in counts.items()}},
        "commands": list(commands),
        "devices": {fp: devices.get(fp, {}) for fp in sorted(used_devices)},
        "kernels": {key: _kernel_entry(kernels.get(key, {})) for key in sorted(used_kernels)},
        **({"notes": dict(notes)} if notes else {}),
    }
    os.replace(partial, out / RECORDS_FILE)
    manifest_partial = out / (MANIFEST_FILE + ".partial")
    manifest_partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(manifest_partial, out / MANIFEST_FILE)
    return manifest


def _kernel_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    space = row.get("space")
    return {"name": row.get("name", ""), "origin": row.get("origin", ""),
            "space": json.loads(space) if isinstance(space, str) else (space or {})}


def read_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Load and check a dataset folder (or its manifest.json)."""
    root = Path(path)
    if root.name == MANIFEST_FILE:
        root = root.parent
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"no dataset at {root}: cannot read {MANIFEST_FILE} ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{manifest_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{manifest_path}: not an {DATASET_FORMAT} manifest")
    if manifest.get("version") != DATASET_VERSION:
        raise DatasetError(f"{manifest_path}: dataset version {manifest.get('version')!r}; "
                           f"this edgetune reads version {DATASET_VERSION}")
    records_path = root / str(manifest.get("records_file", RECORDS_FILE))
    try:
        data = records_path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {records_path}: {exc.strerror or exc}") from None
    if manifest.get("sha256") and hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise DatasetError(f"{records_path} does not match the SHA-256 in its manifest (changed or damaged)")
    try:
        text = gzip.decompress(data).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{records_path}: not a complete gzip file of UTF-8 text ({exc})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{records_path} line {number}: not valid JSON ({exc.msg})") from None
        _check_record(record, f"{records_path} line {number}")
        records.append(record)
    return Dataset(path=root, manifest=manifest, records=records)


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: a record must be a JSON object")
    missing = sorted(_RECORD_KEYS - set(record))
    if missing:
        raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}")
    if record["status"] not in INVALIDITY:
        raise DatasetError(f"{where}: status {record['status']!r} is not one of {', '.join(INVALIDITY)}")
    time_s = record["time_s"]
    if record["status"] == "correct":
        if isinstance(time_s, bool) or not isinstance(time_s, (int, float)) or not 0 < time_s < math.inf:
            raise DatasetError(f"{where}: a correct record needs a positive number time_s, got {time_s!r}")
    if not isinstance(record["config"], Mapping) or not isinstance(record["shape"], Mapping):
        raise DatasetError(f"{where}: config and shape must be JSON objects")
