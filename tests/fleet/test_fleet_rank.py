"""The fleet's POST /v1/rank as a real child process (``edgetune fleet serve``), asked by the device's own client."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.fleet.rank import TeacherRanker, answer_request
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import WIDEST_VECTOR_BITS, Space
from agent.predict.cloud import CloudClient, CloudSettings, merge_rankings
from agent.predict.rank_protocol import MAX_CANDIDATES, MAX_PROMPT, RankRequest, candidate_key, request_for
from agent.search.model_guided import ModelOptions
from agent.tuner import TuneOptions, tune
from harness.cloud_server import RankCase, Servers
from harness.fleet_server import OPERATOR_TOKEN, FleetServer, register_device
from tests.conftest import ROOT, run_cli
from tests.helpers import QUICK, model_folder

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds

KERNEL, SHAPE = "layernorm", "R=64,C=256"

TEACHER = ROOT / "models" / "edgetune-teacher-q8_0.gguf"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """The fleet service with its default ranking model (the shipped teacher)."""
    server = FleetServer(tmp_path_factory.mktemp("fleet-rank") / "fleet.db")
    server.serve_env["EDGETUNE_MODELS"] = str(ROOT / "models")
    yield server.start()
    server.kill()


@pytest.fixture(scope="module")
def device(fleet: FleetServer) -> tuple[str, str]:
    return register_device(fleet)


def client_for(server: FleetServer, token: str, timeout_s: float = 30.0) -> CloudClient:
    return CloudClient(CloudSettings(server.url, kind="fleet", token=token, timeout_s=timeout_s, retries=0))


def rank(server: FleetServer, token: str | None, body: Any = None, *, content: bytes | None = None,
         content_type: str = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/rank", content=data, headers=headers, timeout=60)


def rank_requests_of(server: FleetServer, name: str) -> int:
    with server.operator() as client:
        devices = client.get("/v1/devices").json()["devices"]
    return next(d["rank_requests"] for d in devices if d["name"] == name)


# --- the ok path ------------------------------------------------------------------------------------------------


def test_the_device_client_gets_the_teachers_ranking_and_the_ask_is_counted(fleet, device, case):
    name, token = device
    request = request_for(case.prompt, case.codec, case.configs, 8, kernel="gemm", shape=case.shape)
    assert len(case.configs) > 1000  # the whole valid space, as a device sends it
    before = rank_requests_of(fleet, name)
    client = client_for(fleet, token)
    answer = client.ask(request)
    assert answer is not None, client.last_error
    assert answer.dropped == 0 and answer.model == TEACHER.stem and len(answer.configs) == 8
    offered = {candidate_key(c) for c in case.configs}
    assert all(candidate_key(c) in offered for c in answer.configs)
    teacher = TeacherRanker(TEACHER, n_threads=1)
    try:
        expected = answer_request(teacher, request)  # what the service's code gives, in this process
    finally:
        teacher.close()
    assert answer.configs == expected.configs
    assert answer.probs == pytest.approx(expected.probs, rel=1e-4)
    local = [(c, -float(i)) for i, c in enumerate(case.configs[:10])]
    merged = merge_rankings(local, answer)
    assert {candidate_key(c) for c, _, _ in merged} >= {candidate_key(c) for c in answer.configs}
    assert rank_requests_of(fleet, name) == before + 1


def test_a_model_strategy_tuning_that_is_unsure_asks_the_fleet(fleet, device, store, profile, backend, cache_dir,
                                                                tmp_path):
    name, token = device
    before = rank_requests_of(fleet, name)
    unsure = model_folder(tmp_path / "unsure", threshold=1.0)
    problem = parse_shape(find_kernel(KERNEL), SHAPE)
    cloud = CloudSettings(url=fleet.url, kind="fleet", token=token, timeout_s=10.0)
    result = tune(problem, profile=profile, store=store, backend=backend, cache_dir=cache_dir,
                  options=TuneOptions(strategy="model", measure=QUICK, strategy_options=ModelOptions(
                      models=unsure, cloud=cloud, state_dir=tmp_path / "state")))
    assert result.cloud is not None and result.cloud.startswith("answered"), result.cloud
    assert TEACHER.stem in result.cloud and result.winner is not None
    assert store.tunings(limit=1)[0]["cloud"] == result.cloud
    assert rank_requests_of(fleet, name) == before + 1


# --- auth and bad input ----------------------------------------------------------------------------------------


def test_tokens_are_checked_and_roles_kept_apart(fleet, device, small):
    body = small.to_json()
    assert rank(fleet, None, body).status_code == 401
    wrong = rank(fleet, "not-a-token", body)
    assert wrong.status_code == 401 and "error" in wrong.json()
    operator = rank(fleet, OPERATOR_TOKEN, body)
    assert operator.status_code == 403 and "device token" in operator.json()["error"]
    ok = rank(fleet, device[1], body)
    assert ok.status_code == 200, ok.text
    assert {candidate_key(c) for c in ok.json()["configs"]} <= {candidate_key(c) for c in small.candidates}


def _too_many(small: RankRequest) -> dict[str, Any]:
    slots = [{"name": "A", "field": "tile#0", "values": list(range(65)), "tokens": [f"tile#0={v}" for v in range(65)]},
             {"name": "B", "field": "tile#1", "values": list(range(65)), "tokens": [f"tile#1={v}" for v in range(65)]}]
    candidates = [{"A": a, "B": b} for a, b in itertools.product(range(65), range(65))]
    assert len(candidates) > MAX_CANDIDATES
    return {**small.to_json(), "slots": slots, "candidates": candidates, "kernel": "mine"}


@pytest.mark.parametrize("problem", ["not-json", "a-list", "missing-k", "k-zero", "too-many-candidates",
                                     "prompt-too-long", "unknown-prompt-token", "unknown-slot-token",
                                     "another-vocabulary", "bad-digest", "repeated-candidate", "nan", "deep",
                                     "huge-integer", "partial-shape"])
def test_malformed_requests_are_a_400_with_a_reason(fleet, device, small, problem):
    body: Any = small.to_json()
    content = None
    if problem == "not-json":
        content = b"{not json"
    elif problem == "a-list":
        body = [body]
    elif problem == "missing-k":
        del body["k"]
    elif problem == "k-zero":
        body["k"] = 0
    elif problem == "too-many-candidates":
        body = _too_many(small)
    elif problem == "prompt-too-long":
        body["prompt"] = [body["prompt"][0]] * (MAX_PROMPT + 1)
    elif problem == "unknown-prompt-token":
        body["prompt"] = [*body["prompt"][:-1], "hw#0=never-seen"]
    elif problem == "unknown-slot-token":
        slot = body["slots"][0]
        slot["tokens"] = [*slot["tokens"][:-1], slot["field"] + "=never-seen"]
    elif problem == "another-vocabulary":
        body["vocab_version"] += 1
    elif problem == "bad-digest":
        body["vocab_digest"] = "0" * 64
    elif problem == "repeated-candidate":
        body["candidates"] = [*body["candidates"], body["candidates"][0]]
    elif problem == "nan":
        content = json.dumps(body).replace(f'"k": {small.k}', '"k": NaN').encode()
    elif problem == "huge-integer":
        slot = body["slots"][0]
        slot["values"] = [10**400, *slot["values"][1:]]
    elif problem == "partial-shape":
        body["shape"] = {"M": 256}
    elif problem == "deep":
        content = b"[" * 100_000 + b"]" * 100_000
    answer = rank(fleet, device[1], body, content=content)
    assert answer.status_code in (400, 413), answer.text
    assert answer.json()["error"]


def test_a_body_that_is_not_json_content_is_a_415(fleet, device, small):
    answer = rank(fleet, device[1], small.to_json(), content_type="text/plain")
    assert answer.status_code == 415 and "error" in answer.json()


def _invalid_configs(case: RankCase) -> list[dict[str, Any]]:
    """Configurations of the gemm parameters' values that break one of its constraints (even at 512 bits)."""
    widest = Space.build(case.space.problem, vector_bits=WIDEST_VECTOR_BITS)
    names = [p.name for p in case.space.params]
    found = []
    for values in itertools.product(*(p.values for p in case.space.params)):
        config = dict(zip(names, values, strict=True))
        if not widest.is_valid(config):
            found.append(config)
            if len(found) == 3:
                break
    assert found
    return found


