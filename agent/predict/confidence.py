"""Calibrated confidence: the probability that benchmarking the top 5 gets within 5% of the optimum.

A logistic model over :class:`~agent.predict.ranking.RankingFeatures`, fitted by
``edgetune eval`` on held-out cases (every case scored by a model that never saw it), with
a threshold chosen on cross-fitted validation predictions so that "confident" means
"best-of-5 within 5% of the optimum" in at least 90% of cases. It ships as
``models/confidence.json``; below the threshold the agent asks the cloud.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ModelFileError
from agent.predict.model_files import CONFIDENCE_FILE, read_model_file, write_json
from agent.predict.ranking import RankingFeatures

__all__ = ["CONFIDENCE_FILE", "Calibration"]



@dataclass(frozen=True)
class Calibration:
    """Logistic coefficients over ``RankingFeatures.vector()``, and the confidence threshold."""

    intercept: float
    coefficients: tuple[float, float, float]
    threshold: float
    use_cost_model: bool  # whether the cost model re-ranks the decoder's candidates (the ablation's verdict)
    agreement_default: float = 0.6  # agreement assumed when no cost model is loaded
    validation: dict[str, Any] = field(default_factory=dict)  # what the threshold achieved, for the record

    def probability(self, features: RankingFeatures) -> float:
        """Calibrated probability that the top 5 hold a configuration within 5% of the optimum."""
        z = self.intercept + sum(c * x for c, x in zip(self.coefficients, features.vector(self.agreement_default),
                                                        strict=True))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def confident(self, features: RankingFeatures) -> bool:
        return self.probability(features) >= self.threshold

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration file; a missing or malformed one is a one-line ModelFileError."""
        path = Path(path)
        try:
            data = json.loads(read_model_file(path, 1 << 20))
            coefficients = tuple(float(c) for c in data["coefficients"])
            if len(coefficients) != 3:
                raise ValueError(f"{len(coefficients)} coefficients, expected 3")
            calibration = cls(intercept=float(data["intercept"]), coefficients=coefficients,  # type: ignore[arg-type]
                              threshold=float(data["threshold"]), use_cost_model=bool(data["use_cost_model"]),
                              agreement_default=float(data.get("agreement_default", 0.6)),
                              validation=dict(data.get("validation", {})))
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such calibration file") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: not a valid calibration file ({type(exc).__name__}: {exc})") from None
        finite = all(map(math.isfinite, (calibration.intercept, *calibration.coefficients,
                                         calibration.agreement_default)))
        if not 0.0 <= calibration.threshold <= 1.0 or not finite:
            raise ModelFileError(f"{path}: threshold, intercept or coefficients out of range")
        return calibration
