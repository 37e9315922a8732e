"""``edgetune status``: what this device has tuned, what waits, the daemon's state, the last upload.

Read-only: the store is opened with ``mode=ro`` and never created or migrated, and nothing
is probed (the hardware is the one the daemon or hook last checked), so it answers in a
fraction of a second even while the daemon works.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from typing import Any

from agent.errors import EdgetuneError
from agent.settings import FleetSettings, Settings

from .config import DaemonSettings

__all__ = ["read_status"]


def _query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts; a table an older store lacks reads as empty."""
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return []
        raise
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _info(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    rows = _query(conn, "select value from store_info where name = ?", (name,))
    return json.loads(rows[0]["value"]) if rows else None


def _count(conn: sqlite3.Connection, table: str) -> int:
    rows = _query(conn, f"select count(*) as n from {table}")
    return int(rows[0]["n"]) if rows else 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _preset_layers(preset: str | None, rows: list[dict[str, Any]], queue: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each preset layer with its state on this hardware: tuned, stale, queued or missing."""
    from agent.kernels.workloads import find_workload

    if not preset:
        return []
    try:
        problems = find_workload(preset).problems()
    except EdgetuneError as exc:
        return [{"label": "(preset unusable)", "kernel": "-", "shape": "-", "state": f"error: {exc}",
                 "speedup": None, "stale": None}]
    best = {(r["kernel_key"], r["shape"], r["target"]): r for r in rows}
    waiting = {(q["kernel"], q["shape"], q["target"]): q["state"] for q in queue}
    layers = []
    for layer, problem in problems:
        row = best.get((problem.spec.key, problem.key, "native"))
        state = waiting.get((problem.spec.name, problem.key, "native"))
        if state is None:
            state = "missing" if row is None else ("stale" if row["stale"] else "tuned")
        layers.append({"label": layer.label, "kernel": problem.spec.name, "shape": problem.key, "state": state,
                       "speedup": row["speedup"] if row else None, "stale": row["stale"] if row else None})
    return layers


def read_status(settings: Settings) -> dict[str, Any]:
    """Everything ``edgetune status`` shows, as a JSON-ready dict."""
    from agent.predict.model_files import default_model_dir, model_version

    config = DaemonSettings.load()
    fleet = FleetSettings.from_environ()
    models = settings.models_dir or default_model_dir()
    status: dict[str, Any] = {
        "store": str(settings.db_path), "store_exists": settings.db_path.is_file(),
        "model": {"dir": str(models), "version": model_version(models)},
        "preset": config.preset, "fleet": fleet.url if fleet else None,
        "device": None, "daemon": None, "results": {"tuned": 0, "stale": 0}, "layers": [], "queue": [],
        "last_upload": None, "outbox": 0, "dead_letter": 0,
    }
    if not status["store_exists"]:
        status["layers"] = _preset_layers(config.preset, [], [])
        return status
    try:
        conn = sqlite3.connect(f"{settings.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise EdgetuneError(f"cannot read the store at {settings.db_path}: {exc}") from None
    with closing(conn):
        try:
            device = _info(conn, "device")
            daemon = _info(conn, "daemon")
            fingerprint = device["fingerprint"] if device else None
            rows = _query(conn, "select kernel, kernel_key, shape, target, speedup, stale from best where device = ?",
                          (fingerprint,))
            queue = _query(conn, "select id, kernel, shape, target, state, reason, requested_by, requested_at "
                                 "from queue where state in ('queued', 'running') order by id")
            status.update(
                device=device, daemon=daemon, queue=queue, last_upload=_info(conn, "last_upload"),
                outbox=_count(conn, "outbox"), dead_letter=_count(conn, "dead_letter"),
                results={"tuned": sum(1 for r in rows if not r["stale"]), "stale": sum(1 for r in rows if r["stale"])},
                layers=_preset_layers(config.preset, rows, queue))
        except sqlite3.Error as exc:
            raise EdgetuneError(f"cannot read the store at {settings.db_path}: {exc}") from None
    if daemon is not None:
        daemon["running"] = daemon.get("state") != "stopped" and _alive(daemon.get("pid"))
    return status
