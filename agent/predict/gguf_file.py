"""Read a GGUF file's header: metadata and tensor layout, with the tensors memory-mapped.

``gguf.GGUFReader`` builds a numpy view per field part (tens of thousands for a vocabulary
array), which takes most of a second; the agent loads its model on every tune, so this reads
the same header with ``struct`` in a few milliseconds. Format: GGUF v2/v3
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GGUFFile", "GGUFTensor", "read_gguf"]

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's layout; ``data`` is a read-only memory-mapped view (rows of bytes for quantized types)."""

    name: str
    shape: tuple[int, ...]  # GGUF order: innermost dimension first
    tensor_type: int  # a ggml type (``gguf.GGMLQuantizationType``)
    data_offset: int  # from the start of the file
    n_bytes: int
    data: np.ndarray


@dataclass(frozen=True)
class GGUFFile:
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.at = buf, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.at + n > len(self.buf):
            raise ValueError(f"string of {n} bytes runs past the end of the file")
        text = bytes(self.buf[self.at:self.at + n]).decode("utf-8")
        self.at += n
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.take("<I"), self.take("<Q")
            if item in _NUMPY:
                dtype = np.dtype(_NUMPY[item])
                if self.at + n * dtype.itemsize > len(self.buf):
                    raise ValueError(f"array of {n} items runs past the end of the file")
                values = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.at).tolist()
                self.at += n * dtype.itemsize
                return values
            return [self.value(item) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse ``path``'s header; raises ValueError (or struct.error, UnicodeDecodeError) if it is malformed."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = memoryview(mapped)
    cursor = _Cursor(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    cursor.at = 4
    version = cursor.take("<I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported")
    n_tensors, n_keys = cursor.take("<Q"), cursor.take("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_keys):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cursor.string()
        dims = tuple(cursor.take("<Q") for _ in range(cursor.take("<I")))
        infos.append((name, dims, cursor.take("<I"), cursor.take("<Q")))
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cursor.at // alignment) * alignment
    tensors = {}
    for name, dims, kind, offset in infos:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        elements = int(np.prod(dims, dtype=np.int64))
        n_bytes = elements // block * type_size
        at = start + offset
        if at + n_bytes > len(buf):
            data = np.zeros(0, dtype=np.uint8)  # truncated: the caller reports it from n_bytes
        else:
            row_bytes = dims[0] // block * type_size
            data = np.frombuffer(buf, dtype=np.uint8, count=n_bytes, offset=at).reshape(-1, row_bytes)
        tensors[name] = GGUFTensor(name=name, shape=dims, tensor_type=kind, data_offset=at, n_bytes=n_bytes,
                                   data=data)
    return GGUFFile(version=version, metadata=metadata, tensors=tensors)
