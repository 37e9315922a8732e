"""The store's schema: named migrations (sqlite-utils ``Migrations``), applied in order on open.

A migration's name is what a store records as applied: never rename one, only add new ones.
"""

from __future__ import annotations

import secrets

import sqlite_utils
from sqlite_utils.migrations import Migrations

__all__ = ["migrations"]

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


@migrations()
def m006_backend(db: sqlite_utils.Database) -> None:
    # Which backend produced a result ("c": the system C compiler through ctypes; "triton" later), beside the
    # toolchain (``compiler``) it was built with. Every result before this was C.
    for table in ("tunings", "runs"):
        db[table].add_column("backend", str, not_null_default="c")


@migrations()
def m007_outbox_deferral(db: sqlite_utils.Database) -> None:
    # A record the fleet cannot place yet (a newer kind, a newer protocol) stays in the outbox and waits:
    # how often it was deferred, when to send it again, and the fleet's last reason.
    db["outbox"].add_column("deferrals", int, not_null_default=0)
    db["outbox"].add_column("retry_at", str)
    db["outbox"].add_column("deferred_reason", str)


@migrations()
def m008_policy(db: sqlite_utils.Database) -> None:
    # The model strategy's situation (seen, unseen-device, unseen-kernel) and the source that ranked its first
    # candidates there (agent.predict.policy): which prior a result came from, for `runs` and the fleet.
    db["tunings"].add_column("situation", str)
    db["tunings"].add_column("ranked_by", str)
