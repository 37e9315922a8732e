"""The hardware probe on this machine, the fingerprint, and the shipped device profiles."""

from __future__ import annotations

import dataclasses
import platform
import shutil
from pathlib import Path

import pytest

from agent.errors import ProbeError
from agent.hardware import (
    HardwareProfile,
    default_profiles_dir,
    find_profile,
    list_profiles,
    load_profile,
    probe,
    save_profile,
)
from agent.hardware.probe import cache_sizes, cpu_identity, parse_cpuinfo, parse_size, simd_flags

SHIPPED = list_profiles(default_profiles_dir())
HAS_SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache/index0/size").is_file()

PI5_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> HardwareProfile:
    return probe(measure_bandwidth=True, cache_dir=tmp_path_factory.mktemp("probe-cache"))


def test_probe_describes_this_machine(probed: HardwareProfile):
    assert probed.source == "probe"
    assert probed.logical_cores >= 1 and 1 <= probed.physical_cores <= probed.logical_cores
    assert probed.memory_bytes > 0
    assert probed.compiler_version and probed.compiler_version != "unknown"
    assert probed.bandwidth_gbs is not None and probed.bandwidth_gbs > 0.1
    if HAS_SYSFS_CACHES:
        assert probed.l1d_bytes > 0 and probed.l2_bytes > 0
    if probed.arch == "x86_64":
        assert "sse2" in probed.simd_flags and probed.vector_bits >= 128
    assert probed.simd_flags == tuple(sorted(probed.simd_flags))


def test_fingerprint_is_stable_and_ignores_bandwidth(probed: HardwareProfile):
    quick = probe(measure_bandwidth=False)
    assert quick.bandwidth_gbs is None
    assert quick.fingerprint() == probe(measure_bandwidth=False).fingerprint() == probed.fingerprint()
    assert len(probed.fingerprint()) == 16 and int(probed.fingerprint(), 16) >= 0
    noisy = dataclasses.replace(probed, bandwidth_gbs=probed.bandwidth_gbs * 1.3, name="other", source="x",
                                compiler_version="99.0", memory_bytes=1)
    assert noisy.fingerprint() == probed.fingerprint()
    assert dataclasses.replace(probed, l3_bytes=probed.l3_bytes + 1).fingerprint() != probed.fingerprint()


def test_missing_compiler_only_fails_when_bandwidth_is_measured(tmp_path: Path):
    quick = probe(measure_bandwidth=False, compiler="/nonexistent/cc")
    assert quick.compiler_version == "unknown"
    with pytest.raises(ProbeError, match="'/nonexistent/cc' not found"):
        probe(compiler="/nonexistent/cc", cache_dir=tmp_path)


