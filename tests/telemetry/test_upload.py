"""``edgetune upload`` from a real store file to the real fleet service: exact counts through failures."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.store import Store
from harness.fleet_server import FleetServer, Proxy, child_env, register_device
from tests.conftest import FLEET_BACKENDS, ROOT, run_cli
from tests.helpers import FINGERPRINT, counts, fill, local_keys, upload, upload_env

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds

def test_upload_sends_runs_and_tunings_once_and_the_fleet_counts_them_exactly(server, tmp_path):
    name, token = register_device(server)
    db = tmp_path / "device.db"
    fill(db, tunings=2, runs=3)
    result = upload(db, server.url, token, "--batch", "3")
    assert result == {"batches": 3, "sent": 8, "accepted": 8, "duplicates": 0, "rejected": 0, "dead_lettered": 0,
                      "deferred": 0, "remaining": 0}
    records = server.all_records(device=name)
    assert {r["key"] for r in records} == local_keys(db) and len(records) == 8
    assert sorted(r["kind"] for r in records).count("tuning") == 2
    run = next(r for r in records if r["kind"] == "run")
    assert run["data"]["config"]["BM"] in (16, 17, 18) and run["data"]["samples"] == [0.001, 0.002]
    assert upload(db, server.url, token)["sent"] == 0  # nothing left to send
    fill(db, tunings=1, runs=1)
    assert upload(db, server.url, token)["accepted"] == 2
    assert len(server.all_records(device=name)) == 10 and counts(db) == {"outbox": 0, "dead_letter": 0}
    with server.operator() as client:
        device = next(d for d in client.get("/v1/devices").json()["devices"] if d["name"] == name)
    assert device["fingerprint"] == FINGERPRINT and device["profile"]["cores"] == 2
    assert device["tunings"] == 3 and device["kernels_tuned"] == 2 and device["cloud_share"] == 0.0


def test_a_restored_outbox_sent_in_other_batches_is_counted_as_duplicates(server, tmp_path):
    name, token = register_device(server)
    db, backup = tmp_path / "device.db", tmp_path / "backup.db"
    fill(db, tunings=2, runs=4)
    with Store.open(db) as store:
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db, backup)
    assert upload(db, server.url, token, "--batch", "4")["accepted"] == 10
    shutil.copy(backup, db)  # the device lost its acknowledgements: everything is sent again, in other batches
    again = upload(db, server.url, token, "--batch", "3")
    assert again["accepted"] == 0 and again["duplicates"] == 10
    assert len(server.all_records(device=name)) == 10


def test_records_the_fleet_rejects_go_to_dead_letter_and_the_rest_arrive(server, tmp_path):
    name, token = register_device(server)
    db = tmp_path / "device.db"
    fill(db, tunings=1, runs=2)
    fill(db, tunings=1, runs=1, config={"BM": 1.5}, samples=(0.1,), median_s=0.1)  # a float parameter value
    fill(db, tunings=1, runs=1, device="x" * 300)  # a fingerprint the fleet refuses: the whole batch is a 400
    result = upload(db, server.url, token)
    assert result["accepted"] == 4 and result["rejected"] == 1 and result["dead_lettered"] == 3
    with Store.open(db) as store:
        dead = {row["key"].split(":")[0]: row["reason"] for row in store.db["dead_letter"].rows}
        reasons = [row["reason"] for row in store.db["dead_letter"].rows]
        assert store.count("outbox") == 0
    assert any("data.config" in r for r in reasons) and sum("HTTP 400" in r and "fingerprint" in r
                                                            for r in reasons) == 2
    assert set(dead) == {"run", "tuning"}
    assert len(server.all_records(device=name)) == 4
    assert upload(db, server.url, token)["sent"] == 0  # dead letters are never resent


@pytest.mark.parametrize("mode", ["429-once", "503-once"])
def test_retry_after_is_honoured(server, tmp_path, mode):
    name, token = register_device(server)
    db = tmp_path / "device.db"
    fill(db, tunings=1, runs=2)
    proxy = Proxy(server.url, mode)
    try:
        assert upload(db, proxy.url, token)["accepted"] == 3
        posts = proxy.stats()["posts"]
    finally:
        proxy.close()
    assert [p["status"] for p in posts] == [int(mode[:3]), 200]
    assert posts[1]["at"] - posts[0]["at"] >= 0.95  # Retry-After: 1 (the first backoff is at most 0.5 s)
    assert len(server.all_records(device=name)) == 3


def test_no_fleet_configured_touches_nothing_and_a_bad_config_is_one_line(tmp_path):
    db = tmp_path / "never.db"
    config = tmp_path / "config.toml"
    env = {"EDGETUNE_DB": str(db), "EDGETUNE_FLEET_URL": "", "EDGETUNE_FLEET_TOKEN": "",
           "EDGETUNE_CONFIG": str(config)}
    done = run_cli("upload", env=env, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("no fleet configured (") and not db.exists()
    config.write_text("[fleet]\nurl = 'http://127.0.0.1:1'\n")
    config.write_text("[fleet\nurl = ")
    bad = run_cli("upload", env=env, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "not valid TOML" in bad.stderr
    config.write_text("[fleet]\nurl = 'http://127.0.0.1:1'\n")
    no_token = run_cli("upload", env=env, timeout=60)
    assert no_token.returncode == 1 and "token" in no_token.stderr and not db.exists()


def test_the_config_file_names_the_fleet_and_a_wrong_token_keeps_the_outbox(server, tmp_path):
    name, token = register_device(server)
    db = tmp_path / "device.db"
    fill(db, tunings=1, runs=1)
    config = tmp_path / "config.toml"
    config.write_text(f"[fleet]\nurl = '{server.url}'\ntoken = 'wrong'\n")
    env = {"EDGETUNE_DB": str(db), "EDGETUNE_CONFIG": str(config), "EDGETUNE_FLEET_URL": "",
           "EDGETUNE_FLEET_TOKEN": ""}
    refused = run_cli("upload", env=env, timeout=60)
    assert refused.returncode == 1 and "401" in refused.stderr and refused.stderr.count("\n") == 1
    assert counts(db) == {"outbox": 2, "dead_letter": 0}
    config.write_text(f"[fleet]\nurl = '{server.url}'\ntoken = '{token}'\n")
    assert run_cli("upload", env=env, timeout=60).returncode == 0
    assert len(server.all_records(device=name)) == 2 and counts(db)["outbox"] == 0


def start_upload(db: Path, url: str, token: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "upload", *args], cwd=ROOT,
                            env=child_env(**upload_env(db, url, token)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("backend", FLEET_BACKENDS)
def test_the_fleet_killed_and_restarted_mid_upload_ends_with_an_exact_count(tmp_path, new_fleet_db, backend):
    fleet = FleetServer(new_fleet_db(backend)).start()
    try:
        name, token = register_device(fleet)
        db = tmp_path / "device.db"
        fill(db, tunings=10, runs=59)  # 600 records in 120 batches
        uploader = start_upload(db, fleet.url, token, "--batch", "5")
        deadline = time.monotonic() + 60
        while not fleet.all_records(device=name) and time.monotonic() < deadline:
            time.sleep(0.02)
        fleet.kill(signal.SIGKILL)
        assert uploader.poll() is None, "the upload finished before the fleet was killed"
        time.sleep(1.0)
        fleet.start()
        assert uploader.wait(timeout=120) == 0, uploader.stderr.read() if uploader.stderr else ""
        records = fleet.all_records(device=name)
        assert len(records) == 600 and {r["key"] for r in records} == local_keys(db)
        assert counts(db) == {"outbox": 0, "dead_letter": 0}
    finally:
        fleet.kill()


def test_the_uploader_killed_at_random_moments_loses_and_duplicates_nothing(server, tmp_path):
    name, token = register_device(server)
    db = tmp_path / "device.db"
    fill(db, tunings=10, runs=29)  # 300 records
    proxy = Proxy(server.url, "slow", delay=0.03)
    rng = random.Random(7)
    kills = 0
    try:
        for _ in range(8):
            uploader = start_upload(db, proxy.url, token, "--batch", "7")
            time.sleep(rng.uniform(0.3, 2.0))
            if uploader.poll() is not None:
                break
            uploader.send_signal(signal.SIGKILL)
            uploader.wait(timeout=10)
            kills += 1
        if uploader.stderr:
            uploader.stderr.close()
        upload(db, proxy.url, token, "--batch", "7")
    finally:
        proxy.close()
    assert kills >= 3
    records = server.all_records(device=name)
    assert len(records) == 300 and {r["key"] for r in records} == local_keys(db)
    assert counts(db) == {"outbox": 0, "dead_letter": 0}
