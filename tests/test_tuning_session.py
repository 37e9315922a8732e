"""The CLI's tune, agent.api.tune and the daemon's work loop open a tuning the same way (agent.tuning_session).

Each is run for real, with the same environment, and what each stored is compared: the options the
session derives from the settings (the model folder, its budget, the backend's target and compiler)
must come out the same, whichever door the tuning came in by.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import agent
from agent.daemon.work import RequestRunner
from agent.settings import Settings
from agent.store import Store
from agent.tuning_session import TuningSession

from .conftest import TEST_KERNELS, run_cli

SPIN = TEST_KERNELS / "spin"
COMPARED = ("kernel_key", "shape", "target", "compiler", "strategy", "budget", "model_version", "state")


@pytest.fixture
def environment(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"EDGETUNE_DB": str(tmp_path / "state" / "edgetune.db"), "EDGETUNE_CACHE": str(cache_dir),
           "EDGETUNE_MODELS": str(tmp_path / "no-models")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EDGETUNE_CLOUD_URL", raising=False)
    return env


def test_cli_api_and_daemon_open_the_same_tuning_session(environment, profile):
    cli = run_cli("tune", str(SPIN), "--json", env=environment)
    assert cli.returncode == 0, cli.stderr
    agent.tune(str(SPIN))
    settings = Settings.from_environ()
    with Store.open(settings.db_path) as store:
        shape = agent.parse_shape(agent.load_spec(SPIN), None).key
        store.queue_request(kernel="spin", kernel_path=str(SPIN), shape=shape, target="native", reason="test",
                            requested_by="test")
        outcome = RequestRunner(settings, profile).run(store, store.next_request())
        assert outcome.state == "done", outcome.error
        rows = sorted(store.tunings(), key=lambda r: r["id"])
    assert len(rows) == 3
    cli_row, api_row, daemon_row = ({k: r[k] for k in COMPARED} for r in rows)
    assert cli_row == api_row == daemon_row
    assert cli_row["strategy"] == "model" and cli_row["budget"] == "5"
    # The model folder every door took from the settings is missing: each fell back the same way.
    assert all(r["note"] and r["note"].startswith("model unavailable") for r in rows)
    assert all("no-models" in r["note"] for r in rows)


def test_the_session_checks_names_before_probing_anything(environment):
    session = TuningSession(Settings.from_environ())
    with pytest.raises(agent.ConfigError, match="unknown strategy 'nope'; choose one of"):
        session.options("nope")
    with pytest.raises(agent.ConfigError, match="unknown option.*valid: models, cloud"):
        session.options("model", strategy_options={"beam": 4})
    assert session._profile is None  # nothing was probed for a bad request
    options = session.options("random", budget="30s")
    assert options.budget == agent.Budget(seconds=30.0) and options.strategy_options is not None
