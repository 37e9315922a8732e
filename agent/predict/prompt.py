"""Turn (hardware, kernel, shape) into prompt tokens, and configurations into tokens and back.

A prompt is ``<s>``, the hardware fields, the kernel's structural fields, the shape
fields, then ``<cfg>``; the configuration follows as one ``role#i=value`` token per
parameter in a canonical order (:data:`~agent.predict.vocab.CONFIG_ROLE_ORDER`, then
declaration order). Several values of one parameter may share a token (47 and 48
both map to ``48``); decoding then treats them as equals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.kernels.features import array_bytes as _array_bytes
from agent.predict.vocab import (
    CONFIG_ROLE_ORDER,
    MAX_CATEGORIES,
    MAX_ORDINAL,
    PROMPT_FIELDS,
    UNKNOWN,
    Vocabulary,
    config_field,
    numeric_value,
    vocabulary,
)

__all__ = ["ConfigCodec", "HardwareDesc", "KernelDesc", "Slot", "encode_prompt", "hardware_desc", "kernel_desc"]


@dataclass(frozen=True)
class HardwareDesc:
    """What the model knows of the device a configuration runs on (None: unknown)."""

    kind: str  # "cpu" or "gpu"
    isa: str | None = None
    vector_bits: int | None = None  # of the compile target, not only the CPU
    cores: int | None = None
    l1_bytes: int | None = None
    l2_bytes: int | None = None
    l3_bytes: int | None = None
    bandwidth_gbs: float | None = None
    vendor: str | None = None
    architecture: str | None = None
    multiprocessors: int | None = None
    shared_memory_bytes: int | None = None


@dataclass(frozen=True)
class KernelDesc:
    """A kernel as the model sees it: structure, parameter roles, and its name when known."""

    name: str | None
    dimensions: tuple[str, ...]
    params_by_role: Mapping[str, int]
    element_type: str | None = None
    output_type: str | None = None
    arrays_read: int | None = None
    arrays_written: int | None = None
    reduction: bool | None = None
    loop_depth: int | None = None
    loops: int | None = None
    vector_code: bool | None = None
    parallel: bool | None = None
    math_calls: tuple[str, ...] | None = None
    array_bytes: Any = None  # callable(shape) -> bytes of all arrays, when the spec is known
    operations: Any = None  # callable(shape) -> flop/op count, when the spec gives one


def hardware_desc(profile: Mapping[str, Any], *, vector_bits: int | None = None,
                  cores: int | None = None) -> HardwareDesc:
    """A description from a device profile dict (CPU probe/profile or GPU profile)."""
    if profile.get("kind") == "gpu" or profile.get("multiprocessors"):
        return HardwareDesc(kind="gpu", l2_bytes=profile.get("l2_bytes"), bandwidth_gbs=profile.get("bandwidth_gbs"),
                            vendor=profile.get("vendor"), architecture=profile.get("architecture"),
                            multiprocessors=profile.get("multiprocessors"),
                            shared_memory_bytes=profile.get("shared_memory_per_block_bytes"))
    return HardwareDesc(kind="cpu", isa=profile.get("arch"),
                        vector_bits=vector_bits if vector_bits is not None else profile.get("vector_bits"),
                        cores=cores if cores is not None else profile.get("physical_cores"),
                        l1_bytes=profile.get("l1d_bytes"), l2_bytes=profile.get("l2_bytes"),
                        l3_bytes=profile.get("l3_bytes"), bandwidth_gbs=profile.get("bandwidth_gbs"))


def kernel_desc(space: Mapping[str, Any], *, name: str | None, spec: Any = None,
                features: Any = None) -> KernelDesc:
    """A description from a space dict (``params`` with roles, ``dimensions``), plus the
    spec's :class:`~agent.kernels.features.KernelFeatures` where the kernel's source is known."""
    by_role: dict[str, int] = {}
    for p in space.get("params", ()):
        by_role[p["role"]] = by_role.get(p["role"], 0) + 1
    desc = KernelDesc(name=name, dimensions=tuple(space.get("dimensions", ())), params_by_role=by_role)
    if features is None:
        return desc
    source = features.source
    array_bytes = operations = None
    if spec is not None:
        def array_bytes(shape: Mapping[str, int]) -> int:
            return _array_bytes(spec, shape)

        if spec.flops is not None:
            def operations(shape: Mapping[str, int]) -> float:
                return float(spec.flops.evaluate(shape))
    return KernelDesc(
        name=name, dimensions=desc.dimensions, params_by_role=by_role,
        element_type=features.element_type, output_type=features.output_type,
        arrays_read=features.arrays_read, arrays_written=features.arrays_written, reduction=features.reduction,
        loop_depth=source.loop_depth if source else None, loops=source.loops if source else None,
        vector_code=source.vector_code if source else None, parallel=source.parallel if source else None,
        math_calls=source.math_calls if source else None, array_bytes=array_bytes, operations=operations)


def _log2_bucket(value: float | None) -> str:
    if value is None or not value > 0 or not math.isfinite(value):
        return UNKNOWN
    return f"b{round(math.log2(value))}"


def _pow2_floor(value: int | None) -> str:
    if not value or value < 1:
        return UNKNOWN
    return str(1 << (int(value).bit_length() - 1))


def _flag(value: bool | None) -> str:
    return UNKNOWN if value is None else str(int(bool(value)))


def _count(value: int | None) -> str:
    return UNKNOWN if value is None else str(value)


def prompt_tokens(hardware: HardwareDesc, kernel: KernelDesc, shape: Mapping[str, int], *,
                  hide_name: bool = False) -> list[str]:
    """The prompt as token strings (before ``<s>``/``<cfg>``); ``hide_name`` drops the kernel's name."""
    tokens = [f"dev={hardware.kind}"]
    if hardware.kind == "cpu":
        bits = hardware.vector_bits
        tokens += [f"isa={hardware.isa or UNKNOWN}", f"simd={bits or UNKNOWN}",
                   f"lanes32={bits // 32 if bits else UNKNOWN}", f"lanes16={bits // 16 if bits else UNKNOWN}",
                   f"cores={_pow2_floor(hardware.cores)}", f"l1={_log2_bucket(hardware.l1_bytes)}",
                   f"l2={_log2_bucket(hardware.l2_bytes)}", f"l3={_log2_bucket(hardware.l3_bytes)}",
                   f"bw={_log2_bucket(hardware.bandwidth_gbs)}"]
    else:
        tokens += [f"vendor={hardware.vendor or UNKNOWN}", f"gpuarch={hardware.architecture or UNKNOWN}",
                   f"sm={_log2_bucket(hardware.multiprocessors)}", f"l2={_log2_bucket(hardware.l2_bytes)}",
                   f"smem={_log2_bucket(hardware.shared_memory_bytes)}", f"bw={_log2_bucket(hardware.bandwidth_gbs)}"]
    name = kernel.name if kernel.name in PROMPT_FIELDS["kernel"] and not hide_name else UNKNOWN
    tokens += [f"kernel={name}", f"etype={kernel.element_type or UNKNOWN}", f"otype={kernel.output_type or UNKNOWN}",
               f"ndims={min(len(kernel.dimensions), 8)}", f"reads={_count(kernel.arrays_read)}",
               f"writes={_count(kernel.arrays_written)}", f"reduction={_flag(kernel.reduction)}",
               f"depth={_count(kernel.loop_depth)}",
               f"loops={_count(min(kernel.loops, 16) if kernel.loops else kernel.loops)}",
               f"veccode={_flag(kernel.vector_code)}", f"parallel={_flag(kernel.parallel)}"]
    if kernel.math_calls is None:
        tokens.append(f"math={UNKNOWN}")
    else:
        calls = sorted({c.rstrip("f") for c in kernel.math_calls} & set(PROMPT_FIELDS["math"])) or ["none"]
        tokens += [f"math={c}" for c in calls]
    tokens += [f"n_{role}={min(count, 8)}" for role, count in sorted(kernel.params_by_role.items())]
    # Shape: each dimension in declared order, then what the whole problem costs.
    for i, dim in enumerate(kernel.dimensions[:MAX_ORDINAL]):
        tokens.append(f"dim#{i}={_log2_bucket(max(1, shape.get(dim, 0))) if dim in shape else UNKNOWN}")
    operations = kernel.operations(shape) if kernel.operations else None
    array_bytes = kernel.array_bytes(shape) if kernel.array_bytes else None
    tokens.append(f"work={_log2_bucket(operations)}")
    tokens.append(f"ai={_log2_bucket(operations / array_bytes) if operations and array_bytes else UNKNOWN}")
    tokens.append(f"ws={_fits(array_bytes, hardware)}")
    return tokens


