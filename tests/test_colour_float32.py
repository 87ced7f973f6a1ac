"""The fast (blocked, float32) paths of the Y'CbCr and transfer functions against the
float64 formulas: same codes, and float32 results within stated float32 tolerances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from itmfilter.colour import transfer as tf
from itmfilter.colour import ycbcr as yc

RNG = np.random.default_rng(7)
MATRICES = sorted(yc.YCBCR_WEIGHTS)
# Odd sizes and more pixels than one block (yc._PIXELS_PER_BLOCK, tf._BLOCK), so block
# edges and 4:2:0 edge rows/columns are exercised.
SHAPE = (67, 301)


def _exact_codes(rgb64, matrix, bits, full_range):
    """Unrounded float64 codes straight from BT.2100-2 Table 9 (no clipping)."""
    k_r, k_b = yc.YCBCR_WEIGHTS[matrix]
    r, g, b = np.moveaxis(rgb64, -1, 0)
    y = k_r * r + (1 - k_r - k_b) * g + k_b * b
    cb, cr = (b - y) / (2 - 2 * k_b), (r - y) / (2 - 2 * k_r)
    if full_range:
        n = 2**bits - 1
        return np.stack([n * y, n * cb + 2 ** (bits - 1), n * cr + 2 ** (bits - 1)], -1)
    s = 2 ** (bits - 8)
    return np.stack([(219 * y + 16) * s, (224 * cb + 128) * s, (224 * cr + 128) * s], -1)


# --- rgb_to_ycbcr ----------------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("full_range", [False, True])
def test_rgb_to_ycbcr_float32_codes_match_float64(matrix, bits, full_range):
    rgb32 = RNG.uniform(0.0, 1.0, (*SHAPE, 3)).astype(np.float32)
    rgb64 = rgb32.astype(np.float64)
    codes = yc.rgb_to_ycbcr(rgb32, matrix, bits, full_range)
    np.testing.assert_array_equal(codes, yc.rgb_to_ycbcr(rgb64, matrix, bits, full_range))
    exact = np.clip(_exact_codes(rgb64, matrix, bits, full_range), *yc.ycbcr_code_range(bits, full_range))
    # Identical to Floor(x + 0.5) of the exact value, except within 1e-6 of a .5 boundary.
    off_boundary = np.abs(exact - np.floor(exact) - 0.5) > 1e-6
    np.testing.assert_array_equal(codes[off_boundary], np.floor(exact[off_boundary] + 0.5))
    assert np.abs(codes - exact).max() <= 0.5 + 1e-6


def test_rgb_to_ycbcr_non_finite_in_any_block():
    rgb = RNG.uniform(0.0, 1.0, (*SHAPE, 3)).astype(np.float32)
    rgb[-1, -1] = [np.nan, np.inf, -np.inf]
    rgb[0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = yc.rgb_to_ycbcr(rgb, "bt2020nc")
    assert codes[0, 0].tolist() == [64, 512, 512]
    np.testing.assert_array_equal(codes[-1, -1], yc.rgb_to_ycbcr([0.0, 1.0, 0.0], "bt2020nc"))
    np.testing.assert_array_equal(codes[1:-1], yc.rgb_to_ycbcr(rgb[1:-1].astype(np.float64), "bt2020nc"))


def test_rgb_to_ycbcr_non_contiguous_input():
    rgb = RNG.uniform(0.0, 1.0, (3, *SHAPE[::-1])).astype(np.float32)
    view = np.moveaxis(rgb, 0, -1)  # channel-last view with channel stride > 1
    np.testing.assert_array_equal(yc.rgb_to_ycbcr(view), yc.rgb_to_ycbcr(np.ascontiguousarray(view)))


# --- ycbcr_to_rgb ----------------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("full_range", [False, True])
def test_ycbcr_to_rgb_float32_within_float32_rounding(matrix, bits, full_range):
    lo, hi = yc.ycbcr_code_range(bits, full_range)
    codes = RNG.integers(lo, hi, (*SHAPE, 3), endpoint=True).astype(np.uint16)
    ref = yc.ycbcr_to_rgb(codes, matrix, bits, full_range)
    assert ref.dtype == np.float64
    for given in (codes, codes.astype(np.float32)):
        fast = yc.ycbcr_to_rgb(given, matrix, bits, full_range, dtype=np.float32)
        assert fast.dtype == np.float32 and fast.shape == codes.shape
        # R'G'B' spans about [-0.6, 1.6]: a few float32 ulps of 1.
        np.testing.assert_allclose(fast, ref, rtol=0, atol=5e-7)


def test_ycbcr_to_rgb_float32_re_encodes_to_same_codes():
    codes = np.stack(np.meshgrid(np.arange(64, 941, 7), np.arange(64, 961, 32), np.arange(64, 961, 32)), -1)
    codes = codes.reshape(-1, 3).astype(np.uint16)
    rgb = yc.ycbcr_to_rgb(codes, "bt2020nc", 10, dtype=np.float32)
    inside = np.all((rgb >= 0) & (rgb <= 1), axis=-1)
    np.testing.assert_array_equal(yc.rgb_to_ycbcr(rgb[inside], "bt2020nc", 10), codes[inside])


# --- Chroma subsampling ----------------------------------------------------------------


def _round_half_up(x):
    return np.floor(x + 0.5)


@pytest.mark.parametrize("mode", ["420", "422", "444"])
@pytest.mark.parametrize("shape", [SHAPE, (1, 1), (2, 3), (5, 4)])
def test_subsample_integer_codes_are_exact(mode, shape):
    codes = RNG.integers(0, 1023, (*shape, 3), endpoint=True).astype(np.uint16)
    y, cb, cr = yc.subsample_chroma(codes, mode)
    _, cb64, cr64 = yc.subsample_chroma(codes.astype(np.float64), mode)
    assert y.dtype == cb.dtype == cr.dtype == np.uint16
    np.testing.assert_array_equal(y, codes[..., 0])
    np.testing.assert_array_equal(cb, _round_half_up(cb64))
    np.testing.assert_array_equal(cr, _round_half_up(cr64))


@pytest.mark.parametrize("mode", ["420", "422"])
def test_subsample_float32_within_float32_rounding(mode):
    ycbcr = RNG.uniform(-1.0, 1.0, (*SHAPE, 3)).astype(np.float32)
    fast = yc.subsample_chroma(ycbcr, mode)
    ref = yc.subsample_chroma(ycbcr.astype(np.float64), mode)
    for f, r in zip(fast, ref):
        assert f.dtype == np.float32
        np.testing.assert_allclose(f, r, rtol=0, atol=2e-7)  # 2 ulp of 1


@pytest.mark.parametrize("mode", ["420", "422", "444"])
@pytest.mark.parametrize("shape", [SHAPE, (1, 1), (2, 3), (5, 4)])
def test_upsample_float32_luma_with_integer_chroma_is_exact(mode, shape):
    # The decoder's case: 10-bit chroma planes, float32 luma -> float32 (H, W, 3).
    codes = RNG.integers(0, 1023, (*shape, 3), endpoint=True).astype(np.uint16)
    y, cb, cr = yc.subsample_chroma(codes, mode)
    fast = yc.upsample_chroma(y.astype(np.float32), cb, cr, mode)
    ref = yc.upsample_chroma(y.astype(np.float64), cb.astype(np.float64), cr.astype(np.float64), mode)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast, ref.astype(np.float32))
    as_codes = yc.upsample_chroma(y, cb, cr, mode)
    assert as_codes.dtype == np.uint16
    np.testing.assert_array_equal(as_codes, _round_half_up(ref))


@pytest.mark.parametrize("mode", ["420", "422"])
def test_upsample_float32_chroma_within_float32_rounding(mode):
    ycbcr = RNG.uniform(-1.0, 1.0, (*SHAPE, 3)).astype(np.float32)
    planes = yc.subsample_chroma(ycbcr, mode)
    fast = yc.upsample_chroma(*planes, mode)
    ref = yc.upsample_chroma(*(p.astype(np.float64) for p in planes), mode)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2e-7)


# --- Transfer functions ----------------------------------------------------------------

# (function, float32 input, rtol, atol) with tolerances in the function's output units.
TRANSFER = {
    "eotf_st2084": (tf.eotf_st2084, np.linspace(0.0, 1.0, 100_003), 1e-4, 1e-6),  # cd/m2
    "eotf_inverse_st2084": (tf.eotf_inverse_st2084, np.geomspace(1e-4, 1e4, 100_003), 0, 2e-5),  # PQ code
    "eotf_bt1886": (tf.eotf_bt1886, np.linspace(0.0, 1.0, 100_003), 5e-6, 1e-6),  # cd/m2
}


@pytest.mark.parametrize("name", sorted(TRANSFER))
def test_transfer_float32_within_tolerance(name):
    fn, x, rtol, atol = TRANSFER[name]
    x32 = x.astype(np.float32)
    fast = fn(x32)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, fn(x32.astype(np.float64)), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(TRANSFER))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transfer_blocks_do_not_change_bits(name, dtype):
    fn, x, _, _ = TRANSFER[name]
    frame = x[: 3 * 11 * 1013].astype(dtype).reshape(11, 1013, 3)  # > one block, odd tail
    frame[5, 7] = [np.nan, np.inf, -np.inf]
    whole = fn(frame)
    assert whole.shape == frame.shape and whole.dtype == dtype
    by_row = np.stack([fn(row) for row in frame])
    np.testing.assert_array_equal(whole, by_row)
    np.testing.assert_array_equal(fn(frame[:, ::2, ::-1]), whole[:, ::2, ::-1])  # strided view
    assert np.isnan(whole[5, 7, 0]) and np.all(np.isfinite(whole[5, 7, 1:]))
