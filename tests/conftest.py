"""Shared fixtures: a real compiler, a real worker process, a real SQLite file per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends.c import CBackend
from agent.bench.compile import Toolchain
from agent.hardware import HardwareProfile, probe
from agent.hardware.targets import available_targets, target_vector_bits
from agent.predict.rank_protocol import RankRequest
from agent.store import Store
from harness.cloud_server import RankCase, gemm_rank_case, small_rank_request
from harness.fleet_server import FleetServer

ROOT = Path(__file__).resolve().parents[1]
# A machine's own /etc/edgetune/config.toml must not steer the tests; tests that need one write their own.
os.environ.setdefault("EDGETUNE_CONFIG", str(ROOT / "tests" / "no-such-config.toml"))
TEST_KERNELS = Path(__file__).resolve().parent / "data" / "kernels"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the whole run: each test still compiles what it needs once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def profile() -> HardwareProfile:
    return probe(measure_bandwidth=False)


@pytest.fixture(scope="session")
def toolchain(profile: HardwareProfile) -> Toolchain:
    return Toolchain.detect("cc", "native", cpu_tag=profile.fingerprint())


def targets_by_width(profile: HardwareProfile) -> dict[int, str]:
    """One compile target per vector width this CPU runs, whatever machine the suite is on: ``native``
    for its widest, the narrowest -march level for each narrower width (an AVX-512 machine: 128-bit
    x86-64, 256-bit x86-64-v3 (what an AVX2 machine's native is), 512-bit native; arm64: native)."""
    chosen = {target_vector_bits("native", profile): "native"}
    for target in available_targets(profile):
        chosen.setdefault(target_vector_bits(target, profile), target)
    return dict(sorted(chosen.items()))


@pytest.fixture(scope="session")
def backend(toolchain: Toolchain) -> CBackend:
    """The C backend over the native toolchain."""
    return CBackend(toolchain)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "edgetune.db"


@pytest.fixture
def store(db_path: Path):
    with Store.open(db_path) as opened:
        yield opened


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``edgetune`` entry point in a child process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, check=False)


@pytest.fixture
def cli_env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    return {"EDGETUNE_DB": str(tmp_path / "cli.db"), "EDGETUNE_CACHE": str(cache_dir)}


# -- the fleet's database backends -------------------------------------------------------------
FLEET_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL server for the session; missing binaries fail the test (CI installs them)."""
    from harness.postgres import PostgresCluster, PostgresMissing

    try:
        cluster = PostgresCluster.start()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.stop()


def _new_fleet_db(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "sqlite":
        return str(request.getfixturevalue("tmp_path_factory").mktemp("fleet") / "fleet.db")
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture(scope="module", params=FLEET_BACKENDS)
def fleet_db(request: pytest.FixtureRequest) -> str:
    """One fleet database per test module and backend (a SQLite path or a PostgreSQL URL): tests run on both."""
    return _new_fleet_db(request, request.param)


@pytest.fixture
def new_fleet_db(request: pytest.FixtureRequest):
    """``new_fleet_db(backend)``: another new empty fleet database."""
    return lambda backend: _new_fleet_db(request, backend)


# -- shared servers and requests ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(fleet_db: str) -> Iterator[FleetServer]:
    """The fleet service on SQLite and on PostgreSQL (``fleet_db`` is parametrized over both)."""
    fleet = FleetServer(fleet_db).start()
    yield fleet
    fleet.kill()


@pytest.fixture(scope="module")
def case() -> RankCase:
    """A gemm ranking case (prompt, tokens, the model's own scores) for the rank protocol's tests."""
    return gemm_rank_case()


@pytest.fixture(scope="module")
def small(case: RankCase) -> RankRequest:
    """A small /v1/rank request built from ``case``."""
    return small_rank_request(case)
