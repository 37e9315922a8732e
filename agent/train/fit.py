"""Training: a teacher from measured targets, a student from the targets and the teacher.

Each step draws cases, and for each case configurations from its target distribution
(:meth:`Case.targets`: the good configurations weighted by how close they are to the
best). The loss is the cross-entropy of every configuration token, each slot's softmax
restricted to the values that slot can take. The student adds the KL divergence from
the teacher's distribution at every slot (distillation). The kernel's name is hidden
from the prompt in a quarter of the draws so that the model also learns to predict
from structure alone, as it must for a kernel it has never seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from agent.predict.vocab import vocabulary
from agent.train.cases import Case
from agent.train.model import STUDENT, TEACHER, Decoder, ModelConfig

__all__ = ["TrainOptions", "TrainRun", "score_case", "slot_allowed", "train_model"]


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 400
    cases_per_step: int = 16
    configs_per_case: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 30
    temperature: float = 0.05  # of the targets (see Case.targets)
    hide_name: float = 0.25  # share of draws with the kernel's name hidden
    gpu_weight: float = 4.0  # GPU cases are few; draw each this much more often
    distill: float = 0.5  # student: weight of the teacher term (the rest is the measured targets)
    listwise: float = 0.0  # weight of a ranking term over drawn + uniform rows (0: likelihood only)
    uniform_rows: int = 8  # rows drawn uniformly per case for the ranking term
    seed: int = 0


@dataclass(frozen=True)
class TrainRun:
    """What `edgetune train` and `edgetune eval` train: both models' sizes and schedules
    (one definition, so the evaluation judges the recipe that ships)."""

    teacher: ModelConfig = TEACHER
    student: ModelConfig = STUDENT
    teacher_train: TrainOptions = TrainOptions(steps=200, lr=1e-3, temperature=0.1)
    student_train: TrainOptions = TrainOptions(steps=250, temperature=0.1)

    def tiny(self, steps: int) -> TrainRun:
        """64-wide models and ``steps`` steps: checks a pipeline in seconds, predicts nothing useful."""
        small = ModelConfig(dim=64, layers=2, heads=4, ffn_dim=128)
        return replace(self, teacher=small, student=small, teacher_train=replace(self.teacher_train, steps=steps),
                       student_train=replace(self.student_train, steps=steps))

    def seeded(self, seed: int) -> TrainRun:
        return replace(self, teacher_train=replace(self.teacher_train, seed=seed),
                       student_train=replace(self.student_train, seed=seed))


def slot_allowed(case: Case) -> list[list[int]]:
    """Per slot, the distinct token ids its declared values map to (in first-seen order)."""
    return [list(dict.fromkeys(slot.token_ids)) for slot in case.codec.slots]


def _pad(rows: Sequence[Sequence[int]], width: int, fill: int) -> list[list[int]]:
    return [list(r) + [fill] * (width - len(r)) for r in rows]


def _batch(cases: Sequence[Case], rows: Sequence[np.ndarray], hide: Sequence[bool],
           row_weights: Sequence[np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Tensors for slot_logits plus target positions and a mask of real slots (weighted per row)."""
    prompts = [c.prompt(hide_name=h) for c, h in zip(cases, hide, strict=False)]
    p = max(len(x) for x in prompts)
    c_max = max(len(c.codec.slots) for c in cases)
    allowed = [slot_allowed(c) for c in cases]
    v_max = max(len(a) for per_case in allowed for a in per_case)
    allowed_t = torch.full((len(cases), c_max, v_max), -1, dtype=torch.long)
    for b, per_case in enumerate(allowed):
        for j, ids in enumerate(per_case):
            allowed_t[b, j, :len(ids)] = torch.tensor(ids)
        allowed_t[b, len(per_case):, 0] = 0  # padded slots: one dummy choice, masked out of the loss
    n = max(len(r) for r in rows)
    configs = torch.zeros((len(cases), n, c_max), dtype=torch.long)
    target = torch.zeros((len(cases), n, c_max), dtype=torch.long)
    mask = torch.zeros((len(cases), n, c_max))
    for b, (case, idx) in enumerate(zip(cases, rows, strict=False)):
        tokens = case.tokens[idx]  # [n_b, C_b]
        nb, cb = tokens.shape
        configs[b, :nb, :cb] = torch.from_numpy(tokens)
        for j in range(cb):
            position = {t: i for i, t in enumerate(allowed[b][j])}
            target[b, :nb, j] = torch.tensor([position[t] for t in tokens[:, j]])
        mask[b, :nb, :cb] = 1.0 if row_weights is None else torch.from_numpy(row_weights[b]).float()[:, None]
    return {"prompts": torch.tensor(_pad(prompts, p, 0)), "lengths": torch.tensor([len(x) for x in prompts]),
            "configs": configs, "allowed": allowed_t, "target": target, "mask": mask}


