"""LocalModel.beam: a constrained beam search on llama.cpp that reuses the prompt's KV cache."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from agent.kernels.features import kernel_features
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space
from agent.predict.beam import log_softmax
from agent.predict.local_model import LocalModel
from agent.predict.prompt import ConfigCodec, encode_prompt, hardware_desc, kernel_desc
from agent.train.cases import load_cases
from agent.train.evaluate import _q4_order
from agent.train.fit import slot_allowed
from agent.train.rank import FULL_SCORE_LIMIT, beam_rows
from tests.conftest import ROOT

STUDENT = ROOT / "models" / "edgetune-student-q4_0.gguf"
PROFILE = {"kind": "cpu", "arch": "x86_64", "vector_bits": 256, "physical_cores": 2, "l1d_bytes": 48 * 2**10,
           "l2_bytes": 2**21, "l3_bytes": 2**25, "bandwidth_gbs": 20.0}

Query = tuple[list[int], np.ndarray, list[list[int]]]

# beam and score feed the same tokens to llama.cpp in batches of other shapes, so its CPU kernels add
# the same products in another order (which order depends on the SIMD level: AVX-512 and AVX2 differ).
# Before every Q4_0 matmul the activations are re-quantized to 8 bits (Q8_0, a step of 1/127 of each
# 32-value block's largest): a one-ulp difference upstream can flip one of those steps and move a
# log-probability by ~1e-4 per slot. Seen: 6.6e-4 over 8 slots on AVX2. A bug (a wrong position, a
# wrong beam) moves it by 0.1 or more.
ACROSS_BATCHES = {"rtol": 1e-4, "atol": 2e-3}


def built_in(name: str) -> Query:
    """Prompt, every valid configuration's tokens, and allowed ids per slot, for a built-in kernel's default shape."""
    spec = find_kernel(name)
    problem = parse_shape(spec, None)
    space = Space.build(problem, max_threads=2, vector_bits=256)
    params = [{"name": p.name, "role": p.role, "values": p.values} for p in space.params]
    codec = ConfigCodec.for_params(params)
    rows = np.array([codec.encode(c) for c in space], dtype=np.int64)
    kernel = kernel_desc({"params": params, "dimensions": spec.dimensions}, name=name, spec=spec,
                         features=kernel_features(spec))
    prompt = encode_prompt(hardware_desc(PROFILE), kernel, problem.shape)
    return prompt, rows, [list(dict.fromkeys(s.token_ids)) for s in codec.slots]


@pytest.fixture(scope="module")
def student() -> Iterator[LocalModel]:
    with LocalModel(STUDENT, n_threads=1) as model:
        yield model


@pytest.fixture(scope="module")
def gemm() -> Query:
    return built_in("gemm")


def check_groups(rows: np.ndarray, index: np.ndarray, logp: np.ndarray) -> int:
    """Rows of one final prefix come together, in index order, with one log-prob; returns the number of prefixes."""
    assert len(set(index.tolist())) == len(index)
    assert (np.diff(logp) <= 1e-12).all()  # best first
    groups = 0
    for i in range(len(index)):
        same = i > 0 and np.array_equal(rows[index[i]], rows[index[i - 1]])
        if same:
            assert index[i] > index[i - 1] and logp[i] == logp[i - 1]
        groups += not same
    assert groups == len({tuple(r) for r in rows[index].tolist()})  # a prefix is never split
    return groups


def test_log_probs_equal_score(student: LocalModel, gemm: Query) -> None:
    prompt, rows, allowed = gemm
    full = student.score(prompt, rows, allowed)
    for width in (32, 8):
        index, logp = student.beam(prompt, rows, allowed, width=width)
        assert check_groups(rows, index, logp) == width
        np.testing.assert_allclose(logp, student.score(prompt, rows[index], allowed), **ACROSS_BATCHES)
        print(f"gemm, {len(rows)} rows, width {width}: beam's best is number "
              f"{int((full > logp[0] + 1e-5).sum()) + 1} of the whole space by score")


def test_width_above_rows_returns_all_in_score_order(student: LocalModel, gemm: Query) -> None:
    prompt, rows, allowed = gemm
    some = np.concatenate([rows[::30], rows[:90:30]])  # the last three repeat rows 0..2: one final prefix each
    index, logp = student.beam(prompt, some, allowed, width=64)
    assert sorted(index.tolist()) == list(range(len(some)))
    assert check_groups(some, index, logp) == len(some) - 3
    np.testing.assert_allclose(logp, student.score(prompt, some[index], allowed), **ACROSS_BATCHES)


def test_width_one_is_greedy(student: LocalModel, gemm: Query) -> None:
    prompt, rows, allowed = gemm
    under, total = np.arange(len(rows)), 0.0
    for j in range(rows.shape[1]):  # reference: the whole prefix evaluated afresh at each slot
        logp = log_softmax(student.logits([*prompt, *rows[under[0], :j].tolist()])[-1][allowed[j]])
        tokens = np.unique(rows[under, j])
        best = max(tokens.tolist(), key=lambda t: logp[allowed[j].index(t)])
        total += logp[allowed[j].index(best)]
        under = under[rows[under, j] == best]
    index, logp = student.beam(prompt, rows, allowed, width=1)
    assert index.tolist() == under.tolist()
    np.testing.assert_allclose(logp, total, **ACROSS_BATCHES)


def test_every_beam_ends_on_a_valid_row(student: LocalModel, gemm: Query) -> None:
    prompt, rows, allowed = gemm
    (best,), _ = student.beam(prompt, rows, allowed, width=1)
    # The greedy favourite's first C-1 tokens lose every completion; its first token keeps only a few rows.
    dead = (rows[:, :-1] == rows[best, :-1]).all(axis=1)
    thin = (rows[:, 0] == rows[best, 0]) & (np.arange(len(rows)) % 7 != 0)
    valid = rows[~dead & ~thin]
    assert 0 < len(valid) < len(rows)
    valid_keys = {tuple(r) for r in valid.tolist()}
    for width in (1, 4, 32):
        index, logp = student.beam(prompt, valid, allowed, width=width)
        assert len(index) >= width and all(tuple(r) in valid_keys for r in valid[index].tolist())
        assert not (valid[index, :-1] == rows[best, :-1]).all(axis=1).any()
        np.testing.assert_allclose(logp, student.score(prompt, valid[index], allowed), **ACROSS_BATCHES)


def test_prompt_cache_survives_only_what_keeps_it(gemm: Query) -> None:
    prompt, rows, allowed = gemm
    other_prompt, other_rows, other_allowed = built_in("softmax")
    with LocalModel(STUDENT, n_threads=1) as model:
        reference = model.score(prompt, rows[:50], allowed)
        batches: list[int] = []
        decode = model._decode

        def counted(tokens: list[int], positions: object, seqs: object) -> None:
            batches.append(len(tokens))
            return decode(tokens, positions, seqs)

        model._decode = counted  # type: ignore[method-assign]

        def run(prompt_decoded: int) -> None:
            """Beam again; ``prompt_decoded``: how many of the prompt's tokens it must decode."""
            batches.clear()
            index, logp = model.beam(prompt, rows, allowed, width=8)
            assert len(batches) == rows.shape[1] - 1 + bool(prompt_decoded), batches
            if prompt_decoded:
                assert batches[0] == prompt_decoded, batches
            assert max(batches[1:]) <= 8
            np.testing.assert_array_equal(index, first[0])
            np.testing.assert_allclose(logp, first[1], rtol=1e-6, atol=1e-6)

        first = model.beam(prompt, rows, allowed, width=8)
        run(prompt_decoded=0)  # same prompt: only the beams' tokens are decoded
        model.logits([*prompt, int(rows[0, 0])])  # clears the cache
        run(prompt_decoded=len(prompt))
        shared = next(i for i, (a, b) in enumerate(zip(prompt, other_prompt, strict=False)) if a != b)
        assert 0 < shared < len(prompt)  # the same device: the hardware part is common
        model.score(other_prompt, other_rows, other_allowed)  # another kernel's prompt
        run(prompt_decoded=len(prompt) - shared)  # only what differs from it is decoded
        np.testing.assert_allclose(model.score(prompt, rows[:50], allowed), reference, rtol=1e-6, atol=1e-6)
        run(prompt_decoded=0)  # score kept the prompt and its own tokens are cut away


