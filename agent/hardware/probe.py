"""Probe the local machine: cores, caches, SIMD, memory, compiler, GPU and memory bandwidth.

Everything but the bandwidth comes from psutil, sysfs and procfs, and every read is tolerant:
a missing file gives 0 or None, never a crash. The bandwidth is measured by ``triad.c`` (a
STREAM-style triad), compiled once per compiler into the cache directory.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import psutil

from agent.errors import ProbeError
from agent.hardware.profile import ARM_SIMD_FLAGS, ISA_VECTOR_BITS, X86_SIMD_FLAGS, HardwareProfile, widest_isa

__all__ = ["measure_bandwidth_gbs", "probe"]

SYSFS_CPU = Path("/sys/devices/system/cpu")
PROC_CPUINFO = Path("/proc/cpuinfo")
DEVICETREE_MODEL = Path("/sys/firmware/devicetree/base/model")
SVE_DEFAULT_VL = Path("/proc/sys/abi/sve_default_vector_length")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
TRIAD_SOURCE = Path(__file__).resolve().with_name("triad.c")

MIN_TRIAD_ARRAY = 32 * 2**20
TRIAD_REPETITIONS = 5
TOOL_TIMEOUT_S = 10.0
COMPILE_TIMEOUT_S = 60.0
TRIAD_TIMEOUT_S = 60.0

# /proc/cpuinfo "CPU implementer" and, for Arm Ltd. cores, "CPU part" (as util-linux lscpu names them).
ARM_IMPLEMENTERS = {
    0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon",
    0x4E: "NVIDIA", 0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple",
    0x6D: "Microsoft", 0xC0: "Ampere",
}
ARM_PARTS = {
    0xD01: "Cortex-A32", 0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55",
    0xD06: "Cortex-A65", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD0E: "Cortex-A76AE", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE",
    0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2", 0xD4A: "Neoverse-E1", 0xD4B: "Cortex-A78C", 0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}
X86_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon",
               "CentaurHauls": "Centaur", "Shanghai": "Zhaoxin"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def probe(*, measure_bandwidth: bool = True, compiler: str = "cc",
          cache_dir: Path | None = None) -> HardwareProfile:
    """Describe this machine; ``measure_bandwidth`` adds a triad run (a few hundred ms, needs ``compiler``),
    built in ``cache_dir``/probe (a scratch folder when None)."""
    arch = _ARCH_ALIASES.get(platform.machine().lower(), platform.machine().lower() or "unknown")
    cpuinfo = parse_cpuinfo(_read_text(PROC_CPUINFO) or "")
    vendor, model = cpu_identity(cpuinfo)
    flags = simd_flags(cpuinfo)
    isa = widest_isa(flags)
    logical = usable_cpus()
    physical = min(psutil.cpu_count(logical=False) or logical, logical)
    l1d, l2, l3 = cache_sizes(SYSFS_CPU)
    board = (_read_text(DEVICETREE_MODEL) or "").strip("\0\n ") or _first(cpuinfo, "Model")
    compiler_path = shutil.which(compiler)
    compiler_name, compiler_version = _compiler_identity(compiler, compiler_path)
    gpu_name, gpu_memory = _nvidia_gpu()

    bandwidth = None
    if measure_bandwidth:
        if compiler_path is None:
            raise ProbeError(f"C compiler {compiler!r} not found on PATH; it is needed to measure "
                             "memory bandwidth (or skip the measurement)")
        array_bytes = max(2 * l3, MIN_TRIAD_ARRAY)
        # Three arrays; keep them well inside the free memory of a small device.
        array_bytes = max(min(array_bytes, psutil.virtual_memory().available // 8) // 4096 * 4096, 2**20)
        if cache_dir is not None:
            bandwidth = measure_bandwidth_gbs(compiler_path, array_bytes, cache_dir / "probe")
        else:  # no cache folder given: build the probe program in a scratch folder
            with tempfile.TemporaryDirectory(prefix="edgetune-probe-") as scratch:
                bandwidth = measure_bandwidth_gbs(compiler_path, array_bytes, Path(scratch))

    return HardwareProfile(
        name=_slug(board or model),
        arch=arch,
        vendor=vendor,
        model=model,
        logical_cores=logical,
        physical_cores=physical,
        l1d_bytes=l1d,
        l2_bytes=l2,
        l3_bytes=l3,
        simd_isa=isa,
        simd_flags=flags,
        vector_bits=_vector_bits(isa),
        memory_bytes=psutil.virtual_memory().total,
        bandwidth_gbs=bandwidth,
        compiler=compiler_name,
        compiler_version=compiler_version,
        os=platform.system() or "unknown",
        kernel_version=platform.release() or "unknown",
        gpu_name=gpu_name,
        gpu_memory_bytes=gpu_memory,
        source="probe",
    )


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Hardware threads this process may run on: its CPU affinity, capped by cgroup v2 CPU quotas.

    A container or a systemd slice often sees all of a host's CPUs in /proc but may use only a few;
    a kernel tuned for 64 threads on a 2-CPU quota is tuned for the wrong machine. Every cgroup from
    this process's own up to the root may set a quota (``cpu.max``); the smallest one binds.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    own = next((line[3:] for line in (_read_text(self_cgroup) or "").splitlines() if line.startswith("0::")), "/")
    folder = cgroup_root / own.strip().lstrip("/")
    for directory in (folder, *folder.parents):
        quota, _, period = (_read_text(directory / "cpu.max") or "").strip().partition(" ")
        try:
            if quota != "max":
                count = min(count, max(1, -(-int(quota) // int(period))))  # a 1.5-CPU quota runs 2 threads
        except ValueError:  # no such file (cgroup v1, the root), or an unreadable one
            pass
        if directory == cgroup_root:
            break
    return max(count, 1)


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per block (one block per logical CPU, plus trailer blocks on Arm)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def cpu_identity(cpuinfo: list[dict[str, str]]) -> tuple[str, str]:
    """(vendor, model): x86 vendor_id/model name, or Arm implementer/part names (big.LITTLE joined by +)."""
    vendor_id = _first(cpuinfo, "vendor_id")
    if vendor_id:
        model = " ".join(_first(cpuinfo, "model name").split())
        return X86_VENDORS.get(vendor_id, vendor_id), model or platform.processor() or "unknown"
    implementers = _ints(block.get("CPU implementer") for block in cpuinfo)
    parts = _ints(block.get("CPU part") for block in cpuinfo if block.get("CPU implementer"))
    if implementers:
        vendor = ARM_IMPLEMENTERS.get(implementers[0], f"0x{implementers[0]:02x}")
        names = []
        for part in parts:
            name = ARM_PARTS.get(part) if implementers[0] == 0x41 else None
            name = name or f"{vendor} part 0x{part:03x}"
            if name not in names:
                names.append(name)
        return vendor, " + ".join(names) or "unknown"
    model = " ".join((_first(cpuinfo, "model name") or _first(cpuinfo, "Processor")).split())
    return "unknown", model or platform.processor() or "unknown"


def simd_flags(cpuinfo: list[dict[str, str]]) -> tuple[str, ...]:
    """The relevant SIMD flags from x86 ``flags`` or Arm ``Features`` (``asimd`` recorded as ``neon``)."""
    words = set((_first(cpuinfo, "flags") or _first(cpuinfo, "Features")).split())
    if "asimd" in words:
        words.add("neon")
    return tuple(sorted(words & (X86_SIMD_FLAGS | ARM_SIMD_FLAGS)))


def parse_size(text: str) -> int:
    """Bytes of a sysfs cache size such as ``32K``, ``1024K``, ``2M`` or ``512``; 0 when unreadable."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        return 0
    return int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2).upper()]


