"""Telemetry: what a device tells the fleet (``record``: the one definition) and sending it (``upload``).

``agent.telemetry.upload`` is imported by its full name: it needs the store, and the store needs
the record definition from here.
"""

from __future__ import annotations

from agent.telemetry.record import (
    KINDS,
    PROTOCOL,
    PROTOCOLS,
    RUN_FIELDS,
    STATUSES,
    TUNING_FIELDS,
    Field,
    envelope,
    record,
    run_data,
    tuning_data,
)

__all__ = ["KINDS", "PROTOCOL", "PROTOCOLS", "RUN_FIELDS", "STATUSES", "TUNING_FIELDS", "Field", "envelope",
           "record", "run_data", "tuning_data"]
