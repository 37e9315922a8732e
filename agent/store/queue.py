"""The daemon's request queue: tuning requests from its start-up check, update hooks and the CLI, worked in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.store.core import StoreCore, utc_now

__all__ = ["QUEUE_STATES", "Queue"]

QUEUE_STATES = ("queued", "running", "done", "failed")


class Queue(StoreCore):
    """The ``queue`` table: one waiting request per case; claimed, finished, or recovered after a crash."""

    def queue_request(self, *, kernel: str, kernel_path: str | None, shape: str, target: str, reason: str,
                      requested_by: str) -> bool:
        """Queue a tuning request; False when the same case is already waiting (so re-running a hook is harmless)."""
        with self._write() as db:
            cursor = db.execute(
                "insert or ignore into queue (kernel, kernel_path, shape, target, reason, requested_by, state, "
                "requested_at) values (?, ?, ?, ?, ?, ?, 'queued', ?)",
                [kernel, kernel_path, shape, target, reason, requested_by, utc_now()])
            return cursor.rowcount == 1

    def next_request(self) -> dict[str, Any] | None:
        """Claim the oldest waiting request (it becomes ``running``); None when nothing waits."""
        with self._write() as db:
            row = next(db.query("select * from queue where state = 'queued' order by id limit 1"), None)
            if row is None:
                return None
            db.execute("update queue set state = 'running', started_at = ? where id = ?", [utc_now(), row["id"]])
            return {**row, "state": "running"}

    def finish_request(self, request_id: int, *, state: str, tuning_id: int | None = None, error: str = "") -> None:
        """Close a claimed request: ``done``, ``failed`` (with the error), or ``queued`` again (interrupted)."""
        if state not in QUEUE_STATES:
            raise ValueError(f"queue state {state!r} is not one of {QUEUE_STATES}")
        with self._write() as db:
            if state == "queued":
                # Back in line at its old place, unless the same case was queued again meanwhile.
                db.execute("update or ignore queue set state = 'queued', started_at = null where id = ?",
                           [request_id])
                db.execute("delete from queue where id = ? and state = 'running'", [request_id])
                return
            db.execute("update queue set state = ?, finished_at = ?, tuning_id = ?, error = ? where id = ?",
                       [state, utc_now(), tuning_id, error or None, request_id])

    def recover_interrupted(self, *, max_crashes: int = 3) -> int:
        """After a crash or kill -9 of the daemon: the requests it had claimed wait again; returns how many.

        One the daemon died on ``max_crashes`` times (killed for memory, say) fails instead, so a
        request that kills the service cannot keep it in a restart loop.
        """
        running = list(self.db.query("select id, coalesce(crashes, 0) as crashes from queue where state = 'running'"))
        requeued = 0
        for row in running:
            crashes = row["crashes"] + 1
            with self._write() as db:
                db.execute("update queue set crashes = ? where id = ?", [crashes, row["id"]])
            if crashes >= max_crashes:
                self.finish_request(row["id"], state="failed",
                                    error=f"the daemon died during this request {crashes} times "
                                          "(killed, or out of memory?); not tried again")
            else:
                self.finish_request(row["id"], state="queued")
                requeued += 1
        return requeued

    def queue(self, *, states: Sequence[str] = ("queued", "running"), limit: int = 100) -> list[dict[str, Any]]:
        """The requests in ``states``, oldest first, at most ``limit``."""
        marks = ", ".join("?" * len(states))
        return list(self.db.query(f"select * from queue where state in ({marks}) order by id limit ?",
                                  [*states, limit]))
