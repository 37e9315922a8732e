"""Workload presets: the kernels and shapes a real model runs, as data in ``profiles/workloads/``.

A preset file names a model and lists its layers as (kernel, shape) pairs, most
important first, so a device can be told "tune the mobilenet-v2 preset"::

    name = "mobilenet-v2"
    description = "MobileNetV2 1.0 at 224x224 (batch 1), the layers that dominate its time"

    [[layers]]
    label = "block 2 expand 1x1"        # what this layer is in the model
    kernel = "conv2d"                   # a kernel name
    shape = "mbv2_b2_expand"            # a named shape of that kernel, or C=16,H=56,...
    weight = 2.0                        # how much of the model's time it stands for
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EdgetuneError, SpecError
from agent.kernels.problem import Problem, parse_shape
from agent.kernels.registry import find_kernel
from agent.resources import shipped_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Workload", "WorkloadLayer", "default_workloads_dir", "find_workload", "list_workloads",
           "load_workload"]


@dataclass(frozen=True)
class WorkloadLayer:
    """One kernel at one shape, as a model runs it."""

    label: str
    kernel: str
    shape: str
    weight: float = 1.0

    def problem(self) -> Problem:
        """The checked kernel + shape (raises if the kernel or shape is unknown)."""
        return parse_shape(find_kernel(self.kernel), self.shape)


@dataclass(frozen=True)
class Workload:
    """A named preset: its layers, most important first."""

    name: str
    description: str
    layers: tuple[WorkloadLayer, ...]
    path: Path | None = None

    def problems(self) -> list[tuple[WorkloadLayer, Problem]]:
        return [(layer, layer.problem()) for layer in self.layers]


def default_workloads_dir() -> Path:
    """The repository's ``profiles/workloads/`` (a source checkout or editable install)."""
    return shipped_dir("profiles") / "workloads"


def list_workloads(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    root = Path(directory) if directory is not None else default_workloads_dir()
    return sorted(root.glob("*.toml")) if root.is_dir() else []


def find_workload(name_or_path: str, directory: str | os.PathLike[str] | None = None) -> Workload:
    """Load a preset by name (file stem) or path; the error lists the presets there are."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return load_workload(candidate)
    available = list_workloads(directory)
    for path in available:
        if path.stem == name_or_path:
            return load_workload(path)
    names = ", ".join(p.stem for p in available) or "none"
    raise EdgetuneError(f"unknown workload preset {name_or_path!r}; available: {names}")


def load_workload(path: str | os.PathLike[str]) -> Workload:
    """Read and check a preset file (kernels and shapes are resolved when used)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read workload preset {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: TOML syntax error: {exc}") from None
    unknown = sorted(set(data) - {"name", "description", "layers", "source"})
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}")
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(f"{path}: a preset needs at least one [[layers]] table")
    layers = []
    for index, item in enumerate(raw_layers):
        if not isinstance(item, dict) or not isinstance(item.get("kernel"), str) \
                or not isinstance(item.get("shape"), str):
            raise SpecError(f"{path}: layers[{index}] needs a kernel and a shape (strings)")
        extra = sorted(set(item) - {"label", "kernel", "shape", "weight"})
        if extra:
            raise SpecError(f"{path}: layers[{index}]: unknown key(s) {', '.join(extra)}")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise SpecError(f"{path}: layers[{index}]: weight must be a positive number")
        layers.append(WorkloadLayer(label=str(item.get("label", f"layer {index}")), kernel=item["kernel"],
                                    shape=item["shape"], weight=float(weight)))
    return Workload(name=str(data.get("name", path.stem)), description=str(data.get("description", "")),
                    layers=tuple(layers), path=path)
