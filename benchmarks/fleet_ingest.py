"""Benchmark: the fleet service's ingest throughput and its read latency with a large store.

On each backend (SQLite; PostgreSQL on a throwaway cluster from ``harness/postgres.py``, or the
database ``--postgres URL`` names), through the real service (``python -m agent.cli fleet serve``
as a child process on loopback):

- ingest: ``--devices`` devices' records (``--ingest-records`` in all) posted as batches of
  ``--batch`` records, gzip JSON with an Idempotency-Key each, by ``--clients`` concurrent clients;
  records/s over the whole upload (bodies built and gzipped before the clock starts), median of
  ``--runs`` runs, each on a new database (or new devices, with ``--postgres``).
- pull: the store filled up to ``--records`` records in-process through ``FleetStore.store_batch``
  itself (the function the service stores each batch with; ``--fill-chunk`` records per call, so
  one transaction each), then the median latency of ``--requests`` operator requests:
  ``GET /v1/telemetry?limit=1000`` first page, a page deep in the cursor (``since`` at 90% of the
  records), filtered pages (``device=``, ``kernel=``, both), and ``GET /v1/devices``.

    .venv/bin/python benchmarks/fleet_ingest.py [--records 1000000] [--ingest-records 50000]
        [--backends sqlite postgresql] [--postgres URL] [--markdown] [--quick]

Not a test: nothing asserts. Figures depend on the machine and on what else runs (the clients
share its cores with the server).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agent.fleet.protocol import IDEMPOTENCY_HEADER, idempotency_key  # noqa: E402
from agent.fleet.storage import Device, FleetStore  # noqa: E402
from harness.fleet_server import FleetServer  # noqa: E402  (the shared real-server harness)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strategies import table  # noqa: E402  (a sibling script, not a package)

KERNELS = [f"kernel{i:02d}" for i in range(24)]
SHAPES = ["M=64,N=64,K=64", "M=256,N=256,K=256", "M=1024,N=1024,K=1024"]
TUNING_EVERY = 100  # one record in 100 is a finished tuning, the rest runs
PROFILE = {"cpu": "bench-cpu", "cores": 4, "simd": ["neon"]}


def run_data(kernel: str, shape: str, i: int) -> dict[str, Any]:
    return {"kernel": kernel, "kernel_key": f"{kernel}@1", "shape": shape, "target": "native", "compiler": "gcc-13",
            "strategy": "model", "phase": "search", "config": {"tile": 16 * (1 + i % 4), "unroll": 1 + i % 8},
            "status": "correct", "reason": "", "median_s": 1e-4 * (1 + i % 97), "samples": [1e-4, 1.1e-4, 1.2e-4],
            "compile_s": 0.3, "source": "model", "predicted_rank": i % 5, "tuning_id": i // TUNING_EVERY}


def tuning_data(kernel: str, shape: str, i: int) -> dict[str, Any]:
    return {"kernel": kernel, "shape": shape, "target": "native", "strategy": "model", "budget": "5",
            "evaluations": 5, "wall_s": 2.0 + i % 7, "winner_config": {"tile": 32, "unroll": 4},
            "winner_median_s": 1e-4, "speedup": 1.8, "predict_s": 0.2, "cloud_s": None, "compile_s": 1.2,
            "benchmark_s": 0.5, "confidence": 0.9, "cloud": "not configured", "winner_source": "model",
            "winner_predicted_rank": 0}


def records_of(prefix: str, start: int, count: int) -> Iterator[dict[str, Any]]:
    """``count`` valid telemetry records, keys ``prefix:N`` from ``start``; kernels and shapes in rotation."""
    for i in range(start, start + count):
        kernel, shape = KERNELS[i % len(KERNELS)], SHAPES[(i // len(KERNELS)) % len(SHAPES)]
        tuning = i % TUNING_EVERY == TUNING_EVERY - 1
        yield {"key": f"{prefix}:{i}", "kind": "tuning" if tuning else "run", "created_at": "2026-11-25T12:00:00Z",
               "data": (tuning_data if tuning else run_data)(kernel, shape, i)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- backends -------------------------------------------------------------------------------------------


class Backends:
    """New empty fleet databases per backend: SQLite files in a temporary folder, PostgreSQL databases."""

    def __init__(self, postgres_url: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edgetune-fleet-bench-"))
        self.postgres_url, self.cluster = postgres_url, None

    def new(self, backend: str) -> str:
        if backend == "sqlite":
            return str(self.tmp / f"fleet-{uuid.uuid4().hex[:8]}.db")
        if self.postgres_url:
            return self.postgres_url  # shared: each run registers its own devices
        if self.cluster is None:
            from harness.postgres import PostgresCluster

            self.cluster = PostgresCluster.start()
        return self.cluster.new_database()

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def register(db: str, count: int) -> tuple[str, list[tuple[str, str]]]:
    """``count`` new devices in ``db``: (name prefix, [(name, token)])."""
    store = FleetStore(db)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    return prefix, [(name, store.add_device(name)) for name in (f"{prefix}-{i}" for i in range(count))]


@contextmanager
def serving(db: str) -> Iterator[FleetServer]:
    server = FleetServer(db).start(timeout=60)
    try:
        yield server
    finally:
        server.kill()


# --- ingest ---------------------------------------------------------------------------------------------


def ingest_once(db: str, total: int, batch: int, devices: int, clients: int) -> float:
    """records/s of one upload of ``total`` records through the service."""
    _, tokens = register(db, devices)
    per_device = -(-total // devices)
    per: list[list[tuple[str, bytes, str, int]]] = []  # per device: (token, gzip body, Idempotency-Key, records)
    for name, token in tokens:
        per.append([])
        for start in range(0, per_device, batch):
            recs = list(records_of(name, start, min(batch, per_device - start)))
            body = {"fingerprint": f"fp-{name}", "profile": PROFILE, "records": recs}
            per[-1].append((token, gzip.compress(json.dumps(body).encode(), mtime=0),
                            idempotency_key([r["key"] for r in recs]), len(recs)))
    # The devices' batches interleaved, each device's in order.
    bodies = [b for group in itertools.zip_longest(*per) for b in group if b is not None]
    sent = sum(b[3] for b in bodies)
    lock, queue, errors = threading.Lock(), list(reversed(bodies)), []

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    token, content, key, count = queue.pop()
                answer = http.post("/v1/telemetry", content=content, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                    "Content-Encoding": "gzip", IDEMPOTENCY_HEADER: key})
                if answer.status_code != 200 or answer.json()["accepted"] != count:
                    errors.append(f"{answer.status_code}: {answer.text[:200]}")

    with serving(db) as server:
        threads = [threading.Thread(target=client, args=(server.url,)) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} batches failed, first: {errors[0]}")
    return sent / elapsed


# --- pull -----------------------------------------------------------------------------------------------


def fill(db: str, total: int, devices: int, chunk: int) -> tuple[list[str], float]:
    """Bring ``db`` to ``total`` more records through FleetStore.store_batch; (device names, seconds)."""
    store = FleetStore(db)
    chunk = max(1, min(chunk, total // devices))  # every device gets records
    prefix, tokens = register(db, devices)
    names = [name for name, _ in tokens]
    ids = [store.device_for_token(token) for _, token in tokens]
    started = time.perf_counter()
    done = 0
    offsets = [0] * devices
    d = 0
    while done < total:  # round-robin over devices, one transaction of ``chunk`` records each
        size = min(chunk, total - done)
        device = ids[d]
        assert isinstance(device, Device)
        recs = list(records_of(names[d], offsets[d], size))
        store.store_batch(device, f"fill-{prefix}-{d}-{offsets[d]}", "fill", f"fp-{names[d]}", PROFILE, recs, [])
        offsets[d] += size
        done += size
        d = (d + 1) % devices
    return names, time.perf_counter() - started


def max_cursor(server: FleetServer) -> int:
    """The highest record id: the last page's last cursor (found by bisection on ``since``)."""
    with server.operator() as client:
        low, high = 0, 2**40
        while high - low > 1:
            mid = (low + high) // 2
            if client.get("/v1/telemetry", params={"since": mid, "limit": 1}).json()["records"]:
                low = mid
            else:
                high = mid
    return high


