"""The telemetry outbox: records waiting for ``edgetune upload``, and those the fleet refused (``dead_letter``).

A run or a finished tuning enters the outbox in the transaction that stores it (see ``results``);
the uploader takes batches of one device's records and removes them once the fleet acknowledged
them. What each record carries is defined once, in ``agent.telemetry``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlite_utils

from agent.store.core import StoreCore, utc_now

__all__ = ["Outbox"]


class Outbox(StoreCore):
    """The outbox and dead_letter tables."""

    def _enqueue(self, db: sqlite_utils.Database, kind: str, local_id: int, device: str, created_at: str,
                 data: Mapping[str, Any]) -> None:
        """Put one telemetry record into the outbox (inside the caller's transaction)."""
        if self._store_id is None:  # store_info's, read once: it never changes
            self._store_id = str(db["store_info"].get("store_id")["value"])
        key = f"{kind}:{device}:{self._store_id}:{local_id}"
        record = {"key": key, "kind": kind, "created_at": created_at, "data": dict(data)}
        db["outbox"].insert({"key": key, "kind": kind, "device": device, "created_at": created_at,
                             "payload": json.dumps(record, sort_keys=True)}, replace=True)

    def outbox_batch(self, limit: int) -> list[dict[str, Any]]:
        """The oldest outbox records of one device (the device of the oldest record), at most ``limit``."""
        first = next(self.db.query("select device from outbox order by id limit 1"), None)
        if first is None:
            return []
        rows = self.db.query("select id, key, kind, device, payload from outbox where device is ? order by id limit ?",
                             [first["device"], limit])
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

    def prune_outbox(self, max_records: int) -> int:
        """Drop the oldest outbox records beyond ``max_records`` (no fleet to send them to); returns how many.

        Only telemetry copies go: the runs and tunings themselves stay in their tables.
        """
        with self._write() as db:
            cursor = db.execute("delete from outbox where id not in (select id from outbox order by id desc limit ?)",
                                [max_records])
            return cursor.rowcount

