"""The SQLite store: devices, kernels, tuning sessions, every measurement, and the best configs.

One file, WAL mode, every write in its own transaction, schema changes as named
migrations (sqlite-utils ``Migrations``). A ``kill -9`` at any point leaves every
committed run readable; at most the run being written is lost.

One :class:`Store` over one module per job:

- ``schema``   the named migrations
- ``core``     opening a store, transactions, mapping sqlite3 errors to StoreError/StoreBusy
- ``results``  ``devices``, ``kernels``, ``tunings``, ``runs``, ``best`` (with stale marks)
- ``outbox``   telemetry records waiting for ``edgetune upload``; ``dead_letter`` (refused by the fleet)
- ``queue``    tuning requests (the daemon's start-up check, hooks, the CLI), worked in order
- ``state``    small JSON records in ``store_info`` (the daemon's state, the last upload)

Status values follow the T4 tuning-results vocabulary (``INVALIDITY``). ``store_info`` also holds
this store's random id, part of every telemetry record key.
"""

from __future__ import annotations

from agent.store.core import utc_now
from agent.store.queue import QUEUE_STATES, Queue
from agent.store.results import INVALIDITY, Results, RunRecord
from agent.store.state import DaemonState

__all__ = ["INVALIDITY", "QUEUE_STATES", "RunRecord", "Store", "utc_now"]


class Store(Results, Queue, DaemonState):
    """The device's tuning database. Open with ``Store.open(path)``; use as a context manager."""
