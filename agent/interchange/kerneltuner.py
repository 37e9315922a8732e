"""Kernel Tuner cache files (``.json`` or ``.json.gz``): read them as import batches, write them.

A cache holds one kernel on one device at one problem size::

    {"device_name": "NVIDIA A100-PCIE-40GB", "kernel_name": "convolution_kernel",
     "problem_size": [4096, 4096], "tune_params_keys": ["block_size_x", ...],
     "tune_params": {"block_size_x": [16, 32, ...], ...}, "objective": "time",
     "cache": {"16,1,...": {"block_size_x": 16, ..., "time": 3.87, "times": [...],
                            "compile_time": 918.6}}}

``time`` is in milliseconds, or a string naming a failure (``CompilationFailedConfig``,
``RuntimeFailedConfig``, ``InvalidConfig``). Files written here by edgetune carry the
same keys, so Kernel Tuner can read them back as a cache.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.hardware.gpu import gpu_fingerprint, gpu_profile
from agent.interchange.batch import ImportBatch, ImportedRun, ImportFileError, finite_number, guess_role

__all__ = ["FAILURE_STATUS", "looks_like_kernel_tuner", "read_kernel_tuner", "write_kernel_tuner"]

FAILURE_STATUS = {
    "CompilationFailedConfig": "compile",
    "RuntimeFailedConfig": "runtime",
    "InvalidConfig": "constraints",
    "TimeoutConfig": "timeout",
}
_STATUS_FAILURE = {v: k for k, v in FAILURE_STATUS.items()} | {"correctness": "RuntimeFailedConfig"}
_DIMENSION_NAMES = ("X", "Y", "Z", "W")


def load_json_file(path: Path) -> Any:
    """JSON from a plain or gzip file, with one-line errors for truncated or invalid files."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise ImportFileError(f"{path}: truncated or damaged gzip file ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ImportFileError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def looks_like_kernel_tuner(data: Any) -> bool:
    return isinstance(data, dict) and "cache" in data and "tune_params_keys" in data


def read_kernel_tuner(path: Path, data: Any, *, device: str | None = None, kernel: str | None = None,
                      origin_root: Path | None = None) -> ImportBatch:
    """Turn a loaded cache into a batch; every entry is checked before anything is stored."""
    if not isinstance(data, dict):
        raise ImportFileError(f"{path}: a Kernel Tuner cache is a JSON object")
    missing = [k for k in ("tune_params_keys", "tune_params", "cache") if k not in data]
    if missing:
        raise ImportFileError(f"{path}: not a Kernel Tuner cache, missing key(s) {', '.join(missing)}")
    keys = data["tune_params_keys"]
    declared = data["tune_params"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or not isinstance(declared, dict):
        raise ImportFileError(f"{path}: tune_params_keys must be a list of names and tune_params an object")
    if set(keys) != set(declared):
        raise ImportFileError(f"{path}: tune_params_keys and tune_params name different parameters")
    problem_size = data.get("problem_size", [])
    if isinstance(problem_size, int):
        problem_size = [problem_size]
    if not isinstance(problem_size, list) or not all(isinstance(v, int) and v > 0 for v in problem_size) \
            or len(problem_size) > len(_DIMENSION_NAMES):
        raise ImportFileError(f"{path}: problem_size must be a list of up to 4 positive integers")
    cache = data["cache"]
    if not isinstance(cache, dict) or not cache:
        raise ImportFileError(f"{path}: cache must be a non-empty object of configurations")
    runs = []
    for entry_key, entry in cache.items():
        runs.append(_entry(path, entry_key, entry, keys))
    stem = path.name.removesuffix(".gz").removesuffix(".json")
    profile = gpu_profile(device or "", str(data.get("device_name") or ""), stem)
    name = kernel or str(data.get("kernel_name") or stem)
    origin_path = path.name
    if origin_root is not None:
        try:
            origin_path = str(path.resolve().relative_to(origin_root.resolve()))
        except ValueError:
            origin_path = path.name
    params = [{"name": k, "role": guess_role(k), "values": list(declared[k])} for k in keys]
    return ImportBatch(
        origin=f"kernel-tuner:{origin_path}", device=gpu_fingerprint(profile), device_profile=profile,
        kernel=name, params=params, shape=dict(zip(_DIMENSION_NAMES, problem_size, strict=False)), target="gpu",
        runs=runs, compiler=str(data.get("compiler", "")),
    )


def _entry(path: Path, entry_key: str, entry: Any, keys: Sequence[str]) -> ImportedRun:
    where = f"{path}: cache entry {entry_key!r}"
    if not isinstance(entry, dict):
        raise ImportFileError(f"{where} is not an object")
    absent = [k for k in keys if k not in entry]
    if absent:
        raise ImportFileError(f"{where} lacks parameter(s) {', '.join(absent)}")
    if "time" not in entry:
        raise ImportFileError(f"{where} has no 'time'")
    config = {k: entry[k] for k in keys}
    for name, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ImportFileError(f"{where}: parameter {name} has a {type(value).__name__} value")
    time_ms = entry["time"]
    compile_ms = entry.get("compile_time")
    compile_s = float(compile_ms) / 1e3 if finite_number(compile_ms) else None
    if isinstance(time_ms, str):
        status = FAILURE_STATUS.get(time_ms)
        if status is None:
            raise ImportFileError(f"{where}: time {time_ms!r} is neither a number nor a known failure "
                               f"({', '.join(FAILURE_STATUS)})")
        return ImportedRun(config=config, status=status, compile_s=compile_s)
    if not finite_number(time_ms) or not time_ms > 0:
        raise ImportFileError(f"{where}: time must be a positive number of milliseconds, got {time_ms!r}")
    times = entry.get("times", [])
    samples = tuple(float(t) / 1e3 for t in times if finite_number(t)) if isinstance(times, list) else ()
    return ImportedRun(config=config, status="correct", time_s=float(time_ms) / 1e3, samples=samples,
                       compile_s=compile_s)



def write_kernel_tuner(runs: Sequence[Mapping[str, Any]], *, device_name: str, kernel_name: str,
                       shape: Mapping[str, int], params: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Kernel Tuner cache for one case from stored runs (``config``, ``status``, ``median_s`` ...)."""
    keys = [p["name"] for p in params]
    cache: dict[str, Any] = {}
    for run in runs:
        config = run["config"]
        entry: dict[str, Any] = {k: config[k] for k in keys}
        if run["status"] == "correct" and run.get("median_s"):
            entry["time"] = run["median_s"] * 1e3
            entry["times"] = [s * 1e3 for s in run.get("samples") or []]
        else:
            entry["time"] = _STATUS_FAILURE.get(run["status"], "RuntimeFailedConfig")
        if run.get("compile_s") is not None:
            entry["compile_time"] = run["compile_s"] * 1e3
        cache[",".join(str(config[k]) for k in keys)] = entry
    return {
        "device_name": device_name, "kernel_name": kernel_name, "problem_size": list(shape.values()),
        "tune_params_keys": keys, "tune_params": {p["name"]: list(p["values"]) for p in params},
        "objective": "time", "cache": cache,
    }
