"""Y'CbCr codes (BT.709-6 / BT.2020-2 / BT.2100-2 Table 9) and chroma subsampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from itmfilter.colour import ycbcr as yc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour warns about matplotlib being absent
    colour = pytest.importorskip("colour")

RNG = np.random.default_rng(11)
RGB = RNG.uniform(0.0, 1.0, (200, 3))
K_COLOUR = {"bt709": "ITU-R BT.709", "bt2020nc": "ITU-R BT.2020"}
MATRICES = sorted(yc.YCBCR_WEIGHTS)
BITS = [8, 10, 12]


def _unrounded_codes(rgb, matrix, bits, full_range):
    """Exact real-valued codes straight from the BT.2100-2 Table 9 formulas."""
    k_r, k_b = yc.YCBCR_WEIGHTS[matrix]
    r, g, b = np.moveaxis(np.asarray(rgb, float), -1, 0)
    y = k_r * r + (1 - k_r - k_b) * g + k_b * b
    cb, cr = (b - y) / (2 - 2 * k_b), (r - y) / (2 - 2 * k_r)
    if full_range:
        n = 2**bits - 1
        return np.stack([n * y, n * cb + 2 ** (bits - 1), n * cr + 2 ** (bits - 1)], -1)
    s = 2 ** (bits - 8)
    return np.stack([(219 * y + 16) * s, (224 * cb + 128) * s, (224 * cr + 128) * s], -1)


# --- Exact known codes ----------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize(
    ("bits", "full_range", "black", "white", "neutral"),
    [
        (8, False, 16, 235, 128),
        (10, False, 64, 940, 512),
        (12, False, 256, 3760, 2048),
        (8, True, 0, 255, 128),
        (10, True, 0, 1023, 512),
        (12, True, 0, 4095, 2048),
    ],
)
def test_black_white_neutral(matrix, bits, full_range, black, white, neutral):
    codes = yc.rgb_to_ycbcr([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]], matrix, bits, full_range)
    assert codes.dtype == np.uint16
    assert codes[0].tolist() == [black, neutral, neutral]
    assert codes[1].tolist() == [white, neutral, neutral]
    assert codes[2, 1:].tolist() == [neutral, neutral]


def test_known_primaries_10bit():
    # BT.709 10-bit narrow range colour bars: red (250, 409, 960), blue (127, 960, 471).
    assert yc.rgb_to_ycbcr([1.0, 0.0, 0.0], "bt709").tolist() == [250, 409, 960]
    assert yc.rgb_to_ycbcr([0.0, 0.0, 1.0], "bt709").tolist() == [127, 960, 471]
    # BT.2020: red Y = 64 + 876 * 0.2627 = 294.1 -> 294; Cr at its maximum 960.
    assert yc.rgb_to_ycbcr([1.0, 0.0, 0.0], "bt2020nc").tolist()[::2] == [294, 960]


@pytest.mark.parametrize(("bits", "lo", "hi"), [(8, 1, 254), (10, 4, 1019), (12, 16, 4079)])
def test_narrow_range_clips_to_valid_codes(bits, lo, hi):
    assert yc.ycbcr_code_range(bits) == (lo, hi)
    assert yc.ycbcr_code_range(bits, full_range=True) == (0, 2**bits - 1)
    codes = yc.rgb_to_ycbcr([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]], "bt709", bits)
    assert codes[0, 0] == hi and codes[1, 0] == lo
    assert codes[2, 1] == hi and codes[3, 2] == hi
    assert codes.min() >= lo and codes.max() <= hi
    full = yc.rgb_to_ycbcr([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]], "bt709", bits, full_range=True)
    assert full[0, 0] == 2**bits - 1 and full[1, 0] == 0


def test_rounding_half_up():
    # Y' chosen so (219 Y' + 16) * 4 lands exactly on .5: 64 + 876 y = 100.5 -> 101.
    y = 36.5 / 876
    assert yc.rgb_to_ycbcr([y, y, y], "bt709", 10)[0] == 101
    y = 37.5 / 876  # 101.5 -> 102 (np.round would give 102 too; 100.5 is where they differ)
    assert yc.rgb_to_ycbcr([y, y, y], "bt709", 10)[0] == 102


# --- colour-science as oracle ---------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("full_range", [False, True])
def test_matches_colour(matrix, bits, full_range):
    k = colour.WEIGHTS_YCBCR[K_COLOUR[matrix]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = colour.RGB_to_YCbCr(RGB, K=k, out_bits=bits, out_legal=not full_range, out_int=True)
    ours = yc.rgb_to_ycbcr(RGB, matrix, bits, full_range)
    np.testing.assert_array_equal(ours, oracle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = colour.YCbCr_to_RGB(ours, K=k, in_bits=bits, in_legal=not full_range, in_int=True)
    np.testing.assert_allclose(yc.ycbcr_to_rgb(ours, matrix, bits, full_range), back, atol=1e-12)


# --- Round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("full_range", [False, True])
def test_round_trip_within_half_a_code(matrix, bits, full_range):
    codes = yc.rgb_to_ycbcr(RGB, matrix, bits, full_range)
    exact = _unrounded_codes(RGB, matrix, bits, full_range)
    assert np.abs(codes - exact).max() <= 0.5 + 1e-9
    rgb_back = yc.ycbcr_to_rgb(codes, matrix, bits, full_range)
    # Decoded R'G'B' re-encodes (unrounded) to within half a code of the original...
    assert np.abs(_unrounded_codes(rgb_back, matrix, bits, full_range) - exact).max() <= 0.5 + 1e-9
    # ...and to exactly the same integer codes.
    np.testing.assert_array_equal(yc.rgb_to_ycbcr(rgb_back, matrix, bits, full_range), codes)


@pytest.mark.parametrize("matrix", MATRICES)
def test_codes_to_rgb_to_codes_is_identity(matrix):
    codes = np.stack(np.meshgrid(np.arange(64, 941, 73), np.arange(64, 961, 64), np.arange(64, 961, 64)), -1)
    codes = codes.reshape(-1, 3).astype(np.uint16)
    rgb = yc.ycbcr_to_rgb(codes, matrix, 10)
    inside = np.all((rgb >= 0) & (rgb <= 1), axis=-1)
    np.testing.assert_array_equal(yc.rgb_to_ycbcr(rgb[inside], matrix, 10), codes[inside])


# --- Shapes, dtypes, bad input --------------------------------------------------------


def test_shapes_and_dtypes():
    img = RNG.uniform(0, 1, (4, 5, 3))
    codes = yc.rgb_to_ycbcr(img, "bt2020nc")
    assert codes.shape == (4, 5, 3) and codes.dtype == np.uint16
    assert yc.rgb_to_ycbcr(img.astype(np.float32), "bt2020nc").dtype == np.uint16
    back = yc.ycbcr_to_rgb(codes, "bt2020nc")
    assert back.shape == (4, 5, 3) and back.dtype == np.float64
    assert yc.ycbcr_to_rgb(codes, "bt2020nc", dtype=np.float32).dtype == np.float32
    assert yc.rgb_to_ycbcr([0.2, 0.3, 0.4]).shape == (3,)


def test_nan_inf_do_not_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = yc.rgb_to_ycbcr([[np.nan, np.nan, np.nan], [np.inf, np.inf, np.inf], [-np.inf, 0.0, 0.0]])
    assert codes[0].tolist() == [64, 512, 512]  # NaN counts as black
    assert codes[1].tolist() == [940, 512, 512]  # +inf as 1
    assert codes[2].tolist() == [64, 512, 512]
    assert np.isnan(yc.ycbcr_to_rgb([np.nan, 512, 512])).any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="matrix"):
        yc.rgb_to_ycbcr([0, 0, 0], "bt601")
    with pytest.raises(ValueError, match="bit depth"):
        yc.rgb_to_ycbcr([0, 0, 0], bits=7)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        yc.rgb_to_ycbcr(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        yc.ycbcr_to_rgb(np.zeros(4))


# --- Chroma subsampling ---------------------------------------------------------------


def test_subsample_known_values():
    row = np.array([0.0, 4.0, 8.0, 12.0, 16.0])
    plane = np.stack([row, row + 20.0, row + 40.0])  # 3 x 5
    ycbcr = np.stack([plane, plane, -plane], axis=-1)
    y, cb, cr = yc.subsample_chroma(ycbcr, "422")
    np.testing.assert_array_equal(y, plane)
    # [1, 2, 1] / 4 at columns 0, 2, 4 with the edge sample repeated.
    np.testing.assert_allclose(cb[0], [1.0, 8.0, 15.0])
    np.testing.assert_allclose(cr, -cb)
    y, cb, cr = yc.subsample_chroma(ycbcr, "420")
    assert cb.shape == (2, 3)
    # Rows (0, 1) averaged; the odd last row pairs with itself.
    np.testing.assert_allclose(cb[:, 0], [(1.0 + 21.0) / 2, 41.0])


@pytest.mark.parametrize(
    ("mode", "shape", "chroma_shape"),
    [("420", (6, 8), (3, 4)), ("420", (5, 7), (3, 4)), ("422", (5, 7), (5, 4)), ("444", (5, 7), (5, 7))],
)
def test_subsample_shapes_and_upsample_back(mode, shape, chroma_shape):
    ycbcr = RNG.uniform(0, 1, (*shape, 3))
    y, cb, cr = yc.subsample_chroma(ycbcr, mode)
    assert y.shape == shape and cb.shape == chroma_shape and cr.shape == chroma_shape
    out = yc.upsample_chroma(y, cb, cr, mode)
    assert out.shape == (*shape, 3) and out.dtype == np.float64
    np.testing.assert_array_equal(out[..., 0], ycbcr[..., 0])
    if mode == "444":
        np.testing.assert_array_equal(out, ycbcr)


@pytest.mark.parametrize("mode", ["420", "422"])
@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_linear_ramp_survives_siting(mode, shape):
    # A chroma ramp linear in x and y is rebuilt exactly away from the edges only if the
    # down- and up-sampler agree on where chroma samples sit (chroma_loc_type 0).
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ramp = 3.0 * xx + 5.0 * yy
    ycbcr = np.stack([ramp, ramp, 2 * ramp], axis=-1)
    out = yc.upsample_chroma(*yc.subsample_chroma(ycbcr, mode), mode)
    # Edge chroma samples repeat the border pixel, so skip the luma that depends on them.
    rows = slice(1, h - 2) if mode == "420" else slice(None)
    cols = slice(2, w - 2)
    np.testing.assert_allclose(out[rows, cols], ycbcr[rows, cols], atol=1e-12)


def test_vertical_upsample_weights():
    # 4:2:0 chroma rows sit at luma rows 0.5, 2.5: luma row 1 is 3/4 * c0 + 1/4 * c1.
    y = np.zeros((4, 2))
    cb = np.array([[0.0], [8.0]])
    out = yc.upsample_chroma(y, cb, cb, "420")
    np.testing.assert_allclose(out[:, 0, 1], [0.0, 2.0, 6.0, 8.0])


def test_subsample_integer_codes():
    codes = yc.rgb_to_ycbcr(RNG.uniform(0, 1, (6, 7, 3)), "bt2020nc")
    y, cb, cr = yc.subsample_chroma(codes, "420")
    assert y.dtype == cb.dtype == np.uint16
    flat = np.full((4, 4, 3), 512, np.uint16)
    y, cb, cr = yc.subsample_chroma(flat, "420")
    np.testing.assert_array_equal(cb, 512)
    out = yc.upsample_chroma(y, cb, cr, "420")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, flat)
    # Rounded half up: [1, 2, 1] / 4 of (1, 1, 3) around column 2 is 1.5 -> 2.
    plane = np.array([[1, 1, 1, 3]], np.uint16)
    _, cb, _ = yc.subsample_chroma(np.stack([plane] * 3, -1), "422")
    assert cb.tolist() == [[1, 2]]


def test_subsample_batch_and_errors():
    batch = RNG.uniform(0, 1, (2, 4, 6, 3))
    y, cb, cr = yc.subsample_chroma(batch, "420")
    assert y.shape == (2, 4, 6) and cb.shape == (2, 2, 3)
    assert yc.upsample_chroma(y, cb, cr, "420").shape == (2, 4, 6, 3)
    with pytest.raises(ValueError, match="subsampling"):
        yc.subsample_chroma(batch, "411")
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        yc.subsample_chroma(np.zeros((4, 3)), "420")
    with pytest.raises(ValueError, match="must have shape"):
        yc.upsample_chroma(np.zeros((4, 6)), np.zeros((4, 6)), np.zeros((4, 6)), "420")


def test_subsample_nan_does_not_crash():
    ycbcr = np.zeros((4, 4, 3))
    ycbcr[0, 0, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cb, cr = yc.subsample_chroma(ycbcr, "420")
        out = yc.upsample_chroma(y, cb, cr, "420")
    assert np.isnan(cb[0, 0]) and np.all(np.isfinite(cr))
    assert np.isnan(out[0, 0, 1])
