"""llama.cpp in this process: its CPU backend, its log output.

llama.cpp logs to file descriptor 2 and, in a portable build, leaves loading its CPU backend to
the program; these helpers serve every place that loads a model (the predictor, the GGUF
export's quantizer, the fleet's teacher).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.errors import ModelFileError

__all__ = ["captured_stderr", "load_cpu_backend", "quiet_llama_logs"]


def load_cpu_backend(llama_cpp: Any) -> None:
    """Register llama.cpp's CPU backend if the build left that to the program.

    A portable build (``GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON``, what the Debian package
    ships) holds one CPU library per x86-64 level beside libllama and registers none on its
    own; ggml then loads the variant that scores best on this processor (AVX-512, AVX2, SSE4.2
    ...). A usual build has its CPU backend linked in: then this does nothing.
    """
    lib = llama_cpp.llama_cpp._lib
    try:
        count, load_all = lib.ggml_backend_reg_count, lib.ggml_backend_load_all_from_path
    except AttributeError:  # a llama.cpp older than the backend registry: always linked in
        return
    count.argtypes, count.restype = [], ctypes.c_size_t
    if count():
        return
    load_all.argtypes, load_all.restype = [ctypes.c_char_p], None
    folder = Path(getattr(llama_cpp.llama_cpp, "_base_path", Path(llama_cpp.llama_cpp.__file__).parent / "lib"))
    load_all(os.fsencode(folder))  # where libllama was loaded from (LLAMA_CPP_LIB_PATH may move it)
    if not count():
        raise ModelFileError(f"llama.cpp in {folder} has no CPU backend this processor can run "
                             "(a GGML_BACKEND_DL build without its libggml-cpu-*.so variants?)")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect the process's fd 2 (where llama.cpp logs) to a temp file; yields a list filled with its lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def quiet_llama_logs() -> None:
    """Drop llama.cpp's info/warning chatter (it logs via llama-cpp-python's logger) unless someone set its level."""
    logger = logging.getLogger("llama-cpp-python")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)
