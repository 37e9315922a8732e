"""The fleet's database: registered devices, their telemetry records, and answered batches.

Two backends behind one :class:`FleetStore`, chosen by the ``--db`` value: a path or
``sqlite:///path`` is a SQLite file, ``postgresql://user:pass@host:port/db`` a PostgreSQL
database (psycopg 3). They share every query; they differ only in connecting, the schema's DDL,
placeholders (``?`` here, ``%s`` for psycopg) and how a batch's transaction takes its lock.

Tables: ``devices`` (name, SHA-256 of the token, last fingerprint and profile), ``records``
(one per device and record key; ``id`` is the read cursor; ``data`` the fields this fleet knows,
``extra`` the ones a newer device sent that it does not), ``batches`` (one per device and
Idempotency-Key, with the answer given). Every batch is stored in one transaction; its
Idempotency-Key and its records are claimed with ``INSERT ... ON CONFLICT DO NOTHING`` against
unique keys, so concurrent resends of a batch store it once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import sqlite_utils
from sqlite_utils.migrations import Migrations

from agent.errors import FleetError, IdempotencyConflict
from agent.fleet.protocol import ack_summary
from agent.store import utc_now

__all__ = ["Device", "FleetStore", "hash_token", "redact_url"]

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


# Each device's asks of POST /v1/rank: how many, and the last one's time.
M002_RANK_REQUESTS = ["alter table devices add column rank_requests integer not null default 0",
                      "alter table devices add column last_rank_at text"]


@migrations()
def m002_rank_requests(db: sqlite_utils.Database) -> None:
    for statement in M002_RANK_REQUESTS:
        db.execute(statement)


# Operators page by device and kernel in cursor (id) order: without these, a filtered page at 1M
# records walks the id index and skips most rows (40-95 ms against 27 ms unfiltered, measured).
M003_RECORD_INDEXES = ["create index records_device_id on records (device_id, id)",
                       "create index records_kernel_id on records (kernel, id)"]


@migrations()
def m003_record_indexes(db: sqlite_utils.Database) -> None:
    for statement in M003_RECORD_INDEXES:
        db.execute(statement)


# Fields a newer device sent that this fleet does not know, kept beside the record as JSON (null: none).
M004_RECORD_EXTRA = ["alter table records add column extra text"]


@migrations()
def m004_record_extra(db: sqlite_utils.Database) -> None:
    for statement in M004_RECORD_EXTRA:
        db.execute(statement)


# The same tables in PostgreSQL; each migration is applied once, in order, under an advisory lock.
PG_MIGRATIONS: list[tuple[str, list[str]]] = [
    ("m001_initial", [
        "create table devices (id bigserial primary key, name text not null unique, token_hash text unique, "
        "fingerprint text, profile text, created_at text, first_seen text, last_seen text)",
        "create table records (id bigserial primary key, device_id bigint not null references devices (id), "
        "key text not null, kind text, kernel text, shape text, created_at text, received_at text, data text, "
        "unique (device_id, key))",
        "create index records_kernel on records (kernel)",
        "create table batches (device_id bigint not null references devices (id), idempotency_key text not null, "
        "request_hash text, response text, received_at text, primary key (device_id, idempotency_key))",
    ]),
    ("m002_rank_requests", M002_RANK_REQUESTS),
    ("m003_record_indexes", M003_RECORD_INDEXES),
    ("m004_record_extra", M004_RECORD_EXTRA),
]
PG_LOCK_ID = 0x656467657475  # pg_advisory_xact_lock key for migrations ("edgetu")
PG_SCHEMES = ("postgresql://", "postgres://")


def _password_of(url: str) -> list[str]:
    """The password(s) in a database URL, raw and percent-decoded, even when the URL is malformed."""
    rest = url.split("://", 1)[1] if "://" in url else url
    userinfo, at, _ = rest.split("/", 1)[0].rpartition("@")
    found = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    found += [part.split("=", 1)[1] for part in rest.partition("?")[2].split("&")
              if part.lower().startswith("password=")]
    return sorted({s for value in found for s in (value, unquote(value)) if s}, key=len, reverse=True)


def redact_url(url: str, text: str | None = None) -> str:
    """``text`` (default: the URL itself) with the URL's password replaced by ``***``."""
    text = url if text is None else text
    for secret in _password_of(url):
        text = text.replace(secret, "***")
    return text


def _one_line(url: str, exc: BaseException) -> str:
    return redact_url(url, "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or
                      type(exc).__name__)


def _text_or_none(value: Any) -> str | None:
    """A record's kernel or shape for its indexed column (a kind without one has none)."""
    return value if isinstance(value, str) else None


