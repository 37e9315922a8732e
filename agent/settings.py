"""Settings parsed once at start-up from the environment; nothing deeper reads os.environ.

``[paths]`` is a table of the config file (``EDGETUNE_CONFIG``), used where the variable is unset.

| variable            | meaning                                   | default                                   |
|---------------------|-------------------------------------------|-------------------------------------------|
| ``EDGETUNE_DB``     | the SQLite store              | ``[paths] db``, else ``$XDG_STATE_HOME/edgetune/edgetune.db`` |
| ``EDGETUNE_CACHE``  | compiled candidates, probe programs | ``[paths] cache``, else ``$XDG_CACHE_HOME/edgetune`` |
| ``CC``              | the C compiler                            | ``cc``                                    |
| ``EDGETUNE_MODELS`` | folder of the model files                 | ``[paths] models``, else the shipped ``models/`` |
| ``EDGETUNE_CLOUD_URL``   | ranking service asked at low confidence | none (never asked)                 |
| ``EDGETUNE_CLOUD_KIND``  | ``fleet`` or ``openai`` (completions)   | ``fleet``                          |
| ``EDGETUNE_CLOUD_TOKEN`` | bearer token for it (kept out of argv)  | none                               |
| ``EDGETUNE_CLOUD_MODEL`` | model name for an OpenAI-compatible one | none                               |
| ``EDGETUNE_FLEET_URL``   | fleet service ``edgetune upload`` sends to | ``[fleet] url`` of the config file |
| ``EDGETUNE_FLEET_TOKEN`` | this device's fleet token               | ``[fleet] token`` of the config file |
| ``EDGETUNE_CONFIG``      | the TOML config file                    | ``/etc/edgetune/config.toml``      |
| ``EDGETUNE_FLEET_OPERATOR_TOKEN`` | the operator token ``fleet serve`` requires, and ``fleet pull`` sends | none |
| ``EDGETUNE_FLEET_UPSTREAM_TOKEN`` | bearer token for ``fleet serve --rank-upstream`` | none           |

Defaults shared by several commands are defined here once (``CANDIDATE_TIMEOUT_S``, ``RANK_DEADLINE_S``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError
from agent.resources import shipped_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CANDIDATE_TIMEOUT_S", "DEFAULT_CONFIG", "OPERATOR_TOKEN_ENV", "RANK_DEADLINE_S", "UPSTREAM_TOKEN_ENV",
           "FleetSettings", "Settings", "config_path", "config_section", "default_models_dir"]

DEFAULT_CONFIG = Path("/etc/edgetune/config.toml")
OPERATOR_TOKEN_ENV = "EDGETUNE_FLEET_OPERATOR_TOKEN"
UPSTREAM_TOKEN_ENV = "EDGETUNE_FLEET_UPSTREAM_TOKEN"
CANDIDATE_TIMEOUT_S = 10.0  # seconds one run of a candidate may take before it is killed
RANK_DEADLINE_S = 10.0  # seconds the fleet's /v1/rank may take before it answers 503


def default_models_dir() -> Path:
    """The shipped ``models/`` folder (a checkout's or the venv's): the models folder when nothing names one."""
    return shipped_dir("models")


@dataclass(frozen=True)
class Settings:
    db_path: Path
    cache_dir: Path
    compiler: str
    models_dir: Path = field(default_factory=default_models_dir)
    cloud_url: str | None = None
    cloud_kind: str = "fleet"
    cloud_token: str | None = field(default=None, repr=False)
    cloud_model: str | None = None
    fleet_operator_token: str | None = field(default=None, repr=False)
    fleet_upstream_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; where a path variable is unset, ``[paths]`` of the config file (the
        Debian package's ``/etc/edgetune/config.toml`` points there at ``/var/lib/edgetune``)."""
        env = os.environ if environ is None else environ
        home = Path.home()
        state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
        cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
        paths: Mapping[str, object] = {}
        if not (env.get("EDGETUNE_DB") and env.get("EDGETUNE_CACHE") and env.get("EDGETUNE_MODELS")):
            config = config_path(env)
            paths = config_section(config, "paths") or {}
            for key, value in paths.items():
                if key not in ("db", "cache", "models") or not isinstance(value, str) or not value:
                    raise ConfigError(f"[paths] of {config}: {key} is not one of db, cache, models "
                                      "with a path as a string")

        def path(variable: str, key: str, default: Path) -> Path:
            value = env.get(variable) or paths.get(key)
            return Path(str(value)) if value else default

        return cls(
            db_path=path("EDGETUNE_DB", "db", state / "edgetune" / "edgetune.db"),
            cache_dir=path("EDGETUNE_CACHE", "cache", cache / "edgetune"),
            compiler=env.get("CC") or "cc",
            models_dir=path("EDGETUNE_MODELS", "models", default_models_dir()),
            cloud_url=env.get("EDGETUNE_CLOUD_URL") or None,
            cloud_kind=env.get("EDGETUNE_CLOUD_KIND") or "fleet",
            cloud_token=env.get("EDGETUNE_CLOUD_TOKEN") or None,
            cloud_model=env.get("EDGETUNE_CLOUD_MODEL") or None,
            fleet_operator_token=env.get(OPERATOR_TOKEN_ENV) or None,
            fleet_upstream_token=env.get(UPSTREAM_TOKEN_ENV) or None,
        )


@dataclass(frozen=True)
class FleetSettings:
    """Where ``edgetune upload`` sends telemetry, and this device's token."""

    url: str
    token: str = field(repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> FleetSettings | None:
        """The fleet from ``EDGETUNE_FLEET_URL``/``_TOKEN``, else ``[fleet]`` of the config file; None if neither.

        A config file that is not valid TOML, or a ``[fleet]`` section without both a URL and a
        token, is a :class:`ConfigError`.
        """
        env = os.environ if environ is None else environ
        url, token = env.get("EDGETUNE_FLEET_URL") or None, env.get("EDGETUNE_FLEET_TOKEN") or None
        source = "EDGETUNE_FLEET_URL/EDGETUNE_FLEET_TOKEN"
        if url is None and token is None:
            path = config_path(env)
            section = config_section(path, "fleet")
            if section is None:
                return None
            url, token, source = section.get("url"), section.get("token"), f"[fleet] of {path}"
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: the fleet url must be an http:// or https:// URL")
        if not isinstance(token, str) or not token:
            raise ConfigError(f"{source}: the fleet token is missing")
        return cls(url=url.rstrip("/"), token=token)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The TOML config file: ``$EDGETUNE_CONFIG``, else ``/etc/edgetune/config.toml``."""
    env = os.environ if environ is None else environ
    return Path(env.get("EDGETUNE_CONFIG") or DEFAULT_CONFIG)


def config_section(path: Path, name: str) -> Mapping[str, object] | None:
    """One table of the TOML config file; None when the file or the table does not exist."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
    section = data.get(name)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"the config file {path}: [{name}] must be a table")
    return section
