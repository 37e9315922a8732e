"""Train the cost model (LightGBM regression on log time ratios) and export it to ONNX.

Targets are ``log(time / best time of the case)`` for correct rows (a subsample per case:
the best half, then seeded random rows). The kernel's name is hidden from a seeded quarter
of the cases, so the trees learn what to do when a kernel is new (the feature is NaN), as
the student decoder does. The export goes through onnxmltools, and the file carries the
feature version the device checks.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.predict.cost_features import FEATURE_COUNT, FEATURE_VERSION, config_features
from agent.predict.model_files import COST_MODEL_FILE
from agent.train.cases import Case

__all__ = ["COST_MODEL_FILE", "export_onnx", "fit_cost_model"]

HIDE_NAME_SHARE = 0.25


def _rows(case: Case, per_case: int, rng: np.random.Generator) -> np.ndarray:
    finite = np.flatnonzero(np.isfinite(case.times))
    size = per_case if len(case.configs) <= 1000 else 4 * per_case
    if len(finite) <= size:
        return finite
    ranked = finite[np.argsort(case.times[finite], kind="stable")]
    top = ranked[: per_case // 2]
    rest = rng.choice(ranked[len(top):], size=size - len(top), replace=False)
    return np.sort(np.concatenate([top, rest]))


def hides_name(case: Case, seed: int) -> bool:
    """Whether training hides this case's kernel name (a seeded hash, stable across runs)."""
    return (zlib.crc32(f"{seed}/{case.case_id}".encode()) % 1000) / 1000 < HIDE_NAME_SHARE


def fit_cost_model(cases: Sequence[Case], *, seed: int = 0, per_case: int = 128, n_estimators: int = 200,
                   threads: int = 1) -> Any:
    """A fitted ``lightgbm.LGBMRegressor`` predicting log(time / best) from cost features."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for case in sorted(cases, key=lambda c: c.case_id):
        rows = _rows(case, per_case, rng)
        if len(rows) < 2:
            continue
        configs = [case.configs[i] for i in rows]
        xs.append(config_features(case.hardware, case.kernel_info, case.shape, case.codec, configs,
                                  hide_name=hides_name(case, seed)))
        ys.append(np.log(case.times[rows] / case.best_time))
    if not xs:
        raise ValueError("no case has two correct configurations to learn from")
    model = lgb.LGBMRegressor(objective="regression", n_estimators=n_estimators, learning_rate=0.05, num_leaves=31,
                              min_child_samples=10, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                              random_state=seed, deterministic=True, force_row_wise=True, num_threads=threads,
                              verbose=-1)
    model.fit(np.concatenate(xs).astype(np.float32), np.concatenate(ys))
    return model


def export_onnx(model: Any, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as an ONNX file the device's :class:`~agent.predict.cost_model.CostModel` loads."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_lightgbm(model, initial_types=[("features", FloatTensorType([None, FEATURE_COUNT]))],
                           target_opset=15, zipmap=False)
    for key, value in {"edgetune.feature_version": str(FEATURE_VERSION),
                       "edgetune.target": "log(time / best time)", **(metadata or {})}.items():
        entry = onx.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onx.producer_name = "edgetune"
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(onx.SerializeToString())
    partial.replace(path)
    return path
