"""A LLaMA-style decoder in PyTorch whose weights map one-to-one onto llama.cpp's ``llama`` GGUF.

RMSNorm, rotary position embeddings in llama.cpp's "normal" (adjacent-pair) layout, SwiGLU
feed-forward, no biases. Two training-only details do not change what is exported:

- The value factor is shared by input and output (``lanes32=8`` in the prompt and
  ``vector#0=8`` in the answer use one vector for ``8``), which makes "copy this value"
  easy to learn.
- Embedding and output rows are factorised as ``field + value + magnitude * field
  direction + residual`` (``tile#1=64`` shares ``tile#1`` and ``64`` with other tokens,
  and sits between ``tile#1=32`` and ``tile#1=128``), so rare tokens borrow from common
  ones; :meth:`Decoder.embedding_matrix` and :meth:`Decoder.output_matrix` give the
  plain tables the GGUF holds.
- :meth:`Decoder.slot_logits` runs one prompt against many configurations at once: the
  configurations attend to the prompt's keys and values, computed once. That is the same
  function as running each ``prompt + configuration`` sequence separately.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agent.predict.vocab import Vocabulary

__all__ = ["STUDENT", "TEACHER", "Decoder", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder (the GGUF ``llama.*`` keys are derived from it)."""

    dim: int
    layers: int
    heads: int
    ffn_dim: int
    vocab_size: int = 0
    context: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def to_dict(self) -> dict:
        return asdict(self)


# Sizes: Q4_0/Q8_0 need rows in multiples of 32, which every width here is. The teacher
# is sized for training on a two-core CPU in minutes (about 2.5x the student's compute).
STUDENT = ModelConfig(dim=256, layers=4, heads=8, ffn_dim=768)
TEACHER = ModelConfig(dim=384, layers=4, heads=6, ffn_dim=1152)


def _magnitude(value: str) -> float:
    """log2 of what a value token stands for (``b12`` -> 12, ``64`` -> 6); 0 for categories."""
    if value.startswith("b") and value[1:].lstrip("-").isdigit():
        return float(value[1:])
    if value.isdigit():
        return math.log2(int(value) + 1)
    return 0.0


