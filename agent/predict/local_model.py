"""Run the exported decoder on the device with llama.cpp (llama-cpp-python), from a GGUF file.

The file is checked (``agent.predict.model_check``) before llama.cpp sees it; llama.cpp's CPU
backend and logs are handled by ``agent.predict.llama_runtime``.

Scoring walks the configurations as a trie through llama.cpp's C API: the prompt is decoded
once and belongs to every sequence; rows are sorted and taken in groups (one sequence per
row), each distinct prefix in a group is decoded once for all the rows that pass through
it, and the cache is cut back to the prompt between groups. The KV cache is kept in f32 so results match
the PyTorch model to float rounding (an f16 cache costs ~1% of the logits' scale).

``beam`` keeps one llama.cpp sequence per beam: the prompt, decoded once, is in every sequence;
each step decodes only the new token of each surviving beam, a beam's first child taking over
its sequence and the others getting a copy (``llama_memory_seq_cp``) of its tokens. The last
prompt decoded stays in the cache: ``score`` and ``beam`` with the same prompt skip its decode.

``score`` and ``beam`` need, per position, the logits of a slot's few allowed ids only. The context
runs in embeddings mode (no pooling: llama.cpp hands back each position's final hidden state, after
the output RMSNorm: ``result_norm``, ``res->t_embd`` in its llama graph) and an eval callback ends each
graph there, skipping the vocabulary-wide output matmul; the allowed ids' rows of ``output.weight``
are dequantized from the file (once each) and multiplied here, the hidden state rounded first as
llama.cpp's CPU matmul rounds it for that weight type (Q8_K for k-quants, Q8_0, f16), so the logits
equal llama.cpp's own to float rounding. ``logits`` lets the graph run whole.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ModelFileError
from agent.hardware.probe import usable_cpus
from agent.predict.beam import beam_search, log_softmax
from agent.predict.llama_runtime import captured_stderr, load_cpu_backend, quiet_llama_logs
from agent.predict.model_check import check_model_file
from agent.predict.vocab import vocabulary

__all__ = ["LocalModel"]

_FINAL_NORM = (b"result_norm", b"result_embd_pooled")  # the node's name (embeddings mode renames it)


def _stop_after_final_norm(full_logits: list[bool]) -> Any:
    """A llama.cpp ``cb_eval``: each graph stops once its final norm is computed, unless ``full_logits[0]``.

    ggml's scheduler asks about each node whether to pause after it; after a pause, a False answer
    skips the rest of the graph (here: the output matmul). None if ``ggml_get_name`` cannot be found.
    """
    import llama_cpp

    try:
        name = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(("ggml_get_name", llama_cpp.llama_cpp._lib))
    except (AttributeError, OSError):
        return None

    def observe(tensor: int, ask: bool, _: object) -> bool:
        return ask and not full_logits[0] and name(tensor) in _FINAL_NORM

    return llama_cpp.ggml_backend_sched_eval_callback(observe)


def _as_matmul_sees(hidden: np.ndarray, weight_type: int) -> np.ndarray:
    """Hidden states [n, dim] (float64) rounded as ggml's CPU matmul rounds them against weights of ``weight_type``.

    It quantizes them to its ``vec_dot_type``: Q8_K (blocks of 256) for k-quants, Q8_0 (blocks of
    32, f16 scales) for Q4_0/Q5_0/Q8_0, f16 for f16 weights; f32 weights take them as they are
    (and so do other types here, an approximation).
    """
    from gguf import GGMLQuantizationType as T

    x = np.asarray(hidden, dtype=np.float32)
    n = len(x)
    if weight_type in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):  # quantize_row_q8_K_ref
        x = x.reshape(n, -1, 256)
        top = np.take_along_axis(x, np.abs(x).argmax(-1)[..., None], -1)  # the largest magnitude, signed
        safe = np.where(top == 0, np.float32(1), top)
        iscale = np.float32(-127) / safe
        q = np.minimum(np.rint(iscale * x), 127)
        return (q * np.where(top == 0, np.float32(0), np.float32(1) / iscale).astype(np.float64)).reshape(n, -1)
    if weight_type in (T.Q4_0, T.Q5_0, T.Q8_0):  # quantize_row_q8_0 (x86)
        x = x.reshape(n, -1, 32)
        amax = np.abs(x).max(-1, keepdims=True)
        d = (amax / np.float32(127)).astype(np.float16).astype(np.float64)
        q = np.rint(x * np.where(amax == 0, np.float32(0), np.float32(127) / np.where(amax == 0, 1, amax)))
        return (q * d).reshape(n, -1)
    if weight_type == T.F16:
        return x.astype(np.float16).astype(np.float64)
    return x.astype(np.float64)


class LocalModel:
    """A validated model GGUF loaded into llama.cpp; ``score`` ranks configurations for one prompt, ``beam``
    finds the best ones without scoring them all."""

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
        self._meta, tensors = check_model_file(self._path)
        self._context = int(self._meta["llama.context_length"])
        self._vocab_size = vocabulary().size
        output = tensors["output.weight"]
        self._out_file, self._out_type = output.data, int(output.tensor_type)  # rows memory-mapped, as stored
        self._out = np.zeros((self._vocab_size, int(self._meta["llama.embedding_length"])), dtype=np.float32)
        self._out_ready = np.zeros(self._vocab_size, dtype=bool)  # rows of _out dequantized so far
        self._full_logits = [False]  # read by the eval callback: let the graph run to the output matmul
        self._stop = _stop_after_final_norm(self._full_logits)  # kept alive as long as the context
        self._seqs = max(1, min(rows_per_batch, llama_cpp.llama_max_parallel_sequences()))
        self._n_batch = max(tokens_per_batch, self._context)
        self._model = self._ctx = self._batch = self._memory = None
        self._prompt: tuple[int, ...] | None = None  # in every sequence of the cache, positions 0..len-1
        self._prompt_hidden = np.zeros(0, dtype=np.float32)  # its last position's final hidden state
        threads = n_threads or max(1, usable_cpus() // 2)
        with captured_stderr() as log:
            llama_cpp.llama_backend_init()
            load_cpu_backend(llama_cpp)
            self._model = llama_cpp.llama_model_load_from_file(os.fsencode(self._path),
                                                               llama_cpp.llama_model_default_params())
            if self._model:
                params = llama_cpp.llama_context_default_params()
                params.n_ctx = self._cells = self._context + 2 * self._n_batch
                params.n_batch = params.n_ubatch = self._n_batch
                params.n_seq_max = self._seqs
                params.kv_unified = True  # a token may belong to many sequences (trie nodes shared by rows)
                params.n_threads = params.n_threads_batch = threads
                params.type_k = params.type_v = llama_cpp.GGML_TYPE_F32
                params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # its CPU path rounds to f16
                params.no_perf = True
                params.embeddings, params.pooling_type = True, llama_cpp.LLAMA_POOLING_TYPE_NONE
                if self._stop is not None:
                    params.cb_eval = self._stop
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

    @property
    def sequences(self) -> int:
        """llama.cpp sequences of the context: the widest ``beam`` it can run."""
        return self._seqs

    def close(self) -> None:
        """Free llama.cpp's batch, context and model (the object is unusable afterwards)."""
        lc = getattr(self, "_lc", None)
        if lc is None:
            return
        self._memory, self._prompt = None, None
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
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_ids(self, ids: np.ndarray, what: str) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self._vocab_size):
            raise ValueError(f"{what}: token ids must lie in [0, {self._vocab_size})")

    def _check_open(self) -> None:
        if self._ctx is None:
            raise ValueError(f"{self._path}: model is closed")

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[Sequence[int]]) -> None:
        """One llama_decode of ``tokens``, each in sequences ``seqs[i]`` (the first decides what it sees)."""
        self._check_open()
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
            self._prompt = None  # the cache's content is unknown now
            raise RuntimeError(f"{self._path}: llama_decode failed with code {rc}")

    def _hidden(self, n: int) -> np.ndarray:
        """Final hidden states [n, dim] of the last decode's n tokens (a view of llama.cpp's buffer)."""
        return np.ctypeslib.as_array(self._lc.llama_get_embeddings(self._ctx), shape=(n, self._out.shape[1]))

    def _slot_logits(self, hidden: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Logits [n, len(ids)] of token ids ``ids`` from final hidden states [n, dim]: llama.cpp's output layer."""
        import gguf

        new = np.unique(ids[~self._out_ready[ids]])
        if len(new):
            self._out[new] = gguf.quants.dequantize(self._out_file[new], self._out_type)
            self._out_ready[new] = True
        return _as_matmul_sees(hidden, self._out_type) @ self._out[ids].T.astype(np.float64)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Full-vocabulary logits [len(ids), vocab] of a plain causal sequence."""
        self._check_open()
        arr = np.asarray(ids, dtype=np.int64)
        self._check_ids(arr, "ids")
        if not 0 < len(arr) <= self._context:
            raise ValueError(f"sequence of {len(arr)} tokens: needs 1 to {self._context}")
        self._prompt = None
        self._lc.llama_memory_clear(self._memory, True)
        self._full_logits[0] = True
        try:
            self._decode(arr.tolist(), range(len(arr)), [(0,)] * len(arr))
        finally:
            self._full_logits[0] = False
        return np.ctypeslib.as_array(self._lc.llama_get_logits(self._ctx), shape=(len(arr), self._vocab_size)).copy()

    def _query(self, prompt: Sequence[int], configs: np.ndarray, allowed: Sequence[Sequence[int]]
               ) -> tuple[list[int], np.ndarray, list[np.ndarray], np.ndarray]:
        """Checked prompt ids, configs [N, C], allowed ids per slot, and each token's index in its slot's ids."""
        self._check_open()
        configs = np.asarray(configs, dtype=np.int64)
        if configs.ndim != 2:
            raise ValueError(f"configs must be [N, C], got shape {configs.shape}")
        c = configs.shape[1]
        if len(allowed) != c:
            raise ValueError(f"allowed has {len(allowed)} slots, configs {c}")
        prompt_ids = [int(t) for t in prompt]
        self._check_ids(np.asarray(prompt_ids, dtype=np.int64), "prompt")
        self._check_ids(configs, "configs")
        p = len(prompt_ids)
        if p == 0 or p + c - 1 > self._context:
            raise ValueError(f"prompt of {p} tokens + {c} slots exceeds the model's context of {self._context}")
        allowed_ids = [np.asarray(a, dtype=np.int64) for a in allowed]
        slots = np.empty_like(configs)  # column j: index of each row's token in allowed[j]
        for j, ids in enumerate(allowed_ids):
            if not len(ids):
                raise ValueError(f"slot {j}: no allowed ids")
            order = np.argsort(ids, kind="stable")
            pos = np.searchsorted(ids[order], configs[:, j]).clip(max=len(ids) - 1)
            found = order[pos]
            if not np.array_equal(ids[found], configs[:, j]):
                raise ValueError(f"slot {j}: some configuration tokens are not among the allowed ids")
            slots[:, j] = found
        return prompt_ids, configs, allowed_ids, slots

    def _prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """Put the prompt, alone, in every sequence; its last position's final hidden state [1, dim].

        The last prompt stays in the cache: the same prompt again only cuts what followed it, and
        one sharing a prefix with it (the same device and kernel at another shape) decodes only the rest.
        """
        p = len(prompt_ids)
        lc, mem = self._lc, self._memory
        if self._prompt == tuple(prompt_ids) and lc.llama_memory_seq_rm(mem, -1, p, -1):
            return self._prompt_hidden
        shared = 0
        if self._prompt is not None:
            limit = min(len(self._prompt), p - 1)  # at least the last token is decoded: its hidden state is needed
            while shared < limit and self._prompt[shared] == prompt_ids[shared]:
                shared += 1
        self._prompt = None
        if not (shared and lc.llama_memory_seq_rm(mem, -1, shared, -1)):
            shared = 0
            lc.llama_memory_clear(mem, True)
        self._decode(prompt_ids[shared:], range(shared, p), [tuple(range(self._seqs))] * (p - shared))
        self._prompt, self._prompt_hidden = tuple(prompt_ids), self._hidden(p - shared)[-1:].copy()
        return self._prompt_hidden

    def _fork(self, live: Sequence[int], parents: Sequence[int], start: int) -> list[int]:
        """Sequences of the next beams, beam i continuing the beam in sequence ``live[parents[i]]``.

        A parent's first child takes over its sequence, the others get a copy of its tokens from
        position ``start`` on in a free one; sequences of beams without children are cut to ``start``.
        """
        lc, mem = self._lc, self._memory
        seqs = [live[b] for b in parents]
        taken: set[int] = set()
        copies = []
        for i, s in enumerate(seqs):
            if s in taken:
                copies.append(i)
            taken.add(s)
        for s in set(live) - taken:
            lc.llama_memory_seq_rm(mem, s, start, -1)
        free = (s for s in range(self._seqs) if s not in taken)
        for i, s in zip(copies, free, strict=False):
            lc.llama_memory_seq_rm(mem, s, start, -1)
            lc.llama_memory_seq_cp(mem, seqs[i], s, start, -1)
            seqs[i] = s
        return seqs

    def beam(self, prompt: Sequence[int], rows: np.ndarray, allowed: Sequence[Sequence[int]], *,
             width: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the ``width`` best prefixes found by a beam search over the trie of ``rows``.

        ``rows`` [N, C]: token ids of the valid configurations; ``allowed[j]``: the ids slot j may
        take (its softmax is restricted to them, as in :meth:`score`). Only tokens some row continues
        with are expanded. Returns (row indices, best first; their log-probabilities, equal to
        ``score`` of those rows); rows that share every token come together, in index order.
        The prompt is decoded once; each step decodes one token per surviving beam.
        """
        prompt_ids, rows, allowed_ids, _ = self._query(prompt, rows, allowed)
        p, c = len(prompt_ids), rows.shape[1]
        if not 1 <= width <= self._seqs:
            raise ValueError(f"beam width {width}: this model runs 1 to {self._seqs} beams (its sequences)")
        if p + width * (c - 1) > self._cells:
            raise ValueError(f"beam width {width} over {c} slots needs {p + width * (c - 1)} cache cells, "
                             f"the context has {self._cells}")
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        first = self._slot_logits(self._prefill(prompt_ids), allowed_ids[0])[0]
        live = [0]  # the sequence of each beam; at first one beam, the prompt, in every sequence

        def extend(parents: list[int], tokens: list[int], j: int) -> np.ndarray:
            nonlocal live
            live = self._fork(live, parents, p)
            self._decode(tokens, [p + j] * len(tokens), [(s,) for s in live])
            return self._slot_logits(self._hidden(len(tokens)), allowed_ids[j + 1])

        return beam_search(rows, allowed_ids, first, extend, width=width)

    def score(self, prompt: Sequence[int], configs: np.ndarray, allowed: Sequence[Sequence[int]]) -> np.ndarray:
        """Log-probability [N] of each configuration row given ``prompt`` (ending with ``<cfg>``).

        ``configs`` [N, C] token ids; ``allowed[j]`` the token ids slot j may take. Each slot's
        log-softmax is restricted to its allowed ids, and the slots are summed: the same number
        as the PyTorch ``Decoder.slot_logits`` gives. The prompt is evaluated once; rows are
        sorted and decoded in batches whose trie nodes (shared prefixes) are evaluated once each,
        a node belonging to the llama.cpp sequences of all rows through it.
        """
        prompt_ids, configs, allowed_ids, slots = self._query(prompt, configs, allowed)
        n, c = configs.shape
        if n == 0:
            return np.zeros(0)
        lc, mem = self._lc, self._memory
        p = len(prompt_ids)
        first = log_softmax(self._slot_logits(self._prefill(prompt_ids), allowed_ids[0])[0])

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
            hidden = self._hidden(len(tokens))
            depths = np.asarray(node_depth)
            node_logp: list[np.ndarray] = [np.zeros(0)] * len(tokens)
            for d in np.unique(depths):  # one matmul per slot: its nodes share the allowed ids
                at = np.flatnonzero(depths == d)
                for k, row_logp in zip(at, log_softmax(self._slot_logits(hidden[at], allowed_ids[d + 1])), strict=True):
                    node_logp[k] = row_logp
            for i, path in enumerate(paths):
                r = start + i
                idx = slots[rows[r]]
                out[r] += sum(node_logp[node][idx[d + 1]] for d, node in enumerate(path))
            start = end
        result = np.empty(n)
        result[rows] = out
        return result
