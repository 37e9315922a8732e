"""Budgets and effort profiles: how much a tuning may spend, with one definition of each default.

An effort profile names a budget together with the measurement protocol and batch size that
go with it. ``quick`` is what the model strategy and the daemon spend (the default plus the
top predictions), ``default`` what a search strategy spends when nobody says, ``collect``
what a dataset sweep spends (everything it planned, with a shorter protocol).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.bench.measure import MeasureSettings
from agent.errors import ConfigError

__all__ = ["COLLECT", "DEFAULT", "EFFORTS", "QUICK", "Budget", "Effort", "effort"]


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: a number of evaluations, seconds, or both (None = no limit)."""

    evaluations: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """``"50"`` evaluations, ``"30s"`` or ``"2m"`` of wall time, ``None`` or ``"all"`` unlimited."""
        if text is None or text.strip().lower() in ("", "all", "none"):
            return cls()
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*", text.lower())
        if not match:
            raise ConfigError(f"budget {text!r}: use a number of evaluations (50) or a time (30s, 2m)")
        number, unit = float(match.group(1)), match.group(2)
        if number <= 0:
            raise ConfigError(f"budget {text!r} must be positive")
        if unit is None:
            if not number.is_integer():
                raise ConfigError(f"budget {text!r}: a number of evaluations is a whole number")
            return cls(evaluations=int(number))
        return cls(seconds=number * (60 if unit == "m" else 1))

    def __str__(self) -> str:
        parts = []
        if self.evaluations is not None:
            parts.append(str(self.evaluations))
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        return "+".join(parts) or "all"


@dataclass(frozen=True)
class Effort:
    """A named effort profile: a budget, the measurement protocol and the batch size that go with it."""

    name: str
    budget: Budget
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    batch_size: int = 8  # candidates compiled together, then timed interleaved


# The model strategy and the daemon: the default and the top four predictions.
QUICK = Effort("quick", Budget(evaluations=5))
# A search strategy (random, local, OpenTuner) when nobody names a budget.
DEFAULT = Effort("default", Budget(evaluations=40))
# A dataset sweep: every configuration it planned, with a shorter protocol (many configurations
# ranked roughly right matter more than a few measured to the last percent).
COLLECT = Effort("collect", Budget(), batch_size=16,
                 measure=MeasureSettings(warmup_runs=1, min_runs=3, max_runs=15, budget_s=0.02, prune_ratio=4.0))
EFFORTS = {profile.name: profile for profile in (QUICK, DEFAULT, COLLECT)}


def effort(name: str) -> Effort:
    """The effort profile called ``name``; an unknown name lists the valid ones."""
    if name not in EFFORTS:
        raise ConfigError(f"unknown effort {name!r}; choose one of: {', '.join(EFFORTS)}")
    return EFFORTS[name]
