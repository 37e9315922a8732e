"""GPU profiles: the public specifications of GPUs whose tuning data edgetune replays.

edgetune measures only CPUs itself; GPU data comes from imported files (Kernel Tuner
caches, T4). Their devices are described by ``profiles/gpus/*.toml`` so the model
sees hardware features (vendor, architecture, multiprocessors, L2, shared memory,
bandwidth) rather than a name.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from agent.resources import shipped_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["default_gpu_dir", "gpu_fingerprint", "gpu_profile"]

_FIELDS = ("name", "vendor", "architecture", "compute_capability", "multiprocessors", "l2_bytes",
           "shared_memory_per_block_bytes", "memory_bytes", "bandwidth_gbs")


def default_gpu_dir() -> Path:
    return shipped_dir("profiles") / "gpus"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def gpu_profile(*names: str, directory: Path | None = None) -> dict[str, Any]:
    """The profile whose name or alias matches one of ``names`` (a device name, a file stem).

    An unknown GPU still gets a profile: its name and ``kind = "gpu"``, every other field
    missing, so its data imports and the model sees only what is known.
    """
    wanted = {_norm(n) for n in names if n}
    root = directory or default_gpu_dir()
    for path in sorted(root.glob("*.toml")) if root.is_dir() else []:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        aliases = {_norm(a) for a in [data.get("name", ""), *data.get("aliases", []), path.stem]}
        if wanted & aliases:
            profile = {k: data[k] for k in _FIELDS if k in data}
            return {"kind": "gpu", **profile, "source": f"profile:{path.name}"}
    name = next((n for n in names if n), "unknown GPU")
    return {"kind": "gpu", "name": name, "source": "import"}


def gpu_fingerprint(profile: dict[str, Any]) -> str:
    """A stable 16-hex id for a GPU, from its name (imported data has nothing more stable)."""
    return hashlib.sha256(f"gpu:{_norm(str(profile.get('name', '')))}".encode()).hexdigest()[:16]
