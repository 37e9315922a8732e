"""Kernel spec parsing, and the rejection of malformed or unsafe specs."""

import shutil
from pathlib import Path

import pytest

from agent.bench.compile import macro_flags
from agent.errors import ConfigError, ExpressionError, KernelNotFound, ShapeError, SpecError
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel, kernel_dirs
from agent.kernels.spec import load_spec
from tests.conftest import TEST_KERNELS


@pytest.fixture
def spin_copy(tmp_path: Path) -> Path:
    target = tmp_path / "spin"
    shutil.copytree(TEST_KERNELS / "spin", target)
    return target / "kernel.toml"


def edit(toml: Path, old: str, new: str) -> None:
    text = toml.read_text()
    assert old in text, old
    toml.write_text(text.replace(old, new, 1))


def test_builtin_gemm_declares_real_tuning_roles():
    spec = find_kernel("gemm")
    roles = {p.role for p in spec.params}
    assert {"tile", "unroll", "vector", "prefetch", "order", "threads"} <= roles
    assert spec.dimensions == ("M", "N", "K")
    assert [a.name for a in spec.args if a.is_array] == ["A", "B", "C"]
    assert "gemm" in kernel_dirs()


def test_spec_key_changes_when_the_source_changes(spin_copy: Path):
    before = load_spec(spin_copy).key
    source = spin_copy.parent / "spin.c"
    source.write_text(source.read_text() + "\n/* edited */\n")
    assert load_spec(spin_copy).key != before


def test_unknown_kernel_lists_the_known_ones():
    with pytest.raises(KernelNotFound, match="known kernels: .*gemm"):
        find_kernel("nosuchkernel")


def test_toml_syntax_error_names_the_file(spin_copy: Path):
    edit(spin_copy, 'name = "spin"', 'name = "spin')
    with pytest.raises(SpecError, match="kernel.toml: TOML syntax error"):
        load_spec(spin_copy)


@pytest.mark.parametrize("value", [
    '"1 -fplugin=/tmp/evil.so"', '"$(touch /tmp/pwned)"', '"x; rm -rf /"', '"-o/etc/passwd"', "1.5", "true",
])
def test_parameter_values_that_could_inject_flags_or_shell_are_rejected(spin_copy: Path, value: str):
    edit(spin_copy, "values = [1, 2, 4]", f"values = [1, {value}]")
    with pytest.raises(SpecError, match="UNROLL"):
        load_spec(spin_copy)


def test_a_config_built_by_hand_cannot_smuggle_a_flag_to_the_compiler():
    spec = load_spec(TEST_KERNELS / "spin")
    with pytest.raises(ConfigError):
        macro_flags(spec, {"REPEAT": 1, "UNROLL": "1 -fplugin=evil.so"})
    assert macro_flags(spec, {"REPEAT": 1, "UNROLL": 2}) == ["-DREPEAT=1", "-DUNROLL=2"]


@pytest.mark.parametrize("constraint", [
    "__import__('os').system('touch /tmp/pwned')",
    "open('/etc/passwd').read() == ''",
    "REPEAT.bit_length() > 1",
    "UNROLL ** 99999999 > 0",
])
def test_constraints_may_only_use_names_and_arithmetic(spin_copy: Path, constraint: str):
    edit(spin_copy, '["UNROLL <= REPEAT * 4"]', f'["""{constraint}"""]')
    with pytest.raises(ExpressionError):
        load_spec(spin_copy)


def test_constraint_with_an_undeclared_name_is_rejected(spin_copy: Path):
    edit(spin_copy, "UNROLL <= REPEAT * 4", "UNROLL <= TILE")
    with pytest.raises(ExpressionError, match="TILE"):
        load_spec(spin_copy)


@pytest.mark.parametrize("old, new, message", [
    ('role = "unroll"\nvalues = [8', 'role = "magic"\nvalues = [8', "role must be one of"),
    ("default = 32", "default = 3", "default 3 is not one of"),
    ('source = "spin.c"', 'source = "../../etc/passwd"', "beside kernel.toml"),
    ('reference = "reference.py:spin"', 'reference = "reference.py"', "file.py:function"),
    ('dtype = "float32"\nshape = ["N"]\nintent = "out"', 'dtype = "float32"\nshape = ["N"]\nintent = "sideways"',
     "intent must be"),
    ('shape = ["N"]\nintent = "in"', 'shape = ["N * P"]\nintent = "in"', "unknown name"),
    ("small = { N = 20000 }", "small = { N = 0 }", "positive"),
    ('name = "spin"', 'name = "spin"\ncolour = "blue"', "unknown key"),
])
def test_malformed_specs_get_a_message_naming_the_problem(spin_copy: Path, old: str, new: str, message: str):
    edit(spin_copy, old, new)
    with pytest.raises(SpecError, match=message):
        load_spec(spin_copy)


def test_shapes_must_fit_the_signature():
    spec = find_kernel("gemm")
    assert parse_shape(spec, "M=64,N=32,K=16").array_shapes == {"A": (64, 16), "B": (16, 32), "C": (64, 32)}
    for bad, message in [("M=64,N=32", "missing K"), ("M=64,N=32,K=16,Q=2", "no dimension"),
                         ("M=0,N=32,K=16", "positive"), ("M=x,N=1,K=1", "not an integer"),
                         ("M64", "NAME=VALUE"), ("M=100000,N=100000,K=100000", "GiB")]:
        with pytest.raises(ShapeError, match=message):
            parse_shape(spec, bad)
