"""NumPy reference of the built-in GEMM: C = A @ B, accumulated in float64 for a tight check."""

import numpy as np


def gemm(A, B, M, N, K):
    return (A.astype(np.float64) @ B.astype(np.float64)).astype(np.float32)
