"""Training: the decoder matches its plain form, learns a rule it can apply to unseen cases,
and the evaluation folds never test on a case they trained on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from agent.dataset import DatasetError, write_dataset
from agent.predict.prompt import HardwareDesc, KernelDesc
from agent.predict.vocab import vocabulary
from agent.train.cases import Case, load_cases
from agent.train.fit import TrainOptions, TrainRun, score_case, train_model
from agent.train.model import Decoder, ModelConfig
from agent.train.rank import beam_rows, model_order, torch_slot_logp
from agent.train.splits import make_folds

TINY = ModelConfig(dim=64, layers=2, heads=4, ffn_dim=128)
PARAMS = [{"name": "VEC", "role": "vector", "values": [1, 4, 8, 16]},
          {"name": "TILE", "role": "tile", "values": [16, 32, 64, 128]},
          {"name": "THREADS", "role": "threads", "values": [1, 2]}]


def test_shared_prompt_forward_equals_the_plain_sequence() -> None:
    torch.manual_seed(0)
    model = Decoder(TINY, vocabulary())
    prompts = torch.tensor([[1, 300, 301, 302, 259, 0], [1, 310, 311, 259, 0, 0]])
    lengths = torch.tensor([5, 4])
    configs = torch.randint(300, 7000, (2, 3, 4))
    allowed = torch.randint(300, 7000, (2, 4, 5))
    allowed[:, :, 4] = -1
    got = model.slot_logits(prompts, lengths, configs, allowed)
    for b in range(2):
        for n in range(3):
            full = model(torch.cat([prompts[b, :lengths[b]], configs[b, n]])[None])[0]
            for j in range(4):
                expected = full[lengths[b] - 1 + j][allowed[b, j, :4]]
                torch.testing.assert_close(got[b, n, j, :4], expected, atol=1e-4, rtol=1e-4)
            assert torch.isinf(got[b, n, :, 4]).all()


def synthetic_case(simd: int, m: int, *, noise: int = 0) -> Case:
    """Best VEC fills the target's registers (simd / 32), best TILE grows with M, 2 threads help."""
    names = [p["name"] for p in PARAMS]
    configs = [dict(zip(names, v, strict=True)) for v in itertools.product(*(p["values"] for p in PARAMS))]
    best_vec, best_tile = simd // 32, min(128, max(16, m // 8))
    rng = np.random.default_rng(noise)
    times = np.array([1e-3 * (1 + abs(math.log2(c["VEC"] / best_vec)))
                      * (1 + 0.5 * abs(math.log2(c["TILE"] / best_tile)))
                      / c["THREADS"] * (1 + 0.01 * rng.random()) for c in configs])
    hardware = HardwareDesc(kind="cpu", isa="x86_64", vector_bits=simd, cores=2, l1_bytes=32768, l2_bytes=1 << 20,
                            l3_bytes=1 << 25)
    kernel = KernelDesc(name="gemm", dimensions=("M",), params_by_role={"vector": 1, "tile": 1, "threads": 1})
    return Case(case_id=f"synthetic/{simd}/{m}", kind="cpu", device="dev", device_name="cpu", kernel="gemm",
                kernel_key="gemm-synthetic", shape={"M": m}, target=str(simd), cores=2, hardware=hardware,
                kernel_info=kernel, params=PARAMS, configs=configs, times=times)


@pytest.mark.slow
def test_training_learns_a_rule_that_holds_on_unseen_shapes() -> None:
    train = [synthetic_case(simd, m, noise=i) for i, (simd, m) in
             enumerate(itertools.product((128, 512), (128, 512, 2048, 8192)))]
    held_out = [synthetic_case(128, 4096), synthetic_case(512, 4096)]
    model = train_model(train, TINY, TrainOptions(steps=250, cases_per_step=8, lr=3e-3, hide_name=0.0))
    for case in held_out:
        order = model_order(model, case)
        # 4096 is a size bucket it never saw: it must land between its neighbours.
        assert min(case.times[order[:2]]) == case.best_time, case.case_id
    # An untrained model is no better than chance here, so the check above can fail.
    untrained = Decoder(TINY, vocabulary())
    firsts = [synthetic_case(128, 1024).times[model_order(untrained, synthetic_case(128, 1024))[0]]]
    assert firsts[0] > synthetic_case(128, 1024).best_time