def _fits(array_bytes: int | None, hardware: HardwareDesc) -> str:
    if not array_bytes:
        return UNKNOWN
    for level, size in (("l1", hardware.l1_bytes), ("l2", hardware.l2_bytes), ("l3", hardware.l3_bytes)):
        if size and array_bytes <= size:
            return level
    return "dram"


def encode_prompt(hardware: HardwareDesc, kernel: KernelDesc, shape: Mapping[str, int], *,
                  vocab: Vocabulary | None = None, hide_name: bool = False) -> list[int]:
    """Token ids of the whole prompt: ``<s>``, fields, ``<cfg>``."""
    vocab = vocab or vocabulary()
    return [vocab.bos, *(vocab.id(t) for t in prompt_tokens(hardware, kernel, shape, hide_name=hide_name)),
            vocab.config_mark]


@dataclass(frozen=True)
class Slot:
    """One parameter's place in the decoded configuration."""

    name: str
    role: str
    field: str  # role#ordinal
    values: tuple[Any, ...]
    token_ids: tuple[int, ...]  # the token of each value, same order (values may share one)


@dataclass(frozen=True)
class ConfigCodec:
    """Maps a space's configurations to token sequences, in the canonical parameter order."""

    slots: tuple[Slot, ...]
    _lookup: tuple[dict[Any, int], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def for_params(cls, params: Sequence[Mapping[str, Any]], vocab: Vocabulary | None = None) -> ConfigCodec:
        """``params``: dicts with ``name``, ``role``, ``values`` (a space's declaration order)."""
        vocab = vocab or vocabulary()
        rank = {role: i for i, role in enumerate(CONFIG_ROLE_ORDER)}
        ordered = sorted(enumerate(params), key=lambda item: (rank.get(item[1]["role"], len(rank)), item[0]))
        seen: dict[str, int] = {}
        slots = []
        for _, p in ordered:
            role = p["role"] if p["role"] in rank else "flag"
            ordinal = seen.get(role, 0)
            seen[role] = ordinal + 1
            field_name = config_field(role, ordinal)
            values = tuple(p["values"])
            ids = tuple(vocab.id(f"{field_name}={_value_token(v, values)}") for v in values)
            slots.append(Slot(name=p["name"], role=role, field=field_name, values=values, token_ids=ids))
        lookup = tuple({_hashable(v): t for v, t in zip(s.values, s.token_ids, strict=False)} for s in slots)
        return cls(slots=tuple(slots), _lookup=lookup)

    def encode(self, config: Mapping[str, Any]) -> list[int]:
        """Token ids of a configuration (KeyError if a value is not in the space)."""
        return [lookup[_hashable(config[slot.name])] for slot, lookup in zip(self.slots, self._lookup, strict=False)]

    def names(self) -> list[str]:
        return [s.name for s in self.slots]


def _hashable(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _value_token(value: Any, declared: Sequence[Any]) -> str:
    if isinstance(value, str):
        index = declared.index(value)
        return f"c{index}" if index < MAX_CATEGORIES else UNKNOWN
    return numeric_value(value)