def _logits(model: Decoder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.slot_logits(batch["prompts"], batch["lengths"], batch["configs"], batch["allowed"])


def _listwise(logp: torch.Tensor, batch: dict[str, torch.Tensor], rows: Sequence[np.ndarray],
              targets: Sequence[np.ndarray]) -> torch.Tensor:
    """ListNet: cross-entropy between each case's target weights over its drawn rows and the
    softmax of the model's sequence log-probabilities over the same rows."""
    per_slot = logp.gather(-1, batch["target"][..., None]).squeeze(-1)
    scores = (per_slot * _slot_mask(batch, rows)).sum(-1)  # [B, N]
    loss = scores.new_zeros(())
    for b, (r, t) in enumerate(zip(rows, targets, strict=False)):
        unique, first = np.unique(r, return_index=True)
        weights = torch.from_numpy(t[unique] + 1e-9).float()
        weights = weights / weights.sum()
        loss = loss - (weights * F.log_softmax(scores[b, torch.from_numpy(first)], dim=0)).sum()
    return loss / len(rows)


def _slot_mask(batch: dict[str, torch.Tensor], rows: Sequence[np.ndarray]) -> torch.Tensor:
    """1 for the real slots of the real rows (whatever their likelihood weight), else 0."""
    mask = torch.zeros(batch["mask"].shape)
    real_slots = (batch["allowed"][:, :, 0] > 0).float()  # padded slots hold the dummy id 0
    for b, r in enumerate(rows):
        mask[b, :len(r)] = real_slots[b]
    return mask


def train_model(cases: Sequence[Case], cfg: ModelConfig, options: TrainOptions, *, teacher: Decoder | None = None,
                log: Callable[[str], None] | None = None) -> Decoder:
    """Train a decoder of size ``cfg`` on ``cases`` (distilling from ``teacher`` if given)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    model = Decoder(cfg, vocabulary())
    # Weight decay on the matrices and the per-token residual rows, not on the shared factors.
    shared = ("emb_field", "emb_value", "emb_scale", "out_field", "out_scale")
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith(shared)]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and not n.startswith(shared))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=options.lr, betas=(0.9, 0.95))
    weights = np.array([options.gpu_weight if c.kind == "gpu" else 1.0 for c in cases])
    weights /= weights.sum()
    targets = [c.targets(options.temperature) for c in cases]
    started = time.monotonic()
    for step in range(options.steps):
        lr = options.lr * min(1.0, (step + 1) / options.warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / options.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        picked = rng.choice(len(cases), size=min(options.cases_per_step, len(cases)), replace=False, p=weights)
        chosen = [cases[i] for i in picked]
        # Draws from the target distribution repeat good rows; each distinct row is computed
        # once and weighted by how often it was drawn.
        draws = [np.unique(rng.choice(len(targets[i]), size=options.configs_per_case, p=targets[i]),
                           return_counts=True) for i in picked]
        # Rows drawn uniformly carry no likelihood weight; they give the ranking term bad
        # configurations to rank below the good ones.
        extra = [rng.choice(len(targets[i]), size=min(options.uniform_rows, len(targets[i])), replace=False)
                 if options.listwise > 0 else np.zeros(0, dtype=np.int64) for i in picked]
        rows = [np.concatenate((d[0], e)) for d, e in zip(draws, extra, strict=True)]
        counts = [np.concatenate((d[1].astype(np.float64), np.zeros(len(e))))
                  for d, e in zip(draws, extra, strict=True)]
        hide = list(rng.random(len(chosen)) < options.hide_name)
        batch = _batch(chosen, rows, hide, counts)
        logits = _logits(model, batch)
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, batch["target"][..., None]).squeeze(-1)
        loss = (nll * batch["mask"]).sum() / batch["mask"].sum()
        if options.listwise > 0:
            loss = loss + options.listwise * _listwise(logp, batch, rows, [targets[i] for i in picked])
        if teacher is not None and options.distill > 0:
            with torch.no_grad():
                p_teacher = F.softmax(_logits(teacher, batch), dim=-1)
            kl = (p_teacher * (torch.log(p_teacher.clamp_min(1e-12)) - logp.clamp_min(-1e9))).sum(-1)
            loss = (1 - options.distill) * loss + options.distill * (kl * batch["mask"]).sum() / batch["mask"].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log and (step % 25 == 0 or step == options.steps - 1):
            log(f"step {step + 1}/{options.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"({time.monotonic() - started:.0f} s)")
    model.eval()
    return model


@torch.no_grad()
def score_case(model: Decoder, case: Case, *, hide_name: bool = False, chunk: int = 1024) -> np.ndarray:
    """Log-probability of every table row under ``model`` (each slot normalised over its values)."""
    n_slots = len(case.codec.slots)
    out = np.empty(len(case.configs))
    for start in range(0, len(case.configs), chunk):
        idx = np.arange(start, min(start + chunk, len(case.configs)))
        batch = _batch([case], [idx], [hide_name])
        logp = F.log_softmax(_logits(model, batch), dim=-1)
        picked = logp.gather(-1, batch["target"][..., None]).squeeze(-1)[0, :len(idx), :n_slots]
        out[idx] = picked.sum(-1).numpy()
    return out