def test_width_must_fit_and_closed_model_raises(gemm: Query) -> None:
    prompt, rows, allowed = gemm
    model = LocalModel(STUDENT, n_threads=1, rows_per_batch=8)
    assert model.sequences == 8
    for width in (0, 9):
        with pytest.raises(ValueError, match=f"beam width {width}: this model runs 1 to 8 beams"):
            model.beam(prompt, rows, allowed, width=width)
    with LocalModel(STUDENT, n_threads=1, tokens_per_batch=16) as small_cache:  # 64 + 2 * 64 cells
        with pytest.raises(ValueError, match=r"beam width 64 over 8 slots needs \d+ cache cells, the context has 192"):
            small_cache.beam(prompt, rows, allowed, width=64)
    empty = model.beam(prompt, rows[:0], allowed, width=4)
    assert empty[0].shape == empty[1].shape == (0,)
    model.close()
    for call in (lambda: model.beam(prompt, rows, allowed), lambda: model.score(prompt, rows, allowed),
                 lambda: model.logits(prompt)):
        with pytest.raises(ValueError, match="model is closed") as err:
            call()
        assert "\n" not in str(err.value)


def test_gpu_table_beam_matches_per_prefix_beam(student: LocalModel) -> None:
    cases = load_cases([str(ROOT / "models/data/gpu-kernel-tuner-hub")])
    case = min((c for c in cases if len(c.configs) > FULL_SCORE_LIMIT), key=lambda c: len(c.configs))
    prompt, allowed, width = case.prompt(), slot_allowed(case), 64

    def slot_logp(prefixes: np.ndarray, j: int) -> np.ndarray:  # the old path: the whole prompt per prefix
        return np.stack([log_softmax(student.logits([*prompt, *map(int, p)])[-1][allowed[j]]) for p in prefixes])

    started = time.perf_counter()
    old = beam_rows(case, slot_logp, beam=width)
    old_s = time.perf_counter() - started
    started = time.perf_counter()
    index, logp = student.beam(prompt, case.tokens, allowed, width=width)
    new_s = time.perf_counter() - started
    print(f"{case.case_id}: {len(case.configs)} rows, {case.tokens.shape[1]} slots, width {width}: "
          f"per-prefix logits {old_s * 1000:.0f} ms, beam with KV reuse {new_s * 1000:.0f} ms")

    def groups(order: list[int]) -> list[frozenset[int]]:
        keys = [tuple(case.tokens[i].tolist()) for i in order]
        return [frozenset(i for i, k in zip(order, keys, strict=True) if k == key) for key in dict.fromkeys(keys)]

    assert check_groups(case.tokens, index, logp) == width
    assert groups(index.tolist()) == groups(old)
    order = _q4_order(student, case, False)  # the replay's order: the beam, then the rest; ties shuffled alike
    assert order[: len(old)] == old and sorted(order) == list(range(len(case.configs)))
