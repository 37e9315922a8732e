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
    │   └── IdempotencyConflict  an Idempotency-Key was used before with a different batch
    ├── WorkerError          the benchmark worker could not be started
    ├── NoValidConfiguration a tuning ended with every configuration failed (each run stored with its reason)
    ├── DatasetError         a dataset folder is missing, of an unknown version, or damaged
    ├── ImportFileError      a file cannot be imported (Kernel Tuner cache, T4 file, dataset)
    ├── ModelFileError       a model file is missing, not a GGUF, truncated, or of another vocabulary
    ├── CloudError           the cloud ranking settings are invalid
    ├── RankProtocolError    a rank request or answer breaks the wire format
    ├── RankBusy             no ranking answer in time (503, retry after ``retry_after`` s)
    └── PullError            the fleet cannot be read (unreachable, refused token, bad answer)
"""

from __future__ import annotations

__all__ = [
    "CloudError",
    "ConfigError",
    "DatasetError",
    "EdgetuneError",
    "ExpressionError",
    "FleetError",
    "IdempotencyConflict",
    "ImportFileError",
    "KernelNotFound",
    "ModelFileError",
    "NoValidConfiguration",
    "ProbeError",
    "PullError",
    "RankBusy",
    "RankProtocolError",
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


class IdempotencyConflict(FleetError):
    """An Idempotency-Key was used before with a different batch."""


class WorkerError(EdgetuneError):
    """The isolated benchmark worker could not be started or speaks nonsense."""


class NoValidConfiguration(EdgetuneError):
    """A tuning ended without a winner: every configuration it tried, the default too, failed."""


class DatasetError(EdgetuneError):
    """A dataset folder that is missing, of an unknown version, or damaged."""


class ImportFileError(EdgetuneError):
    """A file that cannot be imported into the store (a Kernel Tuner cache, a T4 file, a dataset)."""


class ModelFileError(EdgetuneError):
    """A model file is missing, not a GGUF, truncated, for another vocabulary, or cannot be quantized."""


class CloudError(EdgetuneError):
    """Cloud settings are invalid (raised when they are made; an ask never raises)."""


class RankProtocolError(EdgetuneError):
    """A rank request or answer breaks the wire format, or speaks another vocabulary."""


class RankBusy(EdgetuneError):
    """No answer in time, or no ranking model to answer with: 503, try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class PullError(EdgetuneError):
    """The fleet could not be read: unreachable, a refused token, or an answer that is not what it should be."""
