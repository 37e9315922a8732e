"""One imported case (device, kernel, shape, measurements) and how it enters the store.

Every importer (Kernel Tuner caches, T4 files, edgetune datasets) produces
``ImportBatch`` objects; ``store_batch`` writes one as a tuning session with strategy
``import``. Importing the same file again replaces nothing and adds nothing (the
session is found by its origin); a session left half-written by a killed import is
removed and written again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ImportFileError
from agent.kernels.problem import shape_key
from agent.store import INVALIDITY, RunRecord, Store

__all__ = ["ImportBatch", "ImportFileError", "ImportedRun", "finite_number", "guess_role", "store_batch"]




@dataclass(frozen=True)
class ImportedRun:
    config: Mapping[str, Any]
    status: str
    time_s: float | None = None
    samples: tuple[float, ...] = ()
    compile_s: float | None = None


@dataclass(frozen=True)
class ImportBatch:
    """The measurements of one case from an imported file."""

    origin: str  # e.g. kernel-tuner:convolution_milo/A100.json.gz
    device: str  # fingerprint
    device_profile: Mapping[str, Any]
    kernel: str
    params: Sequence[Mapping[str, Any]]  # [{"name", "role", "values"}] in the file's order
    shape: Mapping[str, int]
    target: str  # the compile target, or the device kind for GPU data ("gpu")
    runs: Sequence[ImportedRun] = field(default_factory=list)
    compiler: str = ""
    cores: int | None = None
    kernel_key: str | None = None  # given by a dataset import; otherwise derived from the space

    @property
    def key(self) -> str:
        """Imported kernels have no source: their identity is their name plus their space."""
        if self.kernel_key:
            return self.kernel_key
        space = json.dumps([{k: p[k] for k in ("name", "values")} for p in self.params], sort_keys=True)
        return f"{self.kernel}-{hashlib.sha256(space.encode()).hexdigest()[:12]}"


def finite_number(value: Any) -> bool:
    """A real, finite int or float (JSON's true/false and NaN/Infinity are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def guess_role(name: str) -> str:
    """The role of a parameter known only by name (Kernel Tuner and CLBlast naming)."""
    lower = name.lower()
    if lower.startswith("block_size") or name in ("MDIMC", "NDIMC", "MDIMA", "NDIMB") or "threads" in lower:
        return "block"
    if lower.startswith("tile") or name in ("MWG", "NWG", "KWG"):
        return "tile"
    if "unroll" in lower or name == "KWI":
        return "unroll"
    if lower.startswith("vec") or name in ("VWM", "VWN"):
        return "vector"
    if "warp" in lower:
        return "warps"
    if "stage" in lower:
        return "stages"
    if "prefetch" in lower:
        return "prefetch"
    return "flag"


def store_batch(store: Store, batch: ImportBatch, *, replace_existing: bool = False) -> tuple[str, int]:
    """Write one batch; returns ("imported" | "already imported", runs stored)."""
    for run in batch.runs:
        if run.status not in INVALIDITY:
            raise ImportFileError(f"{batch.origin}: status {run.status!r} is not one of {', '.join(INVALIDITY)}")
    shape = shape_key(batch.shape)
    existing = store.find_tuning(device=batch.device, kernel_key=batch.key, shape=shape, target=batch.target,
                                 strategy="import", cores=batch.cores, origin=batch.origin)
    if existing is not None:
        if existing["state"] == "finished" and not replace_existing:
            return "already imported", 0
        store.delete_tuning(existing["id"])  # half-written by a killed import, or replaced on request
    store.upsert_device(batch.device, batch.device_profile)
    space = {"params": [dict(p) for p in batch.params], "constraints": [], "dimensions": list(batch.shape)}
    store.upsert_kernel(batch.key, batch.kernel, batch.key.rsplit("-", 1)[-1], space, batch.origin)
    tuning_id = store.start_tuning(device=batch.device, kernel_key=batch.key, kernel=batch.kernel, shape=shape,
                                   target=batch.target, compiler=batch.compiler, strategy="import",
                                   budget="all", seed=0, cores=batch.cores, origin=batch.origin)
    records = [RunRecord(tuning_id=tuning_id, device=batch.device, kernel_key=batch.key, kernel=batch.kernel,
                         shape=shape, config=run.config, target=batch.target, compiler=batch.compiler, flags=(),
                         strategy="import", status=run.status, samples=run.samples,
                         median_s=run.time_s if run.status == "correct" else None, compile_s=run.compile_s)
               for run in batch.runs]
    store.add_runs(records)
    valid = [r for r in batch.runs if r.status == "correct" and r.time_s]
    best = min(valid, key=lambda r: r.time_s or 0.0, default=None)
    store.finish_tuning(tuning_id, evaluations=len(records), wall_s=0.0, winner_run=None,
                        winner_config=best.config if best else None,
                        winner_median_s=best.time_s if best else None, default_median_s=None,
                        speedup=None, tie=False, update_best=False)
    return "imported", len(records)
