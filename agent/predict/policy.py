"""Which source ranks the candidates, per situation: whatever the held-out evaluation showed is better.

A prediction is in one of three situations, told apart by the measured rankings shipped beside
the models (:class:`~agent.predict.reuse.ReuseIndex`, from the same datasets the model learnt):

- ``seen``: this kernel was measured on the same kind of device (:func:`~agent.predict.reuse.same_hardware`);
- ``unseen-device``: the kernel is known, this hardware (or this compile target) is not;
- ``unseen-kernel``: no measurement of this kernel at all.

For each, ``edgetune eval`` pools the held-out splits that ask the same question (``shape`` for
seen; ``gpu`` and ``simd`` for unseen-device; ``kernel`` for unseen-kernel), compares the
sources a device can run (the model, reuse of the nearest measured case, the cost model over
the whole space, random) by geometric-mean best-of-5, and writes the winner to ``policy.json``.
Without that file every situation uses the model, as before there was a policy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ModelFileError
from agent.predict.model_files import POLICY_FILE, read_model_file, write_json
from agent.predict.prompt import HardwareDesc
from agent.predict.reuse import ReuseIndex, same_hardware

__all__ = ["POLICY_FILE", "SITUATIONS", "SOURCES", "Policy", "situation_of"]

MAX_POLICY_BYTES = 1 << 20
GOOD = 0.95  # best-of-5 at least this share of the optimum: the confidence's "good" (agent.predict.confidence)
SOURCES = ("model", "reuse", "cost-model", "random")
# situation -> the evaluation splits that ask its question
SITUATIONS: dict[str, tuple[str, ...]] = {
    "seen": ("shape",),
    "unseen-device": ("gpu", "simd"),
    "unseen-kernel": ("kernel",),
}


@dataclass(frozen=True)
class Policy:
    """Situation -> source, with the held-out figures the choice was made on."""

    choices: Mapping[str, str]
    evidence: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def source(self, situation: str) -> str:
        return self.choices.get(situation, "model")

    def good_share(self, situation: str, source: str) -> float | None:
        """Share of held-out cases of ``situation`` whose best of five from ``source`` came within 5%."""
        value = self.evidence.get(situation, {}).get("good", {}).get(source)
        return float(value) if isinstance(value, (int, float)) else None

    @classmethod
    def model_everywhere(cls) -> Policy:
        return cls(choices={s: "model" for s in SITUATIONS})

    @classmethod
    def choose(cls, best_of_5: Mapping[str, Mapping[str, list[float]]]) -> Policy:
        """The policy from held-out best-of-5 per split and source (``{split: {source: [per case]}}``).

        Per situation, the source with the highest geometric mean over the pooled cases of its
        splits wins; a source missing from any case of a split is not a candidate there; ties go
        to the earlier source in :data:`SOURCES` (the model first).
        """
        choices: dict[str, str] = {}
        evidence: dict[str, dict[str, Any]] = {}
        for situation, splits in SITUATIONS.items():
            pooled: dict[str, list[float]] = {}
            counts = {split: len(best_of_5.get(split, {}).get("random", [])) for split in splits}
            for source in SOURCES:
                values: list[float] = []
                complete = True
                for split in splits:
                    rows = best_of_5.get(split, {}).get(source)
                    if counts[split] and (rows is None or len(rows) != counts[split]):
                        complete = False
                    values.extend(rows or [])
                if complete and values:
                    pooled[source] = values
            if not pooled:
                continue
            means = {s: _geomean(v) for s, v in pooled.items()}
            winner = max(SOURCES, key=lambda s: (means.get(s, -1.0), -SOURCES.index(s)))
            choices[situation] = winner
            evidence[situation] = {"splits": list(splits), "cases": len(next(iter(pooled.values()))),
                                   "best_of_5": {s: round(m, 4) for s, m in means.items()},
                                   # random's rows are expectations, not draws: no share of good draws for it
                                   "good": {s: round(sum(v >= GOOD for v in values) / len(values), 4)
                                            for s, values in pooled.items() if s != "random"}}
        return cls(choices={**cls.model_everywhere().choices, **choices}, evidence=evidence)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read ``policy.json``; a malformed one (or an unknown source) is a one-line ModelFileError."""
        path = Path(path)
        try:
            data = json.loads(read_model_file(path, MAX_POLICY_BYTES))
            choices = {str(k): str(v) for k, v in data["choices"].items()}
            evidence = {str(k): dict(v) for k, v in data.get("evidence", {}).items()}
            for situation, e in evidence.items():
                for name, value in e.get("good", {}).items():
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                        raise ValueError(f"good share of {name} in {situation} is {value!r}, not within [0, 1]")
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such policy file") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: not a valid policy file ({type(exc).__name__}: {exc})") from None
        unknown = sorted({v for v in choices.values() if v not in SOURCES}
                         | {k for k in choices if k not in SITUATIONS})
        if unknown:
            raise ModelFileError(f"{path}: unknown situation or source {', '.join(unknown)} "
                                 f"(sources: {', '.join(SOURCES)})")
        return cls(choices=choices, evidence=evidence)


def situation_of(index: ReuseIndex | None, kernel: str, hardware: HardwareDesc) -> str:
    """Which situation a prediction for ``kernel`` on ``hardware`` is in (see the module's docstring)."""
    if index is None:
        return "unknown"  # no measured rankings shipped: the policy cannot tell, so the model ranks
    if kernel not in index.kernels:
        return "unseen-kernel"
    if any(c.kernel == kernel and same_hardware(c.hardware, hardware) for c in index.cases):
        return "seen"
    return "unseen-device"


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values))
