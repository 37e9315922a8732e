"""The fleet service's HTTP application (FastAPI): telemetry in from devices, out to operators.

``create_app(db_path, operator_token)`` builds it; ``edgetune fleet serve`` runs it with uvicorn.
Every error answer is JSON ``{"error": "..."}``; bad input is a 4xx, never a 5xx. Tokens are
never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import zlib
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from agent.fleet.export import FORMATS as EXPORT_FORMATS
from agent.fleet.export import MEDIA_TYPES, export_chunks
from agent.fleet.protocol import (
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    MAX_RECORDS,
    Acceptance,
    ack_summary,
    check_record,
    envelope_version,
    valid_idempotency_key,
    validate_envelope,
)
from agent.fleet.rank import RankBusy, RankService
from agent.fleet.storage import Device, FleetStore, IdempotencyConflict
from agent.predict.rank_protocol import RankProtocolError, RankRequest

__all__ = ["create_app"]

OPERATOR = "operator"
logger = logging.getLogger("edgetune.fleet")


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: text a client sent (even a lone surrogate) can always be echoed back."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _error(401, "missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


async def _read_body(request: Request) -> bytes:
    """The request body, gunzipped; 413 beyond MAX_BODY_BYTES (before or after gunzip)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise _error(415, f"unsupported Content-Encoding {encoding[:40]!r} (gzip or none)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error:
        raise _error(400, "the body is not valid gzip") from None
    if len(data) > MAX_BODY_BYTES:
        raise _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes after gunzip")
    if not inflater.eof or inflater.unused_data:
        raise _error(400, "the body is not one complete gzip stream")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _error(400, f"the body is not JSON: {str(exc)[:200]}") from None


def _key_of(record: Any) -> str | None:
    return record.get("key") if isinstance(record, dict) and isinstance(record.get("key"), str) else None


def create_app(db_path: str | Path, operator_token: str, *, ranking: RankService | None = None,
               acceptance: Acceptance | None = None) -> FastAPI:
    """The fleet application over the database ``db_path`` (a SQLite path or a PostgreSQL URL);
    ``operator_token`` guards the reads.

    ``acceptance`` is the telemetry it can place (default: this code's protocol versions and kinds).
    ``ranking`` answers ``POST /v1/rank`` (its model starts loading now); without it that endpoint answers 503.
    """
    if not operator_token:
        raise ValueError("an operator token is required")
    store = FleetStore(db_path)
    accepts = acceptance or Acceptance()
    app = FastAPI(title="edgetune fleet", version="1", description=__doc__, default_response_class=AsciiJSONResponse)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return AsciiJSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(store.database_error)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Not the client's fault, and nothing was half-stored (each batch is one transaction):
        # a 503 tells the uploader to come back later.
        logger.warning("fleet database error on %s: %s", request.url.path, store.describe_error(exc))
        return AsciiJSONResponse({"error": "the fleet database is unavailable; retry later"}, status_code=503,
                                 headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return AsciiJSONResponse({"error": problems[:500]}, status_code=400)

    async def caller(request: Request) -> Device | str:
        token = _bearer(request)
        if hmac.compare_digest(token.encode("utf-8", "replace"), operator_token.encode("utf-8")):
            return OPERATOR
        device = await run_in_threadpool(store.device_for_token, token)
        if device is None:
            raise _error(401, "unknown token")
        return device

    async def operator(request: Request) -> None:
        if await caller(request) != OPERATOR:
            raise _error(403, "this needs the operator token")

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        """Liveness: the service answers."""
        return {"status": "ok"}

    @app.get("/v1/protocol")
    async def protocol() -> dict[str, Any]:
        """The telemetry protocol versions and record kinds this fleet reads."""
        return accepts.describe()

    @app.post("/v1/telemetry")
    async def post_telemetry(request: Request) -> dict[str, Any]:
        """Store a device's batch of telemetry records (device token, Idempotency-Key)."""
        device = await caller(request)
        if not isinstance(device, Device):
            raise _error(403, "telemetry is posted with a device token")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not valid_idempotency_key(key):
            raise _error(400, f"{IDEMPOTENCY_HEADER} must be 8 to 128 printable ASCII characters")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _error(415, "Content-Type must be application/json")
        body = _parse_json(await _read_body(request))
        version = envelope_version(body)
        if isinstance(version, str):
            raise _error(400, version)
        if version > max(accepts.protocols):
            # A newer device: nothing here can be read with certainty, so everything waits for an upgrade.
            records = body.get("records") if isinstance(body.get("records"), list) else []
            reason = f"protocol {version} is newer than this fleet reads ({', '.join(map(str, accepts.protocols))})"
            return ack_summary(0, 0, [], protocol=version, acceptance=accepts,
                               deferred=[{"key": k, "reason": reason} for k in map(_key_of, records) if k])
        problem = validate_envelope(body)
        if problem:
            raise _error(400, problem)
        if len(body["records"]) > MAX_RECORDS:
            raise _error(413, f"at most {MAX_RECORDS} records per batch")
        try:
            json.dumps(body["profile"]).encode("utf-8")
        except (UnicodeEncodeError, RecursionError, ValueError):
            raise _error(400, "profile must be a plain JSON object") from None
        valid, rejected, deferred = [], [], []
        for record in body["records"]:  # a key repeated inside the batch counts as a duplicate
            verdict = check_record(record, protocol=version, acceptance=accepts)
            if verdict.outcome == "accept":
                valid.append({"key": record["key"], "kind": record["kind"], "created_at": record["created_at"],
                              "data": verdict.data, "extra": verdict.extra})
            else:
                (rejected if verdict.outcome == "reject" else deferred).append(
                    {"key": _key_of(record), "reason": verdict.reason})

        def summary(accepted: int, duplicates: int) -> dict[str, Any]:
            return ack_summary(accepted, duplicates, rejected, protocol=version, deferred=deferred,
                               acceptance=accepts)

        if deferred and not valid and not rejected:
            return summary(0, 0)  # nothing stored, nothing remembered: a resend after an upgrade is judged afresh
        # The records only: a resend whose device profile changed meanwhile is still the same batch.
        request_hash = hashlib.sha256(json.dumps(body["records"], sort_keys=True).encode("utf-8")).hexdigest()
        try:
            return await run_in_threadpool(lambda: store.store_batch(
                device, key, request_hash, body["fingerprint"], body["profile"], valid, rejected, summary=summary))
        except IdempotencyConflict as exc:
            raise _error(422, str(exc)) from None

    @app.get("/v1/telemetry")
    async def get_telemetry(request: Request, since: int = Query(0, ge=0, le=2**62),
                            device: str | None = None, kernel: str | None = None,
                            limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Records after the cursor ``since``, oldest first (operator token)."""
        await operator(request)
        records = await run_in_threadpool(store.records, since=since, device=device, kernel=kernel, limit=limit)
        return {"records": records, "next": records[-1]["cursor"] if len(records) == limit else None}

    @app.get("/v1/telemetry/export", response_model=None)
    async def get_export(request: Request, format: str = "jsonl", since: int = Query(0, ge=0, le=2**62),
                         device: str | None = None, kernel: str | None = None) -> StreamingResponse:
        """Every matching record as jsonl, csv (runs) or t4 (runs), streamed (operator token)."""
        await operator(request)
        if format not in EXPORT_FORMATS:
            raise _error(400, f"unknown export format {format[:40]!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        chunks = export_chunks(store, format, since=since, device=device, kernel=kernel)
        first = await run_in_threadpool(next, chunks, "")  # a database error before the headers is still a 503
        return StreamingResponse(itertools.chain([first], chunks), media_type=MEDIA_TYPES[format], headers={
            "Content-Disposition": f'attachment; filename="edgetune-fleet.{"json" if format == "t4" else format}"'})

    @app.get("/v1/devices")
    async def get_devices(request: Request) -> dict[str, Any]:
        """Every registered device with a summary of its tunings (operator token)."""
        await operator(request)
        return {"devices": await run_in_threadpool(store.devices)}

    @app.post("/v1/rank")
    async def post_rank(request: Request) -> dict[str, Any]:
        """Rank a device's candidate configurations with the fleet's model (device token)."""
        device = await caller(request)
        if not isinstance(device, Device):
            raise _error(403, "ranking is asked with a device token")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _error(415, "Content-Type must be application/json")
        body = _parse_json(await _read_body(request))
        if not isinstance(body, dict):
            raise _error(400, f"rank request: must be a JSON object, got {type(body).__name__}")
        try:
            asked = RankRequest.from_json(body)  # the same validation the device's request_for runs
        except RankProtocolError as exc:
            raise _error(400, str(exc)) from None
        except RecursionError:
            raise _error(400, "rank request: nested too deeply") from None
        await run_in_threadpool(store.count_rank_request, device)
        try:
            if ranking is None:
                raise RankBusy("this fleet service ranks nothing (started without a ranking model)", retry_after=300)
            return (await ranking.answer(asked)).to_json()
        except RankProtocolError as exc:
            raise _error(400, str(exc)) from None
        except RankBusy as exc:
            raise HTTPException(503, detail=str(exc), headers={"Retry-After": str(exc.retry_after)}) from None

    if ranking is not None:
        ranking.start()
    return app
