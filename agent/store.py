"""The SQLite store: devices, kernels, tuning sessions, every measurement, and the best configs.

One file, WAL mode, every write in its own transaction, schema changes as named
migrations (sqlite-utils ``Migrations``). A ``kill -9`` at any point leaves every
committed run readable; at most the run being written is lost.

Tables (status values follow the T4 tuning-results vocabulary):

- ``devices``  fingerprint -> hardware profile (JSON)
- ``kernels``  kernel key (name + hash of source, spec, reference) -> space (JSON)
- ``tunings``  one ``edgetune tune`` session: strategy, budget, winner, speed-up
- ``runs``     one measured (or rejected) candidate: config, status, reason, samples, median
- ``best``     per (device, kernel key, shape, target): the current best configuration
- ``outbox``   telemetry records (runs, finished tunings) waiting for ``edgetune upload``
- ``dead_letter`` records the fleet refused, with its reason (kept, never resent)
- ``store_info`` this store's random id (part of every telemetry record key); the daemon's state
  and last upload, for ``edgetune status``
- ``queue``    tuning requests (from the daemon's start-up check, hooks, the CLI), worked in order

A ``best`` row is only as good as what it was measured with: the kernel's source (its key), the
compiler (``tunings.compiler``), the model that proposed it (``tunings.model_version``) and the
hardware (the device fingerprint). ``best.stale`` names the dependency that changed since.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from agent.errors import StoreBusy, StoreError
from agent.kernels.space import config_key

__all__ = ["INVALIDITY", "QUEUE_STATES", "RunRecord", "Store", "utc_now"]

# T4's "invalidity" vocabulary: why a configuration has no valid time.
INVALIDITY = ("correct", "compile", "runtime", "timeout", "correctness", "constraints")

migrations = Migrations("edgetune")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["devices"].create(
        {"fingerprint": str, "name": str, "arch": str, "model": str, "profile": str,
         "first_seen": str, "last_seen": str},
        pk="fingerprint",
    )
    db["kernels"].create(
        {"key": str, "name": str, "source_hash": str, "space": str, "origin": str, "created_at": str},
        pk="key",
    )
    db["tunings"].create(
        {"id": int, "device": str, "kernel_key": str, "kernel": str, "shape": str, "target": str,
         "compiler": str, "strategy": str, "budget": str, "seed": int, "state": str,
         "started_at": str, "finished_at": str, "evaluations": int, "wall_s": float,
         "winner_run": int, "winner_config": str, "winner_median_s": float,
         "default_median_s": float, "speedup": float, "tie": int},
        pk="id",
        foreign_keys=[("device", "devices", "fingerprint"), ("kernel_key", "kernels", "key")],
    )
    db["runs"].create(
        {"id": int, "tuning_id": int, "device": str, "kernel_key": str, "kernel": str,
         "shape": str, "config": str, "config_json": str, "target": str, "compiler": str,
         "flags": str, "strategy": str, "phase": str, "status": str, "reason": str,
         "median_s": float, "samples": str, "compile_s": float, "created_at": str},
        pk="id",
        foreign_keys=[("tuning_id", "tunings", "id")],
    )
    db["runs"].create_index(["device", "kernel_key", "shape"])
    db["runs"].create_index(["tuning_id"])
    db["best"].create(
        {"device": str, "kernel_key": str, "shape": str, "target": str, "kernel": str,
         "config": str, "config_json": str, "median_s": float, "speedup": float,
         "run_id": int, "tuning_id": int, "updated_at": str},
        pk=("device", "kernel_key", "shape", "target"),
    )


@migrations()
def m002_cores_and_imports(db: sqlite_utils.Database) -> None:
    # cores: hardware threads a tuning's space was limited to (collection emulates smaller
    # devices); origin: where a tuning's runs came from (measured here, or an imported file).
    db["tunings"].add_column("cores", int)
    db["tunings"].add_column("origin", str)
    db["tunings"].create_index(["device", "kernel_key", "shape", "target", "strategy"])


@migrations()
def m003_prediction(db: sqlite_utils.Database) -> None:
    # What the model strategy adds to a run: where each candidate came from (local model, cloud,
    # refinement, default) and its predicted rank; per tuning, where the time went and how sure
    # the prediction was.
    db["runs"].add_column("source", str)
    db["runs"].add_column("predicted_rank", int)
    for name, kind in (("predict_s", float), ("cloud_s", float), ("compile_s", float), ("benchmark_s", float),
                       ("confidence", float), ("cloud", str), ("winner_source", str),
                       ("winner_predicted_rank", int), ("note", str)):
        db["tunings"].add_column(name, kind)


@migrations()
def m004_outbox(db: sqlite_utils.Database) -> None:
    # Telemetry for the fleet: a run or a finished tuning enters the outbox in the transaction that
    # stores it; ``edgetune upload`` removes a batch only after the fleet acknowledged it.
    # Existing runs are not backfilled. ``store_info.store_id`` keeps record keys unique when a
    # device's store is deleted and created again (local ids restart).
    db["store_info"].create({"name": str, "value": str}, pk="name")
    db["store_info"].insert({"name": "store_id", "value": secrets.token_hex(8)})
    db["outbox"].create({"id": int, "key": str, "kind": str, "device": str, "payload": str, "created_at": str},
                        pk="id", not_null={"key", "kind", "payload"})
    db["outbox"].create_index(["key"], unique=True)
    db["dead_letter"].create({"id": int, "key": str, "kind": str, "payload": str, "reason": str,
                              "failed_at": str}, pk="id")


@migrations()
def m005_daemon(db: sqlite_utils.Database) -> None:
    # What a result depends on beyond kernel key, compiler and device: the model that proposed it.
    # best.stale: why a stored best no longer matches what it was measured with (None: it does).
    db["tunings"].add_column("model_version", str)
    db["best"].add_column("stale", str)
    db["queue"].create({"id": int, "kernel": str, "kernel_path": str, "shape": str, "target": str,
                        "reason": str, "requested_by": str, "state": str, "requested_at": str,
                        "started_at": str, "finished_at": str, "tuning_id": int, "error": str, "crashes": int},
                       pk="id", not_null={"kernel", "shape", "target", "state"})
    # One waiting request per case: a hook that runs twice (power loss, a retry) queues nothing new.
    db.execute("create unique index queue_waiting on queue (kernel, shape, target) where state = 'queued'")


QUEUE_STATES = ("queued", "running", "done", "failed")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RunRecord:
    """One candidate's outcome, as stored in ``runs``."""

    tuning_id: int | None
    device: str
    kernel_key: str
    kernel: str
    shape: str
    config: Mapping[str, Any]
    target: str
    compiler: str
    flags: tuple[str, ...]
    strategy: str
    status: str
    reason: str = ""
    samples: tuple[float, ...] = ()
    median_s: float | None = None
    compile_s: float | None = None
    phase: str = "search"
    source: str | None = None  # model strategy: local, cloud, refine or default
    predicted_rank: int | None = None  # model strategy: 0-based place in the predicted ranking
    created_at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.status not in INVALIDITY:
            raise ValueError(f"status {self.status!r} is not one of {INVALIDITY}")


