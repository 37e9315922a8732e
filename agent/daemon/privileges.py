"""Run as the store's owner: hooks and admins call edgetune as root, the daemon runs as its own user."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["drop_to_store_owner"]


def drop_to_store_owner(db_path: Path) -> int | None:
    """When root, become the owner of the store's folder (the service user); returns the uid, or None.

    SQLite creates the ``-wal`` and ``-shm`` files as whoever opens the store first; were that
    root, the daemon could no longer write its own store. A root-owned folder keeps root.
    """
    if os.geteuid() != 0:
        return None
    folder = db_path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    owner = folder.stat()
    if owner.st_uid == 0:
        return None
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)
    return owner.st_uid
