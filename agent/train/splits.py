"""Held-out splits for honest evaluation: no test case is ever seen in training.

Four questions, answered by four folds (plus the two kernel/GPU folds that share a run):

- ``shape``: unseen shapes of known kernels on known hardware. One shape per kernel is
  held out (picked by a hash of the kernel's name, not by looking at results).
- ``simd``: an unseen compiler target. Everything built for ``x86-64-v3`` (256-bit AVX2)
  is held out; the model has seen 128-bit and 512-bit code only. Shares a fold with
  ``shape`` (neither kind of case is in that fold's training set).
- ``kernel``: unseen kernels, three folds of three built-in kernels each; the kernel's
  name is hidden from the prompt, as it would be for a user's new kernel.
- ``gpu``: unseen GPUs, replayed from the public Kernel Tuner tables; the same three
  folds hold out 3, 2 and 2 of the 7 GPUs (stricter than leave-one-out: fewer GPUs to
  learn from).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.train.cases import Case

__all__ = ["SPLITS", "Fold", "make_folds"]

HELD_OUT_TARGET = "x86-64-v3"
KERNEL_FOLDS = 3

SPLITS = {
    "shape": "unseen shapes of known kernels (one shape per kernel held out)",
    "simd": f"unseen SIMD level ({HELD_OUT_TARGET}, 256-bit, held out; 128- and 512-bit seen)",
    "kernel": f"unseen kernels ({KERNEL_FOLDS} folds of 3 built-in kernels, names hidden)",
    "gpu": f"unseen GPUs ({KERNEL_FOLDS} folds holding out 3/2/2 of the 7 GPUs, replayed)",
}


@dataclass
class Fold:
    """One training run and the held-out cases it is judged on, by split."""

    name: str
    train: list[Case]
    tests: dict[str, list[Case]]
    hidden_names: set[str] = field(default_factory=set)  # splits whose prompts hide the kernel name


def _stable(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def held_out_shapes(cases: Sequence[Case]) -> dict[str, str]:
    """Kernel name -> the shape key held out for the ``shape`` split."""
    shapes: dict[str, set[str]] = {}
    for c in cases:
        if c.kind == "cpu":
            shapes.setdefault(c.kernel, set()).add(c.shape_key)
    return {k: sorted(v)[_stable(k) % len(v)] for k, v in shapes.items() if len(v) > 1}


def make_folds(cases: Sequence[Case]) -> list[Fold]:
    """The evaluation folds over ``cases`` (CPU sweeps and GPU tables)."""
    held = held_out_shapes(cases)
    folds = []
    in_shape = [c for c in cases if c.kind == "cpu" and held.get(c.kernel) == c.shape_key]
    in_simd = [c for c in cases if c.kind == "cpu" and c.target == HELD_OUT_TARGET]
    folds.append(Fold(
        name="shape+simd",
        train=[c for c in cases if c not in in_shape and c not in in_simd],
        tests={"shape": [c for c in in_shape if c.target != HELD_OUT_TARGET],
               "simd": [c for c in in_simd if held.get(c.kernel) != c.shape_key]}))
    kernels = sorted({c.kernel for c in cases if c.kind == "cpu"})
    gpus = sorted({c.device_name for c in cases if c.kind == "gpu"})
    for k in range(KERNEL_FOLDS):
        out_kernels, out_gpus = set(kernels[k::KERNEL_FOLDS]), set(gpus[k::KERNEL_FOLDS])
        test_kernel = [c for c in cases if c.kind == "cpu" and c.kernel in out_kernels]
        test_gpu = [c for c in cases if c.kind == "gpu" and c.device_name in out_gpus]
        folds.append(Fold(
            name=f"kernel+gpu-{k + 1}",
            train=[c for c in cases if c not in test_kernel and c not in test_gpu],
            tests={"kernel": test_kernel, "gpu": test_gpu}, hidden_names={"kernel"}))
    for fold in folds:
        seen = {c.case_id for c in fold.train}
        assert not any(c.case_id in seen for tests in fold.tests.values() for c in tests), fold.name
    return folds
