"""NumPy reference of the built-in conv2d (NHWC input, HWIO weight), accumulated in float64."""

import numpy as np


def conv2d(input, weight, C, H, W, K, R, S, STRIDE, PAD):
    x = np.zeros((H + 2 * PAD, W + 2 * PAD, C), dtype=np.float64)
    x[PAD:PAD + H, PAD:PAD + W, :] = input
    w = weight.astype(np.float64)
    OH = (H + 2 * PAD - R) // STRIDE + 1
    OW = (W + 2 * PAD - S) // STRIDE + 1
    out = np.zeros((OH, OW, K), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            # the input pixels tap (r, s) reads for every output pixel: OH x OW x C
            patch = x[r:r + STRIDE * (OH - 1) + 1:STRIDE, s:s + STRIDE * (OW - 1) + 1:STRIDE, :]
            out += patch @ w[r, s]
    return out.astype(np.float32)
