"""The fleet's SQLite file: registered devices, their telemetry records, and answered batches.

Tables: ``devices`` (name, SHA-256 of the token, last fingerprint and profile), ``records``
(one per device and record key; ``id`` is the read cursor), ``batches`` (one per device and
Idempotency-Key, with the answer given). Every batch is stored in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import statistics
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from agent.errors import FleetError
from agent.fleet.protocol import ack_summary
from agent.store import utc_now

__all__ = ["Device", "FleetStore", "hash_token"]

migrations = Migrations("edgetune-fleet")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["devices"].create({"id": int, "name": str, "token_hash": str, "fingerprint": str, "profile": str,
                          "created_at": str, "first_seen": str, "last_seen": str}, pk="id", not_null={"name"})
    db["devices"].create_index(["name"], unique=True)
    db["devices"].create_index(["token_hash"], unique=True)
    db["records"].create({"id": int, "device_id": int, "key": str, "kind": str, "kernel": str, "shape": str,
                          "created_at": str, "received_at": str, "data": str}, pk="id",
                         foreign_keys=[("device_id", "devices", "id")])
    db["records"].create_index(["device_id", "key"], unique=True)
    db["records"].create_index(["kernel"])
    db["batches"].create({"device_id": int, "idempotency_key": str, "request_hash": str, "response": str,
                          "received_at": str}, pk=("device_id", "idempotency_key"))


def hash_token(token: str) -> str:
    """How a device token is kept: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Device:
    id: int
    name: str


class IdempotencyConflict(FleetError):
    """An Idempotency-Key was used before with a different batch."""


class FleetStore:
    """The fleet database at ``path``; each call opens its own connection (safe from any thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                db = sqlite_utils.Database(conn)
                db.enable_wal()
                migrations.apply(db)
        except (sqlite3.Error, OSError) as exc:
            raise FleetError(f"cannot open the fleet database at {self.path}: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add_device(self, name: str) -> str:
        """Register a device; returns its new token (only its hash is kept)."""
        if not name or len(name) > 200:
            raise FleetError("a device name is 1 to 200 characters")
        token = secrets.token_urlsafe(32)
        now = utc_now()
        try:
            with self._transaction() as conn:
                conn.execute("insert into devices (name, token_hash, created_at) values (?, ?, ?)",
                             [name, hash_token(token), now])
        except sqlite3.IntegrityError:
            raise FleetError(f"a device named {name!r} is already registered") from None
        return token

    def device_for_token(self, token: str) -> Device | None:
        """The device this token was issued to, or None."""
        with self._connect() as conn:
            row = conn.execute("select id, name from devices where token_hash = ?", [hash_token(token)]).fetchone()
        return Device(row["id"], row["name"]) if row else None

    def store_batch(self, device: Device, idempotency_key: str, request_hash: str, fingerprint: str,
                    profile: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    rejected: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """Store a batch's valid records in one transaction and return the answer.

        A replayed Idempotency-Key gets the first answer and stores nothing; a record key
        the device sent before counts as a duplicate.
        """
        now = utc_now()
        with self._transaction() as conn:
            earlier = conn.execute("select request_hash, response from batches where device_id = ? and "
                                   "idempotency_key = ?", [device.id, idempotency_key]).fetchone()
            if earlier is not None:
                if earlier["request_hash"] != request_hash:
                    raise IdempotencyConflict("this Idempotency-Key was used with a different batch")
                return json.loads(earlier["response"])
            accepted = duplicates = 0
            for record in records:
                data = record["data"]
                cursor = conn.execute(
                    "insert or ignore into records (device_id, key, kind, kernel, shape, created_at, received_at, "
                    "data) values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [device.id, record["key"], record["kind"], data["kernel"], data["shape"], record["created_at"],
                     now, json.dumps(data, sort_keys=True)])
                if cursor.rowcount:
                    accepted += 1
                else:
                    duplicates += 1
            conn.execute("update devices set fingerprint = ?, profile = ?, first_seen = coalesce(first_seen, ?), "
                         "last_seen = ? where id = ?",
                         [fingerprint, json.dumps(profile, sort_keys=True), now, now, device.id])
            answer = ack_summary(accepted, duplicates, rejected)
            conn.execute("insert into batches (device_id, idempotency_key, request_hash, response, received_at) "
                         "values (?, ?, ?, ?, ?)",
                         [device.id, idempotency_key, request_hash, json.dumps(answer), now])
        return answer

    def records(self, *, since: int = 0, device: str | None = None, kernel: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Records after cursor ``since``, in cursor order."""
        clauses, params = ["r.id > ?"], [since]
        if device is not None:
            clauses.append("d.name = ?")
            params.append(device)
        if kernel is not None:
            clauses.append("r.kernel = ?")
            params.append(kernel)
        with self._connect() as conn:
            rows = conn.execute(
                "select r.id, d.name as device, r.key, r.kind, r.created_at, r.received_at, r.data from records r "
                f"join devices d on d.id = r.device_id where {' and '.join(clauses)} order by r.id limit ?",
                [*params, limit]).fetchall()
        return [{"cursor": str(row["id"]), "device": row["device"], "key": row["key"], "kind": row["kind"],
                 "created_at": row["created_at"], "received_at": row["received_at"],
                 "data": json.loads(row["data"])} for row in rows]

    def devices(self) -> list[dict[str, Any]]:
        """Every registered device with a summary of its tunings."""
        with self._connect() as conn:
            devices = conn.execute("select id, name, fingerprint, profile, first_seen, last_seen from devices "
                                   "order by name").fetchall()
            tunings = conn.execute("select device_id, kernel, shape, data from records where kind = 'tuning'"
                                   ).fetchall()
        per_device: dict[int, list[sqlite3.Row]] = {}
        for row in tunings:
            per_device.setdefault(row["device_id"], []).append(row)
        answer = []
        for device in devices:
            rows = per_device.get(device["id"], [])
            data = [json.loads(row["data"]) for row in rows]
            walls = [d["wall_s"] for d in data if isinstance(d.get("wall_s"), (int, float))]
            asked = [d for d in data if d.get("cloud") not in (None, "not configured")]
            answer.append({
                "name": device["name"], "fingerprint": device["fingerprint"],
                "profile": json.loads(device["profile"]) if device["profile"] else None,
                "first_seen": device["first_seen"], "last_seen": device["last_seen"],
                "tunings": len(rows), "kernels_tuned": len({(row["kernel"], row["shape"]) for row in rows}),
                "median_tuning_wall_s": statistics.median(walls) if walls else None,
                "cloud_share": len(asked) / len(data) if data else None,
            })
        return answer
