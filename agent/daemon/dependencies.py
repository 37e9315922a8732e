"""What a stored result depends on, compared with what this device has now.

A ``best`` row was measured with a kernel source (its key), a compiler, on a hardware
fingerprint, and, when the model proposed it, with a model version. :func:`check` compares
each row with the current ones and says which are stale and why; preset layers without a
fresh result are missing. :func:`apply` writes the verdicts (``best.stale``) and queues the
re-tunings. The daemon runs this at every start and the update hook runs it on demand, so a
firmware update that changed the compiler is noticed even when no hook ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.backends import DEFAULT_BACKEND, detect_backend
from agent.errors import EdgetuneError, ToolchainError
from agent.kernels.registry import find_kernel
from agent.kernels.spec import KernelSpec, load_spec
from agent.kernels.workloads import Workload
from agent.settings import Settings
from agent.store import Store, utc_now

__all__ = ["Current", "Finding", "Report", "apply", "check", "load_request_kernel", "refresh"]


def load_request_kernel(name: str, path: str | None) -> KernelSpec:
    """The kernel a result or request names: from its directory when that still exists, else by name."""
    if path and Path(path, "kernel.toml").is_file():
        return load_spec(Path(path))
    return find_kernel(name)


@dataclass
class Current:
    """What this device has now: hardware fingerprint, compiler (per target), model version."""

    device: str
    compiler: str = "cc"
    model_version: str | None = None
    _toolchains: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False)
    _kernels: dict[tuple[str, str | None], KernelSpec | None] = field(default_factory=dict, repr=False)

    @classmethod
    def now(cls, device: str, settings: Settings) -> Current:
        """This device's compiler (``CC``) and model folder, as the settings name them."""
        from agent.predict.model_files import model_version

        return cls(device=device, compiler=settings.compiler, model_version=model_version(settings.models_dir))

    def compiler_version(self, target: str, backend: str = DEFAULT_BACKEND) -> str | None:
        """The backend's toolchain version for ``target`` (as tunings record it); None if it cannot build it."""
        if (backend, target) not in self._toolchains:
            try:
                found = detect_backend(backend, compiler=self.compiler, target=target, device=self.device)
                self._toolchains[(backend, target)] = found.version
            except ToolchainError:
                self._toolchains[(backend, target)] = None
        return self._toolchains[(backend, target)]

    def kernel(self, name: str, path: str | None) -> KernelSpec | None:
        if (name, path) not in self._kernels:
            try:
                self._kernels[(name, path)] = load_request_kernel(name, path)
            except EdgetuneError:
                self._kernels[(name, path)] = None
        return self._kernels[(name, path)]


@dataclass(frozen=True)
class Finding:
    """One case that needs attention: a stale result, or a preset layer with no fresh result."""

    kind: str  # "stale" or "missing"
    kernel: str
    kernel_path: str | None
    kernel_key: str  # the stored result's key (stale) or the current one (missing)
    shape: str
    target: str
    reason: str
    retune: bool  # whether tuning again would help (not when the kernel is gone or superseded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """What :func:`check` found, and (after :func:`apply`) how many requests it queued."""

    device: str
    fresh: int = 0
    findings: list[Finding] = field(default_factory=list)
    cleared: int = 0  # rows that were stale and match again
    queued: int = 0
    marks: list[tuple[tuple[str, str, str], str | None]] = field(default_factory=list)  # best.stale to rewrite
    problems: list[str] = field(default_factory=list)  # preset layers that cannot be used (unknown kernel, shape)

    @property
    def stale(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "stale"]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "fresh": self.fresh, "cleared": self.cleared, "queued": self.queued,
                "stale": [f.to_dict() for f in self.stale], "missing": [f.to_dict() for f in self.missing],
                "problems": list(self.problems)}


