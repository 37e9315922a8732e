"""Check a model GGUF before llama.cpp sees it (llama.cpp may abort the process on a malformed file).

The file must exist, be a ``llama`` GGUF with every tensor whole and of the expected shape, and
carry the vocabulary this edgetune speaks. Every problem is a one-line :class:`ModelFileError`
naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from agent.errors import ModelFileError
from agent.predict.gguf_file import read_gguf
from agent.predict.vocab import VOCAB_VERSION, vocabulary

__all__ = ["check_model_file", "read_model_file", "tensor_shapes"]

_REQUIRED_KEYS = ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                  "llama.attention.head_count", "edgetune.vocab_version", "edgetune.vocab_digest")


def tensor_shapes(dim: int, layers: int, ffn_dim: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """llama.cpp tensor name -> numpy shape ([out, in], row-major) of every tensor a model file holds."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab_size, dim), "output_norm.weight": (dim,),
                                          "output.weight": (vocab_size, dim)}
    for i in range(layers):
        for part, shape in (("attn_norm", (dim,)), ("attn_q", (dim, dim)), ("attn_k", (dim, dim)),
                            ("attn_v", (dim, dim)), ("attn_output", (dim, dim)), ("ffn_norm", (dim,)),
                            ("ffn_gate", (ffn_dim, dim)), ("ffn_up", (ffn_dim, dim)), ("ffn_down", (dim, ffn_dim))):
            shapes[f"blk.{i}.{part}.weight"] = shape
    return shapes


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a model GGUF without llama.cpp; returns its metadata (every key, typed values).

    Raises :class:`ModelFileError` if the file is missing, not a GGUF, truncated or corrupt,
    not a ``llama`` model, or made for another vocabulary.
    """
    return check_model_file(path)[0]


def check_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`read_model_file`'s metadata and the file's tensors (:class:`GGUFTensor` by name, memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path}: not a GGUF file (starts with {magic!r})")
    try:
        parsed = read_gguf(path)
        meta, tensors = parsed.metadata, parsed.tensors
    except (ValueError, IndexError, KeyError, TypeError, OSError, UnicodeDecodeError, struct.error) as exc:
        raise ModelFileError(f"{path}: truncated or corrupt GGUF ({type(exc).__name__}: {exc})") from exc
    if meta.get("general.architecture") != "llama":
        raise ModelFileError(f"{path}: architecture is {meta.get('general.architecture')!r}, expected 'llama'")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelFileError(f"{path}: not an edgetune model file (no {', '.join(missing)})")
    vocab = vocabulary()
    if meta["edgetune.vocab_version"] != VOCAB_VERSION or meta["edgetune.vocab_digest"] != vocab.digest():
        raise ModelFileError(
            f"{path}: made for vocabulary version {meta['edgetune.vocab_version']} "
            f"(digest {str(meta['edgetune.vocab_digest'])[:12]}), this edgetune has version {VOCAB_VERSION} "
            f"(digest {vocab.digest()[:12]})")
    expected = tensor_shapes(int(meta["llama.embedding_length"]), int(meta["llama.block_count"]),
                              int(meta["llama.feed_forward_length"]), vocab.size)
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise ModelFileError(f"{path}: tensor {name} is missing")
        if tuple(int(d) for d in tensor.shape) != tuple(reversed(shape)):
            raise ModelFileError(f"{path}: tensor {name} has shape {list(reversed(tensor.shape.tolist()))}, "
                                 f"expected {list(shape)}")
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelFileError(f"{path}: truncated (tensor {name} ends at byte {tensor.data_offset + tensor.n_bytes}"
                                 f", the file has {size})")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelFileError(f"{path}: unexpected tensors {', '.join(extra[:3])}")
    return meta, tensors
