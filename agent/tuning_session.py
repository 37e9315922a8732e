"""One way to open a tuning, for the CLI's ``tune``, ``agent.api.tune`` and the daemon's work loop.

probe (once) -> the kernel's backend for the target (detected once) -> options (the strategy's
own filled from the settings: model folder, cloud, cloud state) -> the caller's store -> tune.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.backends import Backend, detect_backend
from agent.budget import Budget
from agent.errors import ConfigError
from agent.hardware import HardwareProfile, probe
from agent.kernels.problem import Problem
from agent.search import get_strategy
from agent.settings import Settings
from agent.store import Store
from agent.tuner import TuneOptions, TuneResult, tune

if TYPE_CHECKING:
    from agent.evaluator import ProgressCallback
    from agent.predict.cloud import CloudSettings

__all__ = ["TuningSession", "parse_budget"]


def parse_budget(budget: Budget | str | int | None) -> Budget | None:
    """A budget from what a caller has: a Budget, a text (``"50"``, ``"30s"``), evaluations, or None."""
    if budget is None or isinstance(budget, Budget):
        return budget
    return Budget.parse(str(budget))


class TuningSession:
    """What the tunings on this device share: settings, the hardware profile, the detected backends.

    ``profile``: this machine's, when the caller has probed it already (else probed on first use);
    ``cloud``: asked by the model strategy when it is unsure (None: never).
    """

    def __init__(self, settings: Settings, *, profile: HardwareProfile | None = None,
                 cloud: CloudSettings | None = None) -> None:
        self.settings = settings
        self.cloud = cloud
        self._profile = profile
        self._backends: dict[tuple[str, str], Backend] = {}

    @property
    def profile(self) -> HardwareProfile:
        """This machine, probed on first use (no bandwidth run) unless the session was given one."""
        if self._profile is None:
            self._profile = probe(measure_bandwidth=False, compiler=self.settings.compiler)
        return self._profile

    def backend(self, name: str, target: str) -> Backend:
        """Backend ``name``'s toolchain for ``target``, detected once per session."""
        if (name, target) not in self._backends:
            self._backends[(name, target)] = detect_backend(name, compiler=self.settings.compiler, target=target,
                                                            device=self.profile.fingerprint())
        return self._backends[(name, target)]

    def options(self, strategy: str = "model", *, budget: Budget | str | int | None = None, target: str = "native",
                seed: int = 0, cache: str = "auto", timeout_s: float = 10.0,
                configs: tuple[Mapping[str, Any], ...] = (),
                strategy_options: Mapping[str, Any] | None = None) -> TuneOptions:
        """Checked options (nothing probed or compiled): an unknown strategy or option lists the valid ones.

        A budget left out is the strategy's default; the strategy's own options start from the
        settings (see ``Strategy.configure``), ``strategy_options`` override them.
        """
        cls = get_strategy(strategy)
        if timeout_s <= 0:
            raise ConfigError(f"timeout {timeout_s:g} s: must be positive")
        parsed = parse_budget(budget)
        return TuneOptions(strategy=strategy, budget=parsed if parsed is not None else cls.default_budget,
                           target=target, seed=seed, cache=cache, timeout_s=timeout_s, configs=configs,
                           strategy_options=cls.configure(strategy_options, settings=self.settings, cloud=self.cloud))

    def tune(self, problem: Problem, options: TuneOptions, *, store: Store,
             on_result: ProgressCallback | None = None) -> TuneResult:
        """Tune ``problem`` with ``options`` through its kernel's backend; every outcome goes to ``store``."""
        backend = self.backend(problem.spec.backend, options.target)
        return tune(problem, profile=self.profile, store=store, backend=backend, cache_dir=self.settings.cache_dir,
                    options=options, on_result=on_result)
