"""``edgetune train`` and ``edgetune eval`` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.dataset import read_dataset, write_dataset
from agent.predict.local_model import LocalModel
from agent.train.cases import load_cases
from agent.train.fit import slot_allowed
from tests.conftest import ROOT, run_cli

CPU_DATASET = ROOT / "models" / "data" / "cpu-epyc-avx512-2026-11-25"


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two kernels x two shapes x three targets at one core count, from the committed dataset."""
    full = read_dataset(CPU_DATASET)
    keep = [r for r in full.records if r["kernel"] in ("gemv", "softmax") and r["cores"] == 1]
    shapes = {}
    for r in keep:
        shapes.setdefault(r["kernel"], [])
        key = json.dumps(r["shape"], sort_keys=True)
        if key not in shapes[r["kernel"]]:
            shapes[r["kernel"]].append(key)
    keep = [r for r in keep if json.dumps(r["shape"], sort_keys=True) in shapes[r["kernel"]][:2]]
    out = tmp_path_factory.mktemp("data") / "small"
    kernels = {k: v for k, v in full.manifest["kernels"].items() if v["name"] in ("gemv", "softmax")}
    write_dataset(out, keep, name="small", commands=[], devices=full.manifest["devices"], kernels=kernels)
    return out


@pytest.mark.slow
def test_train_writes_models_that_llama_cpp_loads(tmp_path: Path, small_dataset: Path) -> None:
    out = tmp_path / "models"
    result = run_cli("train", str(small_dataset), "-o", str(out), "--smoke", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["cases"] == 12 and metrics["cases_gpu"] == 0
    for name in ("edgetune-student-q4_0.gguf", "edgetune-teacher-q8_0.gguf", "vocab.json", "metrics.json",
                 "README.md"):
        assert (out / name).is_file(), name
    assert "# edgetune models" in (out / "README.md").read_text()
    # The f32 GGUF in llama.cpp scores like PyTorch; Q4 is checked by test_gguf on a bigger model.
    assert metrics["agreement"]["gguf_f32_vs_torch_max_abs_logp"] < 1e-2
    case = load_cases([str(small_dataset)])[0]
    with LocalModel(out / "edgetune-student-q4_0.gguf", n_threads=1) as model:
        scores = model.score(case.prompt(), case.tokens, slot_allowed(case))
        assert model.metadata["role"] == "student"
    assert scores.shape == (len(case.configs),) and (scores < 0).all()
    # Same datasets, seed and threads: the same bytes.
    again = tmp_path / "again"
    result = run_cli("train", str(small_dataset), "-o", str(again), "--smoke", "--threads", "1", "--no-card",
                     timeout=600)
    assert result.returncode == 0, result.stderr
    first = run_cli("train", str(small_dataset), "-o", str(out), "--smoke", "--threads", "1", "--no-card",
                    timeout=600)
    assert first.returncode == 0, first.stderr
    for name in ("edgetune-student-q4_0.gguf", "edgetune-teacher-q8_0.gguf"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_train_refuses_a_damaged_dataset_in_one_line(tmp_path: Path, small_dataset: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((small_dataset / "manifest.json").read_text())
    (broken / "records.jsonl.gz").write_bytes((small_dataset / "records.jsonl.gz").read_bytes()[:200])
    result = run_cli("train", str(broken), "-o", str(tmp_path / "models"), "--smoke")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "records.jsonl.gz" in result.stderr, result.stderr
    assert not (tmp_path / "models" / "edgetune-student-q4_0.gguf").exists()


@pytest.mark.slow
def test_eval_quick_writes_a_report(tmp_path: Path, small_dataset: Path) -> None:
    out = tmp_path / "eval"
    result = run_cli("eval", str(small_dataset), "-o", str(out), "--quick", "--fold", "shape+simd", timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["splits"]) == {"shape", "simd"}
    methods = report["splits"]["shape"]["methods"]
    assert {"student", "teacher", "student Q4 (llama.cpp)", "random (exact expectation)", "nearest case",
            "cost model (LightGBM)", "exhaustive", "cost model (ONNX)",
            "student Q4 + cost model re-rank", "reuse (nearest measured case)",
            "cost model (ONNX), diversified"} <= set(methods)
    # The policy: a source per situation the shape+simd fold speaks to, with the figures it was chosen on.
    policy = json.loads((out / "policy.json").read_text())
    assert set(policy["evidence"]) == {"seen", "unseen-device"}
    for situation, evidence in policy["evidence"].items():
        assert evidence["best_of_5"][policy["choices"][situation]] == max(evidence["best_of_5"].values())
    assert "## Policy" in (out / "report.md").read_text()
    confidence = json.loads((out / "report.json").read_text())["policy"]["confidence"]
    assert 0.0 <= confidence["brier"] <= 1.0 and confidence["base_brier"] == pytest.approx(
        confidence["good_share"] * (1 - confidence["good_share"]))
    # The ablation decides on the cost model, and the confidence calibration is written with its curve.
    assert isinstance(report["ablation"]["use_cost_model"], bool)
    assert report["confidence"]["curve"] and 0.0 <= report["confidence"]["threshold"] <= 1.0
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["use_cost_model"] == report["ablation"]["use_cost_model"]
    assert "Confidence calibration" in (out / "report.md").read_text()
    assert methods["exhaustive"]["best_of_1"] is None and methods["exhaustive"]["evals_to_0.99"] > 5
    assert (out / "report.png").stat().st_size > 1000
    assert "| method |" in (out / "report.md").read_text()
    # A finished fold is saved; a second run reuses it instead of training again.
    assert (out / "folds" / "shape+simd.json").is_file()
    again = run_cli("eval", str(small_dataset), "-o", str(out), "--quick", "--fold", "shape+simd", timeout=600)
    assert again.returncode == 0 and "reusing" in again.stderr, again.stderr
    # The same figures (the decoder-free methods are replayed afresh, so only their wall times may differ).
    def figures(splits: dict) -> dict:
        return {split: {m: {k: v for k, v in s.items() if k != "wall_ms_median"} for m, s in data["methods"].items()}
                for split, data in splits.items()}

    assert figures(json.loads((out / "report.json").read_text())["splits"]) == figures(report["splits"])
