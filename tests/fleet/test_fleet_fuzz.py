"""API fuzz of the fleet service from its own OpenAPI document (schemathesis): no input is a 5xx.

The real service (``python -m agent.cli fleet serve``, SQLite) runs on loopback; schemathesis reads
``/openapi.json`` and, for every operation, sends generated requests (schema-valid and, separately,
schema-violating query parameters and headers), once with a device token and once with the operator
token, and checks each answer with ``not_a_server_error``. ``POST /v1/rank`` answers 503 on purpose
(no ranking model is loaded here), so 503 with ``Retry-After`` is the one 5xx allowed, there only.
Bounded: a few examples per operation, token and mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from agent.fleet.storage import FleetStore
from harness.fleet_server import OPERATOR_TOKEN, FleetServer

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds

MAX_EXAMPLES = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FleetServer, str]]:
    db = tmp_path_factory.mktemp("fleet-fuzz") / "fleet.db"
    token = FleetStore(db).add_device("fuzz-device")
    server = FleetServer(db).start()
    yield server, token
    server.kill()


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("role", ["device", "operator"])
def test_no_server_error(served: tuple[FleetServer, str], role: str, mode: GenerationMode) -> None:
    server, device_token = served
    token = device_token if role == "device" else OPERATOR_TOKEN
    operations = _operations(server.url)
    assert {op.label for op in operations} >= {"GET /v1/health", "POST /v1/telemetry", "GET /v1/telemetry",
                                              "GET /v1/devices", "POST /v1/rank"}
    if mode == GenerationMode.NEGATIVE:  # only declared parameters can be made invalid
        operations = [operation for operation in operations if any(operation.iter_parameters())]
        assert "GET /v1/telemetry" in {op.label for op in operations}
    statuses = {operation.label: _fuzz(operation, mode, server.url, token) for operation in operations}
    assert all(statuses.values()), statuses
    assert not any(code >= 500 for label, codes in statuses.items() if label != "POST /v1/rank" for code in codes)


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, url: str, token: str) -> set[int]:
    """Send ``operation``'s generated requests with ``token``; the statuses answered (none a 5xx but rank's 503)."""
    seen: set[int] = set()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call(base_url=url, timeout=30)
        seen.add(response.status_code)
        if operation.label == "POST /v1/rank" and response.status_code == 503:
            assert response.headers.get("retry-after"), "a 503 without Retry-After"
            return  # no ranking model here: "come back later" is the right answer
        case.validate_response(response, checks=[not_a_server_error])

    check()
    return seen
