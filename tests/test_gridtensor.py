"""A grid shot's frame in torch (itmfilter.render.gridtensor, the CUDA path) against the
normative decoder, run here on the CPU: the same formulas, so the same codes within 1."""

import dataclasses

import numpy as np
import pytest
import torch
from gridcases import ramp_frame, random_model

from itmfilter.media.frames import code_planes
from itmfilter.model.grid import GRID_SIZES, PlacedGrid
from itmfilter.model.scene import ScenePlan, unpack_scene_residual
from itmfilter.render import gridtensor
from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb
from itmfilter.render.gridtensor import grid_planes_tensor


def _scene(window=None):
    h, w = 6, 9
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    img = np.stack([0.2 * np.sin(3 * xx) * yy, 0.1 * xx - 0.04, 0.16 * yy * yy], -1)
    return unpack_scene_residual(ScenePlan(img).code(90, window=window))


def _normative(placed, frame):
    return pq_to_yuv420p10(placed.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))


def _close(got, want):
    for g, w in zip(got, want):
        d = np.abs(np.asarray(g).astype(int) - w.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.01


@pytest.mark.parametrize("size", ["P", "XS", "S", "M"])
@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
def test_the_torch_grid_path_matches_the_normative_decoder(size, fmt):
    model = random_model(GRID_SIZES[size], seed=len(size))
    placed = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3))  # a shot that pans
    frame = ramp_frame(45, 78, fmt)  # odd height: the last chroma row covers one luma row
    want = _normative(placed, frame)
    got = hdr10_planes(frame, placed, "full", "cpu", path="torch")
    _close(got, want)
    assert want[0].max() - want[0].min() > 50  # the comparison is of a varied picture


@pytest.mark.parametrize("window", [None, (0.3, -0.2, 0.6, 0.7)])
def test_the_torch_grid_path_reads_a_zooming_shots_scene_residual(window):
    model = dataclasses.replace(random_model(GRID_SIZES["XS"], 3), scene=_scene(window), zoom=0.01)
    placed = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3), age=7)  # scale 1.07
    plain = PlacedGrid(random_model(GRID_SIZES["XS"], 3), origin=(0.37, -0.21), half=(1.6, 1.3))
    frame = ramp_frame(45, 78, "yuv420p")
    want, without = _normative(placed, frame), _normative(plain, frame)
    assert np.abs(want[0].astype(int) - without[0].astype(int)).mean() > 5  # the residual matters here
    unzoomed = _normative(dataclasses.replace(placed, age=0), frame)
    assert np.abs(want[0].astype(int) - unzoomed[0].astype(int)).mean() > 1  # and so does the zoom
    _close(hdr10_planes(frame, placed, "full", "cpu", path="torch"), want)


def test_bands_of_rows_give_the_whole_frames_codes(monkeypatch):
    """The frame is computed in bands of rows (bounded memory): a band of 3 rows, which splits
    chroma row pairs and scene rows, gives the same codes as one band."""
    placed = PlacedGrid(dataclasses.replace(random_model(GRID_SIZES["S"], 2), scene=_scene()), (0.1, 0.2), (1.2, 1.1))
    frame = ramp_frame(37, 50, "yuv420p")
    planes = code_planes(frame)
    tensors = [torch.from_numpy(np.ascontiguousarray(p)) for p in (planes.y, planes.cb, planes.cr)]
    whole = grid_planes_tensor(placed, *tensors)
    monkeypatch.setattr(gridtensor, "BAND_PIXELS", 3 * 50)
    banded = grid_planes_tensor(placed, *tensors)
    for a, b in zip(whole, banded):
        assert torch.equal(a, b)


def test_the_torch_path_returns_tensors_on_the_frames_device():
    placed = PlacedGrid(random_model(GRID_SIZES["XS"], 1), (0.0, 0.0), (1.0, 1.0))
    frame = ramp_frame(16, 24, "yuv420p")
    out = hdr10_planes(frame, placed, "full", "cpu", path="torch", tensors=True)
    assert [tuple(t.shape) for t in out] == [(16, 24), (8, 12), (8, 12)]
    assert all(t.dtype == torch.int16 and t.device.type == "cpu" for t in out)
    arrays = hdr10_planes(frame, placed, "full", "cpu", path="torch")
    assert all(np.array_equal(t.numpy().view(np.uint16), a) for t, a in zip(out, arrays))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_grid_frame_renders_on_the_device_by_default():
    placed = PlacedGrid(dataclasses.replace(random_model(GRID_SIZES["M"], 4), scene=_scene()), (0.37, -0.21), (1.6, 1.3))
    frame = ramp_frame(45, 78, "yuv420p")
    out = hdr10_planes(frame, placed, "guided-eighth", "cuda", tensors=True)
    assert all(t.device.type == "cuda" for t in out)
    _close([t.cpu().numpy().view(np.uint16) for t in out], _normative(placed, frame))
