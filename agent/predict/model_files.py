"""The model folder's file names and the version of what is in it.

Which folder is :attr:`agent.settings.Settings.models_dir`'s job (the one resolver); a
caller that names none gets the shipped ``models/`` (:func:`agent.settings.default_models_dir`).

Light on purpose (no numpy, no llama.cpp): ``edgetune status`` and the update hook read the
model version without loading a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as stat_module
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.settings import default_models_dir

__all__ = ["CONFIDENCE_FILE", "COST_MODEL_FILE", "POLICY_FILE", "REUSE_FILE", "STUDENT_FILE", "TEACHER_FILE",
           "model_version", "read_model_file", "write_json"]

STUDENT_FILE = "edgetune-student-q4_0.gguf"
TEACHER_FILE = "edgetune-teacher-q8_0.gguf"
COST_MODEL_FILE = "edgetune-cost.onnx"
CONFIDENCE_FILE = "confidence.json"
REUSE_FILE = "reuse.json.gz"  # measured rankings of the training cases (agent.predict.reuse)
POLICY_FILE = "policy.json"  # which source ranks in which situation (agent.predict.policy)

# The files whose contents decide what the device's model strategy proposes.
_PREDICTION_FILES = (STUDENT_FILE, COST_MODEL_FILE, CONFIDENCE_FILE, REUSE_FILE, POLICY_FILE)


def model_version(model_dir: str | os.PathLike[str] | None = None) -> str | None:
    """12 hex digits of SHA-256 over the prediction files (student, cost model, calibration, reuse index,
    policy); None without a student.

    Tuning results proposed by the model record it, so a model update can mark them stale.
    """
    folder = Path(model_dir) if model_dir is not None else default_models_dir()
    stamps = []
    for name in _PREDICTION_FILES:
        try:
            stat = (folder / name).stat()
        except OSError:
            stamps.append((name, -1, -1))
            continue
        if not stat_module.S_ISREG(stat.st_mode):  # a FIFO or a device would hang the hash: not a model file
            stamps.append((name, -1, -1))
            continue
        stamps.append((name, stat.st_size, stat.st_mtime_ns))
    if stamps[0][1] < 0:
        return None
    return _digest(str(folder.resolve()), tuple(stamps))


@lru_cache(maxsize=8)
def _digest(folder: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    """Hash the files' contents; cached while their sizes and modification times stay the same."""
    digest = hashlib.sha256()
    for name, size, _ in stamps:
        if size < 0:
            continue
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write a model folder's JSON file whole or not at all (a reader never sees half of it); keys sorted."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_model_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a model folder's small file, at most ``limit`` of them.

    Raises FileNotFoundError when it is missing, and OSError naming the problem when it is not a regular
    file (a FIFO or ``/dev/zero`` would hang or fill memory) or is larger than ``limit``.
    """
    path = Path(path)
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as handle:
        if not stat_module.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError("not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes")
    return data
