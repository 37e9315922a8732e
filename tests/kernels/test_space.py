import random

import pytest

from agent.errors import ConfigError
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space, config_key, parse_config
from tests.conftest import TEST_KERNELS


@pytest.fixture
def spin_space() -> Space:
    return Space.build(parse_shape(find_kernel(str(TEST_KERNELS / "spin")), None), vector_bits=128)


def test_enumeration_applies_constraints(spin_space: Space):
    configs = list(spin_space)
    assert spin_space.cartesian_size == 12
    # the constraint UNROLL <= REPEAT * 4 holds for every enumerated configuration
    assert all(c["UNROLL"] <= c["REPEAT"] * 4 for c in configs)
    assert len({config_key(c) for c in configs}) == len(configs) == spin_space.size()


def test_check_rejects_unknown_parameters_and_values_outside_the_space(spin_space: Space):
    with pytest.raises(ConfigError, match="no parameter.*TILE"):
        spin_space.check({"TILE": 4})
    with pytest.raises(ConfigError, match="REPEAT=3 is outside the space; allowed: 8, 1, 32, 4"):
        spin_space.check({"REPEAT": 3})
    assert spin_space.check({"REPEAT": 1}) == {"REPEAT": 1, "UNROLL": 1}


@pytest.mark.parametrize("vector_bits", [128, 256, 512])
def test_gemm_space_has_hundreds_of_legal_configurations(vector_bits):
    space = Space.build(parse_shape(find_kernel("gemm"), None), max_threads=2, vector_bits=vector_bits)
    assert space.size() >= 300
    assert space.is_valid(space.default())


def test_threads_above_the_device_are_dropped():
    spec = find_kernel("gemm")
    threads = next(p for p in spec.params if p.role == "threads")
    space = Space.build(parse_shape(spec, None), max_threads=1, vector_bits=256)
    assert {c[threads.name] for c in space.sample(50, random.Random(0))} == {1}


def test_neighbours_move_one_parameter_one_step(spin_space: Space):
    for neighbour in spin_space.neighbours({"REPEAT": 1, "UNROLL": 2}):
        changed = [k for k in neighbour if neighbour[k] != {"REPEAT": 1, "UNROLL": 2}[k]]
        assert len(changed) == 1
    assert {"REPEAT": 8, "UNROLL": 2} in spin_space.neighbours({"REPEAT": 1, "UNROLL": 2})
    assert {"REPEAT": 4, "UNROLL": 2} not in spin_space.neighbours({"REPEAT": 1, "UNROLL": 2})


def test_sample_is_distinct_legal_and_reproducible(spin_space: Space):
    first = spin_space.sample(8, random.Random(3))
    assert first == spin_space.sample(8, random.Random(3))
    assert len({config_key(c) for c in first}) == 8
    assert all(spin_space.is_valid(c) for c in first)


def test_parse_config_reads_integers_and_identifiers():
    assert parse_config("BM=64, ORDER=ikj") == {"BM": 64, "ORDER": "ikj"}
    with pytest.raises(ConfigError):
        parse_config("BM")
