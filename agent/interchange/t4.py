"""The T4 tuning-results format (the Open Autotuning Results Schema, 1.0.0).

::

    {"schema_version": "1.0.0",
     "results": [{"timestamp": "...", "configuration": {"BM": 64, ...},
                  "objectives": ["time"],
                  "times": {"compilation_time": 0.13, "runtimes": [1.2e-05, ...]},
                  "invalidity": "correct", "correctness": 1,
                  "measurements": [{"name": "time", "value": 1.2e-05, "unit": "s"}]}]}

The schema has no place for the device, kernel or problem size, so edgetune writes
them in an extra top-level ``metadata`` object and, on import, takes them from there
or from the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.hardware.gpu import gpu_fingerprint, gpu_profile
from agent.interchange.batch import ImportBatch, ImportedRun, ImportFileError, finite_number, guess_role
from agent.store import INVALIDITY

__all__ = ["SCHEMA_VERSION", "looks_like_t4", "read_t4", "write_t4"]

SCHEMA_VERSION = "1.0.0"
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def looks_like_t4(data: Any) -> bool:
    return isinstance(data, dict) and "results" in data and "schema_version" in data


def write_t4(runs: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A T4 document from stored runs (dicts with config, status, median_s, samples, compile_s, created_at)."""
    results = []
    for run in runs:
        correct = run["status"] == "correct" and run.get("median_s") is not None
        result: dict[str, Any] = {
            "timestamp": run.get("created_at", ""),
            "configuration": dict(run["config"]),
            "objectives": ["time"],
            "times": {"runtimes": list(run.get("samples") or [])},
            "invalidity": run["status"],
            "correctness": 1 if correct else 0,
            "measurements": [{"name": "time", "value": run["median_s"], "unit": "s"}] if correct else [],
        }
        if run.get("compile_s") is not None:
            result["times"]["compilation_time"] = run["compile_s"]
        results.append(result)
    return {"schema_version": SCHEMA_VERSION, "metadata": dict(metadata), "results": results}


def read_t4(path: Path, data: Any, *, device: str | None = None, kernel: str | None = None,
            shape: Mapping[str, int] | None = None) -> ImportBatch:
    """Turn a loaded T4 document into a batch (metadata from the file, or the arguments)."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ImportFileError(f"{path}: a T4 file is an object with a 'results' list")
    version = str(data.get("schema_version", ""))
    if not version.startswith("1."):
        raise ImportFileError(f"{path}: T4 schema_version {version!r}; edgetune reads 1.x")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    kernel_name = kernel or meta.get("kernel")
    if not kernel_name:
        raise ImportFileError(f"{path}: T4 files do not name their kernel; pass --kernel NAME")
    raw_shape = shape if shape is not None else meta.get("shape")
    if not isinstance(raw_shape, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw_shape.values()):
        raise ImportFileError(f"{path}: T4 files do not give the problem shape; pass --shape NAME=VALUE,...")
    runs = [_result(path, index, result) for index, result in enumerate(data["results"])]
    if not runs:
        raise ImportFileError(f"{path}: no results")
    device_meta = meta.get("device") if isinstance(meta.get("device"), dict) else None
    if device_meta and device_meta.get("fingerprint"):
        profile = dict(device_meta.get("profile") or {"name": device_meta.get("name", "")})
        fingerprint = str(device_meta["fingerprint"])
    else:
        name = device or (device_meta or {}).get("name") or meta.get("device_name")
        if not name:
            raise ImportFileError(f"{path}: T4 files do not name their device; pass --device NAME")
        profile = gpu_profile(str(name))
        fingerprint = gpu_fingerprint(profile)
    if isinstance(meta.get("params"), list):
        params = meta["params"]
    else:
        names = list(runs[0].config)
        params = [{"name": n, "role": guess_role(n),
                   "values": sorted({r.config.get(n) for r in runs}, key=str)} for n in names]
    return ImportBatch(origin=f"t4:{path.name}", device=fingerprint, device_profile=profile,
                       kernel=str(kernel_name), params=params, shape=dict(raw_shape),
                       target=str(meta.get("target", "gpu" if profile.get("kind") == "gpu" else "native")),
                       runs=runs, compiler=str(meta.get("compiler", "")),
                       cores=meta.get("cores") if isinstance(meta.get("cores"), int) else None,
                       kernel_key=meta.get("kernel_key") if isinstance(meta.get("kernel_key"), str) else None)


def _result(path: Path, index: int, result: Any) -> ImportedRun:
    where = f"{path}: results[{index}]"
    if not isinstance(result, dict):
        raise ImportFileError(f"{where} is not an object")
    config = result.get("configuration")
    if not isinstance(config, dict) or not config:
        raise ImportFileError(f"{where} has no configuration object")
    status = result.get("invalidity", "correct")
    if status not in INVALIDITY:
        raise ImportFileError(f"{where}: invalidity {status!r} is not one of {', '.join(INVALIDITY)}")
    times = result.get("times") if isinstance(result.get("times"), dict) else {}
    compile_s = times.get("compilation_time")
    compile_s = float(compile_s) if finite_number(compile_s) else None
    runtimes = times.get("runtimes", [])
    samples = tuple(float(t) for t in runtimes if finite_number(t)) if isinstance(runtimes, list) else ()
    if status != "correct":
        return ImportedRun(config=config, status=status, compile_s=compile_s)
    value = None
    for measurement in result.get("measurements") or []:
        if isinstance(measurement, dict) and measurement.get("name") == "time":
            raw, unit = measurement.get("value"), str(measurement.get("unit", "s"))
            if not finite_number(raw) or unit not in _UNIT_SECONDS:
                raise ImportFileError(f"{where}: time measurement must be a number in s, ms, us or ns, "
                                   f"got {raw!r} {unit!r}")
            value = float(raw) * _UNIT_SECONDS[unit]
    if value is None and samples:
        value = sorted(samples)[len(samples) // 2]
    if value is None or not value > 0:
        raise ImportFileError(f"{where}: a correct result needs a positive time measurement")
    return ImportedRun(config=config, status="correct", time_s=value, samples=samples, compile_s=compile_s)