def time_requests(server: FleetServer, path: str, params: dict[str, Any], n: int) -> tuple[float, int]:
    """Median seconds of ``n`` GETs (after one warm-up), and the records/devices in the answer."""
    with server.operator() as client:
        client.timeout = httpx.Timeout(120)
        first = client.get(path, params=params)
        first.raise_for_status()
        body = first.json()
        size = len(body.get("records", body.get("devices", [])))
        times = []
        for _ in range(n):
            started = time.perf_counter()
            client.get(path, params=params).raise_for_status()
            times.append(time.perf_counter() - started)
    return median(times), size


def pull(db: str, total: int, devices: int, chunk: int, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    names, fill_s = fill(db, total, devices, chunk)
    log(f"  filled {total} records in {fill_s:.1f} s ({total / fill_s:.0f} records/s)")
    figures: dict[str, Any] = {"fill_s": fill_s}
    with serving(db) as server:
        top = max_cursor(server)
        deep = max(0, top - total // 10)
        log(f"  highest cursor {top}, deep pages from since={deep}")
        device, kernel = names[len(names) // 2], KERNELS[len(KERNELS) // 2]
        queries = {
            "first page": ("/v1/telemetry", {"limit": 1000}),
            "deep page (since at 90%)": ("/v1/telemetry", {"since": deep, "limit": 1000}),
            "device=": ("/v1/telemetry", {"device": device, "limit": 1000}),
            "kernel=": ("/v1/telemetry", {"kernel": kernel, "limit": 1000}),
            "device= & kernel=": ("/v1/telemetry", {"device": device, "kernel": kernel, "limit": 1000}),
            "device= & kernel=, deep": ("/v1/telemetry", {"device": device, "kernel": kernel, "since": deep,
                                                          "limit": 1000}),
            "/v1/devices": ("/v1/devices", {}),
        }
        for label, (path, params) in queries.items():
            seconds, size = time_requests(server, path, params, n)
            figures[label] = (seconds, size)
            log(f"  {label}: {seconds * 1000:.1f} ms ({size} in the answer)")
    return figures


# --- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--postgres", metavar="URL", help="use this PostgreSQL database instead of a throwaway cluster")
    parser.add_argument("--records", type=int, default=1_000_000, help="records stored for the pull latencies")
    parser.add_argument("--ingest-records", type=int, default=50_000, help="records uploaded per ingest run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--fill-chunk", type=int, default=50_000, help="records per store_batch call while filling")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-pull", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, a few seconds per backend")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.ingest_records, args.runs, args.requests = 20_000, 4_000, 3, 5
        args.fill_chunk = min(args.fill_chunk, 5_000)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    backends = Backends(args.postgres)
    results: dict[str, dict[str, Any]] = {}
    try:
        for backend in args.backends:
            log(f"{backend}:")
            figures: dict[str, Any] = {}
            if not args.skip_ingest:
                rates = []
                for _ in range(args.runs):
                    rates.append(ingest_once(backends.new(backend), args.ingest_records, args.batch, args.devices,
                                             args.clients))
                    log(f"  ingest: {rates[-1]:.0f} records/s")
                figures["ingest"] = (median(rates), min(rates), max(rates))
            if not args.skip_pull:
                figures.update(pull(backends.new(backend), args.records, args.devices, args.fill_chunk,
                                    args.requests, log))
            results[backend] = figures
    finally:
        backends.close()
    report(results, args)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    rows: list[list[str]] = []
    if not args.skip_ingest:
        rows.append([f"ingest, records/s ({args.ingest_records} records, batches of {args.batch}, gzip, "
                     f"{args.clients} clients, {args.devices} devices; median of {args.runs}, min-max)"] +
                    [f"{r['ingest'][0]:.0f} ({r['ingest'][1]:.0f}-{r['ingest'][2]:.0f})" for r in results.values()])
    if not args.skip_pull:
        rows.append([f"fill {args.records} records in-process (store_batch, {args.fill_chunk} per transaction), s"] +
                    [f"{r['fill_s']:.1f}" for r in results.values()])
        labels = [k for k in next(iter(results.values())) if k not in ("ingest", "fill_s")]
        for label in labels:
            cells = [f"{r[label][0] * 1000:.1f} ({r[label][1]})" for r in results.values()]
            rows.append([f"GET {label} at {args.records} records, ms (items answered); median of {args.requests}",
                         *cells])
    print(table(["figure", *names], rows, markdown=args.markdown))


if __name__ == "__main__":
    main()