def test_the_ranking_term_prefers_the_order_of_the_targets() -> None:
    from agent.train.fit import _listwise

    batch = {"target": torch.zeros((1, 2, 1), dtype=torch.long), "mask": torch.ones((1, 2, 1)),
             "configs": torch.zeros((1, 2, 1), dtype=torch.long), "allowed": torch.tensor([[[300, 301]]])}
    rows, targets = [np.array([0, 1])], [np.array([0.9, 0.1])]

    def loss(good: float, bad: float) -> float:
        logp = torch.log(torch.tensor([[[[good, 1 - good]], [[bad, 1 - bad]]]]))
        return float(_listwise(logp, batch, rows, targets))

    # Row 0 is the good one: scoring it higher must cost less than the reverse.
    assert loss(0.9, 0.1) < loss(0.5, 0.5) < loss(0.1, 0.9)


def test_beam_search_reaches_the_rows_that_full_scoring_ranks_first() -> None:
    torch.manual_seed(1)
    model = Decoder(TINY, vocabulary())
    case = synthetic_case(256, 512)
    scores = score_case(model, case)
    beam = beam_rows(case, torch_slot_logp(model, case), beam=4)
    # Beam search is exact for the single best sequence when the beam is wide enough here.
    assert beam[0] == int(np.argmax(scores))
    assert len(beam) == len(set(beam)) <= 4


@pytest.fixture(scope="module")
def real_cases() -> list[Case]:
    return load_cases(["models/data/cpu-epyc-avx512-2026-11-25", "models/data/gpu-kernel-tuner-hub"])


def test_folds_never_test_on_training_cases(real_cases: list[Case]) -> None:
    folds = make_folds(real_cases)
    assert [f.name for f in folds] == ["shape+simd", "kernel+gpu-1", "kernel+gpu-2", "kernel+gpu-3"]
    seen_tests: dict[str, set[str]] = {}
    for fold in folds:
        train_ids = {c.case_id for c in fold.train}
        for split, tests in fold.tests.items():
            assert tests, (fold.name, split)
            assert not train_ids & {c.case_id for c in tests}
            seen_tests.setdefault(split, set()).update(c.case_id for c in tests)
        if "kernel" in fold.tests:
            assert fold.hidden_names == {"kernel"}
            held = {c.kernel for c in fold.tests["kernel"]}
            assert not held & {c.kernel for c in fold.train}
            gpus = {c.device_name for c in fold.tests["gpu"]}
            assert not gpus & {c.device_name for c in fold.train}
    # Every built-in kernel and every GPU is held out exactly once.
    assert len(seen_tests["kernel"]) == sum(c.kind == "cpu" for c in real_cases)
    assert len(seen_tests["gpu"]) == sum(c.kind == "gpu" for c in real_cases)
    simd = [c for c in real_cases if c.case_id in seen_tests["simd"]]
    assert {c.target for c in simd} == {"x86-64-v3"}


def test_a_dataset_without_the_kernel_space_is_refused_by_name(tmp_path, real_cases: list[Case]) -> None:
    case = real_cases[-1]
    records = [{"case": case.case_id, "device": case.device, "kernel": case.kernel, "kernel_key": case.kernel_key,
                "shape": case.shape, "target": case.target, "cores": case.cores, "config": c, "status": "correct",
                "time_s": 1e-3, "samples": [], "origin": "measured"} for c in case.configs[:3]]
    write_dataset(tmp_path / "broken", records, name="broken", commands=[], devices={case.device: {"arch": "x86_64"}},
                  kernels={})
    with pytest.raises(DatasetError, match="without a space in the manifest"):
        load_cases([str(tmp_path / "broken")])


@pytest.mark.slow
def test_a_method_that_fails_on_a_case_is_reported_and_the_rest_go_on() -> None:
    from agent.train.evaluate import EvalOptions, evaluate_fold
    from agent.train.splits import Fold

    train = [synthetic_case(simd, m, noise=i)
             for i, (simd, m) in enumerate(itertools.product((128, 512), (128, 2048)))]
    fold = Fold(name="synthetic", train=train, tests={"shape": [synthetic_case(128, 512)]})
    options = EvalOptions(run=TrainRun().tiny(3), quantized=False, opentuner=False,
                          kt_strategies=("no_such_strategy",))
    lines: list[str] = []
    outcome = evaluate_fold(fold, options, lines.append)
    assert [e["method"] for e in outcome["errors"]] == ["Kernel Tuner no_such_strategy"]
    assert any("no_such_strategy" in line and "failed" in line for line in lines)
    methods = set(outcome["splits"]["shape"])
    assert {"teacher", "student", "nearest case", "cost model (LightGBM)", "exhaustive"} <= methods
