"""Reading the fleet back out: ``GET /v1/telemetry/export`` and ``edgetune fleet pull`` / ``train --from-fleet``.

A real fleet service (SQLite and PostgreSQL) as a child process; records go in through the real endpoint.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.dataset import read_dataset
from agent.fleet.pull import PullError, pull_dataset
from agent.interchange.t4 import read_t4
from harness.fleet_server import OPERATOR_TOKEN, FleetServer, free_port, register_device
from tests.conftest import run_cli
from tests.helpers import run_record, tuning_record


@pytest.fixture(scope="module")
def server(fleet_db: str) -> Iterator[FleetServer]:
    """The fleet service on SQLite and on PostgreSQL (``fleet_db`` is parametrized over both)."""
    fleet = FleetServer(fleet_db).start()
    yield fleet
    fleet.kill()


CPU_DATASET = Path(__file__).resolve().parents[2] / "models" / "data" / "cpu-epyc-avx512-2026-11-25"
PROFILE = {"name": "test board", "logical_cores": 4, "physical_cores": 4}


def send(server: FleetServer, token: str, fingerprint: str, records: list[dict[str, Any]]) -> None:
    body = {"fingerprint": fingerprint, "profile": PROFILE, "records": records}
    answer = httpx.post(f"{server.url}/v1/telemetry", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 200 and answer.json()["accepted"] == len(records), answer.text


def device_with_runs(server: FleetServer) -> tuple[str, str, list[dict[str, Any]]]:
    """A new device with 4 runs (2 correct, 1 compile error, 1 final-phase) and 1 tuning: (name, fingerprint, runs)."""
    name, token = register_device(server)
    fingerprint = f"fp-{name}"
    runs = [run_record(f"run:{name}:1", config={"BM": 16, "LOOP": "ijk"}, median_s=0.002, samples=[0.002, 0.0021]),
            run_record(f"run:{name}:2", config={"BM": 32, "LOOP": "ikj"}, median_s=0.001, samples=[0.001]),
            run_record(f"run:{name}:3", config={"BM": 64, "LOOP": "ijk"}, status="compile", reason="bad, \"x\"",
                       median_s=None, samples=[], compile_s=None),
            run_record(f"run:{name}:4", config={"BM": 32, "LOOP": "ikj"}, phase="final", median_s=0.0011)]
    send(server, token, fingerprint, [*runs, tuning_record(f"tuning:{name}:1")])
    return name, fingerprint, runs


def export(server: FleetServer, fmt: str, **params: str) -> httpx.Response:
    with server.operator() as client:
        return client.get("/v1/telemetry/export", params={"format": fmt, **params})


@pytest.mark.slow
def test_jsonl_export_is_every_record_of_the_device_in_cursor_order(server):
    name, _, runs = device_with_runs(server)
    answer = export(server, "jsonl", device=name)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [r["key"] for r in lines] == [*(r["key"] for r in runs), f"tuning:{name}:1"]
    assert [r["data"] for r in lines[:4]] == [r["data"] for r in runs]
    assert lines == server.all_records(device=name)  # the same records GET /v1/telemetry pages through


@pytest.mark.slow
def test_csv_export_is_one_row_per_run_with_the_config_as_json(server):
    name, _, runs = device_with_runs(server)
    answer = export(server, "csv", device=name)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 4 and [r["key"] for r in rows] == [r["key"] for r in runs]
    assert [json.loads(r["config"]) for r in rows] == [r["data"]["config"] for r in runs]
    assert [json.loads(r["samples"]) for r in rows] == [r["data"]["samples"] for r in runs]
    assert [r["median_s"] for r in rows] == ["0.002", "0.001", "", "0.0011"]
    assert [r["status"] for r in rows] == ["correct", "correct", "compile", "correct"]
    assert rows[2]["reason"] == 'bad, "x"' and {r["device"] for r in rows} == {name}


@pytest.mark.slow
def test_t4_export_reads_back_with_the_interchange_reader(server, tmp_path):
    name, fingerprint, runs = device_with_runs(server)
    answer = export(server, "t4", device=name, kernel="gemm")
    assert answer.status_code == 200
    document = answer.json()
    assert document["metadata"]["runs"] == 4 and document["metadata"]["kernel"] == "gemm"
    batch = read_t4(tmp_path / "fleet.json", document)
    assert batch.kernel == "gemm" and batch.shape == {"M": 64, "N": 64, "K": 64} and batch.device == fingerprint
    assert batch.device_profile == PROFILE and batch.target == "native" and batch.kernel_key == "gemm-1"
    assert [r.config for r in batch.runs] == [r["data"]["config"] for r in runs]
    assert [r.status for r in batch.runs] == ["correct", "correct", "compile", "correct"]
    assert [r.time_s for r in batch.runs] == [0.002, 0.001, None, 0.0011]
    assert [r.samples for r in batch.runs] == [(0.002, 0.0021), (0.001,), (), (0.001, 0.0011)]


@pytest.mark.slow
def test_export_filters_and_bad_requests(server):
    name, _, _ = device_with_runs(server)
    assert export(server, "jsonl", device=name, kernel="conv2d").text == ""
    assert export(server, "csv", device="no-such-device").text.splitlines()[0].startswith("cursor,device,key")
    empty = export(server, "t4", device="no-such-device").json()
    assert empty["results"] == [] and empty["metadata"]["runs"] == 0
    last = server.all_records(device=name)[-2]["cursor"]  # after the 4th run: only the tuning is left
    assert [json.loads(x)["kind"] for x in export(server, "jsonl", device=name, since=last).text.splitlines()] == \
        ["tuning"]
    bad = export(server, "xml")
    assert bad.status_code == 400 and "unknown export format" in bad.json()["error"]
    assert httpx.get(f"{server.url}/v1/telemetry/export", timeout=10).status_code == 401
    _, device_token = register_device(server)
    refused = httpx.get(f"{server.url}/v1/telemetry/export", headers={"Authorization": f"Bearer {device_token}"},
                        timeout=10)
    assert refused.status_code == 403


def pull_env(token: str = OPERATOR_TOKEN) -> dict[str, str]:
    return {"EDGETUNE_FLEET_OPERATOR_TOKEN": token}


@pytest.mark.slow
def test_fleet_pull_writes_a_dataset_that_reads_back_with_exact_counts(server, tmp_path):
    name, fingerprint, runs = device_with_runs(server)
    out = tmp_path / "pulled"
    done = run_cli("fleet", "pull", server.url, "-o", str(out), "--device", name, "--json", env=pull_env(),
                   timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["records"] == 3
    dataset = read_dataset(out)  # checks the SHA-256 and every record
    assert [(r["config"], r["status"], r["time_s"]) for r in dataset.records] == [
        (r["data"]["config"], r["data"]["status"], r["data"]["median_s"]) for r in runs[:3]]
    assert {r["device"] for r in dataset.records} == {fingerprint} and {r["cores"] for r in dataset.records} == {4}
    assert dataset.records[0]["shape"] == {"M": 64, "N": 64, "K": 64}
    assert list(dataset.cases()) == [f"{fingerprint}/gemm-1/M=64,N=64,K=64/native/4"]
    assert dataset.manifest["devices"] == {fingerprint: PROFILE}
    assert dataset.manifest["kernels"]["gemm-1"]["space"]["params"]  # the built-in gemm's space
    assert dataset.manifest["counts"]["by_status"] == {"compile": 1, "correct": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["pulled"]  # no temporary folder left


@pytest.mark.slow
def test_train_from_fleet_pull_only_pulls_every_search_run_and_replaces_an_older_dataset(server, tmp_path):
    device_with_runs(server)
    out = tmp_path / "fleet-data"
    for _ in range(2):  # the second pull replaces the first dataset
        done = run_cli("train", "--from-fleet", server.url, "--pull-only", str(out), env=pull_env(), timeout=120)
        assert done.returncode == 0, done.stderr
    expected = [r for r in server.all_records() if r["kind"] == "run" and r["data"]["phase"] == "search"
                and not (r["data"]["status"] == "correct" and not r["data"]["median_s"])]
    dataset = read_dataset(out)
    assert len(dataset.records) == len(expected) == dataset.manifest["counts"]["records"]
    assert f"{len(expected)} records" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet-data"]


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["bad token", "dead server"])
def test_a_refused_or_unreachable_fleet_is_one_line_exit_1_and_leaves_nothing(server, tmp_path, problem):
    url = server.url if problem == "bad token" else f"http://127.0.0.1:{free_port()}"
    token = "not-the-operator-token" if problem == "bad token" else OPERATOR_TOKEN
    for args in (["fleet", "pull", url, "-o", str(tmp_path / "out")],
                 ["train", "--from-fleet", url, "--pull-only", str(tmp_path / "out")]):
        done = run_cli(*args, env=pull_env(token), timeout=120)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("edgetune: error: ")
        assert ("401" in done.stderr) if problem == "bad token" else ("cannot reach the fleet" in done.stderr)
        assert OPERATOR_TOKEN not in done.stderr and "not-the-operator-token" not in done.stderr
        assert list(tmp_path.iterdir()) == []


def test_a_missing_token_is_one_line_and_pull_only_needs_from_fleet(tmp_path):
    done = run_cli("fleet", "pull", "http://127.0.0.1:9", "-o", str(tmp_path / "out"),
                   env={"EDGETUNE_FLEET_OPERATOR_TOKEN": ""}, timeout=60)
    assert done.returncode == 1 and "EDGETUNE_FLEET_OPERATOR_TOKEN" in done.stderr and done.stderr.count("\n") == 1
    assert run_cli("train", "--pull-only", str(tmp_path / "out"), timeout=60).returncode == 2
    assert list(tmp_path.iterdir()) == []


def _fake_fleet(pages: list[Any]) -> httpx.Client:
    """A client whose fleet answers /v1/devices, then the given /v1/telemetry pages in order."""
    answers = iter(pages)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/devices":
            return httpx.Response(200, json={"devices": [{"name": "d", "fingerprint": "fp", "profile": PROFILE}]})
        page = next(answers)
        return httpx.Response(200, content=page) if isinstance(page, bytes) else httpx.Response(200, json=page)

    return httpx.Client(transport=httpx.MockTransport(handle))


GOOD = {"cursor": "1", "device": "d", "key": "k1", "kind": "run", "created_at": "2026-01-01T00:00:00Z",
        "received_at": "2026-01-01T00:00:00Z", "data": run_record("k1")["data"]}


@pytest.mark.parametrize(("pages", "why"), [
    ([b"<html>"], "not JSON"),
    ([{"records": "no"}], "malformed page"),
    ([{"records": [GOOD], "next": "0"}], "does not move past"),
    ([{"records": [GOOD], "next": "5"}, {"records": [{**GOOD, "data": {"phase": "search"}}], "next": None}],
     "malformed page"),
    ([{"records": [{**GOOD, "data": {**GOOD["data"], "shape": "M=x"}}], "next": None}], "malformed page"),
])
def test_malformed_pages_are_one_error_and_no_partial_dataset(tmp_path, pages, why):
    out = tmp_path / "out"
    with pytest.raises(PullError, match=why) as caught, _fake_fleet(pages) as client:
        pull_dataset("http://fleet", OPERATOR_TOKEN, out, client=client)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_dataset_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PullError, match="not an empty folder or a dataset"), _fake_fleet([]) as client:
        pull_dataset("http://fleet", OPERATOR_TOKEN, out, client=client)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "notes.txt").read_text() == "mine"


def test_a_good_fake_page_gives_one_record(tmp_path: Path):
    with _fake_fleet([{"records": [GOOD], "next": None}]) as client:
        manifest = pull_dataset("http://fleet", OPERATOR_TOKEN, tmp_path / "out", client=client)
    assert manifest["counts"]["records"] == 1 and read_dataset(tmp_path / "out").records[0]["device"] == "fp"


@pytest.mark.slow
def test_train_from_fleet_trains_a_smoke_model_on_the_pulled_runs(new_fleet_db, tmp_path):
    committed = read_dataset(CPU_DATASET)
    case = next(records for records in committed.cases().values() if records[0]["kernel"] == "gemv"
                and sum(r["status"] == "correct" for r in records) >= 4)[:12]
    fingerprint = case[0]["device"]
    fleet = FleetServer(new_fleet_db("sqlite")).start()
    try:
        name, token = register_device(fleet)
        shape = ",".join(f"{k}={v}" for k, v in case[0]["shape"].items())
        runs = [run_record(f"run:{name}:{i}", kernel="gemv", kernel_key=r["kernel_key"], shape=shape,
                           target=r["target"], config=r["config"], status=r["status"], median_s=r["time_s"],
                           samples=[]) for i, r in enumerate(case)]
        body = {"fingerprint": fingerprint, "profile": committed.manifest["devices"][fingerprint], "records": runs}
        answer = httpx.post(f"{fleet.url}/v1/telemetry", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
        assert answer.json()["accepted"] == len(runs)
        out = tmp_path / "models"
        done = run_cli("train", "--from-fleet", fleet.url, "-o", str(out), "--smoke", "--no-card", "--threads", "1",
                       "--json", env=pull_env(), timeout=300)
    finally:
        fleet.kill()
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "edgetune-student-q4_0.gguf").is_file() and json.loads(done.stdout)
