"""Rank a case's table with a PyTorch decoder: the model's evaluation order for replay.

Small tables are scored whole. Large ones (the GPU tables have up to 18k rows) go
through a beam search constrained to configurations in the table, as the agent decodes
on a device; rows the beam did not reach follow in a seeded random order (the fallback
search of the replay). Ties (values that share a token) are broken by a seeded shuffle,
never by table order, which would leak how the table was sorted.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from agent.train.cases import Case
from agent.train.fit import _batch, _logits, score_case, slot_allowed
from agent.train.model import Decoder

__all__ = ["FULL_SCORE_LIMIT", "beam_rows", "model_order", "table_order", "torch_slot_logp"]

FULL_SCORE_LIMIT = 2048


def _rng(case: Case) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(case.case_id.encode()))


def table_order(case: Case, scores: Callable[[], np.ndarray],
                slot_logp: Callable[[np.ndarray, int], np.ndarray] | None = None, *, beam: int = 64,
                beam_search: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None) -> list[int]:
    """Every row of ``case`` in the order a model would have them benchmarked.

    ``scores()`` scores the whole table (used up to :data:`FULL_SCORE_LIMIT` rows). Larger tables
    go through a beam search: ``beam_search(width)`` when given, a ready one returning (rows, best
    first; their log-probs) like ``LocalModel.beam``, else :func:`beam_rows` driven by ``slot_logp``.
    """
    noise = _rng(case).random(len(case.configs))
    if len(case.configs) <= FULL_SCORE_LIMIT:
        return [int(i) for i in np.lexsort((noise, -scores()))]
    if beam_search is not None:
        rows, logp = beam_search(beam)
        ranked = [int(i) for i in rows[np.lexsort((noise[rows], -logp))]]  # ties in a seeded order, as beam_rows
    elif slot_logp is not None:
        ranked = beam_rows(case, slot_logp, beam=beam)
    else:
        raise ValueError(f"case {case.case_id} has {len(case.configs)} rows: table_order needs slot_logp or "
                         "beam_search")
    seen = set(ranked)
    return ranked + [int(i) for i in np.argsort(noise) if int(i) not in seen]


def model_order(model: Decoder, case: Case, *, hide_name: bool = False, beam: int = 64) -> list[int]:
    """:func:`table_order` for a PyTorch decoder."""
    return table_order(case, lambda: score_case(model, case, hide_name=hide_name),
                       torch_slot_logp(model, case, hide_name=hide_name), beam=beam)


def beam_rows(case: Case, slot_logp: Callable[[np.ndarray, int], np.ndarray], *, beam: int = 64) -> list[int]:
    """Rows reached by a beam search of width ``beam`` over the table's token trie, best first.

    ``slot_logp(prefixes, j)`` gives, for prefixes [W, j] of token ids, the log-probabilities
    [W, len(slot_allowed(case)[j])] of slot ``j``'s allowed tokens; any model can serve.
    """
    rows = case.tokens
    allowed = slot_allowed(case)
    noise = _rng(case).random(len(rows))
    beams: list[tuple[float, np.ndarray]] = [(0.0, np.arange(len(rows)))]  # (log p, rows under this prefix)
    for j in range(rows.shape[1]):
        prefixes = np.stack([rows[members[0], :j] for _, members in beams])
        logp = slot_logp(prefixes, j)
        position = {t: i for i, t in enumerate(allowed[j])}
        expanded = []
        for b, (score, members) in enumerate(beams):
            column = rows[members, j]
            for token in np.unique(column):
                expanded.append((score + float(logp[b, position[int(token)]]), members[column == token]))
        expanded.sort(key=lambda item: -item[0])
        beams = expanded[:beam]
    out: list[int] = []
    for _, members in beams:
        out.extend(int(i) for i in members[np.argsort(noise[members])])
    return out


def torch_slot_logp(model: Decoder, case: Case, *, hide_name: bool = False) -> Callable[[np.ndarray, int], np.ndarray]:
    """``slot_logp`` for :func:`beam_rows` from a PyTorch decoder (the prompt is encoded with each call)."""
    proto = _batch([case], [np.zeros(1, dtype=np.int64)], [hide_name])
    n_slots = case.tokens.shape[1]

    @torch.no_grad()
    def slot_logp(prefixes: np.ndarray, j: int) -> np.ndarray:
        configs = torch.zeros((1, len(prefixes), n_slots), dtype=torch.long)
        configs[0, :, :j] = torch.from_numpy(prefixes)
        logits = _logits(model, dict(proto, configs=configs))[0, :, j]
        return F.log_softmax(logits, dim=-1).numpy()

    return slot_logp