_TUNING_DETAILS = {"predict_s", "cloud_s", "compile_s", "benchmark_s", "confidence", "cloud", "winner_source",
                   "winner_predicted_rank", "note"}


def _run_row(run: RunRecord) -> dict[str, Any]:
    return {
        "tuning_id": run.tuning_id, "device": run.device, "kernel_key": run.kernel_key,
        "kernel": run.kernel, "shape": run.shape,
        "config": config_key(run.config),
        "config_json": json.dumps(dict(run.config), sort_keys=True),
        "target": run.target, "compiler": run.compiler, "flags": " ".join(run.flags),
        "strategy": run.strategy, "phase": run.phase, "status": run.status,
        "reason": run.reason, "median_s": run.median_s,
        "samples": json.dumps(list(run.samples)), "compile_s": run.compile_s,
        "source": run.source, "predicted_rank": run.predicted_rank, "created_at": run.created_at,
    }


def _run_telemetry(run: RunRecord) -> dict[str, Any]:
    """A run as the fleet's telemetry protocol carries it (``agent.fleet.protocol.RUN_FIELDS``)."""
    return {"kernel": run.kernel, "kernel_key": run.kernel_key, "shape": run.shape, "target": run.target,
            "compiler": run.compiler, "strategy": run.strategy, "phase": run.phase, "config": dict(run.config),
            "status": run.status, "reason": run.reason, "median_s": run.median_s, "samples": list(run.samples),
            "compile_s": run.compile_s, "source": run.source, "predicted_rank": run.predicted_rank,
            "tuning_id": run.tuning_id}


