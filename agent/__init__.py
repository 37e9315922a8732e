"""edgetune: an on-device kernel autotuning agent (import name ``agent``).

The public API is what ``__all__`` lists; everything else is an implementation module.
The data flows: probe (``agent.hardware``) -> space (``agent.kernels``) -> predict
(``agent.predict``) -> build and benchmark (``agent.backends`` over ``agent.bench``) -> search
and tune (``agent.search``, ``agent.evaluator``, ``agent.tuner``) -> store. ``tune`` and
``best_config`` (``agent.api``) are the entry points for applications; they, the CLI and the
daemon open tunings through ``agent.tuning_session``; ``agent.tuner.tune`` is the same loop
with every part passed in.
"""

from agent.api import BestConfig, best_config, tune
from agent.errors import (
    ConfigError,
    EdgetuneError,
    ExpressionError,
    KernelNotFound,
    ProbeError,
    ShapeError,
    SpecError,
    StoreError,
    ToolchainError,
    WorkerError,
)
from agent.hardware import HardwareProfile, load_profile, probe
from agent.kernels.problem import Problem, parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space
from agent.kernels.spec import KernelSpec, load_spec
from agent.store import Store
from agent.tuner import Budget, TuneOptions, TuneResult

__all__ = [
    "BestConfig",
    "Budget",
    "ConfigError",
    "EdgetuneError",
    "ExpressionError",
    "HardwareProfile",
    "KernelNotFound",
    "KernelSpec",
    "ProbeError",
    "Problem",
    "ShapeError",
    "Space",
    "SpecError",
    "Store",
    "StoreError",
    "ToolchainError",
    "TuneOptions",
    "TuneResult",
    "WorkerError",
    "best_config",
    "find_kernel",
    "load_profile",
    "load_spec",
    "parse_shape",
    "probe",
    "tune",
]
