"""The measurement protocol: warm-up, interleaved rounds, medians, and samples kept.

Candidates are timed interleaved (A B C, then C A B ...) so that drift on a noisy
machine hits all of them alike. Rounds continue until every live candidate has
``min_runs`` samples and the time budget is spent, or ``max_runs`` is reached.
After ``min_runs`` rounds, candidates slower than ``prune_ratio`` x the best median
stop being sampled: they cannot win, and their samples so far are kept.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.bench.session import CandidateFailed, WorkerSession

__all__ = ["TIE_RATIO", "MeasureSettings", "Measurement", "measure_interleaved"]

# Differences smaller than this are ties (DESIGN.md: "about 2%").
TIE_RATIO = 0.02


@dataclass(frozen=True)
class MeasureSettings:
    """How long and how often to time each candidate."""

    warmup_runs: int = 1
    min_runs: int = 5
    max_runs: int = 100
    budget_s: float = 0.15  # per candidate, for the rounds after warm-up
    prune_ratio: float = 3.0
    flush: bool = False  # write a buffer larger than the LLC before every timed run


@dataclass(frozen=True)
class Measurement:
    """The samples of one candidate, or why it has none."""

    samples: tuple[float, ...] = ()
    status: str = "correct"
    reason: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


def measure_interleaved(session: WorkerSession, candidates: Sequence[str],
                        settings: MeasureSettings, rng: random.Random) -> dict[str, Measurement]:
    """Time ``candidates`` (already loaded and verified in ``session``) interleaved."""
    samples: dict[str, list[float]] = {c: [] for c in candidates}
    failed: dict[str, Measurement] = {}
    live = list(candidates)

    def run(candidate: str, keep: bool) -> None:
        try:
            seconds = session.time(candidate, flush=settings.flush)
        except CandidateFailed as exc:
            failed[candidate] = Measurement(tuple(samples[candidate]), exc.status, exc.reason)
            if candidate in live:
                live.remove(candidate)
            return
        if keep:
            samples[candidate].append(seconds)

    for _ in range(settings.warmup_runs):
        for candidate in list(live):
            run(candidate, keep=False)

    started = time.perf_counter()
    rounds = 0
    while live and rounds < settings.max_runs:
        order = list(live)
        rng.shuffle(order)  # a different order each round: no candidate always runs first
        for candidate in order:
            run(candidate, keep=True)
        rounds += 1
        if rounds >= settings.min_runs:
            elapsed = time.perf_counter() - started
            if elapsed >= settings.budget_s * max(1, len(candidates)):
                break
            best = min(statistics.median(samples[c]) for c in live) if live else 0.0
            live = [c for c in live if statistics.median(samples[c]) <= settings.prune_ratio * best]

    results = {c: Measurement(tuple(samples[c])) for c in candidates if c not in failed}
    results.update(failed)
    return results
