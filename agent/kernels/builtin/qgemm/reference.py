"""NumPy reference of the built-in int8 GEMM: C = A @ BT^T, exact in int64, returned as int32."""

import numpy as np


def qgemm(A, BT, M, N, K):
    return (A.astype(np.int64) @ BT.astype(np.int64).T).astype(np.int32)