@pytest.mark.skipif(shutil.which("false") is None, reason="needs the false utility")
def test_a_compiler_that_fails_gives_a_one_line_probe_error(tmp_path: Path):
    with pytest.raises(ProbeError, match="cannot compile the bandwidth probe") as info:
        probe(compiler="false", cache_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert not [p for p in (tmp_path / "probe").iterdir()], "no temp file or half binary left behind"


def test_at_least_seven_distinct_devices_ship():
    profiles = [load_profile(p) for p in SHIPPED]
    assert len(profiles) >= 7
    assert len({p.fingerprint() for p in profiles}) == len(profiles)
    assert {p.simd_isa for p in profiles} >= {"neon", "avx2", "avx512f", "sve"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_profile_round_trips(path: Path, tmp_path: Path):
    assert path.read_text().startswith("#"), "each profile names the source of its numbers"
    profile = load_profile(path)
    assert profile.name == path.stem and profile.source == f"profile:{path.name}"
    copy = tmp_path / "copy.toml"
    save_profile(profile, copy)
    again = load_profile(copy)
    assert again.fingerprint() == profile.fingerprint()
    assert dataclasses.replace(again, source=profile.source) == profile
    assert HardwareProfile.from_dict(profile.to_dict()) == profile


def test_save_and_load_the_probe_and_awkward_strings(probed: HardwareProfile, tmp_path: Path):
    odd = dataclasses.replace(probed, model='Wei\u00df "quoted" \\ back\tslash \x01 \x7f', gpu_name="GPU, 1")
    save_profile(odd, tmp_path / "odd.toml")
    loaded = load_profile(tmp_path / "odd.toml")
    assert loaded.model == odd.model and loaded.gpu_name == "GPU, 1"
    assert loaded.bandwidth_gbs == probed.bandwidth_gbs and loaded.fingerprint() == odd.fingerprint()


def _profile_text(**changes: str) -> str:
    lines = (default_profiles_dir() / "raspberry-pi-5.toml").read_text().splitlines()
    out = []
    for line in lines:
        key = line.split("=")[0].strip()
        if key in changes:
            if changes[key]:
                out.append(changes[key])
            continue
        out.append(line)
    return "\n".join([*out, changes.get("_extra", "")]) + "\n"


@pytest.mark.parametrize(("changes", "message"), [
    ({"logical_cores": 'logical_cores = "four"'}, "'logical_cores' must be int, got str"),
    ({"physical_cores": "physical_cores = true"}, "'physical_cores' must be int, got bool"),
    ({"simd_flags": 'simd_flags = "neon"'}, "'simd_flags' must be list of strings"),
    ({"simd_flags": 'simd_flags = ["neon", "neonx"]'}, "unknown flag(s) neonx"),
    ({"simd_isa": 'simd_isa = "avx2"'}, "'simd_isa' is 'avx2' but the widest ISA"),
    ({"vector_bits": "vector_bits = 256"}, "'vector_bits' must be 128"),
    ({"bandwidth_gbs": "bandwidth_gbs = -1.0"}, "'bandwidth_gbs' must be a positive number"),
    ({"_extra": "turbo = true"}, "unknown profile field(s) turbo"),
    ({"model": ""}, "missing profile field(s) model"),
    ({"_extra": "name = "}, "TOML syntax error"),
])
def test_a_bad_profile_names_the_problem(tmp_path: Path, changes: dict[str, str], message: str):
    bad = tmp_path / "bad.toml"
    bad.write_text(_profile_text(**changes))
    with pytest.raises(ProbeError) as info:
        load_profile(bad)
    assert message in str(info.value) and str(info.value).startswith("bad.toml")
    assert "\n" not in str(info.value)


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    data = load_profile(SHIPPED[0]).to_dict()
    with pytest.raises(ProbeError, match="unknown profile field"):
        HardwareProfile.from_dict({**data, "colour": "red"})
    with pytest.raises(ProbeError, match="'l2_bytes' must be int"):
        HardwareProfile.from_dict({**data, "l2_bytes": 1.5})


def test_find_profile_by_name_path_or_not_at_all(tmp_path: Path):
    assert find_profile("raspberry-pi-5") == default_profiles_dir() / "raspberry-pi-5.toml"
    assert find_profile(str(SHIPPED[0])) == SHIPPED[0]
    with pytest.raises(ProbeError) as info:
        find_profile("nosuchdevice")
    assert "nosuchdevice" in str(info.value) and "raspberry-pi-5" in str(info.value)
    with pytest.raises(ProbeError, match="not found"):
        find_profile(str(tmp_path / "missing.toml"))
    assert list_profiles(tmp_path / "nowhere") == []


@pytest.mark.parametrize(("text", "size"), [
    ("32K", 32768), ("1024K\n", 2**20), ("32768K", 32 * 2**20), ("2M", 2 * 2**20), ("512", 512), ("", 0), ("x", 0),
])
def test_parse_size(text: str, size: int):
    assert parse_size(text) == size


def test_cache_sizes_from_a_fake_sysfs(tmp_path: Path):
    def cache(cpu: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
        folder = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
        folder.mkdir(parents=True)
        for name, value in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (folder / name).write_text(value + "\n")

    for cpu in range(4):
        cache(cpu, 0, 1, "Data", "48K", str(cpu))
        cache(cpu, 1, 1, "Instruction", "32K", str(cpu))
        cache(cpu, 2, 2, "Unified", "1280K", str(cpu))
        cache(cpu, 3, 3, "Unified", "32768K", "0-1" if cpu < 2 else "2-3")  # two L3 instances
    assert cache_sizes(tmp_path) == (48 * 1024, 1280 * 1024, 64 * 2**20)
    (tmp_path / "cpu0" / "cache" / "index2" / "size").unlink()  # a missing entry is not a crash
    assert cache_sizes(tmp_path)[1] == 1280 * 1024


def test_arm_cpuinfo_matches_the_shipped_raspberry_pi_5():
    info = parse_cpuinfo(PI5_CPUINFO)
    shipped = load_profile(find_profile("raspberry-pi-5"))
    assert cpu_identity(info) == (shipped.vendor, shipped.model) == ("ARM", "Cortex-A76")
    assert simd_flags(info) == shipped.simd_flags
    big_little = PI5_CPUINFO.replace("0xd0b\nCPU revision", "0xd05\nCPU revision")
    assert cpu_identity(parse_cpuinfo(big_little))[1] == "Cortex-A55 + Cortex-A76"


def test_x86_cpuinfo_flags():
    info = parse_cpuinfo("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Core(TM)  i7\n"
                         "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma aes\n")
    assert cpu_identity(info) == ("Intel", "Intel(R) Core(TM) i7")
    assert simd_flags(info) == ("avx", "avx2", "fma", "sse2", "sse4_1", "sse4_2", "ssse3")


@pytest.mark.skipif(platform.system() != "Linux", reason="sysfs is Linux only")
def test_probe_without_bandwidth_is_quick():
    import time

    start = time.perf_counter()
    probe(measure_bandwidth=False)
    assert time.perf_counter() - start < 2.0


def test_usable_cpus_follow_affinity_and_the_tightest_cgroup_quota(tmp_path: Path):
    import os

    from agent.hardware.probe import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    root = tmp_path / "cgroup"
    (root / "system.slice" / "edgetune.service").mkdir(parents=True)
    own = tmp_path / "self-cgroup"
    own.write_text("0::/system.slice/edgetune.service\n")
    assert usable_cpus(root, own) == affinity  # no cpu.max anywhere: the affinity alone
    (root / "system.slice" / "edgetune.service" / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(root, own) == affinity
    (root / "system.slice" / "cpu.max").write_text("150000 100000\n")  # a parent's 1.5 CPUs bind: 2 threads
    assert usable_cpus(root, own) == min(affinity, 2)
    (root / "system.slice" / "edgetune.service" / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(root, own) == 1
    own.write_text("12:cpu:/\n")  # cgroup v1 only: no unified line, the root has no quota
    assert usable_cpus(root, own) == affinity
