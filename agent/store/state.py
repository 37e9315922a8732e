"""Small JSON records of the daemon's state in ``store_info`` (its state, the last upload), for ``edgetune status``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.store.core import StoreCore

__all__ = ["DaemonState"]


class DaemonState(StoreCore):
    """Named JSON records in ``store_info``."""

    def set_info(self, name: str, value: Mapping[str, Any]) -> None:
        """Keep a small JSON record in ``store_info`` (the daemon's state, the last upload)."""
        with self._write() as db:
            db["store_info"].upsert({"name": name, "value": json.dumps(dict(value), sort_keys=True)}, pk="name")

    def info(self, name: str) -> dict[str, Any] | None:
        """The record ``set_info`` kept under ``name``, or None."""
        row = next(self.db.query("select value from store_info where name = ?", [name]), None)
        return json.loads(row["value"]) if row else None
