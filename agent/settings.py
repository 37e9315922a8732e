"""Settings parsed once at start-up from the environment; nothing deeper reads os.environ.

| variable            | meaning                                   | default                                   |
|---------------------|-------------------------------------------|-------------------------------------------|
| ``EDGETUNE_DB``     | the SQLite store                          | ``$XDG_STATE_HOME/edgetune/edgetune.db``  |
| ``EDGETUNE_CACHE``  | compiled candidates and probe programs    | ``$XDG_CACHE_HOME/edgetune``              |
| ``CC``              | the C compiler                            | ``cc``                                    |
| ``EDGETUNE_MODELS`` | folder of the model files                 | the shipped ``models/``                   |
| ``EDGETUNE_CLOUD_URL``   | ranking service asked at low confidence | none (never asked)                 |
| ``EDGETUNE_CLOUD_KIND``  | ``fleet`` or ``openai`` (completions)   | ``fleet``                          |
| ``EDGETUNE_CLOUD_TOKEN`` | bearer token for it (kept out of argv)  | none                               |
| ``EDGETUNE_CLOUD_MODEL`` | model name for an OpenAI-compatible one | none                               |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    db_path: Path
    cache_dir: Path
    compiler: str
    models_dir: Path | None = None
    cloud_url: str | None = None
    cloud_kind: str = "fleet"
    cloud_token: str | None = field(default=None, repr=False)
    cloud_model: str | None = None

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
            models_dir=Path(env["EDGETUNE_MODELS"]) if env.get("EDGETUNE_MODELS") else None,
            cloud_url=env.get("EDGETUNE_CLOUD_URL") or None,
            cloud_kind=env.get("EDGETUNE_CLOUD_KIND") or "fleet",
            cloud_token=env.get("EDGETUNE_CLOUD_TOKEN") or None,
            cloud_model=env.get("EDGETUNE_CLOUD_MODEL") or None,
        )
