"""The exported GGUF run by llama.cpp computes what the PyTorch decoder computes; bad files fail cleanly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

# llama-cpp-python and torch are installed by `make test`; a missing one fails here, loudly.
from agent.errors import ModelFileError
from agent.predict.local_model import LocalModel
from agent.predict.vocab import vocabulary
from agent.train.gguf_export import quantize_gguf, write_gguf
from agent.train.model import Decoder, ModelConfig

SLOTS = 6


@pytest.fixture(scope="module")
def model() -> Decoder:
    torch.manual_seed(0)
    m = Decoder(ModelConfig(dim=64, layers=2, heads=4, ffn_dim=128), vocabulary()).eval()
    with torch.no_grad():  # larger than the init scale, so logits are far from uniform
        for p in m.parameters():
            p.mul_(5)
    return m


@pytest.fixture(scope="module")
def files(model: Decoder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    f32 = write_gguf(model, vocabulary(), d / "tiny.gguf", name="tiny", metadata={"run": "test", "epochs": 3})
    # Quantization is compared at the init scale: weights x5 compound Q4's error far beyond a trained model's.
    torch.manual_seed(0)
    plain = Decoder(ModelConfig(dim=64, layers=2, heads=4, ffn_dim=128), vocabulary()).eval()
    plain_f32 = write_gguf(plain, vocabulary(), d / "plain.gguf", name="plain")
    return {"f32": f32, "plain_f32": plain_f32, "plain_q4_0": quantize_gguf(plain_f32, d / "plain.q4_0.gguf")}


@pytest.fixture(scope="module")
def case() -> tuple[list[int], list[list[int]], np.ndarray]:
    """A prompt ending with <cfg>, allowed ids per slot, and 100 random configurations."""
    v = vocabulary()
    rng = np.random.default_rng(1)
    prompt = [v.bos, *rng.integers(260, 1000, 20).tolist(), v.config_mark]
    allowed = [sorted(rng.choice(np.arange(1000, v.size), k, replace=False).tolist()) for k in (3, 4, 2, 5, 3, 4)]
    configs = np.stack([rng.choice(a, 100) for a in allowed], axis=1)
    return prompt, allowed, configs


def torch_scores(model: Decoder, prompt: list[int], allowed: list[list[int]], configs: np.ndarray) -> np.ndarray:
    """Reference: log-softmax over each slot's allowed ids (from slot_logits), summed over slots."""
    width = max(len(a) for a in allowed)
    allowed_t = torch.full((1, len(allowed), width), -1)
    for j, a in enumerate(allowed):
        allowed_t[0, j, : len(a)] = torch.tensor(a)
    with torch.no_grad():
        logits = model.slot_logits(torch.tensor([prompt]), torch.tensor([len(prompt)]), torch.tensor(configs)[None],
                                   allowed_t)[0]
    index = torch.tensor([[allowed[j].index(int(t)) for j, t in enumerate(row)] for row in configs])
    return torch.log_softmax(logits, -1).gather(-1, index[..., None])[..., 0].sum(-1).double().numpy()


def test_logits_match_torch(model: Decoder, files: dict[str, Path]) -> None:
    v = vocabulary()
    ids = [v.bos, *np.random.default_rng(0).integers(3, v.size, 19).tolist()]
    with torch.no_grad():
        ref = model(torch.tensor([ids]))[0].numpy()
    with LocalModel(files["f32"], n_threads=1) as lm:
        got = lm.logits(ids)
        assert lm.metadata == {"vocab_version": v.version, "vocab_digest": v.digest(), "run": "test", "epochs": 3}
        assert lm.context == model.cfg.context
    assert got.shape == (20, v.size)
    # f32 weights and an f32 KV cache: ~3e-6 of each row's largest logit in practice.
    rel = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
    assert rel.max() < 1e-4, rel.max()
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_score_matches_torch(model: Decoder, files: dict[str, Path], case) -> None:
    prompt, allowed, configs = case
    configs = np.concatenate([configs[:30], configs[:5]])  # duplicates share the whole trie path
    ref = torch_scores(model, prompt, allowed, configs)
    with LocalModel(files["f32"], n_threads=1, rows_per_batch=8, tokens_per_batch=64) as lm:
        got = lm.score(prompt, configs, allowed)
        single = lm.score(prompt, configs[:1, :1], allowed[:1])  # one slot: the prompt alone decides
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(single, torch_scores(model, prompt, allowed[:1], configs[:1, :1]), rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="not among the allowed"):
        LocalModel(files["f32"], n_threads=1).score(prompt, configs[:, ::-1], allowed)


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


@pytest.mark.slow
def test_q4_ranks_like_f32(files: dict[str, Path], case) -> None:
    prompt, allowed, configs = case
    with LocalModel(files["plain_f32"], n_threads=1) as lm:
        f32 = lm.score(prompt, configs, allowed)
    with LocalModel(files["plain_q4_0"], n_threads=1) as lm:
        q4 = lm.score(prompt, configs, allowed)
    assert files["plain_q4_0"].stat().st_size < files["plain_f32"].stat().st_size / 4
    spearman = np.corrcoef(_ranks(f32), _ranks(q4))[0, 1]
    top10 = set(np.argsort(-f32)[:10].tolist())
    print(f"q4_0 vs f32 over {len(f32)} configs: spearman {spearman:.3f}, q4 top-1 rank in f32 "
          f"{int((f32 > f32[np.argmax(q4)]).sum()) + 1}, top-10 overlap {len(top10 & set(np.argsort(-q4)[:10]))}")
    assert spearman > 0.9  # ~0.98 measured; a wrong layout or broken quantizer gives ~0
    assert int(np.argmax(q4)) in top10


def test_bad_files_raise_model_file_error(model: Decoder, files: dict[str, Path], tmp_path: Path) -> None:
    data = files["f32"].read_bytes()
    truncated = tmp_path / "half.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n")
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:100])
    tail_cut = tmp_path / "tail.gguf"
    tail_cut.write_bytes(data[:-64])
    v = vocabulary()
    other = replace(v, tokens=(*v.tokens[:-1], "flag#7=renamed"))
    foreign = write_gguf(model, other, tmp_path / "foreign.gguf", name="foreign")
    cases = {truncated: "truncated", text: "not a GGUF", tmp_path / "missing.gguf": "no such model file",
             header_only: "truncated", tail_cut: "truncated", foreign: "vocabulary"}
    for path, what in cases.items():
        with pytest.raises(ModelFileError, match=what) as err:
            LocalModel(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, message
    assert not list(tmp_path.glob("*.partial"))


def test_quantize_errors(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "out.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    with pytest.raises(ModelFileError, match=str(bad)):
        quantize_gguf(bad, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.partial").exists()
