"""The hardware a kernel is tuned for: probe this machine, or load a device profile."""

from __future__ import annotations

from agent.hardware.probe import probe
from agent.hardware.profile import (
    HardwareProfile,
    default_profiles_dir,
    find_profile,
    list_profiles,
    load_profile,
    save_profile,
)

__all__ = [
    "HardwareProfile",
    "default_profiles_dir",
    "find_profile",
    "list_profiles",
    "load_profile",
    "probe",
    "save_profile",
]
