"""Helpers several test modules share (tests import these, never each other's private helpers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent.bench.measure import MeasureSettings
from agent.predict.confidence import Calibration
from agent.predict.model_files import COST_MODEL_FILE, STUDENT_FILE

__all__ = ["QUICK", "SHIPPED_MODELS", "committed_runs", "model_folder", "run_record", "tuning_record"]

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
              "confidence": 0.9, "cloud": "not configured", "winner_source": "local", "winner_predicted_rank": 0}
    return {"key": key, "kind": "tuning", "created_at": "2026-01-02T03:04:05Z", "data": {**fields, **data}}
