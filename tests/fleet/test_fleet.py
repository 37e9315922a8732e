"""The fleet service as a real child process: telemetry in, auth, bad input, reads."""

from __future__ import annotations

import gzip
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import FleetError
from agent.fleet.protocol import MAX_BODY_BYTES, MAX_RECORDS
from agent.fleet.storage import FleetStore, redact_url
from harness.fleet_server import OPERATOR_TOKEN, FleetServer, register_device
from tests.conftest import run_cli
from tests.helpers import run_record, tuning_record

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds


def post(server: FleetServer, token: str, records: list[Any], *, key: str | None = None,
         compress: bool = False, body: bytes | None = None) -> httpx.Response:
    content = body if body is not None else json.dumps(
        {"fingerprint": "fp-1", "profile": {"cores": 2}, "records": records}).encode()
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key or uuid.uuid4().hex,
               "Content-Type": "application/json"}
    if compress:
        content = gzip.compress(content)
        headers["Content-Encoding"] = "gzip"
    return httpx.post(f"{server.url}/v1/telemetry", content=content, headers=headers, timeout=30)


def stored(server: FleetServer, device: str) -> list[dict[str, Any]]:
    return server.all_records(device=device)


def test_a_resent_batch_with_the_same_idempotency_key_gets_the_first_answer_and_stores_nothing(server):
    name, token = register_device(server)
    records = [run_record(f"run:fp-1:{i}") for i in range(3)]
    first = post(server, token, records, key="batch-0001")
    assert first.status_code == 200 and first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    again = post(server, token, records, key="batch-0001")
    assert again.status_code == 200 and again.json() == first.json()
    other_key = post(server, token, records, key="batch-0002")  # same records, new key: duplicates
    assert other_key.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert sorted(r["key"] for r in stored(server, name)) == [f"run:fp-1:{i}" for i in range(3)]


def test_a_key_reused_with_a_different_batch_is_refused(server):
    name, token = register_device(server)
    assert post(server, token, [run_record("run:a")], key="batch-reused").status_code == 200
    answer = post(server, token, [run_record("run:b")], key="batch-reused")
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["error"]
    assert [r["key"] for r in stored(server, name)] == ["run:a"]


def test_a_gzip_body_is_stored(server):
    name, token = register_device(server)
    answer = post(server, token, [run_record("run:g1"), tuning_record("tuning:g1")], compress=True)
    assert answer.status_code == 200 and answer.json()["accepted"] == 2
    assert {r["kind"] for r in stored(server, name)} == {"run", "tuning"}


@pytest.mark.parametrize(("body", "compress", "reason"), [
    (b"{not json", False, "not JSON"),
    (b'{"fingerprint": "fp", "profile": {}, "records": [NaN]}', False, "not JSON"),
    (b'[1, 2]', False, "object"),
    (b'{"fingerprint": "fp", "profile": {}}', False, "records"),
    (b'{"fingerprint": 7, "profile": {}, "records": []}', False, "fingerprint"),
    (b'{"fingerprint": "fp", "profile": [], "records": []}', False, "profile"),
    (b'\x1f\x8b\x08\x00garbage', False, "gzip"),
])
def test_a_malformed_body_is_a_400_with_a_reason_and_nothing_is_stored(server, body, compress, reason):
    name, token = register_device(server)
    headers = {"Content-Encoding": "gzip"} if body.startswith(b"\x1f\x8b") else {}
    answer = httpx.post(f"{server.url}/v1/telemetry", content=body, timeout=10,
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex,
                                 "Content-Type": "application/json", **headers})
    assert answer.status_code == 400 and reason in answer.json()["error"]
    assert stored(server, name) == []


def test_records_with_wrong_fields_are_rejected_one_by_one_and_the_others_are_stored(server):
    name, token = register_device(server)
    bad = [run_record("run:bad-median", median_s="fast"), run_record("run:bad-status", status="exploded"),
           run_record("run:bad-config", config={"BM": 1.5}), tuning_record("tuning:bad-wall", wall_s=-1),
           {**run_record("run:bad-kind"), "kind": "benchmark"}, {**run_record("run:bad-time"), "created_at": "x"},
           run_record("run:bool-rank", predicted_rank=True), "not a record"]
    good = [run_record("run:good"), tuning_record("tuning:good")]
    answer = post(server, token, [bad[0], good[0], *bad[1:], good[1]])
    assert answer.status_code == 200
    data = answer.json()
    assert data["accepted"] == 2 and data["duplicates"] == 0
    reasons = {r["key"]: r["reason"] for r in data["rejected"]}
    assert len(data["rejected"]) == len(bad)
    assert "median_s" in reasons["run:bad-median"] and "status" in reasons["run:bad-status"]
    assert "config" in reasons["run:bad-config"] and "wall_s" in reasons["tuning:bad-wall"]
    assert reasons[None] == "a record must be an object"
    assert sorted(r["key"] for r in stored(server, name)) == ["run:good", "tuning:good"]


