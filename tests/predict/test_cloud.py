"""The cloud fallback against a real loopback server (harness/cloud_server.py) backed by the shipped teacher."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agent.errors import EdgetuneError
from agent.predict.cloud import CloudAnswer, CloudClient, CloudError, CloudSettings, completion_text, merge_rankings
from agent.predict.local_model import LocalModel
from agent.predict.rank_protocol import RankAnswer, RankProtocolError, RankRequest, rank_with_model, request_for
from agent.predict.vocab import vocabulary
from harness.cloud_server import RankCase, Servers
from tests.conftest import ROOT

TEACHER = ROOT / "models" / "edgetune-teacher-q8_0.gguf"
SLACK_S = 0.2


@pytest.fixture(scope="module")
def teacher() -> Iterator[LocalModel]:
    with LocalModel(TEACHER, n_threads=1) as model:
        yield model


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    started = Servers(TEACHER)
    yield started
    started.close()


def requests_seen(url: str) -> int:
    return int(httpx.get(f"{url}/stats", timeout=5).json()["requests"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_ask(client: CloudClient, request: RankRequest) -> tuple[CloudAnswer | None, float]:
    """The answer and how long the ask took; fails, rather than hangs, if it overruns its budget by 10 s."""
    result: dict[str, Any] = {}

    def run() -> None:
        start = time.monotonic()
        result["answer"] = client.ask(request)
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(client.settings.timeout_s + 10)
    assert "elapsed" in result, f"ask did not return within {client.settings.timeout_s + 10} s"
    return result["answer"], result["elapsed"]


def direct_fleet_scores(teacher: LocalModel, case: RankCase, configs: list[dict[str, Any]]) -> np.ndarray:
    vocab = vocabulary()
    prompt = [vocab.bos, *(vocab.id(t) for t in case.prompt), vocab.config_mark]
    rows = np.array([case.codec.encode(c) for c in configs])
    return teacher.score(prompt, rows, [list(dict.fromkeys(s.token_ids)) for s in case.codec.slots])


# --- the ok path ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fleet_answer_top1_is_the_teachers_best(servers: Servers, case: RankCase, teacher: LocalModel) -> None:
    request = request_for(case.prompt, case.codec, case.configs, 8, kernel="gemm", shape=case.shape)
    assert len(case.configs) > 1000  # the whole valid space, as a device sends it
    client = CloudClient(CloudSettings(servers.shared("ok"), timeout_s=20.0))
    answer = client.ask(request)
    assert answer is not None, client.last_error
    assert client.last_error is None and answer.attempts == 1 and answer.dropped == 0
    scores = direct_fleet_scores(teacher, case, case.configs)
    order = np.argsort(-scores, kind="stable")
    assert answer.configs == [case.configs[i] for i in order[:8]]
    probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(answer.probs, probs[order[:8]], rtol=1e-6)
    assert answer.model == "edgetune-teacher-q8_0" and 0 < answer.elapsed_s < 20.0


@pytest.mark.slow
def test_openai_answer_top1_is_the_teachers_best(servers: Servers, case: RankCase, small: RankRequest,
                                                  teacher: LocalModel) -> None:
    client = CloudClient(CloudSettings(servers.shared("ok"), kind="openai", model="teacher", timeout_s=20.0))
    answer = client.ask(small)
    assert answer is not None, client.last_error
    # Scored directly: the teacher's full-vocabulary log-probabilities of each configuration's tokens.
    vocab = vocabulary()
    prompt = [vocab.bos, *(vocab.id(t) for t in case.prompt), vocab.config_mark]
    full = []
    for config in small.candidates:
        cfg = case.codec.encode(config)
        logits = teacher.logits(prompt + cfg).astype(np.float64)
        top = logits.max(1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        full.append(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(cfg)))
    full_order = np.argsort(-np.array(full), kind="stable")
    assert answer.configs == [small.candidates[i] for i in full_order[:5]]
    # An OpenAI server's log-probabilities are over the whole vocabulary, the fleet's over each slot's own
    # tokens: the two kinds may rank differently (here they do; a test pins it so the difference stays known).
    restricted = direct_fleet_scores(teacher, case, small.candidates)
    assert answer.configs[0] != small.candidates[int(np.argmax(restricted))]
    assert answer.probs == sorted(answer.probs, reverse=True) and 0 < sum(answer.probs) <= 1 + 1e-9


def test_completion_text_marks_where_the_configuration_starts() -> None:
    text, start = completion_text(["dev=cpu", "isa=x86_64"], ["threads#0=2", "tile#0=64"])
    assert text == "<s> dev=cpu isa=x86_64 <cfg> threads#0=2 tile#0=64"
    assert text[:start].endswith("<cfg>") and text[start:] == " threads#0=2 tile#0=64"


# --- failures: None within the budget, and a one-line reason ---------------------------------------------------

FAILURES = {  # mode -> (what last_error says, requests one ask makes: the retry only for 5xx)
    "down": ("connection refused", 0),
    "hang": ("no answer within the 1.5 s budget", 1),
    "trickle": ("no answer within the 1.5 s budget", 1),
    "error500": ("HTTP 500", 2),
    "outside": ("candidates", 1),
    "garbage": ("not JSON", 1),
    "wrong-shape": ("bad answer", 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fleet", "openai"])
@pytest.mark.parametrize("mode", list(FAILURES))
def test_a_failing_service_gives_none_within_the_budget(servers: Servers, small: RankRequest, mode: str,
                                                        kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if mode == "down" else servers.shared(mode)
    before = 0 if mode == "down" else requests_seen(url)
    client = CloudClient(CloudSettings(url, kind=kind, timeout_s=1.5))
    answer, elapsed = timed_ask(client, small)
    assert answer is None
    assert elapsed <= 1.5 + SLACK_S
    said, requests = FAILURES[mode]
    error = client.last_error or ""
    assert said in error and error.startswith(f"{kind} {client.settings.endpoint}: ") and "\n" not in error
    if mode != "down":
        assert requests_seen(url) - before == requests


@pytest.mark.slow
def test_one_500_is_retried(servers: Servers, small: RankRequest) -> None:
    url = servers.start("error500-once")
    client = CloudClient(CloudSettings(url, timeout_s=10.0))
    answer = client.ask(small)
    assert answer is not None, client.last_error
    assert answer.attempts == 2 and requests_seen(url) == 2


@pytest.mark.slow
def test_a_4xx_is_not_retried_and_the_token_is_sent(servers: Servers, small: RankRequest) -> None:
    url = servers.start("ok", token="s3cret")
    anonymous = CloudClient(CloudSettings(url, timeout_s=10.0))
    assert anonymous.ask(small) is None
    assert "HTTP 401" in (anonymous.last_error or "") and requests_seen(url) == 1
    signed = CloudClient(CloudSettings(url, token="s3cret", timeout_s=10.0))
    assert signed.ask(small) is not None, signed.last_error


@pytest.mark.slow
def test_outside_configurations_are_dropped(servers: Servers, small: RankRequest) -> None:
    client = CloudClient(CloudSettings(servers.shared("outside"), timeout_s=10.0))
    assert client.ask(small) is None
    assert "none of the 5 configurations it answered is among the candidates" in (client.last_error or "")


# --- the circuit breaker ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_breaker_opens_after_three_failures_and_persists(servers: Servers, small: RankRequest,
                                                             tmp_path: Path) -> None:
    url = servers.start("error500")
    state = tmp_path / "state" / "cloud.json"
    settings = CloudSettings(url, retries=0)
    client = CloudClient(settings, state_path=state)
    for _ in range(3):
        assert client.ask(small) is None and "HTTP 500" in (client.last_error or "")
    assert requests_seen(url) == 3
    answer, elapsed = timed_ask(client, small)
    assert answer is None and elapsed < 0.1
    assert "circuit breaker open until" in (client.last_error or "") and requests_seen(url) == 3
    saved = json.loads(state.read_text())["services"][settings.endpoint]
    assert saved["failures"] == 3 and saved["open_until"] > time.time() + 290
    fresh = CloudClient(settings, state_path=state)  # the next `edgetune tune` process
    assert fresh.ask(small) is None and "circuit breaker open" in (fresh.last_error or "")
    assert requests_seen(url) == 3
    elsewhere = CloudClient(CloudSettings(servers.shared("ok")), state_path=state)  # keyed by URL
    assert elsewhere.ask(small) is not None, elsewhere.last_error


@pytest.mark.slow
def test_after_the_cooldown_one_success_closes_the_breaker(servers: Servers, small: RankRequest,
                                                          tmp_path: Path) -> None:
    url = servers.start("error500-once")
    settings = CloudSettings(url, retries=0, timeout_s=10.0, breaker_failures=1, breaker_cooldown_s=0.3)
    client = CloudClient(settings, state_path=tmp_path / "cloud.json")
    assert client.ask(small) is None
    assert client.ask(small) is None and "breaker open" in (client.last_error or "")
    assert requests_seen(url) == 1
    time.sleep(0.35)
    assert client.ask(small) is not None, client.last_error
    assert client.breaker_state() == (0, 0.0) and requests_seen(url) == 2


@pytest.mark.slow
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"services": {"x": 1}}', "",
                                     '{"services": {"ENDPOINT": {"failures": "many", "open_until": null}}}'])
def test_a_corrupt_state_file_reads_as_closed(servers: Servers, small: RankRequest, tmp_path: Path,
                                              content: str) -> None:
    settings = CloudSettings(servers.shared("ok"), timeout_s=10.0)
    state = tmp_path / "cloud.json"
    state.write_text(content.replace("ENDPOINT", settings.endpoint))
    client = CloudClient(settings, state_path=state)
    assert client.breaker_state() == (0, 0.0)
    assert client.ask(small) is not None, client.last_error


def test_an_unwritable_state_path_is_not_an_error(small: RankRequest, tmp_path: Path) -> None:
    state = tmp_path / "a-directory"
    state.mkdir()
    client = CloudClient(CloudSettings(f"http://127.0.0.1:{free_port()}"), state_path=state)
    assert client.ask(small) is None and "connection refused" in (client.last_error or "")


def test_settings_are_checked_when_made() -> None:
    with pytest.raises(CloudError, match="valid kinds: fleet, openai"):
        CloudSettings("http://127.0.0.1:1", kind="grpc")
    with pytest.raises(CloudError, match="http:// or https://"):
        CloudSettings("ftp://example.org")
    with pytest.raises(CloudError, match="timeout_s"):
        CloudSettings("http://127.0.0.1:1", timeout_s=0)
    assert issubclass(CloudError, EdgetuneError)


# --- the wire format --------------------------------------------------------------------------------------------


def test_request_and_answer_round_trip(small: RankRequest) -> None:
    assert RankRequest.from_json(json.dumps(small.to_json())) == small
    answer = RankAnswer(configs=small.candidates[:2], probs=[0.5, 0.25], model="m")
    assert RankAnswer.from_json(json.dumps(answer.to_json()).encode()) == answer


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.__setitem__(key, value)


REQUEST_ERRORS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("k", _set("k", 0)),
    ("k", _set("k", 65)),
    ("k", _set("k", "5")),
    ("k", lambda d: d.pop("k")),
    ("vocab_digest", _set("vocab_digest", "abc")),
    ("vocab_version", _set("vocab_version", True)),
    ("prompt", lambda d: d.__setitem__("prompt", d["prompt"] * 8)),
    ("prompt[1]", lambda d: d["prompt"].__setitem__(1, "isa x86")),
    ("candidates", _set("candidates", [])),
    ("candidates", lambda d: d.__setitem__("candidates", d["candidates"][:1] * 4097)),
    ("candidates[0]", lambda d: d["candidates"][0].__setitem__("BM", 17)),
    ("candidates[1]", lambda d: d["candidates"][1].pop("ORDER")),
    ("candidates[2]", lambda d: d["candidates"][2].__setitem__("NEW", 1)),
    ("candidates[3]", lambda d: d["candidates"].__setitem__(3, dict(d["candidates"][0]))),
    ("slots[0].tokens[0]", lambda d: d["slots"][0]["tokens"].__setitem__(0, "tile#7=64")),
    ("slots[0].tokens", lambda d: d["slots"][0]["tokens"].pop()),
    ("slots[1].field", lambda d: d["slots"][1].__setitem__("field", "tile")),
    ("slots[2].values", lambda d: d["slots"][2].__setitem__("values", [])),
    ("kernel", _set("kernel", 7)),
    ("shape.M", lambda d: d["shape"].__setitem__("M", -1)),
]


@pytest.mark.parametrize(("field", "breaks"), REQUEST_ERRORS)
def test_a_bad_request_field_is_named_in_one_line(small: RankRequest, field: str,
                                                  breaks: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(json.dumps(small.to_json()))
    breaks(data)
    with pytest.raises(RankProtocolError) as caught:
        RankRequest.from_json(data)
    message = str(caught.value)
    assert f"field {field!r}" in message and "\n" not in message and message.startswith("rank request: ")


@pytest.mark.parametrize(("field", "probs", "model"), [
    ("probs", [0.25, 0.5], "m"), ("probs[0]", [1.5, 0.1], "m"), ("probs[1]", [0.5, None], "m"),
    ("probs", [0.5], "m"), ("probs", [0.75, 0.5], "m"), ("model", [0.5, 0.25], ""),
])
def test_a_bad_answer_field_is_named_in_one_line(small: RankRequest, field: str, probs: list[Any],
                                                 model: str) -> None:
    with pytest.raises(RankProtocolError, match=f"^rank answer: field {re.escape(repr(field))}"):
        RankAnswer.from_json({"configs": small.candidates[:2], "probs": probs, "model": model})
    with pytest.raises(RankProtocolError, match="rank answer: not JSON"):
        RankAnswer.from_json("<html>")


@pytest.mark.slow
def test_rank_with_model_refuses_another_vocabulary(small: RankRequest, teacher: LocalModel) -> None:
    data = small.to_json()
    with pytest.raises(RankProtocolError, match="field 'vocab_digest'"):
        rank_with_model(teacher, RankRequest.from_json({**data, "vocab_digest": "0" * 64}))
    with pytest.raises(RankProtocolError, match="field 'vocab_version'"):
        rank_with_model(teacher, RankRequest.from_json({**data, "vocab_version": 2}))
    with pytest.raises(RankProtocolError, match=r"field 'prompt\[0\]' is 'dev=quantum', not a token"):
        rank_with_model(teacher, RankRequest.from_json({**data, "prompt": ["dev=quantum", *data["prompt"][1:]]}))
    answer = rank_with_model(teacher, small)
    assert len(answer.configs) == small.k and all(c in small.candidates for c in answer.configs)


# --- merging ----------------------------------------------------------------------------------------------------


def _answer(configs: list[dict[str, Any]], probs: list[float]) -> CloudAnswer:
    return CloudAnswer(configs=configs, probs=probs, model="teacher", elapsed_s=0.1, attempts=1)


A, B, C, D = ({"BM": 16}, {"BM": 32}, {"BM": 64}, {"BM": 128})


def test_merge_a_config_both_sides_like_wins() -> None:
    local = [(A, -0.5), (B, -0.6), (C, -3.0)]
    merged = merge_rankings(local, _answer([B, C, A], [0.7, 0.2, 0.05]))
    assert [m[0] for m in merged] == [B, A, C] and {m[2] for m in merged} == {"local"}
    expected = 0.5 * (-0.6 - np.log(np.exp([-0.5, -0.6, -3.0]).sum())) + 0.5 * np.log(0.7)
    assert merged[0][1] == pytest.approx(expected)


def test_merge_tags_cloud_only_configs_and_penalises_the_missing_side() -> None:
    merged = merge_rankings([(A, -1.0), (B, -1.0)], _answer([D, A], [0.6, 0.35]))
    by = {m[0]["BM"]: m for m in merged}
    assert by[128][2] == "cloud" and by[16][2] == "local" and by[32][2] == "local"
    log_half = np.log(0.5)
    assert by[32][1] == pytest.approx(0.5 * log_half + 0.5 * (np.log(0.35) - np.log(2)))
    assert by[128][1] == pytest.approx(0.5 * (log_half - np.log(2)) + 0.5 * np.log(0.6))
    assert [m[0] for m in merged] == [A, D, B]
    assert [m[0] for m in merge_rankings([(A, -1.0)], _answer([D], [0.9]), cloud_weight=0.0)] == [A, D]


def test_merge_without_an_answer_keeps_the_local_order() -> None:
    local = [(C, -0.1), (A, -2.0), (B, -9.0)]
    assert merge_rankings(local, None) == [(C, -0.1, "local"), (A, -2.0, "local"), (B, -9.0, "local")]
    with pytest.raises(ValueError, match="cloud_weight"):
        merge_rankings(local, None, cloud_weight=1.5)
