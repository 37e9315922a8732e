"""The cost model on the device: an ONNX file run by ONNX Runtime, predicting time.

It predicts ``log(time / best time of the problem)`` for each configuration from
:func:`~agent.predict.cost_features.config_features`; only its order within one problem
is used (lower is faster). The file is checked before use: it must load, take
:data:`~agent.predict.cost_features.FEATURE_COUNT` features and carry this edgetune's
feature version; every problem is one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from agent.errors import ModelFileError
from agent.predict.cost_features import FEATURE_COUNT, FEATURE_VERSION

__all__ = ["CostModel"]


class CostModel:
    """A validated cost-model ONNX file in an ONNX Runtime session (one thread)."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such cost model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 4  # errors reach us as exceptions; no console chatter
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for any bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: not a loadable ONNX model ({first[:200]})") from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        version = meta.get("edgetune.feature_version")
        if version != str(FEATURE_VERSION):
            raise ModelFileError(f"{self.path}: made for cost features version {version}, "
                                 f"this edgetune has version {FEATURE_VERSION}")
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] != FEATURE_COUNT:
            raise ModelFileError(f"{self.path}: expects input {[i.shape for i in inputs]}, "
                                 f"not [N, {FEATURE_COUNT}] features")
        self._input = inputs[0].name
        self.metadata = dict(meta)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted log time ratio [N] of each feature row (lower is faster)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != FEATURE_COUNT:
            raise ValueError(f"features must be [N, {FEATURE_COUNT}], got {features.shape}")
        if len(features) == 0:
            return np.zeros(0)
        out = self._session.run(None, {self._input: features})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)