def token_factors(vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Per token: the index of its field, of its value (both shared across tokens), and its magnitude."""
    fields: dict[str, int] = {}
    values: dict[str, int] = {}
    field_ids, value_ids, magnitudes = [], [], []
    for token in vocab.tokens:
        field, sep, value = token.partition("=")
        if not sep:
            field, value = token, token
        field_ids.append(fields.setdefault(field, len(fields)))
        value_ids.append(values.setdefault(value, len(values)))
        magnitudes.append(_magnitude(value) / 8.0 if sep else 0.0)
    return (torch.tensor(field_ids), torch.tensor(value_ids), torch.tensor(magnitudes), len(fields), len(values))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate adjacent pairs (x0, x1), (x2, x3)... by position * theta^(-2i/d) (llama.cpp's NORM mode).

    ``x``: [..., T, H, D]; ``positions``: broadcastable to [..., T].
    """
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # [D/2]
    angles = positions.to(torch.float32)[..., None] * freqs  # [..., T, D/2]
    cos, sin = angles.cos()[..., None, :], angles.sin()[..., None, :]  # [..., T, 1, D/2]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.wq = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.w_gate = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w_up = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def _qkv(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.attn_norm(h)
        shape = (*x.shape[:-1], self.cfg.heads, self.cfg.head_dim)
        q = rope(self.wq(x).view(shape), positions, self.cfg.rope_theta)
        k = rope(self.wk(x).view(shape), positions, self.cfg.rope_theta)
        return q, k, self.wv(x).view(shape)

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        x = self.ffn_norm(h)
        return h + self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))

    def forward_prompt(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Prompt stream [B, P, D] (right-padded to P), causal; returns new h and its (k, v)."""
        b, p, _ = h.shape
        positions = torch.arange(p).expand(b, p)
        q, k, v = self._qkv(h, positions)  # [B, P, H, Dh]
        mask = torch.ones(p, p, dtype=torch.bool).tril()
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        h = h + self.wo(out.transpose(1, 2).reshape(b, p, -1))
        return self._ffn(h), (k, v)

    def forward_configs(self, h: torch.Tensor, prompt_kv: tuple, lengths: torch.Tensor) -> torch.Tensor:
        """Config stream [B, N, C, D] after prompts of ``lengths``: attends to the prompt and causally to itself."""
        b, n, c, _ = h.shape
        pk, pv = prompt_kv  # [B, P, H, Dh]
        p = pk.shape[1]
        positions = lengths[:, None, None] + torch.arange(c)[None, None, :]  # [B, 1, C]
        q, k, v = self._qkv(h, positions.expand(b, n, c))  # [B, N, C, H, Dh]
        heads, dh = self.cfg.heads, self.cfg.head_dim
        q = q.permute(0, 1, 3, 2, 4)  # [B, N, H, C, Dh]
        k = k.permute(0, 1, 3, 2, 4)
        v = v.permute(0, 1, 3, 2, 4)
        pk = pk.permute(0, 2, 1, 3)[:, None].expand(b, n, heads, p, dh)  # [B, N, H, P, Dh]
        pv = pv.permute(0, 2, 1, 3)[:, None].expand(b, n, heads, p, dh)
        keys = torch.cat((pk, k), dim=3)
        vals = torch.cat((pv, v), dim=3)
        prompt_ok = (torch.arange(p)[None, :] < lengths[:, None])[:, None, None, None, :].expand(b, 1, 1, c, p)
        self_ok = torch.ones(c, c, dtype=torch.bool).tril()[None, None, None].expand(b, 1, 1, c, c)
        mask = torch.cat((prompt_ok, self_ok), dim=-1)
        out = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)  # [B, N, H, C, Dh]
        h = h + self.wo(out.permute(0, 1, 3, 2, 4).reshape(b, n, c, -1))
        return self._ffn(h)

    def forward_sequence(self, h: torch.Tensor) -> torch.Tensor:
        """Plain causal forward of [B, T, D] (what llama.cpp computes)."""
        out, _ = self.forward_prompt(h, torch.full((h.shape[0],), h.shape[1]))
        return out


class Decoder(nn.Module):
    """The model: factorised token tables, ``layers`` blocks, a final norm."""

    def __init__(self, cfg: ModelConfig, vocab: Vocabulary) -> None:
        super().__init__()
        cfg = ModelConfig(**{**cfg.to_dict(), "vocab_size": vocab.size})
        self.cfg = cfg
        field_ids, value_ids, magnitudes, n_fields, n_values = token_factors(vocab)
        self.register_buffer("field_ids", field_ids, persistent=False)
        self.register_buffer("value_ids", value_ids, persistent=False)
        self.register_buffer("magnitudes", magnitudes[:, None], persistent=False)
        std = 0.02
        self.emb_field = nn.Parameter(torch.randn(n_fields, cfg.dim) * std)
        self.emb_value = nn.Parameter(torch.randn(n_values, cfg.dim) * std)
        self.emb_token = nn.Parameter(torch.randn(cfg.vocab_size, cfg.dim) * std * 0.25)
        self.out_field = nn.Parameter(torch.randn(n_fields, cfg.dim) * std)
        self.out_token = nn.Parameter(torch.randn(cfg.vocab_size, cfg.dim) * std * 0.25)
        # A direction per field along which a value's log2 magnitude moves it, so that an
        # unseen size bucket lands between its neighbours instead of at random.
        self.emb_scale = nn.Parameter(torch.randn(n_fields, cfg.dim) * std)
        self.out_scale = nn.Parameter(torch.randn(n_fields, cfg.dim) * std)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        for block in self.blocks:  # scaled init of the residual projections (GPT-2 style)
            for lin in (block.wo, block.w_down):
                nn.init.normal_(lin.weight, std=std / math.sqrt(2 * cfg.layers))

    def embedding_matrix(self) -> torch.Tensor:
        """The plain [vocab, dim] input table (what the GGUF holds)."""
        return self._embed(torch.arange(self.cfg.vocab_size))

    def output_matrix(self) -> torch.Tensor:
        """The plain [vocab, dim] output table (what the GGUF holds)."""
        return self._out_rows(torch.arange(self.cfg.vocab_size))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        fields = self.field_ids[ids]
        return (self.emb_field[fields] + self.emb_value[self.value_ids[ids]] + self.emb_token[ids]
                + self.magnitudes[ids] * self.emb_scale[fields])

    def _out_rows(self, ids: torch.Tensor) -> torch.Tensor:
        fields = self.field_ids[ids]
        return (self.out_field[fields] + self.emb_value[self.value_ids[ids]] + self.out_token[ids]
                + self.magnitudes[ids] * self.out_scale[fields])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits of a plain batch [B, T] (for checks against llama.cpp)."""
        h = self._embed(ids)
        for block in self.blocks:
            h = block.forward_sequence(h)
        return self.norm(h) @ self.output_matrix().T

    def slot_logits(self, prompts: torch.Tensor, lengths: torch.Tensor, configs: torch.Tensor,
                    allowed: torch.Tensor) -> torch.Tensor:
        """Logits of each slot's allowed tokens, for many configurations per prompt.

        ``prompts`` [B, P] right-padded, ``lengths`` [B] (each ends with ``<cfg>``),
        ``configs`` [B, N, C] token ids, ``allowed`` [B, C, V] token ids per slot (-1 pads).
        Returns [B, N, C, V]: the logits for slot j given the prompt and slots < j, padded
        entries at -inf.
        """
        b, n, c = configs.shape
        h = self._embed(prompts)
        kvs = []
        for block in self.blocks:
            h, kv = block.forward_prompt(h, lengths)
            kvs.append(kv)
        last = self.norm(h[torch.arange(b), lengths - 1])  # [B, D]: predicts slot 0
        hc = self._embed(configs[:, :, :-1]) if c > 1 else None
        if hc is not None:
            for block, kv in zip(self.blocks, kvs, strict=False):
                hc = block.forward_configs(hc, kv, lengths)
            hc = self.norm(hc)  # [B, N, C-1, D]: slot j predicts slot j+1
            states = torch.cat((last[:, None, None, :].expand(b, n, 1, -1), hc), dim=2)
        else:
            states = last[:, None, None, :].expand(b, n, 1, -1)
        rows = self._out_rows(allowed.clamp(min=0))  # [B, C, V, D]
        logits = torch.einsum("bncd,bcvd->bncv", states, rows)
        return logits.masked_fill((allowed < 0)[:, None], float("-inf"))
