"""The backend registry and the kernel.toml key that names a kernel's backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.backends import BACKENDS, detect_backend, get_backend
from agent.backends.c import CBackend
from agent.errors import ConfigError, SpecError
from agent.kernels.spec import load_spec
from tests.conftest import TEST_KERNELS


@pytest.fixture
def spin_toml(tmp_path: Path) -> Path:
    shutil.copytree(TEST_KERNELS / "spin", tmp_path / "spin")
    return tmp_path / "spin" / "kernel.toml"


def _with_backend(toml: Path, line: str) -> Path:
    text = toml.read_text()
    toml.write_text(text.replace('name = "spin"', f'name = "spin"\n{line}', 1))
    return toml


def test_a_kernel_without_a_backend_key_is_a_c_kernel(spin_toml: Path):
    assert load_spec(spin_toml).backend == "c"
    assert load_spec(_with_backend(spin_toml, 'backend = "c"')).backend == "c"


def test_an_unknown_backend_in_kernel_toml_is_one_line_naming_the_valid_ones(spin_toml: Path):
    with pytest.raises(SpecError) as caught:
        load_spec(_with_backend(spin_toml, 'backend = "cuda"'))
    message = str(caught.value)
    assert "\n" not in message and "'cuda'" in message
    assert f"choose one of: {', '.join(BACKENDS)}" in message


def test_an_unknown_backend_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown backend 'triton'; choose one of: c$"):
        get_backend("triton")


def test_the_c_backend_detects_the_toolchain_the_store_records(profile):
    backend = detect_backend("c", compiler="cc", target="native", device=profile.fingerprint())
    assert isinstance(backend, CBackend) and get_backend("c") is CBackend
    assert backend.name == "c" and backend.target == "native"
    assert backend.version == backend.toolchain.version and "-march=native" in backend.flags
    assert backend.vector_bits(profile) >= 128
