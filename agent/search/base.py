"""What every search strategy is: a class with a name, its own frozen options, a default
budget, and one method, ``search``, that proposes configurations to the evaluator and
returns a report of what it did besides (predictions, the cloud, its own timings, notes).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from agent.budget import DEFAULT, Budget
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.evaluator import Evaluator
    from agent.kernels.space import Space
    from agent.predict.cloud import CloudSettings
    from agent.settings import Settings

__all__ = ["Strategy", "StrategyOptions", "StrategyReport"]


@dataclass(frozen=True)
class StrategyOptions:
    """A strategy's own settings; a strategy without any uses this empty one."""


@dataclass(frozen=True)
class StrategyReport:
    """What a strategy did besides proposing configurations: stored with the tuning."""

    confidence: float | None = None  # the model's calibrated confidence in its ranking
    predicted: int = 0  # configurations the model ranked
    cloud: str | None = None  # what asking the cloud gave (None: not asked)
    situation: str | None = None  # the model strategy's situation: seen, unseen-device, unseen-kernel
    ranked_by: str | None = None  # what ranked its first candidates there: model, reuse, cost-model, random
    timings: Mapping[str, float] = field(default_factory=dict)  # predict_s, cloud_s
    notes: tuple[str, ...] = ()  # warnings for the user, e.g. a fallback from the model to search


class Strategy:
    """A search strategy; a subclass sets ``name`` and implements :meth:`search`."""

    name: ClassVar[str]
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    default_budget: ClassVar[Budget] = DEFAULT.budget
    measures_default: ClassVar[bool] = False  # True: it puts the default in its own first batch

    def __init__(self, options: StrategyOptions | None = None) -> None:
        if options is None:
            options = self.Options()
        if not isinstance(options, self.Options):
            raise ConfigError(f"strategy {self.name!r} takes {self.Options.__name__}, not {type(options).__name__}")
        self.options = options

    @classmethod
    def make_options(cls, values: Mapping[str, Any] | None = None) -> StrategyOptions:
        """The strategy's options from a mapping; an unknown option lists the valid ones."""
        values = dict(values or {})
        valid = [f.name for f in fields(cls.Options)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"strategy {cls.name!r}: unknown option(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(valid) or 'none'}")
        return cls.Options(**values)

    @classmethod
    def configure(cls, values: Mapping[str, Any] | None = None, *, settings: Settings,
                  cloud: CloudSettings | None = None) -> StrategyOptions:
        """The options a tuning session gives the strategy: what it takes from the settings, then ``values``."""
        return cls.make_options(values)

    def model_version(self) -> str | None:
        """The version of the model the strategy predicts with (stored with the tuning); None: no model."""
        return None

    def search(self, evaluator: Evaluator, space: Space, rng: random.Random) -> StrategyReport:
        """Propose configurations to ``evaluator`` until it says the budget is spent."""
        raise NotImplementedError
