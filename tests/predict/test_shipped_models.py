"""The committed models load, speak this code's vocabulary, and rank a real case sensibly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.predict.local_model import LocalModel
from agent.predict.vocab import vocabulary
from agent.train.baselines import random_expectation
from agent.train.cases import load_cases
from agent.train.fit import slot_allowed
from tests.conftest import ROOT

MODELS = ROOT / "models"


def test_vocab_json_is_this_codes_vocabulary() -> None:
    shipped = json.loads((MODELS / "vocab.json").read_text())
    vocab = vocabulary()
    assert shipped["version"] == vocab.version and shipped["digest"] == vocab.digest()
    assert tuple(shipped["tokens"]) == vocab.tokens


@pytest.mark.slow
def test_shipped_models_load_and_rank_better_than_chance() -> None:
    metrics = json.loads((MODELS / "metrics.json").read_text())
    assert metrics["student"]["file_mb"] <= 16  # the on-device budget
    cases = [c for c in load_cases([str(ROOT / "models/data/cpu-epyc-avx512-2026-11-25")]) if c.cores == 2]
    cases = cases[:: len(cases) // 8][:8]
    ratios, chance = [], []
    with LocalModel(MODELS / "edgetune-student-q4_0.gguf", n_threads=1) as student:
        assert student.metadata["role"] == "student"
        for case in cases:
            scores = student.score(case.prompt(), case.tokens, slot_allowed(case))
            top5 = np.argsort(-scores, kind="stable")[:5]
            ratios.append(case.best_time / case.times[top5].min())
            chance.append(random_expectation(case.times, 5))
    # Cases it trained on: this checks the file works, not how well it generalises (edgetune eval does).
    assert np.mean(ratios) > np.mean(chance) + 0.05
    with LocalModel(MODELS / "edgetune-teacher-q8_0.gguf", n_threads=1) as teacher:
        assert teacher.metadata["role"] == "teacher"
