"""Every built-in kernel is correct at a small shape, at its default and several random configurations."""

import random

import pytest

from agent.backends import detect_backend
from agent.hardware import probe
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel, kernel_dirs
from agent.kernels.space import Space
from agent.kernels.workloads import find_workload, list_workloads
from agent.tuner import Budget, TuneOptions, tune
from tests.conftest import targets_by_width
from tests.helpers import QUICK

BUILTIN = sorted(kernel_dirs())


def test_the_library_has_the_kernels_an_edge_device_runs():
    assert set(BUILTIN) >= {"gemm", "conv2d", "dwconv3x3", "qgemm", "gemv", "softmax", "layernorm",
                            "stencil5", "transpose"}


@pytest.mark.parametrize("name", BUILTIN)
def test_space_is_large_enough_and_never_wider_than_the_target(name):
    spec = find_kernel(name)
    problem = parse_shape(spec, None)
    assert len([s for s in spec.shapes if s != "small"]) >= 4
    sizes = [Space.build(problem, max_threads=2, vector_bits=bits).size() for bits in (128, 256, 512)]
    assert sizes[1] >= 100 and sizes[0] >= 50 and sizes[0] <= sizes[1] <= sizes[2]
    narrow = Space.build(problem, max_threads=2, vector_bits=128)
    assert narrow.is_valid(narrow.default())


WIDTHS = targets_by_width(probe(measure_bandwidth=False))


@pytest.mark.slow
@pytest.mark.parametrize("target", WIDTHS.values(), ids=[f"{bits}bit" for bits in WIDTHS])
@pytest.mark.parametrize("name", BUILTIN)
def test_default_and_random_configurations_match_the_reference(name, target, store, profile, cache_dir):
    spec = find_kernel(name)
    problem = parse_shape(spec, "small")
    backend = detect_backend("c", compiler="cc", target=target, device=profile.fingerprint())
    # The space the tuner builds for this target: a sample never holds a vector wider than the code may use.
    space = Space.build(problem, max_threads=min(2, profile.logical_cores),
                        vector_bits=backend.vector_bits(profile))
    configs = tuple(space.sample(5, random.Random(name)))
    result = tune(problem, profile=profile, store=store, backend=backend, cache_dir=cache_dir,
                  options=TuneOptions(budget=Budget(), configs=configs, measure=QUICK))
    statuses = {r["config"]: (r["status"], r["reason"]) for r in store.runs(tuning_id=result.tuning_id)}
    assert len(statuses) >= len({str(c) for c in configs})
    assert all(status == "correct" for status, _ in statuses.values()), statuses


@pytest.mark.parametrize("path", list_workloads(), ids=lambda p: p.stem)
def test_every_shipped_preset_names_real_kernels_and_shapes(path):
    workload = find_workload(str(path))
    problems = workload.problems()
    assert problems and all(problem.nbytes > 0 for _, problem in problems)
