"""Training cases: one (device, kernel, shape, target, cores) with every configuration measured.

A case is what the model learns from and what evaluation replays: its prompt, its
parameters as slots, and a table from configuration to measured time (failed
configurations have time ``inf``). Built from dataset folders, never from a live store.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from agent.dataset import Dataset, DatasetError, read_dataset
from agent.errors import EdgetuneError
from agent.hardware.targets import TARGET_VECTOR_BITS
from agent.kernels.features import kernel_features
from agent.kernels.registry import find_kernel
from agent.predict.prompt import ConfigCodec, HardwareDesc, KernelDesc, encode_prompt, hardware_desc, kernel_desc

__all__ = ["Case", "load_cases"]


@dataclass
class Case:
    """One tuning problem with its measured table."""

    case_id: str
    kind: str  # "cpu" or "gpu"
    device: str  # fingerprint
    device_name: str
    kernel: str
    kernel_key: str
    shape: dict[str, int]
    target: str
    cores: int | None
    hardware: HardwareDesc
    kernel_info: KernelDesc
    params: list[dict[str, Any]]
    configs: list[dict[str, Any]]
    times: np.ndarray  # seconds, inf where the configuration failed
    codec: ConfigCodec = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.codec is None:
            self.codec = ConfigCodec.for_params(self.params)

    @property
    def shape_key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.shape.items()))

    def prompt(self, *, hide_name: bool = False) -> list[int]:
        return encode_prompt(self.hardware, self.kernel_info, self.shape, hide_name=hide_name)

    @cached_property
    def tokens(self) -> np.ndarray:
        """[configs, slots] token ids of every configuration in the table."""
        return np.array([self.codec.encode(c) for c in self.configs], dtype=np.int64)

    @cached_property
    def best_time(self) -> float:
        return float(np.min(self.times))

    def targets(self, temperature: float = 0.05) -> np.ndarray:
        """Training weights over the table: ``(best / t) ** (1 / temperature)``, normalised.

        A configuration 5% slower than the best gets 0.38 of its weight at 0.05, 20%
        slower 0.03; failures get none. The model learns every good configuration, not
        only the winner.
        """
        with np.errstate(divide="ignore"):
            logits = (math.log(self.best_time) - np.log(self.times)) / temperature
        weights = np.exp(logits - logits.max())
        weights[~np.isfinite(self.times)] = 0.0
        return weights / weights.sum()


def load_cases(paths: Iterable[str], *, min_correct: int = 2) -> list[Case]:
    """Every case of the datasets at ``paths`` that has at least ``min_correct`` correct configurations."""
    cases: list[Case] = []
    for path in paths:
        dataset = read_dataset(path)
        cases.extend(_cases_of(dataset, min_correct))
    cases.sort(key=lambda c: c.case_id)
    return cases


def _cases_of(dataset: Dataset, min_correct: int) -> list[Case]:
    kernels = dataset.manifest.get("kernels", {})
    devices = dataset.manifest.get("devices", {})
    descs: dict[str, KernelDesc] = {}
    out = []
    for case_id, records in dataset.cases().items():
        first = records[0]
        key = first["kernel_key"]
        if key not in kernels or not kernels[key].get("space", {}).get("params"):
            raise DatasetError(f"{dataset.path}: case {case_id} has kernel {key} without a space in the manifest")
        space = kernels[key]["space"]
        if key not in descs:
            descs[key] = _kernel_desc(first["kernel"], key, space)
        profile = devices.get(first["device"], {})
        if not profile:
            raise DatasetError(f"{dataset.path}: case {case_id} has device {first['device']} without a profile")
        target = first["target"]
        kind = "gpu" if target == "gpu" or profile.get("kind") == "gpu" else "cpu"
        vector_bits = None
        if kind == "cpu":
            vector_bits = profile.get("vector_bits") if target == "native" else TARGET_VECTOR_BITS.get(target)
        hardware = hardware_desc(profile, vector_bits=vector_bits, cores=first["cores"])
        times = np.array([r["time_s"] if r["status"] == "correct" else math.inf for r in records], dtype=np.float64)
        if int(np.isfinite(times).sum()) < min_correct:
            continue
        out.append(Case(case_id=case_id, kind=kind, device=first["device"],
                        device_name=str(profile.get("name", first["device"])), kernel=first["kernel"],
                        kernel_key=key, shape=dict(first["shape"]), target=target, cores=first["cores"],
                        hardware=hardware, kernel_info=descs[key], params=list(space["params"]),
                        configs=[r["config"] for r in records], times=times))
    return out


def _kernel_desc(name: str, key: str, space: Mapping[str, Any]) -> KernelDesc:
    """The built-in spec's features when this is exactly that kernel version, else the space alone."""
    try:
        spec = find_kernel(name)
    except EdgetuneError:
        return kernel_desc(space, name=name)
    if spec.key != key:
        warnings.warn(f"kernel {name}: the dataset has version {key}, the built-in is {spec.key}; "
                      "its source features are left out", stacklevel=3)
        return kernel_desc(space, name=name)
    return kernel_desc(space, name=name, spec=spec, features=kernel_features(spec))
