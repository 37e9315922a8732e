"""Write a trained :class:`~agent.train.model.Decoder` as a llama.cpp ``llama`` GGUF, and quantize it.

The file holds the plain token tables (the training-time factorisation is summed out), the
vocabulary as a SentencePiece-style ``llama`` tokenizer (never used to tokenize text: the
agent feeds ids), and ``edgetune.*`` keys: the vocabulary version and digest the loader
checks, plus whatever the caller adds.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import torch

from agent.errors import ModelFileError
from agent.predict.llama_runtime import captured_stderr, quiet_llama_logs
from agent.predict.model_check import tensor_shapes
from agent.predict.vocab import Vocabulary

__all__ = ["QUANT_KINDS", "quantize_gguf", "write_gguf"]

ARCH = "llama"
# GGUF type of llama.cpp's ftype per quantization kind we offer.
QUANT_KINDS = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16"}


def _tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    def f32(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())

    with torch.no_grad():
        out = {
            "token_embd.weight": f32(model.embedding_matrix()),
            "output_norm.weight": f32(model.norm.weight),
            "output.weight": f32(model.output_matrix()),
        }
        for i, b in enumerate(model.blocks):
            out |= {
                f"blk.{i}.attn_norm.weight": f32(b.attn_norm.weight),
                f"blk.{i}.attn_q.weight": f32(b.wq.weight),
                f"blk.{i}.attn_k.weight": f32(b.wk.weight),
                f"blk.{i}.attn_v.weight": f32(b.wv.weight),
                f"blk.{i}.attn_output.weight": f32(b.wo.weight),
                f"blk.{i}.ffn_norm.weight": f32(b.ffn_norm.weight),
                f"blk.{i}.ffn_gate.weight": f32(b.w_gate.weight),
                f"blk.{i}.ffn_up.weight": f32(b.w_up.weight),
                f"blk.{i}.ffn_down.weight": f32(b.w_down.weight),
            }
    return out


def _add_value(writer: gguf.GGUFWriter, key: str, value: str | int | float) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise TypeError(f"metadata {key!r}: {type(value).__name__} is not str, int or float")


def write_gguf(model: torch.nn.Module, vocab: Vocabulary, path: str | os.PathLike[str], *, name: str,
               metadata: Mapping[str, str | int | float] | None = None) -> Path:
    """Write ``model`` (a Decoder) as an f32 ``llama`` GGUF at ``path``, atomically; returns the path.

    ``metadata`` entries become ``edgetune.<key>`` (str, int or float).
    """
    cfg = model.cfg
    if cfg.vocab_size != vocab.size:
        raise ValueError(f"model has {cfg.vocab_size} tokens, vocabulary {vocab.size}")
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    tensors = _tensors(model)
    expected = tensor_shapes(cfg.dim, cfg.layers, cfg.ffn_dim, vocab.size)
    assert {k: v.shape for k, v in tensors.items()} == expected, "tensor layout drifted from tensor_shapes()"

    writer = gguf.GGUFWriter(partial, ARCH)
    try:
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_context_length(cfg.context)
        writer.add_embedding_length(cfg.dim)
        writer.add_block_count(cfg.layers)
        writer.add_feed_forward_length(cfg.ffn_dim)
        writer.add_head_count(cfg.heads)
        writer.add_head_count_kv(cfg.heads)
        writer.add_layer_norm_rms_eps(cfg.norm_eps)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_vocab_size(vocab.size)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(list(vocab.tokens))
        writer.add_token_scores([-float(i) for i in range(vocab.size)])
        writer.add_token_types(vocab.token_types())
        writer.add_bos_token_id(vocab.bos)
        writer.add_eos_token_id(vocab.eos)
        writer.add_unk_token_id(0)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_int64("edgetune.vocab_version", vocab.version)
        writer.add_string("edgetune.vocab_digest", vocab.digest())
        for key, value in (metadata or {}).items():
            _add_value(writer, f"edgetune.{key}", value)
        for tname, array in tensors.items():
            writer.add_tensor(tname, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, path)
    return path


def quantize_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str], kind: str = "q4_0") -> Path:
    """Quantize the f32 GGUF ``src`` into ``dst`` (atomically) with llama.cpp's own quantizer; returns ``dst``."""
    import llama_cpp

    quiet_llama_logs()
    src, dst = Path(src), Path(dst)
    if kind not in QUANT_KINDS:
        raise ValueError(f"quantization {kind!r} is not one of {sorted(QUANT_KINDS)}")
    if not src.is_file():
        raise ModelFileError(f"{src}: no such model file")
    partial = dst.with_name(dst.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_KINDS[kind])
    params.nthread = max(1, min(4, os.cpu_count() or 1))
    with captured_stderr() as log:
        rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(partial), ctypes.byref(params))
    if rc != 0:
        partial.unlink(missing_ok=True)
        detail = next((line.strip() for line in reversed(log) if line.strip()), "no message")
        raise ModelFileError(f"{src}: llama.cpp could not quantize it to {kind} (code {rc}: {detail})")
    os.replace(partial, dst)
    return dst
