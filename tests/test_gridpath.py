"""A grid shot's fused CPU path (itmfilter.render.gridpath) against the normative decoder."""

import av
import numpy as np
import pytest

from itmfilter.model.grid import GRID_SIZES, GridConfig, GridModel, PlacedGrid
from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb


def _model(config: GridConfig, seed: int) -> GridModel:
    rng = np.random.default_rng(seed)
    mmr = np.zeros((22, 3), np.float32)
    mmr[0] = 0.05
    mmr[1:4] = np.eye(3, dtype=np.float32) * 0.45  # a plausible polynomial: PQ ~ 0.05 + 0.45 R'G'B'
    grid = rng.normal(0, 0.3 if config.hidden else 0.05, config.grid_shape).astype(np.float32)
    mlp = [rng.normal(0, 0.3, shape).astype(np.float32) for shape in config.mlp_shapes()]
    return GridModel(config, mmr, grid, mlp)


def _frame(h, w, fmt):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) * 255 // (w + 2 * h)], -1).astype(np.uint8)
    img[(yy // 5 + xx // 7) % 4 == 0] = 250  # near-white patches: the luma axis of the grid
    return av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)


@pytest.mark.parametrize("size", ["P", "XS", "S"])
@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
def test_fused_grid_frame_matches_the_normative_decoder(size, fmt):
    pytest.importorskip("numba")
    model = _model(GRID_SIZES[size], seed=len(size))
    placed = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3))  # a shot that pans
    frame = _frame(45, 78, fmt)
    want = pq_to_yuv420p10(placed.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    exact = hdr10_planes(frame, placed, "full", "cpu", path="exact")
    got = hdr10_planes(frame, placed, "eighth", "cpu")  # any rung: a grid frame has one path
    for g, w, e in zip(got, want, exact):
        assert np.array_equal(w, e)
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    assert want[0].max() - want[0].min() > 50  # the comparison is of a varied picture
