"""Run the exported decoder on the device with llama.cpp (llama-cpp-python), from a GGUF file.

The file is validated with ``gguf.GGUFReader`` before llama.cpp sees it (llama.cpp may abort
the process on some malformed files): it must exist, be a ``llama`` GGUF with every tensor
whole, and carry the vocabulary this edgetune speaks. Every problem is a one-line
:class:`~agent.predict.errors.ModelFileError` naming the file.

Scoring walks the configurations as a trie through llama.cpp's C API: the prompt is decoded
once and belongs to every sequence; rows are sorted and taken in groups (one sequence per
row), each distinct prefix in a group is decoded once for all the rows that pass through
it, and the cache is cut back to the prompt between groups. The KV cache is kept in f32 so results match
the PyTorch model to float rounding (an f16 cache costs ~1% of the logits' scale).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.predict.errors import ModelFileError
from agent.predict.vocab import VOCAB_VERSION, vocabulary

__all__ = ["LocalModel", "captured_stderr", "quiet_llama_logs", "read_model_file", "tensor_shapes"]

_REQUIRED_KEYS = ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                  "llama.attention.head_count", "edgetune.vocab_version", "edgetune.vocab_digest")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect the process's fd 2 (where llama.cpp logs) to a temp file; yields a list filled with its lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def quiet_llama_logs() -> None:
    """Drop llama.cpp's info/warning chatter (it logs via llama-cpp-python's logger) unless someone set its level."""
    logger = logging.getLogger("llama-cpp-python")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)


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
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path}: not a GGUF file (starts with {magic!r})")
    try:
        reader = gguf.GGUFReader(path)
        meta = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
        tensors = {t.name: t for t in reader.tensors}
    except (ValueError, IndexError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
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
    return meta


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class LocalModel:
    """A validated model GGUF loaded into llama.cpp; ``score`` ranks configurations for one prompt."""

    def __init__(self, path: str | os.PathLike[str], *, n_threads: int | None = None, rows_per_batch: int = 64,
                 tokens_per_batch: int = 512) -> None:
        """Validate and load ``path``.

        ``n_threads`` defaults to half the cores (llama.cpp's threads spin: oversubscribing a busy
        machine is very slow). ``score`` decodes up to ``rows_per_batch`` configurations (one
        llama.cpp sequence each, at most 256) and ``tokens_per_batch`` trie nodes per call.
        """
        import llama_cpp

        quiet_llama_logs()
        self._lc = llama_cpp
        self._path = Path(path)
        self._meta = read_model_file(self._path)
        self._context = int(self._meta["llama.context_length"])
        self._vocab_size = vocabulary().size
        self._seqs = max(1, min(rows_per_batch, llama_cpp.llama_max_parallel_sequences()))
        self._n_batch = max(tokens_per_batch, self._context)
        self._model = self._ctx = self._batch = None
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        with captured_stderr() as log:
            llama_cpp.llama_backend_init()
            self._model = llama_cpp.llama_model_load_from_file(os.fsencode(self._path),
                                                               llama_cpp.llama_model_default_params())
            if self._model:
                params = llama_cpp.llama_context_default_params()
                params.n_ctx = self._context + 2 * self._n_batch
                params.n_batch = params.n_ubatch = self._n_batch
                params.n_seq_max = self._seqs
                params.kv_unified = True  # a token may belong to many sequences (trie nodes shared by rows)
                params.n_threads = params.n_threads_batch = threads
                params.type_k = params.type_v = llama_cpp.GGML_TYPE_F32
                params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # its CPU path rounds to f16
                params.no_perf = True
                self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._model or not self._ctx:
            self.close()
            detail = next((line.strip() for line in reversed(log) if line.strip()), "no message")
            raise ModelFileError(f"{self._path}: llama.cpp cannot load it ({detail})")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, self._seqs)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def context(self) -> int:
        """Most tokens one sequence (prompt + configuration) may have."""
        return self._context

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's ``edgetune.*`` keys, without the prefix (``vocab_version``, ``vocab_digest``, ...)."""
        return {k.removeprefix("edgetune."): v for k, v in self._meta.items() if k.startswith("edgetune.")}

    def close(self) -> None:
        """Free llama.cpp's batch, context and model (the object is unusable afterwards)."""
        lc = getattr(self, "_lc", None)
        if lc is None:
            return
        if getattr(self, "_batch", None) is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lc.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_ids(self, ids: np.ndarray, what: str) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self._vocab_size):
            raise ValueError(f"{what}: token ids must lie in [0, {self._vocab_size})")

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[Sequence[int]]) -> None:
        """One llama_decode of ``tokens``, each in sequences ``seqs[i]`` (the first decides what it sees)."""
        if self._ctx is None:
            raise ValueError(f"{self._path}: model is closed")
        b = self._batch
        b.n_tokens = len(tokens)
        for i, (tok, pos, ids) in enumerate(zip(tokens, positions, seqs, strict=True)):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(ids)
            row = b.seq_id[i]
            for k, s in enumerate(ids):
                row[k] = s
            b.logits[i] = True
        rc = self._lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"{self._path}: llama_decode failed with code {rc}")

    def _logits_row(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._ctx, i), shape=(self._vocab_size,))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Full-vocabulary logits [len(ids), vocab] of a plain causal sequence."""
        arr = np.asarray(ids, dtype=np.int64)
        self._check_ids(arr, "ids")
        if not 0 < len(arr) <= self._context:
            raise ValueError(f"sequence of {len(arr)} tokens: needs 1 to {self._context}")
        self._lc.llama_memory_clear(self._memory, True)
        self._decode(arr.tolist(), range(len(arr)), [(0,)] * len(arr))
        return np.stack([self._logits_row(i).copy() for i in range(len(arr))])

    def score(self, prompt: Sequence[int], configs: np.ndarray, allowed: Sequence[Sequence[int]]) -> np.ndarray:
        """Log-probability [N] of each configuration row given ``prompt`` (ending with ``<cfg>``).

        ``configs`` [N, C] token ids; ``allowed[j]`` the token ids slot j may take. Each slot's
        log-softmax is restricted to its allowed ids, and the slots are summed: the same number
        as the PyTorch ``Decoder.slot_logits`` gives. The prompt is evaluated once; rows are
        sorted and decoded in batches whose trie nodes (shared prefixes) are evaluated once each,
        a node belonging to the llama.cpp sequences of all rows through it.
        """
        configs = np.asarray(configs, dtype=np.int64)
        if configs.ndim != 2:
            raise ValueError(f"configs must be [N, C], got shape {configs.shape}")
        n, c = configs.shape
        if len(allowed) != c:
            raise ValueError(f"allowed has {len(allowed)} slots, configs {c}")
        prompt_ids = [int(t) for t in prompt]
        self._check_ids(np.asarray(prompt_ids, dtype=np.int64), "prompt")
        self._check_ids(configs, "configs")
        p = len(prompt_ids)
        if p == 0 or p + c - 1 > self._context:
            raise ValueError(f"prompt of {p} tokens + {c} slots exceeds the model's context of {self._context}")
        if n == 0:
            return np.zeros(0)
        allowed_ids = [np.asarray(a, dtype=np.int64) for a in allowed]
        slots = np.empty_like(configs)  # column j: index of each row's token in allowed[j]
        for j, ids in enumerate(allowed_ids):
            order = np.argsort(ids, kind="stable")
            pos = np.searchsorted(ids[order], configs[:, j]).clip(max=len(ids) - 1)
            found = order[pos]
            if not np.array_equal(ids[found], configs[:, j]):
                raise ValueError(f"slot {j}: some configuration tokens are not among the allowed ids")
            slots[:, j] = found

        lc, mem = self._lc, self._memory
        lc.llama_memory_clear(mem, True)
        all_seqs = tuple(range(self._seqs))
        self._decode(prompt_ids, range(p), [all_seqs] * p)  # the prompt belongs to every sequence
        first = _log_softmax(self._logits_row(p - 1)[allowed_ids[0]])

        rows = np.lexsort(configs.T[::-1])  # lexicographic: neighbours share the longest prefixes
        cfg = configs[rows].tolist()
        out = np.empty(n)
        out[:] = first[slots[rows, 0]]
        depth = c - 1  # tokens to evaluate per row (the last slot's token predicts nothing)
        if depth == 0:
            result = np.empty(n)
            result[rows] = out
            return result

        start = 0
        while start < n:
            # Gather a batch of consecutive rows and the trie nodes of their first c-1 tokens.
            tokens: list[int] = []
            node_depth: list[int] = []
            node_seqs: list[list[int]] = []
            paths: list[list[int]] = []
            prev: list[int] | None = None
            prev_path: list[int] = []
            end = start
            while end < n and end - start < self._seqs:
                row = cfg[end]
                shared = 0
                if prev is not None:
                    while shared < depth and row[shared] == prev[shared]:
                        shared += 1
                if len(tokens) + depth - shared > self._n_batch:
                    break
                path = prev_path[:shared]
                for d in range(shared, depth):
                    path.append(len(tokens))
                    tokens.append(row[d])
                    node_depth.append(d)
                    node_seqs.append([])
                seq = end - start
                for node in path:
                    node_seqs[node].append(seq)
                paths.append(path)
                prev, prev_path = row, path
                end += 1
            for s in range(end - start):
                lc.llama_memory_seq_rm(mem, s, p, -1)  # keep only the prompt in every sequence
            self._decode(tokens, [p + d for d in node_depth], node_seqs)
            node_logp = [_log_softmax(self._logits_row(k)[allowed_ids[d + 1]]) for k, d in enumerate(node_depth)]
            for i, path in enumerate(paths):
                r = start + i
                idx = slots[rows[r]]
                out[r] += sum(node_logp[node][idx[d + 1]] for d, node in enumerate(path))
            start = end
        result = np.empty(n)
        result[rows] = out
        return result
