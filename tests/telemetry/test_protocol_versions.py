"""Telemetry across versions: a device ahead of its fleet loses nothing, and an old device still uploads.

Real processes on loopback: ``edgetune fleet serve`` (protocol 2) and, after the "upgrade", the same
database served by ``harness/newer_fleet.py`` (protocol 3, a ``power`` record kind). The device is a
real store file and ``edgetune upload``; its newer records are written to the outbox the way the
next release would (an extra data field, a new kind).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.telemetry.record import PROTOCOL, PROTOCOLS
from harness.fleet_server import FleetServer, register_device
from harness.newer_fleet import NEWER_PROTOCOL
from tests.conftest import FLEET_BACKENDS
from tests.helpers import FINGERPRINT, counts, fill, run_record, tuning_record, upload

NEWER_RUN = f"run:{FINGERPRINT}:next-release:1"
POWER = f"power:{FINGERPRINT}:next-release:1"


def write_like_a_newer_release(db: Path) -> None:
    """Two outbox records of the next release: a run with a field this one lacks, and a new kind."""
    run = {**run_record(NEWER_RUN), "key": NEWER_RUN}
    run["data"] = {**run["data"], "backend": "c", "power_w": 4.5}
    power = {"key": POWER, "kind": "power", "created_at": "2026-01-02T03:04:05Z",
             "data": {"kernel": "gemm", "shape": "M=64", "watts": 3.25}}
    with sqlite3.connect(db) as conn:
        for record in (run, power):
            conn.execute("insert into outbox (key, kind, device, payload, created_at) values (?, ?, ?, ?, ?)",
                         [record["key"], record["kind"], FINGERPRINT, json.dumps(record), record["created_at"]])


def outbox(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("select key, deferrals, retry_at, deferred_reason from outbox")]


@pytest.mark.parametrize("backend", FLEET_BACKENDS)
def test_a_newer_device_loses_nothing_on_an_older_fleet_and_delivers_after_the_upgrade(tmp_path, new_fleet_db,
                                                                                       backend):
    fleet = FleetServer(new_fleet_db(backend)).start()
    try:
        name, token = register_device(fleet)
        db = tmp_path / "device.db"
        fill(db, tunings=1, runs=2)  # three records of this release
        write_like_a_newer_release(db)
        first = upload(db, fleet.url, token)
        assert first["accepted"] == 4 and first["deferred"] == 1 and first["rejected"] == 0
        assert first["dead_lettered"] == 0 and first["remaining"] == 1
        kept = {r["key"]: r for r in fleet.all_records(device=name)}
        assert kept[NEWER_RUN]["extra"] == {"data": {"power_w": 4.5}} and "power_w" not in kept[NEWER_RUN]["data"]
        assert all("extra" not in r for key, r in kept.items() if key != NEWER_RUN)
        with fleet.operator() as client:
            lines = client.get("/v1/telemetry/export", params={"format": "jsonl", "device": name}).text.splitlines()
            rows = list(csv.DictReader(io.StringIO(
                client.get("/v1/telemetry/export", params={"format": "csv", "device": name}).text)))
        assert {"power_w": 4.5} in [json.loads(line).get("extra", {}).get("data") for line in lines]
        assert len(rows) == 3 and {row["backend"] for row in rows} == {"c"}
        [waiting] = outbox(db)
        assert waiting["key"] == POWER and waiting["deferrals"] == 1 and "'power'" in waiting["deferred_reason"]
        assert counts(db) == {"outbox": 1, "dead_letter": 0}
        assert upload(db, fleet.url, token)["sent"] == 0  # it waits (backoff) instead of hammering the fleet

        fleet.kill()
        fleet = FleetServer(fleet.db, fleet.port, newer=True).start()  # the fleet is upgraded
        with sqlite3.connect(db) as conn:  # ... and the backoff has passed
            conn.execute("update outbox set retry_at = '2000-01-01T00:00:00.000+00:00'")
        after = upload(db, fleet.url, token)
        assert after["accepted"] == 1 and after["deferred"] == 0 and after["remaining"] == 0
        power = next(r for r in fleet.all_records(device=name) if r["key"] == POWER)
        assert power["kind"] == "power" and power["data"] == {"kernel": "gemm", "shape": "M=64", "watts": 3.25}
        assert counts(db) == {"outbox": 0, "dead_letter": 0}
        assert len(fleet.all_records(device=name)) == 5
    finally:
        fleet.kill()


def post(fleet: FleetServer, token: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return httpx.post(f"{fleet.url}/v1/telemetry", content=json.dumps(body).encode(), timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key or uuid.uuid4().hex,
                               "Content-Type": "application/json"})


def test_envelope_versions_old_current_and_newer(tmp_path):
    fleet = FleetServer(tmp_path / "fleet.db").start()
    try:
        name, token = register_device(fleet)
        assert httpx.get(f"{fleet.url}/v1/protocol", timeout=10).json() == {"protocols": list(PROTOCOLS),
                                                                              "kinds": ["run", "tuning"]}
        # Today's devices: no "protocol", no "backend"; version 1's answer, as before.
        old = post(fleet, token, {"fingerprint": "fp", "profile": {}, "records": [run_record("run:v1")]})
        assert old.status_code == 200 and old.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        # Version 2 requires what it added.
        current = post(fleet, token, {"protocol": PROTOCOL, "fingerprint": "fp", "profile": {},
                                      "records": [run_record("run:v2"), run_record("run:v2-c", backend="c")]})
        assert current.json()["accepted"] == 1 and current.json()["deferred"] == []
        assert current.json()["rejected"] == [{"key": "run:v2", "reason": "data lacks backend"}]
        assert current.json()["protocols"] == list(PROTOCOLS)
        for bad in (0, "2", True):
            answer = post(fleet, token, {"protocol": bad, "fingerprint": "fp", "profile": {}, "records": []})
            assert answer.status_code == 400 and "protocol must be an integer" in answer.json()["error"]
        # A newer envelope: nothing stored, nothing remembered, every record deferred.
        newer = {"protocol": NEWER_PROTOCOL, "fingerprint": "fp", "profile": {}, "future": True,
                 "records": [run_record("run:v3", backend="c")]}
        deferred = post(fleet, token, newer, key="batch-newer-envelope")
        assert deferred.status_code == 200 and deferred.json()["accepted"] == 0
        assert [d["key"] for d in deferred.json()["deferred"]] == ["run:v3"]
        assert f"protocol {NEWER_PROTOCOL} is newer" in deferred.json()["deferred"][0]["reason"]
        fleet.kill()
        fleet = FleetServer(fleet.db, fleet.port, newer=True).start()
        # The same batch, same Idempotency-Key, after the upgrade: judged afresh, not the old answer.
        newer.pop("future")
        again = post(fleet, token, newer, key="batch-newer-envelope")
        assert again.json()["accepted"] == 1 and again.json()["protocols"] == [*PROTOCOLS, NEWER_PROTOCOL]
        assert sorted(r["key"] for r in fleet.all_records(device=name)) == ["run:v1", "run:v2-c", "run:v3"]
    finally:
        fleet.kill()


def test_the_store_sends_exactly_the_record_the_fleet_checks(store):
    """One definition: what the outbox holds is what the fleet's validator accepts, with nothing left over."""
    from agent.fleet.protocol import Acceptance, check_record
    from agent.store import RunRecord
    from agent.telemetry.record import KINDS

    store.upsert_device("dev", {})
    store.upsert_kernel("k-1", "k", "hash", {"params": []}, "tests")
    tuning = store.start_tuning(device="dev", kernel_key="k-1", kernel="k", shape="N=1", target="native",
                                compiler="cc 12", strategy="random", budget="10", seed=0)
    run_id = store.add_run(RunRecord(tuning_id=tuning, device="dev", kernel_key="k-1", kernel="k", shape="N=1",
                                     config={"A": 1}, target="native", compiler="cc 12", flags=(), strategy="random",
                                     status="correct", samples=(1.0,), median_s=1.0))
    store.finish_tuning(tuning, evaluations=1, wall_s=0.5, winner_run=run_id, winner_config={"A": 1},
                        winner_median_s=1.0, default_median_s=1.0, speedup=1.0, tie=False)
    for row in store.outbox_batch(10):
        record = row["payload"]
        assert set(record["data"]) == {f.name for f in KINDS[record["kind"]]}
        verdict = check_record(record, protocol=PROTOCOL, acceptance=Acceptance())
        assert (verdict.outcome, verdict.extra, verdict.data) == ("accept", None, record["data"])


def test_a_tuning_from_a_protocol_2_device_needs_no_policy_fields() -> None:
    # Devices from before the policy (protocol 2) send no situation or ranked_by; the fleet still takes them.
    from agent.fleet.protocol import Acceptance, check_record

    record = tuning_record("tuning:old:1", backend="c")
    for name in ("situation", "ranked_by"):
        record["data"].pop(name)
    assert check_record(record, protocol=2, acceptance=Acceptance()).outcome == "accept"
    verdict = check_record(record, protocol=PROTOCOL, acceptance=Acceptance())
    assert verdict.outcome != "accept" and "situation" in str(verdict.reason)
