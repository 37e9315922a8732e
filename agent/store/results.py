"""Results: devices, kernels, tuning sessions, every measured run, and the best configurations.

A ``best`` row is only as good as what it was measured with: the kernel's source (its key), the
compiler (``tunings.compiler``), the model that proposed it (``tunings.model_version``) and the
hardware (the device fingerprint). ``best.stale`` names the dependency that changed since.
Runs and finished tunings measured here are queued for telemetry in the transaction that stores them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import StoreError
from agent.kernels.space import config_key
from agent.store.core import utc_now
from agent.store.outbox import Outbox
from agent.telemetry.record import STATUSES, run_data, tuning_data

__all__ = ["INVALIDITY", "Results", "RunRecord"]

INVALIDITY = STATUSES  # T4's "invalidity" vocabulary, defined once with the telemetry record


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
    backend: str = "c"  # what compiled and ran it: "c" (the system C compiler) or, later, "triton"
    created_at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.status not in INVALIDITY:
            raise ValueError(f"status {self.status!r} is not one of {INVALIDITY}")


_TUNING_DETAILS = {"predict_s", "cloud_s", "compile_s", "benchmark_s", "confidence", "cloud", "winner_source",
                   "winner_predicted_rank", "note", "situation", "ranked_by"}


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
        "backend": run.backend,
    }


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


class Results(Outbox):
    """Writes and reads of the result tables (each write in its own transaction)."""

    def upsert_device(self, fingerprint: str, profile: Mapping[str, Any]) -> None:
        """Record a device's hardware profile (first_seen kept, last_seen now)."""
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
                     origin: str = "measured", model_version: str | None = None, backend: str = "c") -> int:
        """Open a tuning session (state ``running``); returns its id."""
        with self._write() as db:
            table = db["tunings"]
            table.insert({
                "device": device, "kernel_key": kernel_key, "kernel": kernel, "shape": shape,
                "target": target, "compiler": compiler, "strategy": strategy, "budget": budget,
                "seed": seed, "state": "running", "started_at": utc_now(), "cores": cores,
                "origin": origin, "model_version": model_version, "backend": backend,
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
            self._enqueue(db, "run", run_id, run.device, run.created_at, run_data(run))
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
        ``confidence``, ``cloud``, ``winner_source``, ``winner_predicted_rank``, ``note``, ``situation``,
        ``ranked_by``).
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
                self._enqueue(db, "tuning", tuning_id, tuning["device"], now, tuning_data(tuning))
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

    def _select(self, table: str, where: Mapping[str, Any], order_by: str,
                limit: int | None = None) -> list[dict[str, Any]]:
        clauses = [f"[{k}] = ?" for k, v in where.items() if v is not None]
        params = [v for v in where.values() if v is not None]
        try:
            return list(self.db[table].rows_where(" and ".join(clauses) or None, params,
                                                  order_by=order_by, limit=limit))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {table} from {self.path}: {exc}") from None
