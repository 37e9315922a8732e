"""The Python API for applications: ``agent.tune(kernel, shape)`` and ``agent.best_config(kernel, shape)``.

Both take a kernel name (or a ``kernel.toml`` path, or a loaded spec) and a shape
(``"M=64,N=64,K=64"``, a named shape, a dict, or None for the kernel's default), probe this
machine once per process, and use the same store, cache and models as the CLI
(``EDGETUNE_DB``, ``EDGETUNE_CACHE``, ``EDGETUNE_MODELS``; see :mod:`agent.settings`).

``best_config`` never tunes and never blocks on a benchmark: it answers from the store
(this device's measured best), else from the model's top prediction, else the kernel's
default, and says which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.budget import Budget
from agent.errors import EdgetuneError
from agent.hardware import HardwareProfile, probe
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import Problem, parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Config, Space
from agent.kernels.spec import KernelSpec
from agent.settings import Settings
from agent.store import Store
from agent.tuner import TuneResult

__all__ = ["BestConfig", "best_config", "tune"]


@dataclass(frozen=True)
class BestConfig:
    """The configuration to use now, and where it came from."""

    config: Config
    source: str  # "stored" (measured on this device), "model" (predicted), or "default"
    kernel: str
    shape: str
    target: str
    median_s: float | None = None  # stored: its measured time
    speedup: float | None = None  # stored: over the default, as measured
    tuning_id: int | None = None  # stored: the tuning that found it
    confidence: float | None = None  # model: calibrated P(top 5 within 5% of the optimum)
    reason: str = ""  # why a better source was not used
    stale: str | None = None  # stored: why it no longer matches what it was measured with (a re-tuning is due)


@lru_cache(maxsize=4)
def _profile(compiler: str) -> HardwareProfile:
    return probe(measure_bandwidth=False, compiler=compiler)


def _problem(kernel: str | KernelSpec, shape: str | Mapping[str, int] | None) -> Problem:
    spec = kernel if isinstance(kernel, KernelSpec) else find_kernel(str(kernel))
    if isinstance(shape, Mapping):
        shape = ",".join(f"{k}={v}" for k, v in shape.items())
    return parse_shape(spec, shape)


def _settings(db: str | os.PathLike[str] | None) -> Settings:
    settings = Settings.from_environ()
    if db is not None:
        settings = Settings(**{**settings.__dict__, "db_path": Path(db)})
    return settings


def tune(kernel: str | KernelSpec, shape: str | Mapping[str, int] | None = None, *, strategy: str = "model",
         budget: str | int | Budget | None = None, target: str = "native", seed: int = 0,
         db: str | os.PathLike[str] | None = None, models: str | os.PathLike[str] | None = None,
         cloud: Any = None) -> TuneResult:
    """Tune ``kernel`` at ``shape`` on this machine and store every result; returns the winner.

    ``budget``: evaluations (``5``), a time (``"30s"``) or a :class:`Budget`; None is the
    strategy's default. ``cloud``: a URL or ``agent.predict.cloud.CloudSettings`` (default:
    ``EDGETUNE_CLOUD_URL``).
    """
    from agent.tuning_session import TuningSession

    settings = _settings(db)
    if models:
        settings = replace(settings, models_dir=Path(models))
    if isinstance(cloud, str) or cloud is None:
        from agent.predict.cloud import cloud_settings_from

        cloud = cloud_settings_from(settings, cloud)
    session = TuningSession(settings, profile=_profile(settings.compiler), cloud=cloud)
    options = session.options(strategy, budget=budget, target=target, seed=seed)
    problem = _problem(kernel, shape)
    session.backend(problem.spec.backend, target)  # find the toolchain before the store opens
    with Store.open(settings.db_path) as store:
        return session.tune(problem, options, store=store)


def best_config(kernel: str | KernelSpec, shape: str | Mapping[str, int] | None = None, *, target: str = "native",
                db: str | os.PathLike[str] | None = None,
                models: str | os.PathLike[str] | None = None) -> BestConfig:
    """The configuration to run now: stored best for this device, else the model's top-1, else the default."""
    settings = _settings(db)
    problem = _problem(kernel, shape)
    spec = problem.spec
    profile = _profile(settings.compiler)
    common = {"kernel": spec.name, "shape": problem.key, "target": target}
    reasons = []
    if settings.db_path.is_file():  # never create a store just to read it
        with Store.open(settings.db_path) as store:
            for row in store.best(kernel=spec.name, device=profile.fingerprint()):
                if row["kernel_key"] == spec.key and row["shape"] == problem.key and row["target"] == target:
                    return BestConfig(config=json.loads(row["config_json"]), source="stored",
                                      median_s=row["median_s"], speedup=row["speedup"], tuning_id=row["tuning_id"],
                                      stale=row["stale"], **common)
        reasons.append("nothing stored for this device, kernel version, shape and target")
    else:
        reasons.append(f"no store at {settings.db_path}")
    space = Space.build(problem, max_threads=profile.logical_cores, vector_bits=target_vector_bits(target, profile))
    try:
        from agent.search.model_guided import load_predictor

        predictor = load_predictor(Path(models) if models else settings.models_dir, settings.cache_dir)
        prediction = predictor.predict(space, profile.to_dict())
        reasons.append(f"predicted ({prediction.situation}: {prediction.source} ranking first)")
        return BestConfig(config=prediction.candidates[0].config, source="model", confidence=prediction.confidence,
                          reason="; ".join(reasons), **common)
    except (EdgetuneError, ImportError, OSError) as exc:
        reasons.append(f"no prediction ({exc})")
    return BestConfig(config=space.default(), source="default", reason="; ".join(reasons), **common)
