"""The grid fit's weight on clipped SDR pixels, and a loss whose gradient stays finite."""

import dataclasses

import numpy as np
import pytest
import torch

from itmfilter.colour.tonecurves import get_curve
from itmfilter.data import sample_path
from itmfilter.encode.still_rate import STILL_FIT, choose_payload
from itmfilter.media.stills import read_hdr
from itmfilter.model.grid import CLIPPED_CODE, GRID_SIZES, GridFitOptions, _loss, fit_grid_model, predict_nits
from itmfilter.model.residual import highlight_mask
from itmfilter.quality.metrics import pu21_encode


@pytest.fixture(scope="module")
def pair():
    nits = read_hdr(sample_path()).nits.astype(np.float32)
    sdr = (np.round(np.clip(get_curve("local").forward(nits), 0, 1) * 255) / 255).astype(np.float32)
    return sdr, np.ascontiguousarray(nits)


def _mse(ref, test, mask):
    e = (pu21_encode(np.clip(ref, 0, 1e4).astype(np.float64)) - pu21_encode(np.clip(test, 0, 1e4).astype(np.float64))) ** 2
    return float(e[mask].mean())


def test_the_loss_gradient_is_finite_at_and_below_black():
    # the ST 2084 EOTF's x^(1/m2) has an infinite slope at 0: an output at or below 0 made the
    # gradient 0 x inf = NaN, and one such pixel in a batch turned the whole fit NaN
    out = torch.tensor([[-0.2, 0.0, 0.3], [0.0, 0.0, 0.0], [0.5, 0.6, 0.7]], requires_grad=True)
    target = torch.full((3, 3), 100.0)
    _loss(out, target, None, 0.0).backward()
    assert torch.isfinite(out.grad).all(), out.grad
    assert (out.grad[2] != 0).all()


def test_stills_weigh_clipped_pixels_down():
    assert STILL_FIT.clipped_weight < 1 and GridFitOptions().clipped_weight == 1


def test_a_lower_clipped_weight_fits_the_unclipped_pixels_better(pair):
    sdr, nits = pair
    clipped = highlight_mask(sdr, CLIPPED_CODE)
    assert 0.005 < clipped.mean() < 0.9  # the sample's local grade clips its sky and highlights
    opts = GridFitOptions(steps=600, batch=2048, finetune_steps=300)
    fits = {w: fit_grid_model(sdr, nits, GRID_SIZES["S"], dataclasses.replace(opts, clipped_weight=w)) for w in (1.0, 0.1)}
    out = {w: predict_nits(f.model, sdr) for w, f in fits.items()}
    # the model's capacity moves to where it is the whole answer, away from where it cannot be
    assert _mse(nits, out[0.1], ~clipped) < 0.8 * _mse(nits, out[1.0], ~clipped)
    assert _mse(nits, out[0.1], clipped) > _mse(nits, out[1.0], clipped)


def test_stills_also_try_the_budgets_own_size_at_weight_1(pair):
    # weight 0.1 loses a little where the model is near exact off the clipped pixels (a global
    # curve): the budget's own grid size is fitted at weight 1 too, and the better payload wins
    sdr, nits = pair
    fast = GridFitOptions(steps=60, batch=1024, finetune_steps=30, clipped_weight=0.1)
    names = {c.name.split("+")[0] for c in choose_payload(sdr, nits, 4096, fit_options=fast).candidates}
    assert {"grid-XS", "grid-XS-w1"} <= names, names
    names = {c.name.split("+")[0] for c in choose_payload(sdr, nits, 4096, fit_options=dataclasses.replace(fast, clipped_weight=1.0)).candidates}
    assert "grid-XS" in names and not any(n.endswith("-w1") for n in names), names
