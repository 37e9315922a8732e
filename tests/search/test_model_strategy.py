"""The model strategy as a user runs it: the shipped models, a real compiler and worker, real loopback servers.

Faults are real: a missing or truncated model file, a cloud service that is down, hangs,
answers 500, answers configurations outside the space, or answers garbage.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.predict.cloud import CloudSettings
from agent.predict.predictor import COST_MODEL_FILE, STUDENT_FILE, Predictor
from agent.search.model_guided import ModelOptions
from agent.tuner import Budget, TuneOptions, tune
from harness.cloud_server import Servers
from tests.conftest import ROOT, run_cli
from tests.helpers import QUICK, model_folder

MODELS = ROOT / "models"
KERNEL, SHAPE = "layernorm", "R=64,C=256"


@pytest.fixture(scope="module")
def unsure_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Never confident: every tuning asks the cloud when one is configured."""
    return model_folder(tmp_path_factory.mktemp("unsure"), threshold=1.0)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    started = Servers(MODELS / "edgetune-teacher-q8_0.gguf")
    yield started
    started.close()


def picks_label(ranked_by: str | None) -> str:
    """The source label of the first candidates' runs: the student's are "local", the others their source's."""
    return "local" if ranked_by == "model" else str(ranked_by)


def run_model(store, profile, backend, cache_dir, models: Path, *, cloud=None, state_dir=None, **options):
    problem = parse_shape(find_kernel(KERNEL), SHAPE)
    options.setdefault("measure", QUICK)
    model = ModelOptions(models=models, cloud=cloud, state_dir=state_dir)
    return tune(problem, profile=profile, store=store, backend=backend, cache_dir=cache_dir,
                options=TuneOptions(strategy="model", strategy_options=model, **options))


@pytest.mark.slow
def test_model_strategy_benchmarks_the_default_and_the_top_predictions(store, profile, backend, cache_dir):
    result = run_model(store, profile, backend, cache_dir, MODELS)
    assert result.winner is not None and result.evaluations == 5
    every = store.runs(tuning_id=result.tuning_id, limit=100)
    runs = [r for r in every if r["phase"] == "search"]
    # The five were the whole budget, so they were timed once, side by side, with the final protocol.
    assert len(every) == len(runs) and all(len(json.loads(r["samples"])) >= 10 for r in runs if r["samples"])
    assert result.winner.run_id in {r["id"] for r in runs}
    # What ranked first depends on the situation this machine is in (seen, unseen device: the policy).
    first = picks_label(result.ranked_by)
    sources = sorted(r["source"] for r in runs)
    assert sources in (["default", *[first] * 4], ["default", *[first] * 5])
    ranks = sorted(r["predicted_rank"] for r in runs if r["source"] == first)
    assert ranks == list(range(len(ranks)))  # the best predictions, in order, none skipped
    tuning = store.tunings(limit=1)[0]
    assert tuning["predict_s"] > 0 and tuning["compile_s"] > 0 and tuning["benchmark_s"] > 0
    assert tuning["winner_source"] in ("default", first)
    assert (tuning["situation"], tuning["ranked_by"]) == (result.situation, result.ranked_by)
    assert result.situation in ("seen", "unseen-device")  # layernorm is a kernel the shipped data measured
    assert result.winner_predicted_rank == tuning["winner_predicted_rank"]
    assert result.timings["predict_s"] == pytest.approx(tuning["predict_s"])


