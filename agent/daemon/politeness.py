"""Staying out of the way of the device's real work: low priority, and pausing while it is busy."""

from __future__ import annotations

import os

import psutil

__all__ = ["lower_priority", "others_cpu_percent"]


def lower_priority(nice: int = 19) -> list[str]:
    """Nice this process to ``nice`` and put its I/O in the idle class; what was done, for the log.

    Children (the compiler, the benchmark worker) inherit both. Under systemd the unit sets the
    same (Nice=, IOSchedulingClass=); doing it here too keeps a hand-started daemon polite.
    """
    done = []
    current = os.nice(0)
    if current < nice:
        os.nice(nice - current)
        done.append(f"nice {nice}")
    try:
        process = psutil.Process()
        if process.ionice().ioclass != psutil.IOPRIO_CLASS_IDLE:
            process.ionice(psutil.IOPRIO_CLASS_IDLE)
            done.append("idle I/O class")
    except (psutil.Error, OSError, AttributeError):  # not Linux, or not allowed: niceness still applies
        pass
    return done


def others_cpu_percent(sample_s: float) -> float:
    """How much of the CPUs this process may run on the rest of the system used over ``sample_s`` seconds (0-100).

    Called while the daemon itself is idle (between tunings, its worker gone), so what is
    measured is the device's own work. Only the CPUs of the daemon's affinity count: on a
    device that pins it to two cores, those two being busy is what matters.
    """
    per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    try:
        mine = [per_cpu[i] for i in os.sched_getaffinity(0) if i < len(per_cpu)]
    except (AttributeError, OSError):  # not Linux
        mine = []
    chosen = mine or per_cpu
    return float(sum(chosen) / len(chosen)) if chosen else 0.0
