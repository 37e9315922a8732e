"""``edgetune status``: what this device has tuned, what waits, the daemon's state, the last upload.

Read-only: the store is opened with ``Store.open_read_only`` (never created, migrated or
written), and nothing is probed (the hardware is the one the daemon or hook last checked), so
it answers in a fraction of a second even while the daemon works.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from agent.errors import EdgetuneError
from agent.settings import FleetSettings, Settings
from agent.store import Store

from .config import DaemonSettings

__all__ = ["read_status"]


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


def read_status(settings: Settings, *, config: DaemonSettings, fleet: FleetSettings | None) -> dict[str, Any]:
    """Everything ``edgetune status`` shows, as a JSON-ready dict (``config``: the ``[daemon]`` table)."""
    from agent.predict.model_files import model_version

    models = settings.models_dir
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
        with Store.open_read_only(settings.db_path) as store:
            device, daemon = store.info("device"), store.info("daemon")
            rows = store.best(device=device["fingerprint"]) if device else []
            queue = store.queue()
            status.update(
                device=device, daemon=daemon, queue=queue, last_upload=store.info("last_upload"),
                outbox=store.count("outbox"), dead_letter=store.count("dead_letter"),
                results={"tuned": sum(1 for r in rows if not r["stale"]), "stale": sum(1 for r in rows if r["stale"])},
                layers=_preset_layers(config.preset, rows, queue))
    except sqlite3.Error as exc:
        raise EdgetuneError(f"cannot read the store at {settings.db_path}: {exc}") from None
    if daemon is not None:
        daemon["running"] = daemon.get("state") != "stopped" and _alive(daemon.get("pid"))
    return status
