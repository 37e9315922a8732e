"""The configuration space of a kernel at one problem shape on one device.

A configuration is a plain ``dict`` parameter name -> value. The space knows which
configurations are legal (declared values, constraints over parameters and shape
dimensions, thread counts the device has) and how to walk it: enumerate, sample,
and list neighbours for local search.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from agent.errors import ConfigError, ExpressionError, SpecError
from agent.kernels.problem import Problem
from agent.kernels.spec import TARGET_VECTOR_NAME, Param, ParamValue

__all__ = ["WIDEST_VECTOR_BITS", "Config", "Space", "config_key", "parse_config"]

Config = dict[str, ParamValue]

# The widest vector any supported target has (AVX-512). Only for spaces whose constraints do not
# matter to the caller (checking declared values); a space a device tunes is built for its target.
WIDEST_VECTOR_BITS = 512
# Above this many raw combinations the space is sampled, never listed in full.
_ENUMERATE_LIMIT = 2_000_000


def config_key(config: Mapping[str, ParamValue]) -> str:
    """Canonical text of a configuration, e.g. ``BK=64,BM=32`` (sorted: a stable DB key)."""
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


def parse_config(text: str) -> Config:
    """Parse ``BM=64,ORDER=ikj`` into a dict; integers become ints."""
    config: Config = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"configuration {text!r}: expected NAME=VALUE pairs separated by commas")
        value = value.strip()
        try:
            config[name.strip()] = int(value)
        except ValueError:
            config[name.strip()] = value
    return config


@dataclass(frozen=True)
class Space:
    """The legal configurations of ``problem`` on a device with ``max_threads`` hardware threads,
    for a compile target whose vector registers are ``vector_bits`` wide."""

    problem: Problem
    params: tuple[Param, ...]
    vector_bits: int

    @classmethod
    def build(cls, problem: Problem, *, vector_bits: int, max_threads: int | None = None) -> Space:
        """Make the space; thread-count values above ``max_threads`` are dropped (oversubscription).

        ``vector_bits`` is what constraints see as ``VECTOR_BITS``: the compile target's width
        (``agent.hardware.targets.target_vector_bits``). It has no default because a space built
        wider than its target offers configurations the target refuses.
        """
        params = []
        for p in problem.spec.params:
            if p.role == "threads" and max_threads:
                kept = tuple(v for v in p.values if not isinstance(v, int) or v <= max_threads)
                if kept and kept != p.values:
                    default = p.default if p.default in kept else max(
                        (v for v in kept if isinstance(v, int)), default=kept[0])
                    p = Param(p.name, p.role, kept, default, p.description)
            params.append(p)
        return cls(problem=problem, params=tuple(params), vector_bits=vector_bits)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def cartesian_size(self) -> int:
        size = 1
        for p in self.params:
            size *= len(p.values)
        return size

    def check(self, config: Mapping[str, ParamValue]) -> Config:
        """Reject unknown parameters and values outside the declared space (ConfigError).

        Missing parameters are filled from the default. Constraints are not checked here:
        a configuration that breaks one is still a point of the space, just an invalid one.
        """
        known = {p.name: p for p in self.params}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(f"kernel {self.problem.spec.name} has no parameter(s) "
                              f"{', '.join(unknown)}; its parameters are {', '.join(known)}")
        full = self.default()
        for name, value in config.items():
            param = known[name]
            if value not in param.values:
                raise ConfigError(f"{name}={value!r} is outside the space; allowed: "
                                  + ", ".join(str(v) for v in param.values))
            full[name] = value
        return full

    def violated(self, config: Mapping[str, ParamValue]) -> str | None:
        """The text of the first constraint ``config`` breaks, or None if it is legal."""
        values = {**self.problem.shape, TARGET_VECTOR_NAME: self.vector_bits, **config}
        for constraint in self.problem.spec.constraints:
            try:
                ok = constraint.evaluate(values)
            except ExpressionError as exc:
                return str(exc)
            if not ok:
                return constraint.text
        return None

    def is_valid(self, config: Mapping[str, ParamValue]) -> bool:
        return self.violated(config) is None

    def default(self) -> Config:
        return {p.name: p.default for p in self.params}

    def __iter__(self) -> Iterator[Config]:
        """Every legal configuration, in declaration order."""
        if self.cartesian_size > _ENUMERATE_LIMIT:
            raise SpecError(f"space of {self.problem.spec.name} has {self.cartesian_size} raw "
                            f"combinations, too many to enumerate (limit {_ENUMERATE_LIMIT})")
        names = self.names
        for values in itertools.product(*(p.values for p in self.params)):
            config = dict(zip(names, values, strict=True))
            if self.is_valid(config):
                yield config

    def size(self) -> int:
        """Number of legal configurations."""
        return sum(1 for _ in self)

    def sample(self, count: int, rng: random.Random) -> list[Config]:
        """Up to ``count`` distinct legal configurations drawn uniformly at random."""
        if self.cartesian_size <= 200_000:
            legal = list(self)
            return rng.sample(legal, min(count, len(legal)))
        chosen: dict[str, Config] = {}
        attempts = 0
        while len(chosen) < count and attempts < count * 1000:
            attempts += 1
            config = {p.name: rng.choice(p.values) for p in self.params}
            if self.is_valid(config):
                chosen.setdefault(config_key(config), config)
        return list(chosen.values())

    def neighbours(self, config: Mapping[str, ParamValue]) -> list[Config]:
        """Legal configurations that differ from ``config`` in one parameter.

        Ordered roles (tile, unroll, vector, prefetch, threads) step to the adjacent
        declared value; unordered ones (order, flag) may take any other value.
        """
        result: list[Config] = []
        for p in self.params:
            index = p.values.index(config[p.name])
            if p.role in ("order", "flag"):
                candidates = [v for v in p.values if v != config[p.name]]
            else:
                candidates = [p.values[i] for i in (index - 1, index + 1) if 0 <= i < len(p.values)]
            for value in candidates:
                neighbour = {**config, p.name: value}
                if self.is_valid(neighbour):
                    result.append(neighbour)
        return result
