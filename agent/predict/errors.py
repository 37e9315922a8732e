"""Errors of the on-device model file (an :class:`~agent.errors.EdgetuneError` subclass)."""

from __future__ import annotations

from agent.errors import EdgetuneError

__all__ = ["ModelFileError"]


class ModelFileError(EdgetuneError):
    """A model file is missing, not a GGUF, truncated, for another vocabulary, or cannot be quantized."""
