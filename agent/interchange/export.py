"""Export one stored tuning session as a T4 or Kernel Tuner document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent.dataset import parse_shape_key
from agent.errors import EdgetuneError
from agent.interchange.kerneltuner import write_kernel_tuner
from agent.interchange.t4 import write_t4
from agent.store import Store

__all__ = ["EXPORT_TUNING_FORMATS", "export_tuning"]

EXPORT_TUNING_FORMATS = ("t4", "kernel-tuner")


def export_tuning(store: Store, *, fmt: str, tuning_id: int | None = None, kernels: Sequence[str] = (),
                  origin: str | None = None, strategy: str | None = None) -> dict[str, Any]:
    """The one tuning session the filters select, as a ``t4`` or ``kernel-tuner`` document.

    Raises :class:`EdgetuneError` unless exactly one session matches.
    """
    if fmt not in EXPORT_TUNING_FORMATS:
        raise EdgetuneError(f"{fmt}: not one of {', '.join(EXPORT_TUNING_FORMATS)}")
    tunings = store.export_tunings(tuning_id=tuning_id, kernels=kernels, origin=origin, strategy=strategy)
    if len(tunings) != 1:
        raise EdgetuneError(f"{len(tunings)} tuning sessions match; {fmt} holds one: pick it with "
                            "--tuning ID (see `edgetune runs` or `edgetune best`)")
    tuning = tunings[0]
    runs = list(store.export_runs(tuning_id=tuning["id"]))
    device_row = next((d for d in store.devices() if d["fingerprint"] == tuning["device"]), None)
    profile = json.loads(device_row["profile"]) if device_row else {}
    kernel_row = next((k for k in store.kernels() if k["key"] == tuning["kernel_key"]), None)
    params = json.loads(kernel_row["space"])["params"] if kernel_row else []
    shape = parse_shape_key(tuning["shape"])
    if fmt == "t4":
        return write_t4(runs, {
            "kernel": tuning["kernel"], "kernel_key": tuning["kernel_key"], "shape": shape,
            "target": tuning["target"], "compiler": tuning["compiler"], "cores": tuning["cores"],
            "device": {"fingerprint": tuning["device"], "name": profile.get("name", ""), "profile": profile},
            "params": params, "exported_by": "edgetune",
        })
    return write_kernel_tuner(runs, device_name=str(profile.get("name", tuning["device"])),
                              kernel_name=tuning["kernel"], shape=shape, params=params)
