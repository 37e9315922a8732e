"""The model's closed, versioned vocabulary.

Every token is ``field=value``. Prompt fields describe the hardware, the kernel's
structure and the problem shape; configuration fields are ``role#i`` (the i-th
parameter of a role, parameters in a canonical order), so a kernel the model has
never seen still decodes if its parameters have known roles. The list is built from
code, not from data: the same version gives the same ids everywhere, and the model
file carries the list so a mismatch is caught at load time.

Ids 0-2 are ``<unk>``, ``<s>``, ``</s>`` and 3-258 the 256 byte tokens, as a
``llama`` (SentencePiece) vocabulary has them; llama.cpp then accepts the model.
The agent feeds token ids directly and never tokenizes text.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache, cached_property

from agent.kernels.spec import ROLES

__all__ = ["CONFIG_ROLE_ORDER", "MAX_ORDINAL", "UNKNOWN", "VOCAB_DIGEST", "VOCAB_VERSION", "Vocabulary",
           "numeric_value", "vocabulary"]

VOCAB_VERSION = 1
# The token list of VOCAB_VERSION hashes to this; a test holds them together, so any
# change to the list must come with a new version (and retrained models).
VOCAB_DIGEST = "7dff45bd740a1bf2b5f1a0d87acf9db77c4df40d9e20374ea9301f852cef3076"
UNKNOWN = "?"
CONFIG_MARK = "<cfg>"
MAX_ORDINAL = 8  # parameters of one role beyond this share the last ordinal
MAX_CATEGORIES = 16  # string values are tokens by their index in the declared list

# Decisions that shape the rest come first: threads and loop order before tile sizes.
CONFIG_ROLE_ORDER = ("threads", "order", "vector", "tile", "block", "warps", "stages", "unroll", "prefetch", "flag")
assert set(CONFIG_ROLE_ORDER) == set(ROLES), "every role needs a place in the canonical order"

KNOWN_KERNELS = ("gemm", "conv2d", "dwconv3x3", "qgemm", "gemv", "transpose", "softmax", "layernorm", "stencil5",
                 "Xgemm", "convolution_kernel", "dedispersion_kernel")
DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64")
MATH_CALLS = ("none", "exp", "log", "sqrt", "tanh", "pow", "erf")
GPU_VENDORS = ("nvidia", "amd", "intel", "arm", "apple", "qualcomm")
GPU_ARCHS = ("maxwell", "pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell",
             "gcn", "rdna1", "rdna2", "rdna3", "rdna4", "cdna1", "cdna2", "cdna3")
ISAS = ("x86_64", "aarch64", "armv7l", "riscv64")


def _buckets(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(f"b{i}" for i in range(lo, hi + 1))


def _small(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(lo, hi + 1))


# Prompt fields and their values; every field also has the value "?" (unknown).
PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "dev": ("cpu", "gpu"),
    "isa": ISAS,
    "simd": ("64", "128", "256", "512", "1024", "2048"),
    "cores": ("1", "2", "4", "8", "16", "32", "64", "128"),
    # Lanes of a vector register for 32- and 16-bit elements: the same value tokens a
    # vector parameter takes, so "fill the register" is a copy, also for unseen widths.
    "lanes32": ("1", "2", "4", "8", "16", "32", "64"),
    "lanes16": ("1", "2", "4", "8", "16", "32", "64", "128"),
    "l1": _buckets(12, 20),
    "l2": _buckets(14, 28),
    "l3": _buckets(16, 30),
    "bw": _buckets(0, 14),  # GB/s
    "vendor": GPU_VENDORS,
    "gpuarch": GPU_ARCHS,
    "sm": _buckets(0, 9),
    "smem": _buckets(12, 20),
    "kernel": KNOWN_KERNELS,
    "etype": DTYPES,
    "otype": DTYPES,
    "ndims": _small(0, 8),
    "reads": _small(0, 8),
    "writes": _small(0, 4),
    "reduction": ("0", "1"),
    "depth": _small(0, 8),
    "loops": _small(0, 16),
    "veccode": ("0", "1"),
    "parallel": ("0", "1"),
    "math": MATH_CALLS,
    **{f"n_{role}": _small(0, 8) for role in ROLES},
    "ai": _buckets(-6, 12),  # log2 operations per byte
    "work": _buckets(0, 44),  # log2 operations
    **{f"dim#{i}": _buckets(0, 26) for i in range(MAX_ORDINAL)},
    "ws": ("l1", "l2", "l3", "dram"),  # where the working set fits
}

# Configuration values: small integers, then a quarter-octave grid, then categories.
_SMALL_INTS = tuple(range(0, 17))
_GRID = tuple(sorted({(m << k) // 4 for k in range(4, 17) for m in (4, 5, 6, 7)} - set(_SMALL_INTS)))
CONFIG_VALUES: tuple[str, ...] = (*map(str, _SMALL_INTS), *map(str, _GRID),
                                  *(f"c{i}" for i in range(MAX_CATEGORIES)))


def numeric_value(value: object) -> str:
    """The value token for a number: exact up to 16, else the nearest quarter-octave step."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        return UNKNOWN
    if value <= 16:
        return str(value)
    if value > _GRID[-1]:
        return UNKNOWN
    nearest = min(_GRID, key=lambda g: abs(math.log2(g) - math.log2(value)))
    return str(nearest)


@dataclass(frozen=True)
class Vocabulary:
    """Token strings in id order, with lookups both ways."""

    version: int
    tokens: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def bos(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def config_mark(self) -> int:
        return self.id(CONFIG_MARK)

    def id(self, token: str) -> int:
        """The id of ``token``; ``field=?`` for an unknown value, ``<unk>`` for an unknown field."""
        index = self._index
        found = index.get(token)
        if found is not None:
            return found
        field, _, _ = token.partition("=")
        return index.get(f"{field}={UNKNOWN}", 0)

    @cached_property
    def _index(self) -> dict[str, int]:
        # Built once per vocabulary; a cache keyed by the token tuple would hash 7k strings per lookup.
        return {t: i for i, t in enumerate(self.tokens)}

    def token(self, token_id: int) -> str:
        return self.tokens[token_id]

    def digest(self) -> str:
        """SHA-256 of the token list: the model file records it, the loader compares it."""
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()

    def token_types(self) -> list[int]:
        """llama.cpp token types: 1 normal, 2 unknown, 3 control, 6 byte."""
        kinds = [2, 3, 3] + [6] * 256
        return kinds + [3 if t == CONFIG_MARK else 1 for t in self.tokens[len(kinds):]]


def config_field(role: str, ordinal: int) -> str:
    """The field of the ``ordinal``-th parameter of ``role`` (clamped to the last ordinal)."""
    return f"{role}#{min(ordinal, MAX_ORDINAL - 1)}"


@cache
def vocabulary(version: int = VOCAB_VERSION) -> Vocabulary:
    """The vocabulary of ``version`` (only the current one is built)."""
    if version != VOCAB_VERSION:
        raise ValueError(f"vocabulary version {version} is not known to this edgetune (it has {VOCAB_VERSION})")
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), CONFIG_MARK]
    for field, values in PROMPT_FIELDS.items():
        tokens.extend(f"{field}={v}" for v in (*values, UNKNOWN))
    for role in CONFIG_ROLE_ORDER:
        for ordinal in range(MAX_ORDINAL):
            field = config_field(role, ordinal)
            tokens.extend(f"{field}={v}" for v in (*CONFIG_VALUES, UNKNOWN))
    return Vocabulary(version=version, tokens=tuple(tokens))
