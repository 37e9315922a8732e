"""The daemon's settings: the ``[daemon]`` table of the config file, checked once per (re)load.

::

    [daemon]
    preset = "mobilenet-v2"       # workload preset tuned when this hardware has no results for it
    first_boot_budget = "20m"     # wall time one round of tuning (first boot, after an update) takes at most
                                  # back to back; the rest is then tuned one request per poll interval
    evaluations = 5               # compile-and-run cycles per kernel
    busy_cpu_percent = 60         # pause while other processes use more than this share of the CPUs
    poll_interval = "60s"         # how often an idle daemon looks for queued requests
    upload_interval = "1h"        # outbox upload period when [fleet] is configured
    outbox_max_records = 100000   # with no fleet configured, older telemetry beyond this is dropped
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import cast

from agent.budget import QUICK
from agent.errors import ConfigError
from agent.settings import config_path, config_section

__all__ = ["DaemonSettings", "parse_duration"]


def parse_duration(text: object, what: str) -> float:
    """Seconds from ``"90s"``, ``"20m"``, ``"1h"`` or a plain number of seconds; ConfigError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", str(text).lower()) if isinstance(text, str) else None
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{what}: {text!r} is not a duration (90s, 20m, 1h)")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


@dataclass(frozen=True)
class DaemonSettings:
    """What the daemon tunes and how politely; defaults suit a small device."""

    preset: str | None = "mobilenet-v2"
    first_boot_budget_s: float = 20 * 60
    evaluations: int = cast(int, QUICK.budget.evaluations)  # the quick effort profile's (agent.budget)
    busy_cpu_percent: float = 60.0
    poll_interval_s: float = 60.0
    upload_interval_s: float = 3600.0
    outbox_max_records: int = 100_000
    busy_sample_s: float = 0.5  # how long the CPU is watched before each tuning (not in the file)

    @classmethod
    def load(cls, path: Path | None = None) -> DaemonSettings:
        """``[daemon]`` of the config file (``$EDGETUNE_CONFIG`` by default); defaults where it is silent."""
        path = path or config_path()
        section = config_section(path, "daemon") or {}
        return cls.from_table(section, where=f"[daemon] of {path}")

    @classmethod
    def from_table(cls, table: Mapping[str, object], *, where: str = "[daemon]") -> DaemonSettings:
        known = {"preset", "first_boot_budget", "evaluations", "busy_cpu_percent", "poll_interval",
                 "upload_interval", "outbox_max_records"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, object] = {}
        if "preset" in table:
            preset = table["preset"]
            if not isinstance(preset, str):
                raise ConfigError(f"{where}: preset must be a preset name or path (\"\" for none)")
            values["preset"] = preset or None
        for key in ("first_boot_budget", "poll_interval", "upload_interval"):
            if key in table:
                values[f"{key}_s"] = parse_duration(table[key], f"{where}: {key}")
        for key, low, high in (("evaluations", 1, 10_000), ("busy_cpu_percent", 1, 100),
                               ("outbox_max_records", 0, 10**9)):
            if key in table:
                value = table[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                    raise ConfigError(f"{where}: {key} must be a number from {low} to {high}, not {value!r}")
                if key != "busy_cpu_percent" and not float(value).is_integer():
                    raise ConfigError(f"{where}: {key} must be a whole number, not {value!r}")
                values[key] = value if key == "busy_cpu_percent" else int(value)
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
