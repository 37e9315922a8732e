"""Helpers several test modules share (tests import these, never each other's private helpers)."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench.measure import MeasureSettings
from agent.predict.confidence import Calibration
from agent.predict.model_files import COST_MODEL_FILE, STUDENT_FILE
from agent.predict.prompt import HardwareDesc, KernelDesc
from agent.store import RunRecord, Store
from agent.train.cases import Case
from tests.conftest import run_cli

__all__ = [
    "FINGERPRINT",
    "QUICK",
    "SHIPPED_MODELS",
    "committed_runs",
    "counts",
    "fill",
    "local_keys",
    "make_case",
    "model_folder",
    "run_record",
    "tuning_record",
    "upload",
    "upload_env",
]

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"

# A short measurement protocol: enough to rank candidates in a test, not to publish a figure.
QUICK = MeasureSettings(min_runs=3, max_runs=20, budget_s=0.02)


def committed_runs(db: Path) -> int:
    """Runs committed to the store at ``db`` (read-only; 0 while it does not exist or is locked)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("select count(*) from runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def model_folder(folder: Path, *, threshold: float) -> Path:
    """A model folder with the shipped student and cost model and a calibration of the given threshold."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (STUDENT_FILE, COST_MODEL_FILE):
        (folder / name).symlink_to(SHIPPED_MODELS / name)
    Calibration(intercept=0.0, coefficients=(0.5, 0.5, 1.0), threshold=threshold, use_cost_model=True).save(
        folder / "confidence.json")
    return folder


def run_record(key: str, **data: Any) -> dict[str, Any]:
    """A telemetry ``run`` record as a device uploads it; ``data`` overrides fields."""
    fields = {"kernel": "gemm", "kernel_key": "gemm-1", "shape": "M=64,N=64,K=64", "target": "native",
              "compiler": "cc 12", "strategy": "model", "phase": "search", "config": {"BM": 16, "LOOP": "ijk"},
              "status": "correct", "reason": "", "median_s": 0.001, "samples": [0.001, 0.0011],
              "compile_s": 0.2, "source": "local", "predicted_rank": 0, "tuning_id": 1}
    return {"key": key, "kind": "run", "created_at": "2026-01-02T03:04:05.000+00:00", "data": {**fields, **data}}


def tuning_record(key: str, **data: Any) -> dict[str, Any]:
    """A telemetry ``tuning`` record as a device uploads it; ``data`` overrides fields."""
    fields = {"kernel": "gemm", "shape": "M=64,N=64,K=64", "target": "native", "strategy": "model", "budget": "5",
              "evaluations": 5, "wall_s": 2.0, "winner_config": {"BM": 16}, "winner_median_s": 0.001,
              "speedup": 1.5, "predict_s": 0.01, "cloud_s": None, "compile_s": 1.0, "benchmark_s": 0.8,
              "confidence": 0.9, "cloud": "not configured", "winner_source": "local", "winner_predicted_rank": 0,
              "situation": "seen", "ranked_by": "model"}
    return {"key": key, "kind": "tuning", "created_at": "2026-01-02T03:04:05Z", "data": {**fields, **data}}


# -- a device's store with telemetry waiting, and `edgetune upload` run on it ---------------------
FINGERPRINT = "fp-upload-test"


def fill(path: Path, *, tunings: int = 2, runs: int = 3, device: str = FINGERPRINT, **run_fields) -> None:
    """Tunings with their runs, through the store's own methods (each puts its records in the outbox)."""
    with Store.open(path) as store:
        store.upsert_device(device, {"name": "test-device", "cores": 2})
        store.upsert_kernel("gemm-1", "gemm", "hash", {"params": []}, "tests")
        for t in range(tunings):
            tuning = store.start_tuning(device=device, kernel_key="gemm-1", kernel="gemm", shape=f"M={64 + t}",
                                        target="native", compiler="cc 12", strategy="model", budget="5", seed=0)
            run_id = None
            for i in range(runs):
                fields = {"config": {"BM": 16 + i}, "samples": (0.001, 0.002), "median_s": 0.0015, **run_fields}
                run_id = store.add_run(RunRecord(
                    tuning_id=tuning, device=device, kernel_key="gemm-1", kernel="gemm", shape=f"M={64 + t}",
                    target="native", compiler="cc 12", flags=("-O3",), strategy="model", status="correct",
                    **fields))
            store.finish_tuning(tuning, evaluations=runs, wall_s=1.0 + t, winner_run=run_id,
                                winner_config={"BM": 16}, winner_median_s=0.0015, default_median_s=0.003,
                                speedup=2.0, tie=False, details={"cloud": "not configured", "predict_s": 0.01})


def local_keys(path: Path) -> set[str]:
    """The record keys the store's runs and tunings were given."""
    with Store.open(path) as store:
        store_id = store.db["store_info"].get("store_id")["value"]
        runs = {f"run:{r['device']}:{store_id}:{r['id']}" for r in store.db["runs"].rows}
        tunings = {f"tuning:{t['device']}:{store_id}:{t['id']}" for t in store.db["tunings"].rows}
    return runs | tunings


def counts(path: Path) -> dict[str, int]:
    with Store.open(path) as store:
        return {"outbox": store.count("outbox"), "dead_letter": store.count("dead_letter")}


def upload_env(db: Path, url: str, token: str) -> dict[str, str]:
    return {"EDGETUNE_DB": str(db), "EDGETUNE_FLEET_URL": url, "EDGETUNE_FLEET_TOKEN": token,
            "EDGETUNE_CONFIG": str(db.parent / "absent.toml")}


def upload(db: Path, url: str, token: str, *args: str) -> dict[str, int]:
    done = run_cli("upload", "--json", *args, env=upload_env(db, url, token), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- small measured tables for the replay baselines --------------------------------------------
CASE_PARAMS = [
    {"name": "TILE", "role": "tile", "values": [4, 8, 16, 32, 64], "default": 16},
    {"name": "VEC", "role": "vector", "values": [1, 4, 8], "default": 4},
    {"name": "ORDER", "role": "order", "values": ["ij", "ji"], "default": "ji"},
]


def make_case(case_id: str, *, cores: int = 4, shift: int = 0, fail: int = 0, sample: int | None = None,
              seed: int = 0) -> Case:
    """A gemm-like case whose time depends mostly on TILE (best at 16 << shift)."""
    names = [p["name"] for p in CASE_PARAMS]
    configs = [dict(zip(names, v, strict=True)) for v in itertools.product(*(p["values"] for p in CASE_PARAMS))]
    if sample is not None:
        rng = np.random.default_rng(seed)
        configs = [configs[i] for i in sorted(rng.choice(len(configs), sample, replace=False))]
    best_tile = 16 << shift
    times = np.array([1e-3 * (1 + abs(math.log2(c["TILE"] / best_tile))) * (1 + 0.01 * c["VEC"])
                      * (1.0 if c["ORDER"] == "ij" else 1.02) for c in configs])
    times[:fail] = np.inf
    hardware = HardwareDesc(kind="cpu", isa="x86_64", vector_bits=256, cores=cores, l1_bytes=32768,
                            l2_bytes=1 << 20, l3_bytes=1 << 25)
    kernel = KernelDesc(name="gemm", dimensions=("M", "N"), params_by_role={"tile": 1, "vector": 1, "order": 1})
    return Case(case_id=case_id, kind="cpu", device="dev", device_name="test cpu", kernel="gemm", kernel_key="gemm-x",
                shape={"M": 64, "N": 64 << shift}, target="native", cores=cores, hardware=hardware,
                kernel_info=kernel, params=[dict(p) for p in CASE_PARAMS], configs=configs, times=times)
