"""Where kernels come from: the built-in library, extra directories, or a path to a spec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.errors import KernelNotFound
from agent.kernels.spec import KernelSpec, load_spec

__all__ = ["BUILTIN_DIR", "find_kernel", "kernel_dirs"]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def kernel_dirs(extra: Sequence[Path] = ()) -> dict[str, Path]:
    """Kernel name -> spec directory; directories in ``extra`` shadow built-ins of the same name."""
    found: dict[str, Path] = {}
    for root in (BUILTIN_DIR, *extra):
        if root.is_dir():
            for toml in sorted(root.glob("*/kernel.toml")):
                found[toml.parent.name] = toml.parent
    return found


def find_kernel(name_or_path: str, extra: Sequence[Path] = ()) -> KernelSpec:
    """Load a kernel by name, or from a path to its directory or ``kernel.toml``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_dir() or "/" in name_or_path:
        if not path.exists():
            raise KernelNotFound(f"no kernel spec at {name_or_path}")
        return load_spec(path)
    known = kernel_dirs(extra)
    if name_or_path not in known:
        raise KernelNotFound(f"unknown kernel {name_or_path!r}; known kernels: "
                             f"{', '.join(sorted(known)) or '(none)'} (or pass a path to a kernel.toml)")
    return load_spec(known[name_or_path])
