"""The tiny two-shot master the Ray engine's and the thread-count tests encode: a pan with a
moving highlight, then a cut to a still gradient (96x54, 36 frames, the cut at 20)."""

import numpy as np

W, H, N, CUT = 96, 54, 36, 20


def frames():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for i in range(N):
        if i < CUT:  # a pan with a moving highlight, then a cut to a still gradient
            base = (xx + 2 * i) / W
            nits = np.stack([base, base**2, 1 - base], -1) * 400 + 1.0
            nits[10:20, 10 + i : 20 + i] = 900.0
        else:
            base = 1 - yy / H
            nits = np.stack([base**2, base, 0.5 * base], -1) * 150 + 1.0
        yield nits.astype(np.float32)
