"""Grid models beyond one still: guide features (the SDR's edge-aware local means as MLP
inputs), explicit grid coordinates (a video shot's frames placed by the camera's motion) and
fits pooled over several pictures."""

from dataclasses import replace

import numpy as np
import pytest

from itmfilter.colour.tonecurves import get_curve
from itmfilter.data import sample_path
from itmfilter.media.stills import read_hdr
from itmfilter.model.grid import (
    GRID_SIZES,
    GridConfig,
    GridFitOptions,
    GridFormatError,
    fit_grid_model,
    fit_grid_model_pixels,
    guide_features,
    predict_pq,
    unpack_grid_model,
)
from itmfilter.model.net import pixel_grid

FAST = GridFitOptions(steps=40, batch=1024, finetune_steps=20)


@pytest.fixture(scope="module")
def pair():
    nits = read_hdr(sample_path()).nits[:64, :96].astype(np.float32)
    sdr = (np.round(np.clip(get_curve("local").forward(nits), 0, 1) * 255) / 255).astype(np.float32)
    return sdr, np.ascontiguousarray(nits)


def test_guides_of_a_flat_picture_are_its_log_luma():
    sdr = np.full((20, 30, 3), 0.5, np.float32)
    g = guide_features(sdr, 3)
    assert g.shape == (20, 30, 3) and g.dtype == np.float32
    assert np.allclose(g, np.log2(0.5) / 8, atol=1e-6)


def test_guide_keeps_a_strong_edge_and_smooths_a_weak_one():
    sdr = np.zeros((16, 64, 3), np.float32)
    sdr[:, 32:] = 1.0  # a step of 8 stops: the guided filter keeps it
    sdr[:, :32] = 0.2 + 0.004 * (np.arange(32) % 2)[None, :, None]  # fine texture: smoothed away
    g = guide_features(sdr, 1)[..., 0]
    assert abs(g[8, 40] - 0.0) < 0.02 and abs(g[8, 20] - np.log2(0.2) / 8) < 0.02
    assert np.ptp(g[8, 4:28]) < 0.5 * np.ptp(np.log2(sdr[8, 4:28, 0]) / 8)


def test_guides_travel_in_the_flags_and_reserved_flags_are_refused(pair):
    sdr, nits = pair
    cfg = replace(GRID_SIZES["XS"], guides=2)
    fit = fit_grid_model(sdr, nits, cfg, FAST)
    again = unpack_grid_model(fit.data)
    assert again.config == cfg and again.mlp[0].shape == (16, 3 + 4 + 2)
    assert np.array_equal(predict_pq(fit.model, sdr), predict_pq(again, sdr.copy()))
    bad = bytearray(fit.data)
    bad[11] |= 0x10
    with pytest.raises(GridFormatError, match="reserved"):
        unpack_grid_model(bytes(bad))
    with pytest.raises(ValueError, match="guides"):
        GridConfig(hidden=0, channels=3, layers=0, guides=1)


def test_explicit_coordinates_match_the_default_and_move_the_grid(pair):
    sdr, nits = pair
    fit = fit_grid_model(sdr, nits, GRID_SIZES["XS"], FAST)
    h, w, _ = sdr.shape
    xy = pixel_grid(h, w).numpy()
    assert np.array_equal(predict_pq(fit.model, sdr), predict_pq(fit.model, sdr, xy=xy))
    moved = predict_pq(fit.model, sdr, xy=xy + np.float32(0.3))
    assert not np.array_equal(moved, predict_pq(fit.model, sdr))


def test_a_fit_pooled_over_two_placed_frames_serves_both(pair):
    """Two frames of a pan (the second shows the scene 16 pixels further right), placed in
    common coordinates: one model predicts each from its own coordinates."""
    sdr, nits = pair
    h = sdr.shape[0]
    a_sdr, b_sdr, a_hdr, b_hdr = sdr[:, :64], sdr[:, 16:80], nits[:, :64], nits[:, 16:80]
    half = np.array([80 / 64, 1.0], np.float32)  # the union spans 80 pixels: 1.25 frame widths
    base = pixel_grid(h, 64).numpy()
    xy_a = ((base + np.array([0, 0], np.float32) - np.array([16 / 64, 0], np.float32)) / half).astype(np.float32)
    xy_b = ((base + np.array([32 / 64, 0], np.float32) - np.array([16 / 64, 0], np.float32)) / half).astype(np.float32)
    fit = fit_grid_model_pixels(np.concatenate([a_sdr.reshape(-1, 3), b_sdr.reshape(-1, 3)]),
                                np.concatenate([a_hdr.reshape(-1, 3), b_hdr.reshape(-1, 3)]),
                                np.concatenate([xy_a.reshape(-1, 2), xy_b.reshape(-1, 2)]),
                                GRID_SIZES["XS"], FAST)
    # the shared scene columns 16..63 get the same grid coordinates in both frames
    assert np.allclose(xy_a[:, 16:], xy_b[:, :48], atol=1e-6)
    pa, pb = predict_pq(fit.model, a_sdr, xy=xy_a), predict_pq(fit.model, b_sdr, xy=xy_b)
    assert np.allclose(pa[:, 16:], pb[:, :48], atol=1e-6)
    with pytest.raises(ValueError, match="guide features"):
        fit_grid_model_pixels(a_sdr.reshape(-1, 3), a_hdr.reshape(-1, 3), xy_a.reshape(-1, 2),
                              replace(GRID_SIZES["XS"], guides=1), FAST)