_TUNING_TELEMETRY = ("kernel", "shape", "target", "strategy", "budget", "evaluations", "wall_s", "winner_median_s",
                     "speedup", "predict_s", "cloud_s", "compile_s", "benchmark_s", "confidence", "cloud",
                     "winner_source", "winner_predicted_rank")


def _tuning_telemetry(tuning: Mapping[str, Any]) -> dict[str, Any]:
    """A finished tuning's summary as the telemetry protocol carries it."""
    data = {name: tuning[name] for name in _TUNING_TELEMETRY}
    data["winner_config"] = json.loads(tuning["winner_config"]) if tuning["winner_config"] else None
    return data


def _export_filters(tuning_id: int | None, kernels: Sequence[str], origin: str | None, strategy: str | None,
                    *, table: str) -> tuple[str, list[Any]]:
    clauses, params = ["1 = 1"], []
    if tuning_id is not None:
        clauses.append(f"{table}.id = ?")
        params.append(tuning_id)
    if kernels:
        clauses.append(f"{table}.kernel in ({', '.join('?' for _ in kernels)})")
        params.extend(kernels)
    if origin:
        clauses.append(f"coalesce({table}.origin, 'measured') like ?")
        params.append(origin + "%")
    if strategy:
        clauses.append(f"{table}.strategy = ?")
        params.append(strategy)
    return " and ".join(clauses), params


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    """StoreBusy when another process held the lock past the timeout (worth a retry), else StoreError."""
    busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
    return (StoreBusy if busy else StoreError)(f"{what}: {exc}")


