"""The torch 4:2:0 conversions against the exact numpy ones (the player's GPU path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from itmfilter.colour.tensor import planes420_to_rgb, rgb_to_planes420
from itmfilter.colour.ycbcr import rgb_to_ycbcr, subsample_chroma, upsample_chroma, ycbcr_to_rgb


@pytest.mark.parametrize("shape", [(2, 2), (5, 3), (7, 9), (36, 64), (135, 240)])
@pytest.mark.parametrize("bits,full", [(8, False), (8, True), (10, False), (10, True)])
def test_planes420_to_rgb_matches_numpy(shape, bits, full):
    rng = np.random.default_rng(sum(shape) + bits)
    h, w = shape
    hi = 2**bits
    y = rng.integers(0, hi, (h, w)).astype(np.uint16)
    cb = rng.integers(0, hi, ((h + 1) // 2, (w + 1) // 2)).astype(np.uint16)
    cr = rng.integers(0, hi, cb.shape).astype(np.uint16)
    ref = np.clip(ycbcr_to_rgb(upsample_chroma(y.astype(np.float64), cb, cr, "420"), "bt709", bits, full), 0, 1)
    t = [torch.from_numpy(p.astype(np.int32)) for p in (y, cb, cr)]
    got = planes420_to_rgb(*t, bits=bits, full_range=full).numpy()
    assert got.shape == (h, w, 3)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 2), (5, 3), (7, 9), (36, 64), (135, 240)])
@pytest.mark.parametrize("bits,full,matrix", [(10, False, "bt2020nc"), (10, True, "bt2020nc"), (8, False, "bt709"), (12, False, "bt2020nc")])
def test_rgb_to_planes420_matches_numpy(shape, bits, full, matrix):
    rng = np.random.default_rng(sum(shape) * bits)
    rgb = rng.uniform(-0.05, 1.05, (*shape, 3)).astype(np.float32)
    want = subsample_chroma(rgb_to_ycbcr(rgb, matrix, bits, full), "420")
    got = rgb_to_planes420(torch.from_numpy(rgb), bits=bits, full_range=full, matrix=matrix)
    for g, w in zip(got, want):
        g = g.numpy()
        assert g.shape == w.shape
        diff = np.abs(g - w.astype(np.int64))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 1e-3


def test_rgb_to_planes420_nan_and_inf_do_not_crash():
    rgb = torch.tensor([[[float("nan"), float("inf"), -float("inf")]] * 2] * 2)
    y, cb, cr = rgb_to_planes420(rgb)
    want = subsample_chroma(rgb_to_ycbcr(rgb.numpy(), "bt2020nc", 10, False), "420")
    for g, w in zip((y, cb, cr), want):
        np.testing.assert_array_equal(g.numpy(), w.astype(np.int64))
