"""The on-device predictor: rank a kernel's configurations for this device in milliseconds.

``Predictor.predict(space, profile)``:

1. describes the problem (hardware, kernel structure, shape) as the model's prompt;
2. enumerates the valid configurations of the space (its constraints) and runs the
   student GGUF's constrained beam search over them (llama.cpp, the prompt's KV cache
   shared by every beam), keeping the best :data:`~agent.predict.ranking.CANDIDATES`;
3. lets the ONNX cost model re-rank those candidates when the evaluation said it helps
   (``confidence.json``'s ``use_cost_model``);
4. computes the calibrated confidence that the first five hold a configuration within 5%
   of the optimum;
5. tells the situation (seen device, unseen device, unseen kernel: :mod:`agent.predict.policy`)
   and, where the held-out evaluation showed another source ranks better there (the measured
   ranking of the nearest known case, or the cost model over the whole space, diversified),
   puts that source's picks first, the model's after them.

The model files live in one folder (``models/`` in the repository, installed with the
package data): the student GGUF, ``edgetune-cost.onnx``, ``confidence.json``, the measured
rankings ``reuse.json.gz`` and ``policy.json``. Only the student is required; a missing file
is reported in ``warnings`` (without a reuse index or a policy, the model ranks everywhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import EdgetuneError, ModelFileError
from agent.kernels.features import KernelFeatures, SourceFeatures, kernel_features
from agent.kernels.space import Config, Space, config_key
from agent.kernels.spec import KernelSpec
from agent.predict.confidence import Calibration
from agent.predict.cost_features import config_features
from agent.predict.cost_model import CostModel
from agent.predict.local_model import LocalModel
from agent.predict.model_files import CONFIDENCE_FILE, COST_MODEL_FILE, POLICY_FILE, REUSE_FILE, STUDENT_FILE
from agent.predict.policy import Policy, situation_of
from agent.predict.prompt import ConfigCodec, HardwareDesc, KernelDesc, hardware_desc, kernel_desc, prompt_tokens
from agent.predict.ranking import CANDIDATES, RankingFeatures, blend_order, diversified_order, ranking_features
from agent.predict.reuse import ReuseIndex
from agent.predict.vocab import vocabulary
from agent.settings import default_models_dir

__all__ = ["COST_MODEL_FILE", "STUDENT_FILE", "Candidate", "Prediction", "Predictor"]

@dataclass(frozen=True)
class Candidate:
    """One predicted configuration."""

    config: Config
    logp: float | None  # the student's log-probability of it (None: another source proposed it)
    rank: int  # 0-based place in the final ranking
    source: str = "local"  # local (the student), reuse, cost-model, random, cloud, refine

    @property
    def key(self) -> str:
        return config_key(self.config)


@dataclass(frozen=True)
class Prediction:
    """The ranking of one problem, best first, and how sure the predictor is of it."""

    candidates: tuple[Candidate, ...]
    confidence: float | None  # calibrated P(best of the first 5 within 5% of the optimum); None: no calibration
    confident: bool
    features: RankingFeatures
    cost_model_used: bool
    space_size: int  # valid configurations the beam searched
    seconds: float
    prompt: tuple[str, ...]  # the prompt's tokens (what the cloud is sent)
    situation: str = "unknown"  # seen, unseen-device, unseen-kernel (agent.predict.policy)
    source: str = "model"  # what ranked the first candidates there: model, reuse, cost-model, random

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": [{"config": c.config, "logp": c.logp, "rank": c.rank, "source": c.source}
                               for c in self.candidates],
                "confidence": self.confidence, "confident": self.confident, "features": asdict(self.features),
                "cost_model_used": self.cost_model_used, "space_size": self.space_size, "seconds": self.seconds,
                "situation": self.situation, "source": self.source}


@dataclass(frozen=True)
class _Problem:
    """Everything about one problem that does not change between predictions."""

    hardware: HardwareDesc
    kernel: KernelDesc
    shape: Mapping[str, int]
    codec: ConfigCodec
    prompt: tuple[str, ...]
    prompt_ids: tuple[int, ...]
    configs: tuple[Config, ...]  # the valid configurations
    keys: frozenset[str]  # their config_key()s
    rows: np.ndarray  # their token ids [N, slots]
    allowed: tuple[tuple[int, ...], ...]


class Predictor:
    """The student model, the cost model and the calibration, loaded once."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, threads: int = 1,
                 cache_dir: Path | None = None, compiler: str = "cc") -> None:
        """Load the models in ``model_dir``; raises ModelFileError if the student cannot be used."""
        self.model_dir = Path(model_dir) if model_dir is not None else default_models_dir()
        self.warnings: list[str] = []
        self._cache_dir = cache_dir
        self._compiler = compiler
        self.model = LocalModel(self.model_dir / STUDENT_FILE, n_threads=threads)
        self.calibration: Calibration | None = None
        try:
            self.calibration = Calibration.load(self.model_dir / CONFIDENCE_FILE)
        except ModelFileError as exc:
            self.warnings.append(f"{exc}; confidence is unknown, so the cloud is asked when one is configured")
        self.cost: CostModel | None = None
        try:
            self.cost = CostModel(self.model_dir / COST_MODEL_FILE)
        except ModelFileError as exc:
            self.warnings.append(f"{exc}; ranking by the student alone")
        except ImportError:
            self.warnings.append("onnxruntime is not installed; ranking by the student alone")
        self.reuse: ReuseIndex | None = None
        self.policy = Policy.model_everywhere()
        try:
            self.reuse = ReuseIndex.load(self.model_dir / REUSE_FILE)
            self.policy = Policy.load(self.model_dir / POLICY_FILE)
        except ModelFileError as exc:
            self.warnings.append(f"{exc}; the model ranks in every situation")
        self._problems: dict[tuple, _Problem] = {}

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _problem(self, space: Space, profile: Mapping[str, Any]) -> _Problem:
        spec = space.problem.spec
        key = (spec.key, space.problem.key, space.vector_bits, space.params, json.dumps(profile, sort_keys=True,
                                                                                        default=str))
        if key in self._problems:
            return self._problems[key]
        vocab = vocabulary()
        hardware = hardware_desc(profile, vector_bits=space.vector_bits)
        summary = spec.space_summary()
        kernel = kernel_desc(summary, name=spec.name, spec=spec, features=self._features(spec))
        shape = dict(space.problem.shape)
        codec = ConfigCodec.for_params(summary["params"])
        prompt = tuple(prompt_tokens(hardware, kernel, shape))
        configs = tuple(space)
        if not configs:
            raise EdgetuneError(f"kernel {spec.name} has no valid configuration at {space.problem.key}")
        rows = np.array([codec.encode(c) for c in configs], dtype=np.int64)
        problem = _Problem(hardware=hardware, kernel=kernel, shape=shape, codec=codec, prompt=prompt,
                           prompt_ids=(vocab.bos, *(vocab.id(t) for t in prompt), vocab.config_mark),
                           configs=configs, keys=frozenset(config_key(c) for c in configs), rows=rows,
                           allowed=tuple(tuple(dict.fromkeys(s.token_ids)) for s in codec.slots))
        if len(self._problems) > 64:
            self._problems.clear()
        self._problems[key] = problem
        return problem

    def _features(self, spec: KernelSpec) -> KernelFeatures:
        """The kernel's structural features, cached on disk: deriving them runs the C preprocessor."""
        path = None
        if self._cache_dir is not None:
            path = self._cache_dir / "features" / f"{spec.key}.json"
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                source = data.pop("source")
                return KernelFeatures(**{**data, "roles": tuple(data["roles"]),
                                         "source": SourceFeatures(**{**source,
                                                                     "math_calls": tuple(source["math_calls"])})
                                         if source else None})
            except (OSError, ValueError, KeyError, TypeError):
                pass  # not cached yet, or from an older layout: derive again
        features = kernel_features(spec, compiler=self._compiler)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + f".{os.getpid()}.partial")
            partial.write_text(json.dumps(features.to_dict()), encoding="utf-8")
            os.replace(partial, path)
        return features

    def predict(self, space: Space, profile: Mapping[str, Any], *, width: int = CANDIDATES) -> Prediction:
        """Rank the valid configurations of ``space`` for the device ``profile`` (a profile dict)."""
        started = time.perf_counter()
        problem = self._problem(space, profile)
        found, logp = self.model.beam(list(problem.prompt_ids), problem.rows, problem.allowed, width=width)
        found, logp = found[:width], logp[:width]
        configs = [problem.configs[i] for i in found]
        cost = None
        if self.cost is not None:
            x = config_features(problem.hardware, problem.kernel, problem.shape, problem.codec, configs)
            cost = self.cost.predict(x)
        use_cost = cost is not None and self.calibration is not None and self.calibration.use_cost_model
        order = blend_order(logp, cost) if use_cost and cost is not None else np.arange(len(configs))
        features = ranking_features(logp, cost)
        confidence = self.calibration.probability(features) if self.calibration else None
        ranked = [(dict(configs[i]), float(logp[i]), "local") for i in order.tolist()]
        situation = situation_of(self.reuse, space.problem.spec.name, problem.hardware)
        source = self.policy.source(situation)
        picks = self._picks(source, space, problem, max(1, width // 2))  # half the list stays the student's
        if picks is None:
            source = "model"
        else:
            taken = {config_key(c) for c in picks}
            ranked = [(c, None, source) for c in picks] + [r for r in ranked if config_key(r[0]) not in taken]
        share = self.policy.good_share(situation, source)
        if share is not None:
            # The share of held-out cases of this situation in which this source's best of five came within 5%
            # of the optimum: on held-out cases it separates good from bad rankings better than the calibration
            # of the student's own probabilities does (models/README.md, Policy).
            confidence = share
        candidates = tuple(Candidate(config=c, logp=lp, rank=r, source=src)
                           for r, (c, lp, src) in enumerate(ranked[:width]))
        return Prediction(candidates=candidates, confidence=confidence,
                          confident=bool(confidence is not None and self.calibration is not None
                                         and confidence >= self.calibration.threshold),
                          features=features, cost_model_used=use_cost, space_size=len(problem.configs),
                          seconds=time.perf_counter() - started, prompt=problem.prompt,
                          situation=situation, source=source)

    def _picks(self, source: str, space: Space, problem: _Problem, count: int) -> list[Config] | None:
        """The first ``count`` candidates when ``source`` is not the model; None where it has nothing to offer."""
        if source == "reuse" and self.reuse is not None:
            found = self.reuse.ranking(space.problem.spec.name, problem.hardware, problem.shape,
                                       valid=lambda c: config_key(c) in problem.keys, limit=count)
            return [c for c, _ in found] or None
        if source == "cost-model" and self.cost is not None:
            cost = self.cost.predict(config_features(problem.hardware, problem.kernel, problem.shape, problem.codec,
                                                     problem.configs))
            return [dict(problem.configs[i]) for i in diversified_order(-cost, problem.rows)[:count]]
        if source == "random":
            seed = int(hashlib.sha256(space.problem.key.encode()).hexdigest()[:8], 16)
            rows = np.random.default_rng(seed).permutation(len(problem.configs))[:count]
            return [dict(problem.configs[int(i)]) for i in rows]
        return None

    def score(self, space: Space, profile: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The student's log-probability of each configuration (for ordering refinement steps)."""
        problem = self._problem(space, profile)
        if not configs:
            return np.zeros(0)
        rows = np.array([problem.codec.encode(c) for c in configs], dtype=np.int64)
        return self.model.score(list(problem.prompt_ids), rows, problem.allowed)

    def codec(self, space: Space, profile: Mapping[str, Any]) -> ConfigCodec:
        return self._problem(space, profile).codec

    def valid_configs(self, space: Space, profile: Mapping[str, Any]) -> tuple[Config, ...]:
        return self._problem(space, profile).configs
