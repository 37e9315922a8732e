"""Settings are parsed once, from the environment and the config file; nothing deeper reads the environment."""

from __future__ import annotations

import re
from pathlib import Path

from agent.settings import Settings, default_models_dir

ROOT = Path(__file__).resolve().parents[1]

# Modules that may touch os.environ: the settings themselves; systemd's notify protocol
# (NOTIFY_SOCKET, WATCHDOG_*: the service manager's handshake, not configuration); the worker
# launcher, which hands the environment on to its child.
MAY_READ_ENVIRONMENT = {"agent/settings.py", "agent/daemon/notify.py", "agent/bench/session.py"}


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"EDGETUNE_CONFIG": str(path)}


def test_the_models_folder_is_the_variable_then_the_config_file_then_the_shipped_one(tmp_path):
    config = _config(tmp_path, '[paths]\nmodels = "/from/config"\n')
    assert Settings.from_environ({**config, "EDGETUNE_MODELS": "/from/env"}).models_dir == Path("/from/env")
    assert Settings.from_environ(config).models_dir == Path("/from/config")
    assert Settings.from_environ(_config(tmp_path, "")).models_dir == default_models_dir()


def test_fleet_tokens_are_read_once_and_kept_out_of_the_repr(tmp_path):
    env = {**_config(tmp_path, ""), "EDGETUNE_FLEET_OPERATOR_TOKEN": "op-secret",
           "EDGETUNE_FLEET_UPSTREAM_TOKEN": "up-secret"}
    settings = Settings.from_environ(env)
    assert (settings.fleet_operator_token, settings.fleet_upstream_token) == ("op-secret", "up-secret")
    assert "secret" not in repr(settings)
    bare = Settings.from_environ(_config(tmp_path, ""))
    assert bare.fleet_operator_token is None and bare.fleet_upstream_token is None


def test_nothing_below_the_entry_points_reads_the_environment():
    readers = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "agent").rglob("*.py")
        if re.search(r"\bos\.environ\b|\bgetenv\(", path.read_text(encoding="utf-8"))
    )
    assert set(readers) <= MAY_READ_ENVIRONMENT, readers
