"""Working the request queue: one queued request becomes one tuning (the daemon and ``hook --wait``).

The runner keeps what repeated tunings share (its tuning session: the backend per target;
the loaded predictor) and lets the caller drop the predictor when idle to give its memory back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.budget import QUICK, Budget
from agent.errors import EdgetuneError
from agent.evaluator import CandidateResult
from agent.hardware import HardwareProfile
from agent.kernels.problem import parse_shape
from agent.settings import Settings
from agent.store import Store
from agent.tuner import TuneResult
from agent.tuning_session import TuningSession

from .dependencies import load_request_kernel

__all__ = ["Outcome", "RequestRunner"]


@dataclass(frozen=True)
class Outcome:
    """What became of one request."""

    request: dict[str, Any]
    state: str  # done or failed
    result: TuneResult | None = None
    error: str = ""
    seconds: float = 0.0


class RequestRunner:
    """Turns queued requests into tunings on this device; reuse one for many requests."""

    def __init__(self, settings: Settings, profile: HardwareProfile, *,
                 evaluations: int | None = QUICK.budget.evaluations, cloud: Any = None) -> None:
        self.settings = settings
        self.profile = profile
        self.evaluations = evaluations
        self.session = TuningSession(settings, profile=profile, cloud=cloud)

    def run(self, store: Store, request: dict[str, Any], *, seconds: float | None = None,
            on_result: Callable[[CandidateResult, int], None] | None = None) -> Outcome:
        """Tune one claimed request and close it in the queue; an error fails the request, not the caller.

        ``seconds`` bounds the search (the final side-by-side measurement comes on top).
        Interruptions (SIGTERM, Ctrl-C) propagate; the caller puts the request back in line.
        """
        started = time.monotonic()
        try:
            spec = load_request_kernel(request["kernel"], request["kernel_path"])
            problem = parse_shape(spec, request["shape"])
            options = self.session.options("model", budget=Budget(evaluations=self.evaluations, seconds=seconds),
                                           target=request["target"])
            result = self.session.tune(problem, options, store=store, on_result=on_result)
        except Exception as exc:  # a request that breaks must not stop the queue, nor loop the service
            error = str(exc) if isinstance(exc, EdgetuneError) else f"internal error: {type(exc).__name__}: {exc}"
            store.finish_request(request["id"], state="failed", error=error)
            return Outcome(request, "failed", error=error, seconds=time.monotonic() - started)
        state = "done" if result.winner is not None else "failed"
        error = "" if result.winner is not None else "no candidate ran correctly"
        store.finish_request(request["id"], state=state, tuning_id=result.tuning_id, error=error)
        return Outcome(request, state, result=result, error=error, seconds=time.monotonic() - started)

    def release(self) -> None:
        """Give back the loaded model's memory (it loads again, in milliseconds, for the next request)."""
        from agent.search.model_guided import release_predictors

        release_predictors()