def hash_token(token: str) -> str:
    """How a device token is kept: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Device:
    id: int
    name: str




class _SQLite:
    """A SQLite file: WAL, one writer at a time (``BEGIN IMMEDIATE`` locks the file for the batch)."""

    begin = "BEGIN IMMEDIATE"
    lock_device = "select id from devices where id = ?"  # the file is already locked for writing

    def __init__(self, path: Path) -> None:
        self.path = path
        self.integrity_error: type[Exception] = sqlite3.IntegrityError
        self.error: type[Exception] = sqlite3.Error
        self.description = str(path)

    def migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            migrations.apply(db)

    @contextmanager
    def connect(self) -> Iterator[Any]:
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()


class _PgConnection:
    """A psycopg connection that takes the shared SQL: ``?`` placeholders become ``%s``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if params else sql, list(params) or None)


class _Postgres:
    """A PostgreSQL database (psycopg 3): a batch locks its device's row (``FOR UPDATE``), so one
    device's batches are stored one after another while different devices' go in parallel."""

    begin = "BEGIN"
    lock_device = "select id from devices where id = ? for update"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise FleetError(f"a PostgreSQL fleet database needs psycopg: install edgetune[fleet] ({exc})") from None
        self.url, self._psycopg, self._dict_row = url, psycopg, dict_row
        self.integrity_error = psycopg.IntegrityError
        self.error = psycopg.Error
        self.description = redact_url(url)

    def migrate(self) -> None:
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute(f"select pg_advisory_xact_lock({PG_LOCK_ID})")
                conn.execute("create table if not exists fleet_migrations (name text primary key, applied_at text)")
                done = {row["name"] for row in conn.execute("select name from fleet_migrations").fetchall()}
                for name, statements in PG_MIGRATIONS:
                    if name not in done:
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute("insert into fleet_migrations (name, applied_at) values (?, ?)",
                                     [name, utc_now()])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def connect(self) -> Iterator[Any]:
        conn = self._psycopg.connect(self.url, autocommit=True, row_factory=self._dict_row, connect_timeout=10)
        try:
            yield _PgConnection(conn)
        finally:
            conn.close()


def _backend(db: str | Path) -> _SQLite | _Postgres:
    """The backend a ``--db`` value names: a PostgreSQL URL, ``sqlite:///path``, or a path."""
    text = str(db)
    if text.lower().startswith(PG_SCHEMES):
        return _Postgres(text)
    if text.lower().startswith("sqlite://"):
        path = text[len("sqlite://"):]
        if not path.startswith("/") or path == "/":
            raise FleetError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        return _SQLite(Path(unquote(path[1:])))
    scheme, sep, _ = text.partition("://")
    if sep and scheme.replace("+", "").isalnum():
        raise FleetError(f"unsupported fleet database {redact_url(text)!r}: use a path, sqlite:///path "
                         "or postgresql://user:password@host:port/database")
    return _SQLite(Path(db))