def _stale_reason(row: dict[str, Any], current: Current) -> tuple[str | None, KernelSpec | None]:
    """Why a stored best no longer matches what it was measured with (None: it matches)."""
    spec = current.kernel(row["kernel"], row["kernel_path"])
    if spec is None:
        return f"kernel {row['kernel']} is no longer installed", None
    if spec.key != row["kernel_key"]:
        return f"kernel source changed ({row['kernel_key']} -> {spec.key})", spec
    compiler = current.compiler_version(row["target"], spec.backend)
    if compiler is None:
        return f"the compiler no longer builds for target {row['target']}", spec
    if row["compiler"] and compiler != row["compiler"]:
        return f"compiler changed ({row['compiler']} -> {compiler})", spec
    if row["strategy"] == "model" and row["model_version"] and row["model_version"] != current.model_version:
        return f"model changed ({row['model_version']} -> {current.model_version or 'none'})", spec
    return None, spec


def check(store: Store, current: Current, preset: Workload | None) -> Report:
    """Compare this device's stored results (and the preset's layers) with what the device has now."""
    report = Report(device=current.device)
    rows = store.best_dependencies(current.device)
    fresh_cases: set[tuple[str, str, str]] = set()  # (kernel key, shape, target) with a matching result
    verdicts = []
    for row in rows:
        reason, spec = _stale_reason(row, current)
        verdicts.append((row, reason, spec))
        if reason is None:
            fresh_cases.add((row["kernel_key"], row["shape"], row["target"]))
    for row, reason, spec in verdicts:
        if (row["stale"] or None) != reason:
            report.marks.append(((row["kernel_key"], row["shape"], row["target"]), reason))
        if reason is None:
            report.fresh += 1
            report.cleared += bool(row["stale"])
            continue
        # Tuning again helps unless the kernel is gone, or its new version already has a fresh result.
        retune = spec is not None and (spec.key, row["shape"], row["target"]) not in fresh_cases
        report.findings.append(Finding(
            kind="stale", kernel=row["kernel"], kernel_path=str(spec.directory) if spec else row["kernel_path"],
            kernel_key=row["kernel_key"], shape=row["shape"], target=row["target"], reason=reason,
            retune=retune))
        if retune:
            fresh_cases.add((spec.key, row["shape"], row["target"]))  # queued once, even if two rows lead there
    if preset is not None:
        known = {(r["kernel_key"], r["shape"], r["target"]) for r in rows}
        layers = sorted(preset.layers, key=lambda layer: -layer.weight)  # most important first (stable)
        for layer in layers:
            try:
                problem = layer.problem()
            except EdgetuneError as exc:  # one bad layer must not stop the others
                report.problems.append(f"preset {preset.name}, {layer.label}: {exc}")
                continue
            case = (problem.spec.key, problem.key, "native")
            if case in fresh_cases:
                continue
            fresh_cases.add(case)
            why = "not tuned on this hardware yet" if case not in known else "its result is stale"
            report.findings.append(Finding(
                kind="missing", kernel=problem.spec.name, kernel_path=str(problem.spec.directory),
                kernel_key=problem.spec.key, shape=problem.key, target="native",
                reason=f"preset {preset.name}, {layer.label}: {why}", retune=True))
    return report


def apply(store: Store, report: Report, *, requested_by: str) -> Report:
    """Write the verdicts into ``best.stale`` and queue the re-tunings (idempotent: safe to run again).

    Findings are queued in the order :func:`check` made them: stale results, then missing layers.
    """
    for case, reason in report.marks:
        store.mark_stale(report.device, *case, reason)
    for finding in report.findings:
        if finding.retune and store.queue_request(kernel=finding.kernel, kernel_path=finding.kernel_path,
                                                  shape=finding.shape, target=finding.target,
                                                  reason=finding.reason, requested_by=requested_by):
            report.queued += 1
    return report


def refresh(store: Store, current: Current, preset: Workload | None, *, requested_by: str) -> Report:
    """Check, apply, and record which hardware was checked when (``edgetune status`` shows it)."""
    report = apply(store, check(store, current, preset), requested_by=requested_by)
    store.set_info("device", {"fingerprint": current.device, "checked_at": utc_now(),
                              "model_version": current.model_version})
    return report
