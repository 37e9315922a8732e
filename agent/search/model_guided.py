"""The model strategy: predict, maybe ask the cloud, benchmark the top few, refine within budget.

1. The on-device predictor ranks the valid configurations (milliseconds).
2. When its calibrated confidence is below the threshold and a cloud service is configured,
   the service ranks them too; its answer is merged with the local ranking. A service that
   is down, slow or wrong costs at most its timeout and changes nothing.
3. The default and the best predictions go to the evaluator as one batch: they compile in
   parallel, then are timed interleaved with nothing else running; when they are the whole
   budget, with the final protocol, so ``tune`` need not re-measure them.
4. Budget left over refines: the best configuration's untried neighbours, most probable
   first, until the budget ends or no neighbour is faster.

Without a usable model (missing or corrupt file) the strategy says so and runs local search.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from agent.bench.measure import TIE_RATIO
from agent.budget import QUICK, Budget
from agent.errors import EdgetuneError, ModelFileError
from agent.evaluator import Evaluator
from agent.kernels.space import Config, Space, config_key
from agent.predict.model_files import model_version
from agent.search.base import Strategy, StrategyOptions, StrategyReport
from agent.search.local_search import climb

if TYPE_CHECKING:
    from agent.predict.cloud import CloudSettings
    from agent.predict.predictor import Prediction, Predictor
    from agent.settings import Settings

__all__ = ["ModelOptions", "ModelStrategy", "load_predictor", "release_predictors"]

FULL_SPACE_TO_CLOUD = 2048  # send the whole valid space to the cloud up to this size, else the local candidates
_PREDICTORS: dict[tuple[str, str | None], Predictor] = {}


def load_predictor(models: Path | None, cache_dir: Path | None) -> Predictor:
    """The predictor for ``models`` (loaded once per process)."""
    from agent.predict.predictor import Predictor
    from agent.settings import default_models_dir

    folder = Path(models) if models is not None else default_models_dir()
    key = (str(folder.resolve()), str(cache_dir) if cache_dir else None)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(folder, cache_dir=cache_dir)
    return _PREDICTORS[key]


def release_predictors() -> int:
    """Forget the loaded predictors (the daemon frees their memory while idle); returns how many."""
    count = len(_PREDICTORS)
    _PREDICTORS.clear()
    return count


@dataclass(frozen=True)
class ModelOptions(StrategyOptions):
    """The model strategy's settings."""

    models: Path | None = None  # the folder of the model files (None: the shipped ones)
    cloud: CloudSettings | None = None  # asked when the local model is not confident (None: never)
    state_dir: Path | None = None  # where the cloud client keeps its circuit-breaker state
    top_k: int = 5  # predictions benchmarked in the first batch (the budget may cut it)
    predictor: Predictor | None = field(default=None, compare=False, repr=False)  # a loaded one to reuse


@dataclass
class _Account:
    """What one search did besides proposing configurations; becomes its report."""

    timings: dict[str, float] = field(default_factory=lambda: {"predict_s": 0.0, "cloud_s": 0.0})
    notes: list[str] = field(default_factory=list)
    confidence: float | None = None
    predicted: int = 0
    cloud: str | None = None
    situation: str | None = None
    ranked_by: str | None = None

    def report(self) -> StrategyReport:
        return StrategyReport(confidence=self.confidence, predicted=self.predicted, cloud=self.cloud,
                              situation=self.situation, ranked_by=self.ranked_by,
                              timings=dict(self.timings), notes=tuple(self.notes))


