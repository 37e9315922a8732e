"""NumPy reference of the built-in depthwise 3x3 conv (NHWC, pad 1), accumulated in float64."""

import numpy as np


def dwconv3x3(input, weight, C, H, W, STRIDE):
    x = np.zeros((H + 2, W + 2, C), dtype=np.float64)
    x[1:H + 1, 1:W + 1, :] = input
    w = weight.astype(np.float64)
    OH = (H - 1) // STRIDE + 1
    OW = (W - 1) // STRIDE + 1
    out = np.zeros((OH, OW, C), dtype=np.float64)
    for r in range(3):
        for s in range(3):
            out += x[r:r + STRIDE * (OH - 1) + 1:STRIDE, s:s + STRIDE * (OW - 1) + 1:STRIDE, :] * w[r, s]
    return out.astype(np.float32)
