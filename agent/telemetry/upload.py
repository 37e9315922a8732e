"""Send the store's telemetry outbox to the fleet service (``edgetune upload``).

The outbox is sent oldest first, in batches of one device's records. Each batch carries an
``Idempotency-Key`` derived from its record keys, so a resend after a crash or a lost answer
is recognised by the server; a batch leaves the outbox (in one transaction) only after the
server acknowledged it. Connection errors, timeouts and 5xx answers are retried with
exponential backoff and full jitter; 429/503 wait what ``Retry-After`` asks. A 400 (or any other
refusal of the batch's contents) is never retried: its records move to ``dead_letter`` with the
server's reason, as do records the server rejected one by one.

Records the fleet defers (it cannot place them yet: a kind or protocol version newer than it reads)
stay in the outbox and are sent again by a later upload, after a wait that doubles with each
deferral (``RetryPolicy.defer_base_s`` up to ``defer_cap_s``). A fleet from before protocol
versions refuses the ``protocol`` field itself (400); that batch is deferred too, not dead-lettered.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from agent.errors import FleetError
from agent.fleet.protocol import IDEMPOTENCY_HEADER, idempotency_key, parse_retry_after
from agent.settings import FleetSettings
from agent.store import Store, utc_now
from agent.telemetry.record import envelope

__all__ = ["RetryPolicy", "UploadResult", "upload"]

_RETRY_STATUSES = (429, 500, 502, 503, 504)
_FATAL_STATUSES = (401, 403, 404, 405)  # the fleet or this device is misconfigured: nothing is moved


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a batch is retried: full-jitter exponential backoff, capped."""

    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 10.0
    retry_after_cap_s: float = 60.0
    timeout_s: float = 30.0
    defer_base_s: float = 60.0  # a deferred record's first wait; doubled after each further deferral
    defer_cap_s: float = 6 * 3600.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): uniform in [0, min(cap, base * 2^n)]."""
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2 ** attempt))


@dataclass(frozen=True)
class UploadResult:
    """What one ``upload`` did."""

    batches: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    deferred: int = 0
    remaining: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def upload(store: Store, fleet: FleetSettings, *, batch_size: int = 500, retry: RetryPolicy | None = None,
           sleep: Callable[[float], None] = time.sleep) -> UploadResult:
    """Send the whole outbox to ``fleet``; raises FleetError when the fleet refuses this device or stays down."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    retry = retry or RetryPolicy()
    totals = dict.fromkeys(("batches", "sent", "accepted", "duplicates", "rejected", "dead_lettered", "deferred"), 0)
    size = batch_size
    started = utc_now()  # records deferred during this upload wait for a later one
    with httpx.Client(timeout=retry.timeout_s, headers={"Authorization": f"Bearer {fleet.token}"}) as client:
        while True:
            rows = store.outbox_batch(size, due_before=started)
            if not rows:
                break
            keys = [row["key"] for row in rows]
            profile = store.device_profile(rows[0]["device"] or "")
            status, answer = _post(client, fleet, rows, profile, retry, sleep)
            if status == 413 and len(rows) > 1:
                size = max(1, len(rows) // 2)  # too large for the server: halve and send again
                continue
            totals["batches"] += 1
            totals["sent"] += len(rows)
            deferred: dict[str, str] = {}
            rejected: dict[str, str] = {}
            if status == 200:
                rejected = {r["key"]: str(r.get("reason", "")) for r in answer["rejected"] if r.get("key") in keys}
                deferred = {r["key"]: str(r.get("reason", "")) for r in answer.get("deferred", [])
                            if r.get("key") in keys and r["key"] not in rejected}
                totals["accepted"] += answer["accepted"]
                totals["duplicates"] += answer["duplicates"]
                totals["rejected"] += len(answer["rejected"])
            elif status == 400 and _predates_versions(answer):
                deferred = dict.fromkeys(keys, f"HTTP 400: {answer.get('error', '')}")
            else:  # the server refused the whole batch: keep it, with the reason, and go on
                reason = f"HTTP {status}: {answer.get('error', '')}"
                rejected = dict.fromkeys(keys, reason)
            store.ack_outbox([key for key in keys if key not in deferred], rejected)
            store.defer_outbox(deferred, base_s=retry.defer_base_s, cap_s=retry.defer_cap_s)
            totals["dead_lettered"] += len(rejected)
            totals["deferred"] += len(deferred)
    return UploadResult(**totals, remaining=store.count("outbox"))


def _post(client: httpx.Client, fleet: FleetSettings, rows: list[dict[str, Any]], profile: dict[str, Any],
          retry: RetryPolicy, sleep: Callable[[float], None]) -> tuple[int, dict[str, Any]]:
    """POST one batch until the server answers something final; (status, JSON answer)."""
    body = envelope(rows[0]["device"] or "unknown", profile, [row["payload"] for row in rows])
    content = gzip.compress(json.dumps(body).encode("utf-8"), mtime=0)
    headers = {IDEMPOTENCY_HEADER: idempotency_key([row["key"] for row in rows]),
               "Content-Type": "application/json", "Content-Encoding": "gzip"}
    url = f"{fleet.url}/v1/telemetry"
    problem = ""
    for attempt in range(retry.attempts):
        wait = retry.backoff(attempt)
        try:
            response = client.post(url, content=content, headers=headers)
        except httpx.TransportError as exc:  # refused, reset, timed out
            problem = f"{type(exc).__name__}: {exc}"
        else:
            answer = _json_of(response)
            if response.status_code == 200:
                if _is_ack(answer):
                    return 200, answer
                problem = "the fleet answered 200 without an acknowledgement"
            elif response.status_code in _FATAL_STATUSES:
                raise FleetError(f"the fleet at {fleet.url} answered {response.status_code}: "
                                 f"{answer.get('error', response.reason_phrase)}")
            elif response.status_code in _RETRY_STATUSES:
                problem = f"HTTP {response.status_code}"
                if response.status_code in (429, 503):
                    asked = parse_retry_after(response.headers.get("retry-after"), cap_s=retry.retry_after_cap_s)
                    wait = wait if asked is None else asked
            else:
                return response.status_code, answer
        if attempt + 1 < retry.attempts:
            sleep(wait)
    raise FleetError(f"the fleet at {fleet.url} did not take a batch after {retry.attempts} attempts ({problem}); "
                     "the records stay in the outbox")


def _json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _is_ack(answer: dict[str, Any]) -> bool:
    lists = [answer.get("rejected"), answer.get("deferred", [])]
    return (isinstance(answer.get("accepted"), int) and isinstance(answer.get("duplicates"), int)
            and all(isinstance(items, list) and all(isinstance(r, dict) for r in items) for items in lists))


def _predates_versions(answer: dict[str, Any]) -> bool:
    """A 400 from a fleet older than protocol versions: it refuses the envelope's ``protocol`` field."""
    error = str(answer.get("error", ""))
    return error.startswith("unknown fields in the body:") and "protocol" in error
