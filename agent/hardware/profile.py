"""Hardware profiles: what a device is, as far as kernel tuning cares, and their TOML files.

A profile comes from the probe of the local machine (``source = "probe"``) or from a
TOML file of flat keys, one per field (``source = "profile:<file name>"``). The
shipped files of real devices live in the repository's ``profiles/devices/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from agent.errors import ProbeError
from agent.resources import shipped_dir

__all__ = [
    "ARM_SIMD_FLAGS",
    "ISA_VECTOR_BITS",
    "SIMD_ISAS",
    "X86_SIMD_FLAGS",
    "HardwareProfile",
    "default_profiles_dir",
    "find_profile",
    "list_profiles",
    "load_profile",
    "save_profile",
    "widest_isa",
]

# The SIMD ISAs, widest first within each architecture family.
SIMD_ISAS: tuple[str, ...] = ("avx512f", "avx2", "avx", "sse4_2", "sse2", "sve2", "sve", "neon", "none")
_X86_ORDER = ("avx512f", "avx2", "avx", "sse4_2", "sse2")
_ARM_ORDER = ("sve2", "sve", "neon")
ISA_VECTOR_BITS = {"avx512f": 512, "avx2": 256, "avx": 256, "sse4_2": 128, "sse2": 128, "neon": 128, "none": 0}

# The closed vocabulary of flags recorded in ``simd_flags`` (named as Linux /proc/cpuinfo names
# them; Arm's "asimd" is recorded as "neon"). Closed, so that a profile typo is an error instead of
# a silently different fingerprint, and so that the probe keeps only flags that matter to codegen.
X86_SIMD_FLAGS: frozenset[str] = frozenset({
    "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
})
ARM_SIMD_FLAGS: frozenset[str] = frozenset({
    "neon", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "svei8mm", "svebf16", "sme",
})
_KNOWN_FLAGS = X86_SIMD_FLAGS | ARM_SIMD_FLAGS

# Only these fields change which configuration wins, so only they enter the fingerprint.
# Left out on purpose: bandwidth_gbs (measured, noisy from run to run), memory_bytes (size, not
# speed), name and source (labels), os/kernel_version (do not change generated code), and
# compiler/compiler_version: the compiler is recorded with every run instead, so that a compiler
# upgrade invalidates results per kernel build rather than re-identifying the whole device.
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "arch", "vendor", "model", "logical_cores", "physical_cores", "l1d_bytes", "l2_bytes",
    "l3_bytes", "simd_isa", "simd_flags", "vector_bits", "gpu_name",
)


def widest_isa(flags: tuple[str, ...] | list[str] | frozenset[str]) -> str:
    """The widest SIMD ISA among ``flags`` ("none" when there is none)."""
    present = set(flags)
    for isa in (*_X86_ORDER, *_ARM_ORDER):
        if isa in present:
            return isa
    return "none"


@dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """One device as the tuner sees it; every construction is validated (ProbeError)."""

    name: str
    arch: str
    vendor: str
    model: str
    logical_cores: int
    physical_cores: int
    l1d_bytes: int
    l2_bytes: int
    l3_bytes: int
    simd_isa: str
    simd_flags: tuple[str, ...]
    vector_bits: int
    memory_bytes: int
    bandwidth_gbs: float | None
    compiler: str
    compiler_version: str
    os: str
    kernel_version: str
    gpu_name: str | None = None
    gpu_memory_bytes: int | None = None
    source: str

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        # Normalize: flags as a sorted, duplicate-free tuple; bandwidth as a float.
        object.__setattr__(self, "simd_flags", tuple(sorted(set(self.simd_flags))))
        if self.bandwidth_gbs is not None:
            object.__setattr__(self, "bandwidth_gbs", float(self.bandwidth_gbs))
        self._check_values()

    def _check_values(self) -> None:
        for key in ("name", "arch", "vendor", "model", "source"):
            if not getattr(self, key).strip():
                raise ProbeError(f"profile field {key!r} must not be empty")
        if self.logical_cores < 1 or self.physical_cores < 1:
            raise ProbeError("profile fields 'logical_cores' and 'physical_cores' must be at least 1")
        if self.physical_cores > self.logical_cores:
            raise ProbeError(f"profile field 'physical_cores' ({self.physical_cores}) exceeds "
                             f"'logical_cores' ({self.logical_cores})")
        for key in ("l1d_bytes", "l2_bytes", "l3_bytes", "memory_bytes", "gpu_memory_bytes"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ProbeError(f"profile field {key!r} must not be negative, got {value}")
        if self.bandwidth_gbs is not None and not (math.isfinite(self.bandwidth_gbs) and self.bandwidth_gbs > 0):
            raise ProbeError(f"profile field 'bandwidth_gbs' must be a positive number, got {self.bandwidth_gbs}")
        unknown = [flag for flag in self.simd_flags if flag not in _KNOWN_FLAGS]
        if unknown:
            raise ProbeError(f"profile field 'simd_flags' has unknown flag(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(_KNOWN_FLAGS))}")
        if self.simd_isa not in SIMD_ISAS:
            raise ProbeError(f"profile field 'simd_isa' is {self.simd_isa!r}; expected one of {', '.join(SIMD_ISAS)}")
        widest = widest_isa(self.simd_flags)
        if self.simd_isa != widest:
            raise ProbeError(f"profile field 'simd_isa' is {self.simd_isa!r} but the widest ISA in "
                             f"'simd_flags' is {widest!r}")
        if self.simd_isa in ("sve", "sve2"):
            if self.vector_bits % 128 or not 128 <= self.vector_bits <= 2048:
                raise ProbeError(f"profile field 'vector_bits' must be a multiple of 128 from 128 to 2048 "
                                 f"for {self.simd_isa}, got {self.vector_bits}")
        elif self.vector_bits != ISA_VECTOR_BITS[self.simd_isa]:
            raise ProbeError(f"profile field 'vector_bits' must be {ISA_VECTOR_BITS[self.simd_isa]} for "
                             f"{self.simd_isa}, got {self.vector_bits}")

    def fingerprint(self) -> str:
        """16 hex digits identifying the hardware as far as tuning results are concerned."""
        payload = {key: getattr(self, key) for key in FINGERPRINT_FIELDS}
        payload["simd_flags"] = list(self.simd_flags)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values (``simd_flags`` as a list, missing values as None)."""
        data = dataclasses.asdict(self)
        data["simd_flags"] = list(self.simd_flags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Build a profile from ``to_dict`` output or a parsed TOML file; ProbeError names a bad field."""
        if not isinstance(data, dict):
            raise ProbeError(f"a hardware profile must be a table of fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ProbeError(f"unknown profile field(s) {', '.join(unknown)}")
        values = dict(data)
        for key in _OPTIONAL:
            values.setdefault(key, None)
        missing = sorted(set(fields) - set(values))
        if missing:
            raise ProbeError(f"missing profile field(s) {', '.join(missing)}")
        flags = values["simd_flags"]
        if isinstance(flags, list):
            values["simd_flags"] = tuple(flags)
        return cls(**values)


# Field name -> accepted types; the fields that may be None (or absent in a file) are in _OPTIONAL.
_TYPES: dict[str, tuple[type, ...]] = {
    "logical_cores": (int,), "physical_cores": (int,), "l1d_bytes": (int,), "l2_bytes": (int,),
    "l3_bytes": (int,), "vector_bits": (int,), "memory_bytes": (int,), "gpu_memory_bytes": (int,),
    "bandwidth_gbs": (int, float), "simd_flags": (tuple,),
}
_OPTIONAL = frozenset({"bandwidth_gbs", "gpu_name", "gpu_memory_bytes"})


def _check_type(key: str, value: Any) -> None:
    if value is None and key in _OPTIONAL:
        return
    expected = _TYPES.get(key, (str,))
    # bool is an int subclass; `cores = true` in a file is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join("list of strings" if t is tuple else t.__name__ for t in expected)
        raise ProbeError(f"profile field {key!r} must be {names}, got {type(value).__name__} ({value!r})")
    if key == "simd_flags" and not all(isinstance(flag, str) for flag in value):
        raise ProbeError(f"profile field 'simd_flags' must be a list of strings, got {list(value)!r}")


def default_profiles_dir() -> Path:
    """The shipped ``profiles/devices/`` (a checkout's, or an installed venv's ``share/edgetune``)."""
    return shipped_dir("profiles") / "devices"


def load_profile(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read a profile TOML file; its ``source`` becomes ``profile:<file name>``."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ProbeError(f"profile file {path} not found") from None
    except OSError as exc:
        raise ProbeError(f"cannot read profile file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"{path.name}: TOML syntax error: {exc}") from None
    data["source"] = f"profile:{path.name}"
    try:
        return HardwareProfile.from_dict(data)
    except ProbeError as exc:
        raise ProbeError(f"{path.name}: {exc}") from None


def save_profile(profile: HardwareProfile, path: str | os.PathLike[str]) -> None:
    """Write ``profile`` as a flat TOML file that ``load_profile`` reads back (None fields omitted)."""
    path = Path(path)
    lines = [f"# edgetune hardware profile (fingerprint {profile.fingerprint()})"]
    for key, value in profile.to_dict().items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProbeError(f"cannot write profile file {path}: {exc.strerror or exc}") from None


def list_profiles(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The profile files (``*.toml``) in ``directory`` (default: the shipped ones), sorted by name."""
    folder = Path(directory) if directory is not None else default_profiles_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def find_profile(name_or_path: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None) -> Path:
    """A profile file given as a path, or by name (file stem) in ``directory``; ProbeError lists the names."""
    text = os.fspath(name_or_path)
    candidate = Path(text)
    if candidate.is_file():
        return candidate
    if candidate.suffix == ".toml" or os.sep in text or (os.altsep and os.altsep in text):
        raise ProbeError(f"profile file {text} not found")
    available = list_profiles(directory)
    for path in available:
        if path.stem == text:
            return path
    names = ", ".join(p.stem for p in available) or "none"
    raise ProbeError(f"unknown device profile {text!r}; available: {names}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProbeError(f"cannot write the non-finite number {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ProbeError(f"cannot write a {type(value).__name__} to a profile file")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