def test_candidates_outside_the_kernels_space_are_never_answered(fleet, device, case, small):
    invalid = _invalid_configs(case)
    mixed = {**small.to_json(), "candidates": [*invalid, *small.candidates], "k": 64}
    answer = rank(fleet, device[1], mixed)
    assert answer.status_code == 200, answer.text
    answered = {candidate_key(c) for c in answer.json()["configs"]}
    assert answered == {candidate_key(c) for c in small.candidates}  # every valid one, no invalid one
    only_invalid = rank(fleet, device[1], {**mixed, "candidates": invalid})
    assert only_invalid.status_code == 400 and "space" in only_invalid.json()["error"]


def test_a_value_the_kernel_does_not_have_is_filtered_even_with_a_known_token(fleet, device, small):
    body = small.to_json()
    slot = body["slots"][0]
    slot["values"] = [*slot["values"], 999_983]
    slot["tokens"] = [*slot["tokens"], slot["tokens"][0]]  # a real token, lying about its value
    odd = {**body["candidates"][0], slot["name"]: 999_983}
    body["candidates"] = [odd, *body["candidates"]]
    body["k"] = 64
    answer = rank(fleet, device[1], body)
    assert answer.status_code == 200, answer.text
    assert all(c[slot["name"]] != 999_983 for c in answer.json()["configs"])
    renamed = small.to_json()
    old = renamed["slots"][0]["name"]
    renamed["slots"][0]["name"] = "NOT_A_PARAM"
    renamed["candidates"] = [{("NOT_A_PARAM" if k == old else k): v for k, v in c.items()}
                             for c in renamed["candidates"]]
    refused = rank(fleet, device[1], renamed)
    assert refused.status_code == 400 and "parameters" in refused.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