def cache_sizes(root: Path = SYSFS_CPU) -> tuple[int, int, int]:
    """(L1d per core, L2 per core, total L3) in bytes from sysfs, falling back to sysconf; 0 if unknown.

    L1d and L2 are the largest over all CPUs (on big.LITTLE the big cores are what tuning is for);
    L3 sums the distinct L3 instances, told apart by the CPUs that share each.
    """
    l1d = l2 = 0
    l3_instances: dict[str, int] = {}
    for index in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        level = (_read_text(index / "level") or "").strip()
        kind = (_read_text(index / "type") or "").strip()
        size = parse_size(_read_text(index / "size") or "")
        if level == "1" and kind == "Data":
            l1d = max(l1d, size)
        elif level == "2" and kind in ("Data", "Unified"):
            l2 = max(l2, size)
        elif level == "3" and kind in ("Data", "Unified"):
            shared = (_read_text(index / "shared_cpu_list") or _read_text(index / "id") or "").strip()
            # Without a way to tell instances apart, assume one shared L3.
            l3_instances[shared or "all"] = size
    l3 = sum(l3_instances.values())
    if not (l1d or l2 or l3):
        l1d, l2, l3 = (_sysconf(name) for name in
                       ("SC_LEVEL1_DCACHE_SIZE", "SC_LEVEL2_CACHE_SIZE", "SC_LEVEL3_CACHE_SIZE"))
    return l1d, l2, l3