class FleetStore:
    """The fleet database ``db`` (a path or URL); each call opens its own connection (safe from any thread)."""

    def __init__(self, db: str | Path) -> None:
        self._source = str(db)  # may hold a password: only ever shown through redact_url
        self._db = _backend(db)
        try:
            self._db.migrate()
        except (self._db.error, OSError) as exc:
            raise FleetError(f"cannot open the fleet database at {self._db.description}: "
                             f"{_one_line(str(db), exc)}") from None

    @property
    def description(self) -> str:
        """Where the data lives, with any password replaced by ``***``."""
        return self._db.description

    @property
    def database_error(self) -> type[Exception]:
        """The driver's base exception: the database is down, locked or out of space."""
        return self._db.error

    def describe_error(self, exc: BaseException) -> str:
        """A database error on one line, with any password replaced by ``***``."""
        return _one_line(self._source, exc)

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        with self._db.connect() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._connect() as conn:
            conn.execute(self._db.begin)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add_device(self, name: str) -> str:
        """Register a device; returns its new token (only its hash is kept)."""
        if not name or len(name) > 200 or not name.isprintable():
            raise FleetError("a device name is 1 to 200 printable characters")
        token = secrets.token_urlsafe(32)
        now = utc_now()
        try:
            with self._transaction() as conn:
                conn.execute("insert into devices (name, token_hash, created_at) values (?, ?, ?)",
                             [name, hash_token(token), now])
        except self._db.integrity_error:
            raise FleetError(f"a device named {name!r} is already registered") from None
        return token

    def device_for_token(self, token: str) -> Device | None:
        """The device this token was issued to, or None."""
        with self._connect() as conn:
            row = conn.execute("select id, name from devices where token_hash = ?", [hash_token(token)]).fetchone()
        return Device(row["id"], row["name"]) if row else None

    def store_batch(self, device: Device, idempotency_key: str, request_hash: str, fingerprint: str,
                    profile: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    rejected: Sequence[Mapping[str, str]], *,
                    summary: Callable[[int, int], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Store a batch's valid records in one transaction and return the answer.

        A record may carry ``extra`` (fields this fleet does not know, kept beside it). ``summary``
        builds the answer from the accepted and duplicate counts (default: version 1's answer).
        A replayed Idempotency-Key gets the first answer and stores nothing; a record key
        the device sent before counts as a duplicate.
        """
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(self._db.lock_device, [device.id])
            # Claim the key first: a concurrent resend waits on the unique key, then finds it taken.
            claimed = conn.execute("insert into batches (device_id, idempotency_key, request_hash, response, "
                                   "received_at) values (?, ?, ?, ?, ?) on conflict do nothing",
                                   [device.id, idempotency_key, request_hash, "", now]).rowcount
            if not claimed:
                earlier = conn.execute("select request_hash, response from batches where device_id = ? and "
                                       "idempotency_key = ?", [device.id, idempotency_key]).fetchone()
                if earlier["request_hash"] != request_hash:
                    raise IdempotencyConflict("this Idempotency-Key was used with a different batch")
                return json.loads(earlier["response"])
            accepted = duplicates = 0
            for record in records:
                data = record["data"]
                cursor = conn.execute(
                    "insert into records (device_id, key, kind, kernel, shape, created_at, received_at, data, extra) "
                    "values (?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
                    [device.id, record["key"], record["kind"], _text_or_none(data.get("kernel")),
                     _text_or_none(data.get("shape")), record["created_at"], now, json.dumps(data, sort_keys=True),
                     json.dumps(record["extra"], sort_keys=True) if record.get("extra") else None])
                if cursor.rowcount:
                    accepted += 1
                else:
                    duplicates += 1
            conn.execute("update devices set fingerprint = ?, profile = ?, first_seen = coalesce(first_seen, ?), "
                         "last_seen = ? where id = ?",
                         [fingerprint, json.dumps(profile, sort_keys=True), now, now, device.id])
            answer = summary(accepted, duplicates) if summary else ack_summary(accepted, duplicates, rejected)
            conn.execute("update batches set response = ? where device_id = ? and idempotency_key = ?",
                         [json.dumps(answer), device.id, idempotency_key])
        return answer

    def count_rank_request(self, device: Device) -> None:
        """Note that ``device`` asked ``POST /v1/rank``."""
        with self._connect() as conn:
            conn.execute("update devices set rank_requests = rank_requests + 1, last_rank_at = ? where id = ?",
                         [utc_now(), device.id])

    def records(self, *, since: int = 0, device: str | None = None, kernel: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Records after cursor ``since``, in cursor order."""
        if any("\x00" in value for value in (device, kernel) if value):
            return []  # stored text never holds NUL (PostgreSQL's cannot)
        clauses, params = ["r.id > ?"], [since]
        if device is not None:
            clauses.append("d.name = ?")
            params.append(device)
        if kernel is not None:
            clauses.append("r.kernel = ?")
            params.append(kernel)
        with self._connect() as conn:
            rows = conn.execute(
                "select r.id, d.name as device, r.key, r.kind, r.created_at, r.received_at, r.data, r.extra "
                "from records r "
                f"join devices d on d.id = r.device_id where {' and '.join(clauses)} order by r.id limit ?",
                [*params, limit]).fetchall()
        return [{"cursor": str(row["id"]), "device": row["device"], "key": row["key"], "kind": row["kind"],
                 "created_at": row["created_at"], "received_at": row["received_at"], "data": json.loads(row["data"]),
                 **({"extra": json.loads(row["extra"])} if row["extra"] else {})} for row in rows]

    def devices(self) -> list[dict[str, Any]]:
        """Every registered device with a summary of its tunings."""
        with self._connect() as conn:
            devices = conn.execute("select id, name, fingerprint, profile, first_seen, last_seen, rank_requests, "
                                   "last_rank_at from devices order by name").fetchall()
            tunings = conn.execute("select device_id, kernel, shape, data from records where kind = 'tuning'"
                                   ).fetchall()
        per_device: dict[int, list[Any]] = {}
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
                "rank_requests": device["rank_requests"], "last_rank_at": device["last_rank_at"],
            })
        return answer
