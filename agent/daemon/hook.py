"""``edgetune hook post-update``: after a firmware update, find the results it made stale and queue them.

Exit codes, for updaters (``packaging/hooks`` maps them to each updater's own):

====  =====================================================================
0     checked: nothing stale, or the re-tuning is queued for the daemon (with
      ``--wait``: done)
1     an error (one line on stderr): unreadable config, store or kernels
2     a usage error
3     ``--wait``: the budget ran out; the rest stays queued for the daemon
75    the store is busy (another process held its lock): try again later
====  =====================================================================
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent.settings import Settings
from agent.store import Store

from .config import DaemonSettings
from .dependencies import Current, refresh
from .work import RequestRunner

__all__ = ["EXIT_BUDGET", "HookResult", "post_update"]

EXIT_BUDGET = 3


@dataclass
class HookResult:
    """What the hook found and did; ``exit_code`` is what the command exits with."""

    report: dict[str, Any]
    tuned: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    left: int = 0
    seconds: float = 0.0
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, **self.report, "tuned": self.tuned, "failed": self.failed,
                "left_queued": self.left, "seconds": round(self.seconds, 2)}


def post_update(settings: Settings, config: DaemonSettings, *, wait: bool = False, budget_s: float | None = None,
                lock_timeout_s: float = 30.0) -> HookResult:
    """Mark stale results, queue their re-tuning (and the preset's missing layers); with ``wait``, tune now."""
    from agent.hardware import probe
    from agent.kernels.workloads import find_workload

    started = time.monotonic()
    preset = find_workload(config.preset) if config.preset else None
    profile = probe(measure_bandwidth=False, compiler=settings.compiler, cache_dir=settings.cache_dir)
    device = profile.fingerprint()
    with Store.open(settings.db_path, lock_timeout_s=lock_timeout_s) as store:
        store.upsert_device(device, profile.to_dict())
        report = refresh(store, Current.now(device, settings), preset, requested_by="hook")
        result = HookResult(report=report.to_dict())
        if wait:
            runner = RequestRunner(settings, profile, evaluations=config.evaluations)
            deadline = None if budget_s is None else started + budget_s
            while deadline is None or time.monotonic() < deadline:
                request = store.next_request()
                if request is None:
                    break
                left = None if deadline is None else max(1.0, deadline - time.monotonic())
                try:
                    outcome = runner.run(store, request, seconds=left)
                except BaseException:
                    store.finish_request(request["id"], state="queued")
                    raise
                entry = {"kernel": request["kernel"], "shape": request["shape"], "target": request["target"]}
                if outcome.state == "done" and outcome.result is not None:
                    result.tuned.append({**entry, "speedup": outcome.result.speedup})
                else:
                    result.failed.append({**entry, "error": outcome.error})
        result.left = len(store.queue(states=("queued",), limit=100_000))
        if wait and result.left:
            result.exit_code = EXIT_BUDGET
    result.seconds = time.monotonic() - started
    return result