def measure_bandwidth_gbs(compiler: str, array_bytes: int, build_dir: Path) -> float:
    """Best-of-5 triad bandwidth in GB/s with arrays of ``array_bytes`` each; ProbeError on failure."""
    binary = _build_triad(compiler, build_dir)
    try:
        result = subprocess.run([str(binary), str(array_bytes), str(TRIAD_REPETITIONS)], capture_output=True,
                                text=True, timeout=TRIAD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"bandwidth probe timed out after {TRIAD_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise ProbeError(f"cannot run the bandwidth probe {binary}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        reason = _first_line(result.stderr, "no message")
        raise ProbeError(f"bandwidth probe failed (exit {result.returncode}): {reason}")
    try:
        value = float(result.stdout.strip())
    except ValueError:
        raise ProbeError(f"bandwidth probe printed {result.stdout.strip()[:80]!r}, expected a number") from None
    if not value > 0:
        raise ProbeError(f"bandwidth probe measured an impossible {value} GB/s")
    return value


def _build_triad(compiler: str, build_dir: Path) -> Path:
    """Compile triad.c once per (source, compiler); the binary's name is the hash of both."""
    try:
        source = TRIAD_SOURCE.read_bytes()
    except OSError as exc:
        raise ProbeError(f"bandwidth probe source {TRIAD_SOURCE} is missing: {exc.strerror or exc}") from None
    flags = ["-O2", "-fopenmp"]
    identity = _run_tool([compiler, "--version"])
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), identity.encode(), " ".join(flags).encode()]))
    binary = build_dir / f"triad-{key.hexdigest()[:16]}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=".triad-", dir=build_dir)
        os.close(handle)
    except OSError as exc:
        raise ProbeError(f"cannot create the probe cache {build_dir}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        result = subprocess.run([compiler, *flags, str(TRIAD_SOURCE), "-o", str(tmp)], capture_output=True,
                                text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        if result.returncode != 0:
            raise ProbeError(f"cannot compile the bandwidth probe with {compiler} (OpenMP needed): "
                             f"{_first_line(result.stderr, 'no message')}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)  # atomic: a concurrent probe sees no binary or a whole one
    except subprocess.TimeoutExpired:
        raise ProbeError(f"compiling the bandwidth probe took over {COMPILE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise ProbeError(f"cannot compile the bandwidth probe with {compiler}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return binary


def _compiler_identity(compiler: str, path: str | None) -> tuple[str, str]:
    """(family, version), e.g. ("gcc", "12.2.0"); ("<name>", "unknown") when it cannot be asked."""
    if path is None:
        return Path(compiler).name or compiler, "unknown"
    banner = _run_tool([path, "--version"]).lower()
    if "clang" in banner:
        family = "clang"
    elif "gcc" in banner or "free software foundation" in banner:
        family = "gcc"
    else:
        family = Path(path).name
    # gcc prints the full version for -dumpfullversion (plain -dumpversion may say just "12");
    # compilers that reject -dumpfullversion are asked again with -dumpversion alone.
    version = (_first_line(_run_tool([path, "-dumpfullversion", "-dumpversion"]))
               or _first_line(_run_tool([path, "-dumpversion"])))
    return family, version or "unknown"


def _nvidia_gpu() -> tuple[str | None, int | None]:
    """Name and memory of the first NVIDIA GPU, or (None, None); never raises."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, None
    out = _run_tool([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    name, _, memory = _first_line(out).rpartition(",")
    try:
        return (name.strip() or None), int(float(memory.strip()) * 2**20)  # reported in MiB
    except ValueError:
        return (name.strip() or None), None


def _vector_bits(isa: str) -> int:
    if isa in ("sve", "sve2"):
        try:
            # The default SVE vector length for new processes, in bytes.
            bits = int((_read_text(SVE_DEFAULT_VL) or "").strip()) * 8
        except ValueError:
            bits = 0
        return bits if bits >= 128 and bits % 128 == 0 else 128
    return ISA_VECTOR_BITS.get(isa, 0)


def _run_tool(argv: list[str]) -> str:
    """stdout of a short-lived tool, or "" when it is missing, fails or hangs."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _first(cpuinfo: list[dict[str, str]], key: str) -> str:
    return next((block[key] for block in cpuinfo if block.get(key)), "")


def _ints(values: Iterable[str | None]) -> list[int]:
    out = []
    for value in values:
        try:
            out.append(int(value or "", 0))
        except ValueError:
            continue
    return out


def _sysconf(name: str) -> int:
    try:
        return max(int(os.sysconf(name)), 0)
    except (ValueError, OSError):
        return 0


def _first_line(text: str, default: str = "") -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), default)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
