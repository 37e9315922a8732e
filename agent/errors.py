"""The one exception tree of edgetune.

Library code raises these; only the CLI turns them into one-line messages.
Errors of dependencies (sqlite3, subprocess, OSError, tomllib) are mapped at the
boundary where they happen, with ``raise XError(msg) from exc``::

    EdgetuneError
    ├── SpecError            a kernel spec file is malformed or unsafe
    │   └── ExpressionError  a constraint/shape expression is invalid
    ├── KernelNotFound       no kernel of that name (lists the known ones)
    ├── ConfigError          unknown parameter, or a value outside the space
    ├── ShapeError           a problem shape does not fit the kernel signature
    ├── ToolchainError       the C compiler is missing or unusable
    ├── ProbeError           the hardware probe or a profile file failed
    ├── StoreError           the SQLite store cannot be opened or written
    │   └── StoreBusy        another process holds the store's lock past the timeout
    ├── FleetError           the fleet service or its database refused, or cannot be reached
    └── WorkerError          the benchmark worker could not be started
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EdgetuneError",
    "ExpressionError",
    "FleetError",
    "KernelNotFound",
    "ProbeError",
    "ShapeError",
    "SpecError",
    "StoreBusy",
    "StoreError",
    "ToolchainError",
    "WorkerError",
]


class EdgetuneError(Exception):
    """Base of every error edgetune raises on purpose; its message is one line for users."""


class SpecError(EdgetuneError):
    """A kernel spec (TOML + C source + reference) is malformed or unsafe."""


class ExpressionError(SpecError):
    """A constraint or shape expression uses something other than names, numbers,
    arithmetic and comparison, or names something undeclared."""


class KernelNotFound(EdgetuneError):
    """No kernel of the requested name is known."""


class ConfigError(EdgetuneError):
    """A configuration names an unknown parameter or a value outside the space."""


class ShapeError(EdgetuneError):
    """A problem shape does not fit the kernel signature."""


class ToolchainError(EdgetuneError):
    """The C compiler is missing or cannot build anything at all."""


class ProbeError(EdgetuneError):
    """The hardware probe failed, or a hardware profile file is invalid."""


class StoreError(EdgetuneError):
    """The SQLite store cannot be opened, migrated or written."""


class StoreBusy(StoreError):
    """Another process held the store's write lock past the timeout: try again later."""


class FleetError(EdgetuneError):
    """The fleet service or its database refused a request, or cannot be reached."""


class WorkerError(EdgetuneError):
    """The isolated benchmark worker could not be started or speaks nonsense."""
