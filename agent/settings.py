"""Settings parsed once at start-up from the environment; nothing deeper reads os.environ.

| variable            | meaning                                   | default                                   |
|---------------------|-------------------------------------------|-------------------------------------------|
| ``EDGETUNE_DB``     | the SQLite store                          | ``$XDG_STATE_HOME/edgetune/edgetune.db``  |
| ``EDGETUNE_CACHE``  | compiled candidates and probe programs    | ``$XDG_CACHE_HOME/edgetune``              |
| ``CC``              | the C compiler                            | ``cc``                                    |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    db_path: Path
    cache_dir: Path
    compiler: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path.home()
        state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
        cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
        return cls(
            db_path=Path(env["EDGETUNE_DB"]) if env.get("EDGETUNE_DB") else state / "edgetune" / "edgetune.db",
            cache_dir=Path(env["EDGETUNE_CACHE"]) if env.get("EDGETUNE_CACHE") else cache / "edgetune",
            compiler=env.get("CC") or "cc",
        )