class Store:
    """The device's tuning database. Open with ``Store.open(path)``; use as a context manager."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path
        self._store_id: str | None = None  # store_info's, read once: it never changes

    @classmethod
    def open(cls, path: str | Path, *, lock_timeout_s: float = 30.0) -> Store:
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
    def open_read_only(cls, path: str | Path) -> Store:
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

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
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

    # -- writes -----------------------------------------------------------------------------

    def upsert_device(self, fingerprint: str, profile: Mapping[str, Any]) -> None:
        now = utc_now()
        with self._write() as db:
            table = db["devices"]
            existing = next(table.rows_where("fingerprint = ?", [fingerprint]), None)
            record = {
                "fingerprint": fingerprint,
                "name": profile.get("name", ""),
                "arch": profile.get("arch", ""),
                "model": profile.get("model", ""),
                "profile": json.dumps(dict(profile), sort_keys=True),
                "first_seen": existing["first_seen"] if existing else now,
                "last_seen": now,
            }
            table.upsert(record, pk="fingerprint")

    def upsert_kernel(self, key: str, name: str, source_hash: str, space: Mapping[str, Any],
                      origin: str) -> None:
        with self._write() as db:
            if next(db["kernels"].rows_where("key = ?", [key]), None) is None:
                db["kernels"].insert({"key": key, "name": name, "source_hash": source_hash,
                                      "space": json.dumps(space, sort_keys=True),
                                      "origin": origin, "created_at": utc_now()})

    def start_tuning(self, *, device: str, kernel_key: str, kernel: str, shape: str, target: str,
                     compiler: str, strategy: str, budget: str, seed: int, cores: int | None = None,
                     origin: str = "measured", model_version: str | None = None) -> int:
        with self._write() as db:
            table = db["tunings"]
            table.insert({
                "device": device, "kernel_key": kernel_key, "kernel": kernel, "shape": shape,
                "target": target, "compiler": compiler, "strategy": strategy, "budget": budget,
                "seed": seed, "state": "running", "started_at": utc_now(), "cores": cores,
                "origin": origin, "model_version": model_version,
            })
            return int(table.last_pk)

    def find_tuning(self, *, device: str, kernel_key: str, shape: str, target: str, strategy: str,
                    cores: int | None = None, origin: str | None = None) -> dict[str, Any] | None:
        """The newest tuning session of exactly this case (to resume or replace it), or None."""
        where = {"device": device, "kernel_key": kernel_key, "shape": shape, "target": target,
                 "strategy": strategy, "cores": cores, "origin": origin}
        clauses = [f"[{k}] = ?" if v is not None else f"[{k}] is null" for k, v in where.items()
                   if k != "origin" or v is not None]
        params = [v for k, v in where.items() if v is not None]
        return next(self.db["tunings"].rows_where(" and ".join(clauses), params, order_by="id desc",
                                                  limit=1), None)

    def run_configs(self, tuning_id: int, *, phase: str = "search") -> set[str]:
        """Configuration keys that already have a stored run in this tuning session."""
        return {row["config"] for row in self.db.query(
            "select distinct config from runs where tuning_id = ? and phase = ?", [tuning_id, phase])}

    def reopen_tuning(self, tuning_id: int) -> None:
        """Mark an interrupted session as running again (collection resumes it)."""
        with self._write() as db:
            db["tunings"].update(tuning_id, {"state": "running", "finished_at": None})

    def delete_tuning(self, tuning_id: int) -> None:
        """Remove a session and its runs (``collect --remeasure`` replaces a case this way)."""
        with self._write() as db:
            db.execute("delete from best where tuning_id = ?", [tuning_id])
            db.execute("delete from runs where tuning_id = ?", [tuning_id])
            db.execute("delete from tunings where id = ?", [tuning_id])

    def add_run(self, run: RunRecord) -> int:
        """Store one candidate's outcome in its own transaction; returns the run id."""
        with self._write() as db:
            table = db["runs"]
            table.insert(_run_row(run))
            run_id = int(table.last_pk)
            self._enqueue(db, "run", run_id, run.device, run.created_at, _run_telemetry(run))
            return run_id

    def add_runs(self, runs: list[RunRecord]) -> int:
        """Store many outcomes in one transaction (imports): all of them or none."""
        with self._write() as db:
            db["runs"].insert_all((_run_row(r) for r in runs), batch_size=1000)
        return len(runs)

    def finish_tuning(self, tuning_id: int, *, evaluations: int, wall_s: float,
                      winner_run: int | None, winner_config: Mapping[str, Any] | None,
                      winner_median_s: float | None, default_median_s: float | None,
                      speedup: float | None, tie: bool, update_best: bool = True,
                      details: Mapping[str, Any] | None = None) -> None:
        """Close a tuning session and, when it found a winner, make it the device's best.

        ``update_best=False`` keeps ``best`` as it is (collection on fewer cores than the
        device has measures an emulated smaller device, not this one). ``details`` fills the
        prediction columns (``predict_s``, ``cloud_s``, ``compile_s``, ``benchmark_s``,
        ``confidence``, ``cloud``, ``winner_source``, ``winner_predicted_rank``, ``note``).
        """
        unknown = set(details or {}) - _TUNING_DETAILS
        if unknown:
            raise ValueError(f"unknown tuning details: {', '.join(sorted(unknown))}")
        now = utc_now()
        with self._write() as db:
            db["tunings"].update(tuning_id, {
                "state": "finished", "finished_at": now, "evaluations": evaluations,
                "wall_s": wall_s, "winner_run": winner_run,
                "winner_config": json.dumps(dict(winner_config), sort_keys=True) if winner_config else None,
                "winner_median_s": winner_median_s, "default_median_s": default_median_s,
                "speedup": speedup, "tie": int(tie), **(details or {}),
            })
            tuning = db["tunings"].get(tuning_id)
            if (tuning["origin"] or "measured") == "measured":  # imports are other machines' data
                self._enqueue(db, "tuning", tuning_id, tuning["device"], now, _tuning_telemetry(tuning))
            if winner_config is None or winner_run is None or not update_best:
                return
            db["best"].upsert({
                "device": tuning["device"], "kernel_key": tuning["kernel_key"],
                "shape": tuning["shape"], "target": tuning["target"], "kernel": tuning["kernel"],
                "config": config_key(winner_config),
                "config_json": json.dumps(dict(winner_config), sort_keys=True),
                "median_s": winner_median_s, "speedup": speedup, "run_id": winner_run,
                "tuning_id": tuning_id, "updated_at": now, "stale": None,
            }, pk=("device", "kernel_key", "shape", "target"))

    def fail_tuning(self, tuning_id: int, state: str) -> None:
        """Mark a session that ended without a result (``failed`` or ``interrupted``)."""
        with self._write() as db:
            db["tunings"].update(tuning_id, {"state": state, "finished_at": utc_now()})

    def _enqueue(self, db: sqlite_utils.Database, kind: str, local_id: int, device: str, created_at: str,
                 data: Mapping[str, Any]) -> None:
        """Put one telemetry record into the outbox (inside the caller's transaction)."""
        if self._store_id is None:
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

    # -- staleness, the request queue, daemon state ------------------------------------------

    def best_dependencies(self, device: str) -> list[dict[str, Any]]:
        """This device's best rows with what they were measured with (compiler, strategy, model, kernel origin)."""
        return list(self.db.query(
            "select b.device, b.kernel_key, b.shape, b.target, b.kernel, b.stale, b.speedup, b.median_s, "
            "t.compiler, t.strategy, t.model_version, k.origin as kernel_path "
            "from best b left join tunings t on t.id = b.tuning_id left join kernels k on k.key = b.kernel_key "
            "where b.device = ? order by b.kernel, b.shape, b.target", [device]))

    def mark_stale(self, device: str, kernel_key: str, shape: str, target: str, reason: str | None) -> None:
        """Say why a best row no longer matches what it was measured with (None: it matches again).

        A stale row stays usable until a new tuning replaces it."""
        with self._write() as db:
            db.execute("update best set stale = ? where device = ? and kernel_key = ? and shape = ? and target = ?",
                       [reason, device, kernel_key, shape, target])

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
        marks = ", ".join("?" * len(states))
        return list(self.db.query(f"select * from queue where state in ({marks}) order by id limit ?",
                                  [*states, limit]))

    def set_info(self, name: str, value: Mapping[str, Any]) -> None:
        """Keep a small JSON record in ``store_info`` (the daemon's state, the last upload)."""
        with self._write() as db:
            db["store_info"].upsert({"name": name, "value": json.dumps(dict(value), sort_keys=True)}, pk="name")

    def info(self, name: str) -> dict[str, Any] | None:
        row = next(self.db.query("select value from store_info where name = ?", [name]), None)
        return json.loads(row["value"]) if row else None

    def device_profile(self, fingerprint: str) -> dict[str, Any]:
        """The stored hardware profile of a device ({} when unknown)."""
        row = next(self.db["devices"].rows_where("fingerprint = ?", [fingerprint]), None)
        return json.loads(row["profile"]) if row and row["profile"] else {}

    # -- reads ------------------------------------------------------------------------------

    def best(self, *, kernel: str | None = None, device: str | None = None) -> list[dict[str, Any]]:
        return self._select("best", {"kernel": kernel, "device": device}, "kernel, shape")

    def runs(self, *, kernel: str | None = None, device: str | None = None,
             tuning_id: int | None = None, status: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        where = {"kernel": kernel, "device": device, "tuning_id": tuning_id, "status": status}
        return self._select("runs", where, "id desc", limit)

    def tunings(self, *, kernel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._select("tunings", {"kernel": kernel}, "id desc", limit)

    def kernels(self) -> list[dict[str, Any]]:
        return self._select("kernels", {}, "name, created_at")

    def devices(self) -> list[dict[str, Any]]:
        return self._select("devices", {}, "last_seen desc")

    def export_tunings(self, *, tuning_id: int | None = None, kernels: Sequence[str] = (),
                       origin: str | None = None, strategy: str | None = None) -> list[dict[str, Any]]:
        """Tuning sessions matching the filters (export selects whole sessions)."""
        clauses, params = _export_filters(tuning_id, kernels, origin, strategy, table="t")
        return list(self.db.query(f"select t.* from tunings t where {clauses} order by t.id", params))

    def export_runs(self, *, tuning_id: int | None = None, kernels: Sequence[str] = (),
                    origin: str | None = None, strategy: str | None = None) -> Iterator[dict[str, Any]]:
        """Search-phase runs matching the filters, oldest first, with config and samples decoded."""
        clauses, params = _export_filters(tuning_id, kernels, origin, strategy, table="t")
        for row in self.db.query(
                "select r.*, t.cores, coalesce(t.origin, 'measured') as origin from runs r "
                f"join tunings t on t.id = r.tuning_id where r.phase = 'search' and {clauses} order by r.id",
                params):
            row["config"] = json.loads(row.pop("config_json"))
            row["samples"] = json.loads(row["samples"] or "[]")
            yield row

    def count(self, table: str) -> int:
        return self.db[table].count

    def _select(self, table: str, where: Mapping[str, Any], order_by: str,
                limit: int | None = None) -> list[dict[str, Any]]:
        clauses = [f"[{k}] = ?" for k, v in where.items() if v is not None]
        params = [v for v in where.values() if v is not None]
        try:
            return list(self.db[table].rows_where(" and ".join(clauses) or None, params,
                                                  order_by=order_by, limit=limit))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {table} from {self.path}: {exc}") from None