RANK_FIELDS = ["vocab_version", "vocab_digest", "prompt", "slots", "candidates", "k", "kernel", "shape"]


@st.composite
def fuzzed_bodies(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "mutated-inside"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    body = json.loads(json.dumps(base))
    if kind == "mutated":
        for field in draw(st.lists(st.sampled_from(RANK_FIELDS), min_size=1, max_size=3)):
            if draw(st.booleans()):
                body.pop(field, None)
            else:
                body[field] = draw(json_values)
    else:
        target = draw(st.sampled_from(["slots", "candidates", "prompt"]))
        items = body[target]
        i = draw(st.integers(0, len(items) - 1))
        if isinstance(items[i], dict):
            key = draw(st.sampled_from(sorted(items[i])))
            items[i][key] = draw(json_values | st.integers(-(2**70), 2**70))
        else:
            items[i] = draw(json_values)
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def fuzz_token(fleet: FleetServer) -> str:
    return register_device(fleet)[1]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bodies_never_get_a_5xx(fleet, fuzz_token, small, data):
    body = data.draw(fuzzed_bodies(small.to_json()))
    answer = rank(fleet, fuzz_token, content=body)
    assert answer.status_code < 500, answer.text
    assert "error" in answer.json() if answer.status_code != 200 else answer.json()["configs"]


# --- deadline, configuration, upstream -------------------------------------------------------------------------


def test_a_slow_model_answers_503_with_retry_after_instead_of_hanging(tmp_path, case):
    server = FleetServer(tmp_path / "fleet.db")
    server.serve_args += ["--teacher", str(TEACHER), "--rank-timeout", "0.05"]
    server.start()
    try:
        _, token = register_device(server)
        request = request_for(case.prompt, case.codec, case.configs, 8, kernel="gemm", shape=case.shape)
        answer = rank(server, token, request.to_json())
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) >= 1 and "error" in answer.json()
        assert httpx.get(f"{server.url}/v1/health", timeout=5).status_code == 200  # the loop still answers
    finally:
        server.kill()


def test_a_missing_teacher_or_both_rankers_are_one_line_errors(tmp_path):
    env = {"EDGETUNE_FLEET_OPERATOR_TOKEN": "x"}
    missing = run_cli("fleet", "serve", "--db", str(tmp_path / "f.db"), "--port", "1", "--teacher",
                      str(tmp_path / "nothing.gguf"), env=env, timeout=60)
    assert missing.returncode == 1 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    both = run_cli("fleet", "serve", "--db", str(tmp_path / "f.db"), "--port", "1", "--teacher", str(TEACHER),
                   "--rank-upstream", "http://127.0.0.1:9", env=env, timeout=60)
    assert both.returncode == 1 and "exclusive" in both.stderr


def test_without_a_teacher_file_rank_answers_503_and_telemetry_still_works(tmp_path, small):
    server = FleetServer(tmp_path / "fleet.db")
    server.serve_env["EDGETUNE_MODELS"] = str(tmp_path / "no-models")
    server.start()
    try:
        _, token = register_device(server)
        answer = rank(server, token, small.to_json())
        assert answer.status_code == 503 and "unavailable" in answer.json()["error"], answer.text
        assert int(answer.headers["retry-after"]) > 1
        with server.operator() as client:
            assert client.get("/v1/devices").status_code == 200
    finally:
        server.kill()


def test_with_rank_upstream_the_fleet_asks_an_openai_compatible_server(tmp_path, small):
    servers = Servers(TEACHER)
    server = FleetServer(tmp_path / "fleet.db")
    try:
        upstream = servers.start("ok", token="upstream-secret")
        server.serve_args += ["--rank-upstream", upstream, "--rank-upstream-model", "teacher-upstream"]
        server.serve_env["EDGETUNE_FLEET_UPSTREAM_TOKEN"] = "upstream-secret"
        server.start()
        _, token = register_device(server)
        client = client_for(server, token)
        answer = client.ask(small)
        assert answer is not None, client.last_error
        assert answer.model == TEACHER.stem  # the name the completions server gave
        assert {candidate_key(c) for c in answer.configs} <= {candidate_key(c) for c in small.candidates}
        assert len(answer.configs) == small.k and Servers.stats_of(upstream) >= 1
    finally:
        server.kill()
        servers.close()
