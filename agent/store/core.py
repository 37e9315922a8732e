"""The store's connection: opening (and migrating) a store file, transactions, and error mapping."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from agent.errors import StoreBusy, StoreError
from agent.store.schema import migrations

__all__ = ["StoreCore", "utc_now"]

S = TypeVar("S", bound="StoreCore")


def utc_now() -> str:
    """The current UTC time as ISO-8601 with milliseconds (the store's timestamp format)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    """StoreBusy when another process held the lock past the timeout (worth a retry), else StoreError."""
    busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
    return (StoreBusy if busy else StoreError)(f"{what}: {exc}")


class StoreCore:
    """One open store file: the connection, its path, and one-transaction writes. The jobs build on it."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path
        self._store_id: str | None = None  # store_info's, read once: it never changes

    @classmethod
    def open(cls: type[S], path: str | Path, *, lock_timeout_s: float = 30.0) -> S:
        """Open (creating if needed) and migrate the store at ``path``.

        A write waits up to ``lock_timeout_s`` for another process's lock, then raises StoreBusy.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=lock_timeout_s)
            db = sqlite_utils.Database(conn)
            db.execute(f"PRAGMA busy_timeout = {int(lock_timeout_s * 1000)}")
            db.enable_wal()
            # Safe with WAL: power loss may drop the last commits, never corrupt the file.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            migrations.apply(db)
        except sqlite3.DatabaseError as exc:
            raise _store_error(f"cannot open the store at {path}", exc) from None
        except OSError as exc:
            raise StoreError(f"cannot create the store at {path}: {exc.strerror or exc}") from None
        return cls(db, path)

    @classmethod
    def open_read_only(cls: type[S], path: str | Path) -> S:
        """Open an existing store to read, never creating, migrating or writing it (``edgetune status``).

        A store an older edgetune wrote (migrations pending) is a StoreError naming the way out.
        """
        path = Path(path)
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
            db = sqlite_utils.Database(conn)
            pending = [migration.name for migration in migrations.pending(db)]
        except sqlite3.Error as exc:
            raise _store_error(f"cannot read the store at {path}", exc) from None
        if pending:
            db.close()
            raise StoreError(f"the store at {path} was written by an older edgetune (it lacks {', '.join(pending)}); "
                             "any edgetune command that writes, or the daemon, upgrades it")
        return cls(db, path)

    def count(self, table: str) -> int:
        """How many rows ``table`` holds."""
        return self.db[table].count

    def close(self) -> None:
        self.db.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One transaction; sqlite errors become StoreError and nothing is half-written."""
        try:
            with self.db.atomic():
                yield self.db
        except sqlite3.Error as exc:
            raise _store_error(f"cannot write to the store at {self.path}", exc) from None