def test_oversize_bodies_are_413_before_and_after_gunzip(server):
    name, token = register_device(server)
    padding = "x" * (MAX_BODY_BYTES + 10)
    big = json.dumps({"fingerprint": "fp", "profile": {"pad": padding}, "records": []}).encode()
    assert post(server, token, [], body=big).status_code == 413
    assert len(gzip.compress(big)) < MAX_BODY_BYTES
    assert post(server, token, [], body=big, compress=True).status_code == 413  # a gzip bomb, in small
    too_many = [run_record(f"run:{i}") for i in range(MAX_RECORDS + 1)]
    answer = post(server, token, too_many)
    assert answer.status_code == 413 and str(MAX_RECORDS) in answer.json()["error"]
    assert stored(server, name) == []


def test_tokens_are_checked_and_roles_kept_apart(server):
    _, token = register_device(server)
    url = server.url
    assert httpx.get(f"{url}/v1/telemetry", timeout=10).status_code == 401
    assert httpx.get(f"{url}/v1/telemetry", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert post(server, "not-a-device-token", [run_record("run:x")]).status_code == 401
    device = {"Authorization": f"Bearer {token}"}
    for path in ("/v1/telemetry", "/v1/devices"):
        answer = httpx.get(f"{url}{path}", headers=device, timeout=10)
        assert answer.status_code == 403 and "operator" in answer.json()["error"]
    assert post(server, OPERATOR_TOKEN, [run_record("run:x")]).status_code == 403
    missing_key = httpx.post(f"{url}/v1/telemetry", content=b"{}", timeout=10,
                             headers={**device, "Content-Type": "application/json"})
    assert missing_key.status_code == 400 and "Idempotency-Key" in missing_key.json()["error"]


def test_reads_page_with_a_cursor_and_filter_by_device_and_kernel(server):
    name, token = register_device(server)
    other, other_token = register_device(server)
    post(server, token, [run_record(f"run:{i}") for i in range(5)] + [run_record("run:conv", kernel="conv2d")])
    post(server, other_token, [run_record("run:0")])
    with server.operator() as client:
        first = client.get("/v1/telemetry", params={"device": name, "limit": 4}).json()
        assert len(first["records"]) == 4 and first["next"] == first["records"][-1]["cursor"]
        rest = client.get("/v1/telemetry", params={"device": name, "since": first["next"], "limit": 4}).json()
        assert len(rest["records"]) == 2 and rest["next"] is None
        keys = [r["key"] for r in first["records"] + rest["records"]]
        assert keys == [*(f"run:{i}" for i in range(5)), "run:conv"]
        conv = client.get("/v1/telemetry", params={"device": name, "kernel": "conv2d"}).json()["records"]
        assert [r["key"] for r in conv] == ["run:conv"] and conv[0]["data"]["kernel"] == "conv2d"
        for bad in ({"limit": 0}, {"limit": 1001}, {"since": "abc"}):
            answer = client.get("/v1/telemetry", params=bad)
            assert answer.status_code == 400 and answer.json()["error"]
    assert [r["device"] for r in stored(server, other)] == [other]


def test_devices_summarise_their_tunings(server):
    name, token = register_device(server)
    post(server, token, [tuning_record("t:1", wall_s=1.0), tuning_record("t:2", wall_s=3.0, cloud="ok"),
                         tuning_record("t:3", kernel="conv2d", wall_s=5.0, cloud=None), run_record("r:1")])
    with server.operator() as client:
        devices = {d["name"]: d for d in client.get("/v1/devices").json()["devices"]}
    device = devices[name]
    assert device["fingerprint"] == "fp-1" and device["profile"] == {"cores": 2}
    assert device["kernels_tuned"] == 2 and device["tunings"] == 3
    assert device["median_tuning_wall_s"] == 3.0 and device["cloud_share"] == pytest.approx(1 / 3)
    assert device["first_seen"] and device["last_seen"]


def test_health_and_the_openapi_document_are_served(server):
    assert httpx.get(f"{server.url}/v1/health", timeout=10).json() == {"status": "ok"}
    paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/telemetry", "/v1/devices", "/v1/health"} <= set(paths)


def test_add_device_twice_and_serve_without_an_operator_token_are_one_line_errors(server, tmp_path: Path):
    name, _ = register_device(server)
    again = run_cli("fleet", "add-device", name, "--db", str(server.db), timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already registered" in again.stderr
    no_token = run_cli("fleet", "serve", "--db", str(tmp_path / "f.db"), "--port", "1",
                       env={"EDGETUNE_FLEET_OPERATOR_TOKEN": ""}, timeout=60)
    assert no_token.returncode == 1 and "EDGETUNE_FLEET_OPERATOR_TOKEN" in no_token.stderr
    assert "Traceback" not in no_token.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["\ud800", "a\udfff", "é"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
fuzzed_records = st.fixed_dictionaries(
    {"key": json_values | st.text(min_size=1, max_size=30), "kind": st.sampled_from(["run", "tuning", "x"]),
     "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", 3]),
     "data": st.sampled_from([run_record("k")["data"], tuning_record("k")["data"]]).flatmap(
         lambda base: st.dictionaries(st.sampled_from(sorted(base)), json_values, max_size=3).map(
             lambda changes: {**base, **changes}))})
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(fuzzed_records | json_values, max_size=5).map(
        lambda records: json.dumps({"fingerprint": "fp-fuzz", "profile": {}, "records": records}).encode()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, compress=st.booleans())
def test_random_bodies_never_get_a_5xx(server, fuzz_token, body, compress):
    answer = post(server, fuzz_token, [], body=body, compress=compress)
    assert answer.status_code < 500, answer.text
    assert answer.status_code == 200 or "error" in answer.json()


@pytest.fixture(scope="module")
def fuzz_token(server) -> str:
    return register_device(server)[1]


def test_text_that_is_not_utf8_is_rejected_not_a_server_error(server):
    name, token = register_device(server)
    record = json.dumps(run_record("run:ok")).replace('"run:ok"', '"run:\\ud800"').replace('"gemm"', '"g\\udfff"')
    good = json.dumps(run_record("run:ok"))
    body = f'{{"fingerprint": "fp", "profile": {{"x": "\\ud800"}}, "records": [{record}, {good}]}}'
    answer = post(server, token, [], body=body.encode())
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert "UTF-8" in answer.json()["rejected"][0]["reason"]
    bad_fingerprint = post(server, token, [], body=b'{"fingerprint": "\\udfff", "profile": {}, "records": []}')
    assert bad_fingerprint.status_code == 400
    assert [r["key"] for r in stored(server, name)] == ["run:ok"]


def test_a_resend_whose_profile_changed_is_still_the_same_batch(server):
    name, token = register_device(server)
    records = [run_record("run:p1")]
    first = post(server, token, records, key="batch-profile")
    changed = json.dumps({"fingerprint": "fp-1", "profile": {"cores": 4}, "records": records}).encode()
    again = post(server, token, [], key="batch-profile", body=changed)
    assert again.status_code == 200 and again.json() == first.json()
    assert len(stored(server, name)) == 1


def test_concurrent_resends_of_one_batch_store_it_once(server):
    name, token = register_device(server)
    records = [run_record(f"run:c{i}") for i in range(40)]
    with ThreadPoolExecutor(8) as pool:  # the same batch eight times at once, and overlapping batches under new keys
        same = list(pool.map(lambda _: post(server, token, records, key="batch-concurrent"), range(8)))
        overlapping = list(pool.map(lambda i: post(server, token, records[i * 10:i * 10 + 20]), range(3)))
    assert {a.status_code for a in same + overlapping} == {200}
    assert all(a.json() == same[0].json() for a in same)
    accepted = same[0].json()["accepted"] + sum(a.json()["accepted"] for a in overlapping)
    assert accepted == 40
    assert sorted(r["key"] for r in stored(server, name)) == sorted(r["key"] for r in records)


def test_database_urls_choose_the_backend_and_never_show_a_password(tmp_path: Path):
    assert redact_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgres://u@h/db?sslmode=require&password=abc") == "postgres://u@h/db?sslmode=require&password=***"
    assert redact_url("postgresql://u:secret@[::1/db", "bad URI postgresql://u:secret@[::1/db") == \
        "bad URI postgresql://u:***@[::1/db"
    FleetStore(f"sqlite:///{tmp_path}/by-url.db").add_device("one")
    assert (tmp_path / "by-url.db").exists()
    for bad in ("mysql://u:secret@h/db", "sqlite://host/db"):
        with pytest.raises(FleetError) as caught:
            FleetStore(bad)
        assert "secret" not in str(caught.value)


@pytest.mark.parametrize("url", ["postgresql://u:hunter2-pw@127.0.0.1:1/fleet", "postgresql://u:hunter2-pw@[::1/x",
                                 "postgresql://u:hunter2-pw@127.0.0.1:port/x", "oracle://u:hunter2-pw@h/x"])
def test_a_bad_or_unreachable_database_url_is_a_one_line_error_without_the_password(url):
    for args in (("fleet", "add-device", "dev"), ("fleet", "serve", "--port", "1")):
        done = run_cli(*args, "--db", url, env={"EDGETUNE_FLEET_OPERATOR_TOKEN": "t"}, timeout=60)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_a_postgresql_error_never_shows_the_password(postgres_cluster):
    url = postgres_cluster.url("no_such_database").replace("edgetune@", "edgetune:hunter2-pw@")
    done = run_cli("fleet", "add-device", "dev", "--db", url, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "no_such_database" in done.stderr and "hunter2" not in done.stderr and "***" in done.stderr


def test_a_database_that_goes_away_is_a_503_with_retry_after_not_a_crash(postgres_cluster):
    import psycopg

    url = postgres_cluster.new_database()
    fleet = FleetServer(url).start()
    try:
        name, token = register_device(fleet)
        assert post(fleet, token, [run_record(f"run:{name}:1")]).status_code == 200
        database = url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_cluster.url(), autocommit=True) as conn:
            conn.execute(f"drop database {database} with (force)")
        answer = post(fleet, token, [run_record(f"run:{name}:2")])
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5" and "retry later" in answer.json()["error"]
        assert httpx.get(f"{fleet.url}/v1/health", timeout=10).status_code == 200  # the service itself is up
    finally:
        fleet.kill()
