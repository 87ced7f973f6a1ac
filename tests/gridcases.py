"""Grid-model test material shared by the render paths' tests (test_gridpath, test_gridtensor):
a random grid model with a plausible polynomial, and an SDR frame with near-white patches."""

from __future__ import annotations

import av
import numpy as np

from itmfilter.model.grid import GridConfig, GridModel


def random_model(config: GridConfig, seed: int) -> GridModel:
    """A grid model with random grid cells and MLP weights (seeded) on a plausible polynomial:
    PQ ~ 0.05 + 0.45 R'G'B'."""
    rng = np.random.default_rng(seed)
    mmr = np.zeros((22, 3), np.float32)
    mmr[0] = 0.05
    mmr[1:4] = np.eye(3, dtype=np.float32) * 0.45
    grid = rng.normal(0, 0.3 if config.hidden else 0.05, config.grid_shape).astype(np.float32)
    mlp = [rng.normal(0, 0.3, shape).astype(np.float32) for shape in config.mlp_shapes()]
    return GridModel(config, mmr, grid, mlp)


def ramp_frame(h: int, w: int, fmt: str) -> av.VideoFrame:
    """An ``h`` x ``w`` SDR frame in pixel format ``fmt``: colour ramps with near-white patches
    (the luma axis of the grid)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) * 255 // (w + 2 * h)], -1).astype(np.uint8)
    img[(yy // 5 + xx // 7) % 4 == 0] = 250
    return av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
