"""Structural features read from a kernel's spec and C source."""

import pytest

from agent.kernels.features import analyse_c, arithmetic_intensity, kernel_features
from agent.kernels.registry import find_kernel
from tests.conftest import TEST_KERNELS


def test_gemm_is_a_deep_reducing_loop_nest_with_vector_and_parallel_code():
    features = kernel_features(find_kernel("gemm"))
    assert features.element_type == "float32" and features.output_type == "float32"
    assert (features.arrays_read, features.arrays_written, features.dimensions) == (2, 1, 3)
    assert features.reduction  # K appears in no output's shape
    assert features.source.loop_depth >= 5  # tile loops, then i, k, j (and the unroll) through helpers
    assert features.source.vector_code and features.source.parallel
    assert set(features.roles) == {"tile", "unroll", "vector", "prefetch", "order", "threads"}
    assert features.params_by_role["tile"] == 3


def test_an_elementwise_kernel_has_no_reduction_and_a_shallow_nest():
    features = kernel_features(find_kernel(str(TEST_KERNELS / "faulty")))
    assert not features.reduction
    assert features.source.loop_depth <= 2


def test_loops_inside_called_helpers_count_towards_the_depth():
    source = """
    static void inner(float *y, int n) { for (int j = 0; j < n; j++) y[j] += 1.0f; }
    void entry(float *y, int n) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < n; k += 4) inner(y, n);
    }
    """
    features = analyse_c(source, "entry")
    assert features.loop_depth == 3 and features.loops == 3 and features.functions == 2
    assert features.reduction


def test_a_loop_header_increment_is_not_a_reduction_and_math_calls_are_listed():
    source = """
    void entry(const float *x, float *y, int n) {
        for (int i = 0; i < n; i += 8)
            for (int j = i; j < i + 8 && j < n; j += 1) y[j] = expf(x[j]);
    }
    """
    features = analyse_c(source, "entry")
    assert not features.reduction and features.math_calls == ("expf",) and features.loop_depth == 2


def test_arithmetic_intensity_of_gemm_grows_with_its_size():
    spec = find_kernel("gemm")
    small = arithmetic_intensity(spec, {"M": 16, "N": 16, "K": 16})
    large = arithmetic_intensity(spec, {"M": 512, "N": 512, "K": 512})
    assert small == pytest.approx(2 * 16**3 / (3 * 16 * 16 * 4))
    assert large > 10 * small
