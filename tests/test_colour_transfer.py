"""Transfer functions: published reference values, colour-science as oracle, round trips,
shapes, dtypes and NaN/inf handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from itmfilter.colour import transfer as tf

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour warns about matplotlib being absent
    colour = pytest.importorskip("colour")
    cm = colour.models

GRID = np.linspace(0.0, 1.0, 257)
RNG = np.random.default_rng(20240601)
RGB01 = RNG.uniform(0.0, 1.0, (64, 3))

# (forward, inverse, sample points in the forward domain, kwargs) for every scalar curve.
SCALAR_CURVES = {
    # PQ code 0 decodes to 0 cd/m2 but 0 cd/m2 encodes to c1 ** m2 = 7.3e-7: start above 0.
    "st2084": (tf.eotf_st2084, tf.eotf_inverse_st2084, GRID[1:], {}),
    "hlg_oetf": (tf.oetf_bt2100_hlg, tf.oetf_inverse_bt2100_hlg, GRID, {}),
    "bt1886": (tf.eotf_bt1886, tf.eotf_inverse_bt1886, GRID, {}),
    "bt1886_black": (tf.eotf_bt1886, tf.eotf_inverse_bt1886, GRID, {"l_w": 300.0, "l_b": 0.05}),
    "srgb": (tf.eotf_srgb, tf.eotf_inverse_srgb, GRID, {}),
    "bt709": (tf.oetf_bt709, tf.oetf_inverse_bt709, GRID, {}),
}
RGB_CURVES = {
    "hlg_ootf": (tf.ootf_bt2100_hlg, tf.ootf_inverse_bt2100_hlg),
    "hlg_eotf": (tf.eotf_bt2100_hlg, tf.eotf_inverse_bt2100_hlg),
}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --- Published reference values -------------------------------------------------------


def test_constants():
    assert tf.PQ_PEAK_NITS == 10000.0
    assert tf.SDR_PEAK_NITS == 100.0
    assert tf.SDR_WHITE_NITS_BT2408 == 203.0
    assert tf.HLG_PEAK_NITS == 1000.0


def test_st2084_reference_values():
    # colour-science / ST 2084 reference: 100 cd/m2 -> 0.508078421517399.
    assert tf.eotf_inverse_st2084(100) == pytest.approx(0.508078421517399, abs=1e-15)
    assert tf.eotf_st2084(0.508078421517399) == pytest.approx(100.0, rel=1e-12)
    assert tf.eotf_st2084(0.0) == 0.0
    assert tf.eotf_st2084(1.0) == pytest.approx(10000.0, rel=1e-12)
    assert tf.eotf_inverse_st2084(0.0) == pytest.approx(_PQ_C1_M2 := (3424 / 4096) ** (2523 / 32), abs=1e-15)
    assert _PQ_C1_M2 < 1e-6  # PQ code 0 is (practically) 0 cd/m2
    assert tf.eotf_inverse_st2084(10000.0) == pytest.approx(1.0, abs=1e-15)
    # BT.2408-7 Table 1: 203 cd/m2 reference white is 58 % PQ; 1000 cd/m2 is 75 %.
    assert round(float(tf.eotf_inverse_st2084(203.0)) * 100) == 58
    assert round(float(tf.eotf_inverse_st2084(1000.0)) * 100) == 75


def test_hlg_reference_values():
    assert tf.oetf_bt2100_hlg(1 / 12) == pytest.approx(0.5, abs=1e-15)
    assert tf.oetf_bt2100_hlg(1.0) == pytest.approx(1.0, abs=1e-7)  # 8-digit a, b, c
    assert tf.oetf_bt2100_hlg(0.0) == 0.0
    assert tf.oetf_inverse_bt2100_hlg(0.5) == pytest.approx(1 / 12, abs=1e-15)
    assert tf.gamma_bt2100_hlg(1000.0) == pytest.approx(1.2)
    assert tf.gamma_bt2100_hlg(2000.0) == pytest.approx(1.2 + 0.42 * np.log10(2))
    # BT.2408-7: HLG reference white 75 % signal -> 203 cd/m2 on a 1000 cd/m2 display.
    white = tf.eotf_bt2100_hlg([0.75, 0.75, 0.75])
    np.testing.assert_allclose(white, 203.0, atol=0.5)
    np.testing.assert_allclose(tf.eotf_bt2100_hlg([1.0, 1.0, 1.0]), 1000.0, rtol=1e-7)
    # BT.2100-2 black lift: signal 0 shows the display black L_B.
    np.testing.assert_allclose(tf.eotf_bt2100_hlg([0.0, 0.0, 0.0], l_w=1000.0, l_b=0.01), 0.01, rtol=1e-10)


def test_bt1886_reference_values():
    assert tf.eotf_bt1886(1.0) == pytest.approx(100.0)
    assert tf.eotf_bt1886(0.0) == 0.0
    assert tf.eotf_bt1886(0.5) == pytest.approx(100.0 * 0.5**2.4)
    assert tf.eotf_bt1886(0.0, l_w=100.0, l_b=0.1) == pytest.approx(0.1)
    assert tf.eotf_bt1886(1.0, l_w=100.0, l_b=0.1) == pytest.approx(100.0)
    # colour-science docstring value: eotf_BT1886(0.409007728864150) ~ 0.1169918 (L_W = 1).
    assert tf.eotf_bt1886(0.409007728864150, l_w=1.0) == pytest.approx(0.11699185725296059, rel=1e-12)


def test_srgb_and_bt709_reference_values():
    assert tf.eotf_srgb(0.461356129500442) == pytest.approx(0.18, rel=1e-12)  # 18 % grey
    assert tf.eotf_inverse_srgb(0.0031308) == pytest.approx(0.04045, abs=1e-6)
    assert tf.eotf_srgb(1.0) == pytest.approx(1.0)
    assert tf.oetf_bt709(0.18) == pytest.approx(0.409007728864150, rel=1e-12)
    assert tf.oetf_bt709(1.0) == pytest.approx(1.0)
    assert tf.oetf_bt709(0.018) == pytest.approx(0.081, abs=1e-3)  # continuity at the break


# --- colour-science as oracle ---------------------------------------------------------


def test_st2084_matches_colour():
    np.testing.assert_allclose(tf.eotf_st2084(GRID), cm.eotf_ST2084(GRID), rtol=1e-12, atol=1e-12)
    nits = np.geomspace(1e-4, 1e4, 200)
    np.testing.assert_allclose(tf.eotf_inverse_st2084(nits), cm.eotf_inverse_ST2084(nits), rtol=1e-12)


def test_hlg_oetf_matches_colour():
    np.testing.assert_allclose(tf.oetf_bt2100_hlg(GRID), _quiet(cm.oetf_BT2100_HLG, GRID), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        tf.oetf_inverse_bt2100_hlg(GRID), _quiet(cm.oetf_inverse_BT2100_HLG, GRID), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("l_w", [400.0, 1000.0, 2000.0])
def test_hlg_ootf_matches_colour(l_w):
    np.testing.assert_allclose(
        tf.ootf_bt2100_hlg(RGB01, l_w=l_w), _quiet(cm.ootf_BT2100_HLG, RGB01, 0, l_w), rtol=1e-12
    )
    nits = RGB01 * l_w * 0.9
    np.testing.assert_allclose(
        tf.ootf_inverse_bt2100_hlg(nits, l_w=l_w), _quiet(cm.ootf_inverse_BT2100_HLG, nits, 0, l_w), rtol=1e-12
    )


@pytest.mark.parametrize(("l_w", "l_b"), [(1000.0, 0.0), (1000.0, 0.01), (2000.0, 0.005), (600.0, 0.1)])
def test_hlg_eotf_matches_colour(l_w, l_b):
    np.testing.assert_allclose(
        tf.eotf_bt2100_hlg(RGB01, l_w=l_w, l_b=l_b), _quiet(cm.eotf_BT2100_HLG, RGB01, l_b, l_w), rtol=1e-11
    )
    # Display light the HLG display can show (colour extrapolates outside it, we clip).
    nits = tf.eotf_bt2100_hlg(np.clip(RGB01, 0.05, 1.0), l_w=l_w, l_b=l_b)
    np.testing.assert_allclose(
        tf.eotf_inverse_bt2100_hlg(nits, l_w=l_w, l_b=l_b),
        _quiet(cm.eotf_inverse_BT2100_HLG, nits, l_b, l_w),
        rtol=1e-11,
    )


@pytest.mark.parametrize(("l_w", "l_b"), [(100.0, 0.0), (100.0, 0.1), (300.0, 0.05)])
def test_bt1886_matches_colour(l_w, l_b):
    np.testing.assert_allclose(tf.eotf_bt1886(GRID, l_w, l_b), cm.eotf_BT1886(GRID, l_b, l_w), rtol=1e-12)
    nits = np.linspace(l_b, l_w, 101)
    np.testing.assert_allclose(
        tf.eotf_inverse_bt1886(nits, l_w, l_b), cm.eotf_inverse_BT1886(nits, l_b, l_w), rtol=1e-10, atol=1e-12
    )


def test_srgb_and_bt709_match_colour():
    # colour puts the sRGB decode break at eotf_inverse_sRGB(0.0031308) = 0.0404499..., the
    # standard at 0.04045; the curve is continuous there, so both agree to 1e-9.
    np.testing.assert_allclose(tf.eotf_srgb(GRID), cm.eotf_sRGB(GRID), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tf.eotf_inverse_srgb(GRID), cm.eotf_inverse_sRGB(GRID), rtol=1e-12)
    np.testing.assert_allclose(tf.oetf_bt709(GRID), cm.oetf_BT709(GRID), rtol=1e-12)
    np.testing.assert_allclose(tf.oetf_inverse_bt709(GRID), cm.oetf_inverse_BT709(GRID), rtol=1e-9, atol=1e-12)


# --- Round trips and monotonicity, every curve ----------------------------------------


@pytest.mark.parametrize("name", sorted(SCALAR_CURVES))
def test_scalar_curve_round_trip_and_monotonic(name):
    forward, inverse, x, kw = SCALAR_CURVES[name]
    y = forward(x, **kw)
    assert np.all(np.isfinite(y))
    assert np.all(np.diff(y) > 0), "curve must be strictly increasing"
    np.testing.assert_allclose(inverse(y, **kw), x, atol=1e-9)


@pytest.mark.parametrize("name", sorted(RGB_CURVES))
@pytest.mark.parametrize(("l_w", "l_b"), [(1000.0, 0.0), (400.0, 0.0), (2000.0, 0.01)])
def test_hlg_rgb_round_trip(name, l_w, l_b):
    forward, inverse = RGB_CURVES[name]
    x = np.concatenate([RGB01, np.repeat(GRID[:, None], 3, axis=1)])
    y = forward(x, l_w=l_w, l_b=l_b)
    assert np.all(np.isfinite(y))
    assert np.all(np.diff(forward(np.repeat(GRID[:, None], 3, axis=1), l_w=l_w, l_b=l_b)[:, 1]) > 0)
    np.testing.assert_allclose(inverse(y, l_w=l_w, l_b=l_b), x, atol=1e-9)


# --- Shapes, dtypes, non-finite input -------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCALAR_CURVES))
def test_scalar_curve_shapes_and_dtypes(name):
    forward, inverse, _, kw = SCALAR_CURVES[name]
    for fn in (forward, inverse):
        out = fn(0.5, **kw)
        assert np.ndim(out) == 0 and isinstance(out, np.float64)
        assert fn([0.1, 0.2], **kw).shape == (2,)
        assert fn(np.zeros((4, 5, 3)), **kw).shape == (4, 5, 3)
        assert fn(np.zeros((2, 3), np.float32), **kw).dtype == np.float32
        assert fn(np.zeros(3, np.float16), **kw).dtype == np.float32
        assert fn(np.arange(3), **kw).dtype == np.float64  # ints become float64


def test_float32_close_to_float64():
    x = GRID.astype(np.float32)
    np.testing.assert_allclose(tf.eotf_st2084(x), tf.eotf_st2084(GRID), rtol=2e-4, atol=1e-4)
    nits = np.geomspace(1e-3, 1e4, 50)
    # float32 in is computed in float32: PQ codes within 1e-5 (< 0.05 of a 12-bit code).
    np.testing.assert_allclose(
        tf.eotf_inverse_st2084(nits.astype(np.float32)), tf.eotf_inverse_st2084(nits), atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(RGB_CURVES))
def test_hlg_rgb_shapes(name):
    forward, inverse = RGB_CURVES[name]
    for fn in (forward, inverse):
        assert fn([0.1, 0.2, 0.3]).shape == (3,)
        assert fn(np.full((4, 5, 3), 0.25)).shape == (4, 5, 3)
        assert fn(np.full((2, 3), 0.5, np.float32)).dtype == np.float32
        with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
            fn(np.zeros((4, 2)))
        with pytest.raises(ValueError):
            fn(0.5)


def test_bad_display_parameters_raise():
    with pytest.raises(ValueError):
        tf.eotf_bt1886(0.5, l_w=100.0, l_b=200.0)
    with pytest.raises(ValueError):
        tf.eotf_bt2100_hlg([0.5] * 3, l_w=-1.0)
    with pytest.raises(ValueError):
        tf.eotf_bt2100_hlg([0.5] * 3, l_w=1000.0, l_b=1000.0)


_TOP = {  # value of each function at +inf input
    "eotf_st2084": 10000.0,
    "eotf_inverse_st2084": 1.0,
    "oetf_bt2100_hlg": 1.0,
    "oetf_inverse_bt2100_hlg": 1.0,
    "eotf_bt1886": 100.0,
    "eotf_inverse_bt1886": 1.0,
    "eotf_srgb": 1.0,
    "eotf_inverse_srgb": 1.0,
    "oetf_bt709": 1.0,
    "oetf_inverse_bt709": 1.0,
}


@pytest.mark.parametrize("fname", sorted(_TOP))
def test_scalar_curve_nan_inf(fname):
    fn = getattr(tf, fname)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        out = fn(np.array([np.nan, np.inf, -np.inf, -1.0, 0.0]))
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(_TOP[fname], rel=1e-7)
    assert out[2] == pytest.approx(out[4], abs=1e-12)  # -inf and negatives clip to the bottom
    assert out[3] == pytest.approx(out[4], abs=1e-12)


@pytest.mark.parametrize("name", sorted(RGB_CURVES))
def test_hlg_rgb_nan_inf(name):
    forward, inverse = RGB_CURVES[name]
    x = np.array([[np.nan, 0.5, 0.5], [np.inf, np.inf, np.inf], [-np.inf, 0.0, 0.0], [0.0, 0.0, 0.0]])
    for fn in (forward, inverse):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = fn(x)
        assert np.isnan(out[0, 0])
        assert np.all(np.isfinite(out[1:]))
        np.testing.assert_allclose(out[2], out[3], atol=1e-12)
    np.testing.assert_allclose(forward(x[1:2]), forward(np.ones((1, 3))))