@pytest.mark.slow
def test_budget_left_over_refines_around_the_winner(store, profile, backend, cache_dir):
    result = run_model(store, profile, backend, cache_dir, MODELS, budget=Budget(evaluations=10))
    assert result.evaluations == 10
    runs = store.runs(tuning_id=result.tuning_id, limit=100)
    # Neighbours the predictor also ranked keep their label and rank; others are "refine".
    assert {r["source"] for r in runs if r["phase"] == "search"} <= {"default", "local", "refine",
                                                                     picks_label(result.ranked_by)}
    assert any(r["phase"] == "final" for r in runs)  # measured in several batches: the finalists are re-measured


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_an_unusable_model_falls_back_to_local_search_with_a_warning(tmp_path, store, profile, backend, cache_dir,
                                                                    damage):
    folder = tmp_path / "models"
    folder.mkdir()
    if damage == "truncated":
        data = (MODELS / STUDENT_FILE).read_bytes()
        (folder / STUDENT_FILE).write_bytes(data[: len(data) // 3])
    result = run_model(store, profile, backend, cache_dir, folder, budget=Budget(evaluations=6))
    assert result.winner is not None and result.evaluations == 6
    assert any("tuned with local search instead" in n and STUDENT_FILE in n for n in result.notes)
    assert store.tunings(limit=1)[0]["note"] == "; ".join(result.notes)


@pytest.mark.slow
def test_the_cli_prints_the_fallback_warning_and_exits_zero(tmp_path, cli_env):
    env = {**cli_env, "EDGETUNE_MODELS": str(tmp_path / "nowhere")}
    result = run_cli("tune", KERNEL, "--shape", SHAPE, "--budget", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "local search" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_cli_tunes_with_the_model_by_default_and_says_where_the_winner_came_from(cli_env):
    result = run_cli("tune", KERNEL, "--shape", SHAPE, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "strategy model, budget 5" in result.stdout
    assert "winner from: " in result.stdout and "time: predict" in result.stdout
    data = json.loads(run_cli("runs", "--json", env=cli_env).stdout)
    searched = [r for r in data if r["phase"] == "search"]
    ranked_by = re.search(r"^ranked by: (\S+) first \((seen|unseen-device)", result.stdout, re.M)
    assert ranked_by, result.stdout
    first = picks_label(ranked_by.group(1))
    assert len(searched) == 5 and {r["source"] for r in searched} == {"default", first}
    assert sorted(r["predicted_rank"] for r in searched if r["source"] == first) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["down", "hang", "error500", "outside", "garbage", "wrong-shape"])
def test_a_failing_cloud_costs_at_most_its_timeout(store, profile, backend, cache_dir, unsure_models, servers,
                                                   mode, tmp_path):
    if mode == "down":
        url = "http://127.0.0.1:9"  # the discard port: nothing listens
    else:
        url = servers.shared(mode)
    settings = CloudSettings(url=url, timeout_s=1.5)
    started = time.monotonic()
    result = run_model(store, profile, backend, cache_dir, unsure_models, cloud=settings, state_dir=tmp_path)
    assert result.winner is not None and result.evaluations == 5
    assert result.timings["cloud_s"] <= 1.5 + 0.3
    assert result.cloud is not None and result.cloud.startswith("failed:")
    assert {r["source"] for r in store.runs(tuning_id=result.tuning_id, limit=50)} <= {"default", "local"}
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_working_cloud_is_asked_only_when_unsure_and_merged(store, profile, backend, cache_dir, unsure_models,
                                                              servers, tmp_path):
    settings = CloudSettings(url=servers.shared("ok"), timeout_s=5.0)
    result = run_model(store, profile, backend, cache_dir, unsure_models, cloud=settings, state_dir=tmp_path)
    assert result.cloud is not None and result.cloud.startswith("answered"), result.cloud
    assert result.timings["cloud_s"] > 0
    confident = model_folder(tmp_path / "sure", threshold=0.0)
    before = servers.stats_of(settings.url)
    sure = run_model(store, profile, backend, cache_dir, confident, cloud=settings, state_dir=tmp_path)
    assert sure.cloud is None and sure.timings["cloud_s"] == 0.0
    assert servers.stats_of(settings.url) == before  # a confident prediction never reaches the service


@pytest.mark.slow
def test_best_config_says_where_its_answer_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETUNE_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "state" / "edgetune.db"
    predicted = agent.best_config(KERNEL, SHAPE, db=db)
    assert predicted.source == "model" and "no store" in predicted.reason
    assert not db.exists()  # asking never creates a store
    # A broken model folder: the kernel's default, with the reason.
    broken = agent.best_config(KERNEL, SHAPE, db=db, models=tmp_path / "nowhere")
    assert broken.source == "default" and "no such model file" in broken.reason
    assert broken.config == find_kernel(KERNEL).default_config()
    result = agent.tune(KERNEL, SHAPE, db=db, budget=4)
    stored = agent.best_config(KERNEL, SHAPE, db=db)
    assert stored.source == "stored" and stored.config == result.winner.config
    assert stored.tuning_id == result.tuning_id


def test_the_predictor_ranks_only_valid_configurations(profile):
    problem = parse_shape(find_kernel("gemm"), "M=64,N=64,K=64")
    from agent.hardware.targets import target_vector_bits
    from agent.kernels.space import Space

    space = Space.build(problem, max_threads=profile.logical_cores, vector_bits=target_vector_bits("x86-64",
                                                                                                     profile))
    with Predictor(MODELS) as predictor:
        prediction = predictor.predict(space, profile.to_dict())
    assert len(prediction.candidates) == 32
    assert all(space.is_valid(c.config) for c in prediction.candidates)
    assert all(c.config["VEC"] * 32 <= 128 for c in prediction.candidates)  # x86-64 has 128-bit vectors
    assert 0.0 <= (prediction.confidence or 0.0) <= 1.0
    assert json.dumps(prediction.to_dict())  # what --json prints


def test_a_models_folder_without_cost_model_or_calibration_still_predicts(tmp_path, profile):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copyfile(MODELS / STUDENT_FILE, folder / STUDENT_FILE)
    (folder / "confidence.json").write_text("{not json", encoding="utf-8")
    problem = parse_shape(find_kernel(KERNEL), SHAPE)
    from agent.hardware.targets import target_vector_bits
    from agent.kernels.space import Space

    with Predictor(folder) as predictor:
        space = Space.build(problem, max_threads=profile.logical_cores,
                            vector_bits=target_vector_bits("native", profile))
        prediction = predictor.predict(space, profile.to_dict())
    assert prediction.confidence is None and not prediction.confident and not prediction.cost_model_used
    assert any("calibration" in w for w in predictor.warnings)
    assert any(COST_MODEL_FILE in w for w in predictor.warnings)


@pytest.mark.slow
def test_a_new_kernel_is_ranked_by_the_policys_source_and_the_cloud_is_not_waited_for(store, profile, backend,
                                                                                     cache_dir, tmp_path):
    # A user's kernel nothing measured (the built-in layernorm under another name): the unseen-kernel situation.
    folder = tmp_path / "my_layernorm"
    shutil.copytree(ROOT / "agent" / "kernels" / "builtin" / KERNEL, folder)
    toml = folder / "kernel.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace(f'name = "{KERNEL}"', 'name = "my_layernorm"', 1),
                    encoding="utf-8")
    problem = parse_shape(find_kernel(str(toml)), SHAPE)
    cloud = CloudSettings(url="http://127.0.0.1:9", timeout_s=1.5)  # nothing listens: asking would cost its timeout
    model = ModelOptions(models=MODELS, cloud=cloud, state_dir=tmp_path)
    result = tune(problem, profile=profile, store=store, backend=backend, cache_dir=cache_dir,
                  options=TuneOptions(strategy="model", strategy_options=model, measure=QUICK))
    assert result.situation == "unseen-kernel" and result.winner is not None and result.evaluations == 5
    policy = json.loads((MODELS / "policy.json").read_text())
    assert result.ranked_by == policy["choices"]["unseen-kernel"]
    if result.ranked_by != "model":
        assert result.cloud.startswith("not asked") and result.timings["cloud_s"] == 0
        searched = {r["source"] for r in store.runs(tuning_id=result.tuning_id, limit=50)}
        assert searched == {"default", result.ranked_by}
