"""Grid models beyond one still: explicit grid coordinates (a video shot's frames placed by
the camera's motion) and fits pooled over several pictures."""

import numpy as np
import pytest

from itmfilter.colour.tonecurves import get_curve
from itmfilter.colour.transfer import eotf_st2084
from itmfilter.data import sample_path
from itmfilter.media.stills import read_hdr
from itmfilter.model.grid import (
    GRID_SIZES,
    GridFitOptions,
    fit_grid_model,
    fit_grid_model_pixels,
    predict_pq,
)
from itmfilter.model.net import pixel_grid
from itmfilter.quality.metrics import psnr_pu21

FAST = GridFitOptions(steps=80, batch=1024, finetune_steps=20)


@pytest.fixture(scope="module")
def pair():
    nits = read_hdr(sample_path()).nits[:64, :96].astype(np.float32)
    sdr = (np.round(np.clip(get_curve("local").forward(nits), 0, 1) * 255) / 255).astype(np.float32)
    return sdr, np.ascontiguousarray(nits)


def test_explicit_coordinates_match_the_default_and_move_the_grid(pair):
    sdr, nits = pair
    fit = fit_grid_model(sdr, nits, GRID_SIZES["XS"], FAST)
    h, w, _ = sdr.shape
    xy = pixel_grid(h, w).numpy()
    assert np.array_equal(predict_pq(fit.model, sdr), predict_pq(fit.model, sdr, xy=xy))
    moved = predict_pq(fit.model, sdr, xy=xy + np.float32(0.3))
    assert not np.array_equal(moved, predict_pq(fit.model, sdr))


def test_a_fit_pooled_over_two_placed_frames_serves_both():
    """Two frames of a pan over a scene whose HDR/SDR gain rises 4x from left to right (the
    second frame shows the scene 16 pixels further right), placed in common coordinates:
    one model serves each frame from its own coordinates, and ignoring the motion costs."""
    rng = np.random.default_rng(0)
    h, w, pan = 32, 64, 16
    scene_sdr = np.round(rng.uniform(0.2, 0.8, (h, w + pan, 1)).repeat(3, -1) * 255).astype(np.float32) / 255
    gain = np.linspace(1.0, 4.0, w + pan, dtype=np.float32)[None, :, None]
    scene_hdr = (100 * scene_sdr ** 2.4 * gain).astype(np.float32)
    a_sdr, b_sdr, a_hdr, b_hdr = scene_sdr[:, :w], scene_sdr[:, pan:], scene_hdr[:, :w], scene_hdr[:, pan:]
    half = np.array([(w + pan) / w, 1.0], np.float32)  # the union spans 1.25 frame widths
    centre = np.array([pan / w, 0.0], np.float32)  # halfway between the two frames' shifts
    base = pixel_grid(h, w).numpy()
    xy_a = ((base - centre) / half).astype(np.float32)
    xy_b = ((base + np.array([2 * pan / w, 0], np.float32) - centre) / half).astype(np.float32)
    # the shared scene columns get the same grid coordinates in both frames
    assert np.allclose(xy_a[:, pan:], xy_b[:, : w - pan], atol=1e-6)
    fit = fit_grid_model_pixels(np.concatenate([a_sdr.reshape(-1, 3), b_sdr.reshape(-1, 3)]),
                                np.concatenate([a_hdr.reshape(-1, 3), b_hdr.reshape(-1, 3)]),
                                np.concatenate([xy_a.reshape(-1, 2), xy_b.reshape(-1, 2)]),
                                GRID_SIZES["XS"], GridFitOptions(steps=200, batch=1024, finetune_steps=40))
    pa, pb = predict_pq(fit.model, a_sdr, xy=xy_a), predict_pq(fit.model, b_sdr, xy=xy_b)
    assert np.allclose(pa[:, pan:], pb[:, : w - pan], atol=1e-6)
    right_a, right_b = psnr_pu21(a_hdr, eotf_st2084(pa)), psnr_pu21(b_hdr, eotf_st2084(pb))
    wrong_b = psnr_pu21(b_hdr, eotf_st2084(predict_pq(fit.model, b_sdr, xy=xy_a)))
    assert min(right_a, right_b) > wrong_b + 3
