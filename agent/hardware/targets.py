"""Compiler targets: which ``-march`` levels a CPU can run, and how wide their vectors are.

One machine gives several kinds of "hardware" for the dataset: code built for
``x86-64`` (SSE2) runs on an AVX-512 machine but can only use 128-bit vectors. A
kernel's constraints see the target's width as ``VECTOR_BITS``, so a space never
offers a vector wider than the code may use.
"""

from __future__ import annotations

from agent.hardware.profile import HardwareProfile

__all__ = ["TARGET_VECTOR_BITS", "available_targets", "target_vector_bits"]

# The widest vector register each -march level guarantees, in bits.
TARGET_VECTOR_BITS = {
    "x86-64": 128,
    "x86-64-v2": 128,
    "x86-64-v3": 256,
    "x86-64-v4": 512,
    "armv8-a": 128,
    "armv8.2-a": 128,
    "armv8.2-a+dotprod": 128,
}

# What a CPU needs in its flags to run code built for a level (cumulative).
_X86_LEVEL_NEEDS = {
    "x86-64": ("sse2",),
    "x86-64-v2": ("sse2", "sse4_2", "ssse3"),
    "x86-64-v3": ("sse2", "sse4_2", "avx", "avx2", "fma"),
    "x86-64-v4": ("sse2", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"),
}


def target_vector_bits(target: str, profile: HardwareProfile) -> int:
    """Vector width code built for ``target`` may use on ``profile``'s CPU (``native``: all of it)."""
    hardware = profile.vector_bits or 128
    if target == "native" or target not in TARGET_VECTOR_BITS:
        return hardware
    return min(TARGET_VECTOR_BITS[target], hardware)


def available_targets(profile: HardwareProfile) -> list[str]:
    """The ``-march`` levels this CPU can run, narrowest first, then ``native``."""
    flags = set(profile.simd_flags)
    targets: list[str] = []
    if profile.arch in ("x86_64", "amd64"):
        targets = [level for level, needs in _X86_LEVEL_NEEDS.items() if set(needs) <= flags]
        if "sse2" not in flags:  # a profile without flags still runs baseline x86-64
            targets.insert(0, "x86-64")
    elif profile.arch in ("aarch64", "arm64"):
        targets = ["armv8-a"]
        if "asimddp" in flags:
            targets.append("armv8.2-a+dotprod")
    return [*targets, "native"]
