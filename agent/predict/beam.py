"""Constrained beam search over the token trie of a set of valid configurations.

The search knows nothing of llama.cpp: a model serves it through the logits of slot 0 and an
``extend`` step that appends one token to each surviving beam and returns the logits of the
next slot (see :meth:`agent.predict.local_model.LocalModel.beam`, which keeps each beam in a
llama.cpp sequence). Logits are over the ids the slot allows only, and each slot's softmax is
restricted to them, as in ``LocalModel.score``. Only tokens that some valid row continues with
are expanded, so every beam stays completable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Extend", "beam_search", "log_softmax"]

# extend(parents, tokens, j): logits [len(tokens), len(allowed[j + 1])] of slot j + 1 for the new beams,
# beam i being the previous step's beam parents[i] followed by tokens[i] in slot j.
Extend = Callable[[list[int], list[int], int], np.ndarray]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, in float64."""
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def beam_search(rows: np.ndarray, allowed: Sequence[Sequence[int]], first: np.ndarray, extend: Extend, *,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``width`` best prefixes, slot by slot, among those some row of ``rows`` [N, C] continues.

    ``first`` is the logits [len(allowed[0])] of slot 0. Returns the row indices under the final beams,
    best first (a beam's rows, which share every token, in index order), and their summed log-probs.
    Candidates are ranked by log-prob, ties in (beam, token id) order. The last slot is chosen from
    the previous step's logits: ``extend`` is called C - 1 times.
    """
    n, c = rows.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    live = np.arange(n)  # rows under some beam, in index order
    beam = np.zeros(n, dtype=np.int64)  # the beam of each live row
    scores = np.zeros(1)  # log p of each beam's prefix
    logp = log_softmax(np.asarray(first)[None])
    for j in range(c):
        ids = np.asarray(allowed[j], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        tokens = rows[live, j]
        at = order[np.searchsorted(ids[order], tokens)]  # each live row's token's index in allowed[j]
        _, child_row, child = np.unique(beam * (int(tokens.max()) + 1) + tokens, return_index=True,
                                        return_inverse=True)  # children in (beam, token) order
        parent = beam[child_row]
        candidates = scores[parent] + logp[parent, at[child_row]]
        keep = np.argsort(-candidates, kind="stable")[:width]
        rank = np.full(len(candidates), -1)
        rank[keep] = np.arange(len(keep))
        beam = rank[child.reshape(-1)]
        live, beam, scores = live[beam >= 0], beam[beam >= 0], candidates[keep]
        if j + 1 < c:
            logp = log_softmax(extend(parent[keep].tolist(), tokens[child_row[keep]].tolist(), j))
    order = np.argsort(beam, kind="stable")
    return live[order], scores[beam[order]]
