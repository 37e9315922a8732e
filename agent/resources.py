"""Where the shipped data folders (``models/``, ``profiles/``) are, in a checkout or an installed venv.

A source checkout (or an editable install) has them beside the ``agent`` package. A
non-editable install, as the Debian package makes under ``/opt/edgetune``, has them in
``<venv>/share/edgetune/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["shipped_dir"]

_CHECKOUT = Path(__file__).resolve().parents[1]


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (``models``, ``profiles``): the checkout's, else the venv's share/."""
    checkout = _CHECKOUT / name
    if checkout.is_dir():
        return checkout
    installed = Path(sys.prefix) / "share" / "edgetune" / name
    return installed if installed.is_dir() else checkout
