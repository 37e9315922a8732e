"""The telemetry outbox: records waiting for ``edgetune upload``, and those the fleet refused (``dead_letter``).

A run or a finished tuning enters the outbox in the transaction that stores it (see ``results``);
the uploader takes batches of one device's records and removes them once the fleet acknowledged
them. A record the fleet cannot place yet (deferred) stays, and waits longer after each deferral.
What each record carries is defined once, in ``agent.telemetry``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlite_utils

from agent.store.core import StoreCore, utc_now
from agent.telemetry.record import record

__all__ = ["Outbox"]


class Outbox(StoreCore):
    """The outbox and dead_letter tables."""

    def _enqueue(self, db: sqlite_utils.Database, kind: str, local_id: int, device: str, created_at: str,
                 data: Mapping[str, Any]) -> None:
        """Put one telemetry record into the outbox (inside the caller's transaction)."""
        if self._store_id is None:  # store_info's, read once: it never changes
            self._store_id = str(db["store_info"].get("store_id")["value"])
        key = f"{kind}:{device}:{self._store_id}:{local_id}"
        payload = record(key, kind, created_at, data)
        db["outbox"].insert({"key": key, "kind": kind, "device": device, "created_at": created_at,
                             "payload": json.dumps(payload, sort_keys=True)}, replace=True)

    def outbox_batch(self, limit: int, *, due_before: str | None = None) -> list[dict[str, Any]]:
        """The oldest outbox records of one device (the device of the oldest record), at most ``limit``.

        Deferred records wait: only those whose ``retry_at`` is before ``due_before`` (default: now) are taken.
        """
        due = [due_before or utc_now()]
        waiting = "(retry_at is null or retry_at < ?)"
        first = next(self.db.query(f"select device from outbox where {waiting} order by id limit 1", due), None)
        if first is None:
            return []
        rows = self.db.query("select id, key, kind, device, payload from outbox "
                             f"where device is ? and {waiting} order by id limit ?", [first["device"], *due, limit])
        return [{**row, "payload": json.loads(row["payload"])} for row in rows]

    def ack_outbox(self, keys: Sequence[str], rejected: Mapping[str, str]) -> None:
        """Remove acknowledged records from the outbox; ``rejected`` ones (key -> reason) go to dead_letter."""
        now = utc_now()
        with self._write() as db:
            for start in range(0, len(keys), 500):  # stay below SQLite's limit on bound parameters
                chunk = list(keys[start:start + 500])
                marks = ", ".join("?" * len(chunk))
                db["dead_letter"].insert_all(
                    {"key": row["key"], "kind": row["kind"], "payload": row["payload"],
                     "reason": rejected[row["key"]], "failed_at": now}
                    for row in db.query(f"select key, kind, payload from outbox where key in ({marks}) order by id",
                                        chunk) if row["key"] in rejected)
                db.execute(f"delete from outbox where key in ({marks})", chunk)

    def defer_outbox(self, deferred: Mapping[str, str], *, base_s: float, cap_s: float) -> None:
        """Keep records the fleet cannot place yet (key -> its reason); each waits ``base_s * 2^n`` (at most
        ``cap_s``) after its n-th deferral before it is sent again."""
        now = datetime.now(timezone.utc)
        with self._write() as db:
            for key, reason in deferred.items():
                row = next(db.query("select deferrals from outbox where key = ?", [key]), None)
                if row is None:
                    continue
                wait = min(cap_s, base_s * 2 ** min(row["deferrals"], 40))
                retry_at = (now + timedelta(seconds=wait)).isoformat(timespec="milliseconds")
                db.execute("update outbox set deferrals = deferrals + 1, retry_at = ?, deferred_reason = ? "
                           "where key = ?", [retry_at, reason, key])

    def prune_outbox(self, max_records: int) -> int:
        """Drop the oldest outbox records beyond ``max_records`` (no fleet to send them to); returns how many.

        Only telemetry copies go: the runs and tunings themselves stay in their tables.
        """
        with self._write() as db:
            cursor = db.execute("delete from outbox where id not in (select id from outbox order by id desc limit ?)",
                                [max_records])
            return cursor.rowcount

