"""NumPy reference of the built-in GEMV: y = A @ x, accumulated in float64 for a tight check."""

import numpy as np


def gemv(A, x, M, N):
    return (A.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)