class ModelStrategy(Strategy):
    """Predict with the on-device model, ask the cloud when unsure, benchmark the top few, refine."""

    name = "model"
    Options = ModelOptions
    default_budget: ClassVar[Budget] = QUICK.budget
    measures_default = True  # the default joins the first batch, compiled beside the predictions
    options: ModelOptions

    @classmethod
    def configure(cls, values: Mapping[str, Any] | None = None, *, settings: Settings,
                  cloud: CloudSettings | None = None) -> StrategyOptions:
        """The settings' model folder, the cloud, and the cloud's state beside the store; then ``values``."""
        return cls.make_options({"models": settings.models_dir, "cloud": cloud, "state_dir": settings.db_path.parent,
                                 **(values or {})})

    def model_version(self) -> str | None:
        return model_version(self.options.models)

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        account = _Account()
        options = self.options
        started = time.perf_counter()
        try:
            predictor = options.predictor or load_predictor(options.models, evaluator.context.cache_dir.parent)
            profile = _profile_dict(evaluator)
            prediction = predictor.predict(space, profile)
        except (ModelFileError, ImportError, OSError) as exc:
            account.timings["predict_s"] += time.perf_counter() - started
            account.notes.append(f"model unavailable ({exc}); tuned with local search instead")
            default = space.default()
            if space.is_valid(default) and not evaluator.seen(default):
                evaluator.evaluate([default])
            climb(evaluator, space, rng)
            return account.report()
        account.timings["predict_s"] += time.perf_counter() - started
        account.notes.extend(predictor.warnings)
        account.confidence = prediction.confidence
        account.predicted = len(prediction.candidates)
        account.situation, account.ranked_by = prediction.situation, prediction.source
        ranked = self._ask_cloud(account, predictor, space, profile, prediction)
        for rank, (config, source) in enumerate(ranked):
            evaluator.label(config, source, rank)
        default = space.default()
        first = [default] if space.is_valid(default) else []
        first += [config for config, _ in ranked[: options.top_k]]
        budget = evaluator.budget
        # When these are the whole budget, time them once with the final protocol: tune() then has
        # nothing left to re-measure (they were compared side by side already).
        whole_budget = budget.seconds is None and budget.evaluations is not None and budget.evaluations <= len(first)
        evaluator.evaluate(first, final=whole_budget)
        _refine(evaluator, predictor, space, profile, [config for config, _ in ranked])
        return account.report()

    def _ask_cloud(self, account: _Account, predictor: Predictor, space: Space, profile: dict[str, Any],
                   prediction: Prediction) -> list[tuple[Config, str]]:
        """The ranking to benchmark: the local one, merged with the cloud's when it was asked and answered."""
        # The policy's picks (reuse, cost model: sources that beat the model in this situation) come first.
        picks = prediction.source != "model"
        local = [(c.config, c.logp) for c in prediction.candidates if c.logp is not None]
        cloud_settings = self.options.cloud
        if picks and cloud_settings is not None and not prediction.confident:
            # The cloud would only re-rank what comes after the picks, past the first batch: not worth its deadline.
            account.cloud = f"not asked: {prediction.source} ranks first when {prediction.situation}"
        if prediction.confident or cloud_settings is None or picks:
            if cloud_settings is None and not prediction.confident:
                account.cloud = "not configured"
            return [(c.config, c.source) for c in prediction.candidates]
        from agent.predict.cloud import CloudClient, merge_rankings
        from agent.predict.rank_protocol import request_for

        started = time.perf_counter()
        valid = predictor.valid_configs(space, profile)
        candidates = list(valid) if len(valid) <= FULL_SPACE_TO_CLOUD else [c for c, _ in local]
        state = self.options.state_dir / "cloud-breaker.json" if self.options.state_dir else None
        client = CloudClient(cloud_settings, state_path=state)
        request = request_for(list(prediction.prompt), predictor.codec(space, profile), candidates,
                              k=len(local), kernel=space.problem.spec.name, shape=dict(space.problem.shape))
        answer = client.ask(request)
        account.timings["cloud_s"] += time.perf_counter() - started
        if answer is None:
            account.cloud = f"failed: {client.last_error}"
            account.notes.append(f"cloud not used: {client.last_error}")
            return [(c.config, c.source) for c in prediction.candidates]
        account.cloud = f"answered: {len(answer.configs)} configurations from {answer.model}"
        return [(dict(config), source) for config, _, source in merge_rankings(local, answer)]


def _profile_dict(evaluator: Evaluator) -> dict[str, Any]:
    if evaluator.context.profile is None:
        raise EdgetuneError("the model strategy needs the device's hardware profile")
    return evaluator.context.profile.to_dict()


def _refine(evaluator: Evaluator, predictor: Predictor, space: Space, profile: dict[str, Any],
            ranked: list[Config]) -> None:
    """Spend what the budget has left: hill-climb from the best, most probable neighbours first."""
    tried_from: set[str] = set()
    while not evaluator.exhausted:
        best = evaluator.best()
        if not best:
            fresh = [c for c in ranked if not evaluator.seen(c)]
            if not fresh:
                return
            evaluator.evaluate(fresh[: evaluator.batch_size])
            continue
        current = best[0]
        unseen = [n for n in space.neighbours(current.config) if not evaluator.seen(n)]
        if not unseen or current.key in tried_from:
            # A local optimum: go on down the predicted ranking instead.
            fresh = [c for c in ranked if not evaluator.seen(c)]
            if not fresh:
                return
            evaluator.evaluate(fresh[: evaluator.batch_size])
            continue
        tried_from.add(current.key)
        scores = predictor.score(space, profile, unseen)
        order = sorted(range(len(unseen)), key=lambda i: -scores[i])
        batch = [unseen[i] for i in order[: evaluator.batch_size]]
        for config in batch:
            evaluator.label(config, "refine")
        evaluator.evaluate(batch)
        new_best = evaluator.best()[0]
        if new_best.key == current.key or (new_best.median_s or 0) > (current.median_s or 0) * (1 - TIE_RATIO):
            continue  # no real gain from this neighbourhood: the next round starts from the ranking
        tried_from.discard(config_key(new_best.config))

