"""Tests of itmfilter.colour.tonecurves: registry, sweeps, reference values, round trips, `local`.

Round-trip tolerances (stated once, used below):

* HDR -> SDR -> HDR for every global curve, greys 0.005-1000 cd/m2 and BT.709-gamut
  colours 0.01-150 cd/m2, float64: |PQ error| <= 1e-6 (bt2390's inverse uses a table,
  measured 5e-9; the others are closed forms, ~1e-13).
* SDR -> HDR -> SDR, grey codes 0.02-1: <= 1e-6 code values, except bt2446a: 1e-3,
  because the Report's knee constants are rounded and the knee jumps by 5.5e-4 at
  Y'p = 0.7399 (1.0770 * 0.7399 = 0.79687 but the quadratic gives 0.79742), so SDR
  values inside the jump are not reachable by the forward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from itmfilter.colour import tonecurves as tc
from itmfilter.colour.primaries import MATRIX_BT709_TO_BT2020, apply_matrix, luminance
from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084

GRID = np.geomspace(1e-3, 1e4, 161)
# BT.2020 primaries and secondaries, a BT.709 red and an odd mix; scaled by the grid.
COLOURS = np.array(
    [
        [1.0, 1.0, 1.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0],
        [0.6274, 0.0691, 0.0164],  # BT.709 red in BT.2020
        [0.1, 0.2, 1.0],
    ]
)
GLOBAL = [n for n in tc.curve_names() if not tc.get_curve(n).spatial]
INVERTIBLE = [n for n in tc.curve_names() if tc.get_curve(n).inverse is not None]


def _forward(curve: tc.ToneCurve, hdr: np.ndarray) -> np.ndarray:
    """Apply a curve to (N, 3) samples; spatial curves see each sample as a flat 2x2 picture."""
    if not curve.spatial:
        return curve.forward(hdr)
    pictures = np.broadcast_to(hdr[:, None, None, :], (hdr.shape[0], 2, 2, 3))
    return curve.forward(pictures)[:, 0, 0, :]


# --- registry ----------------------------------------------------------------------------


def test_registry_holds_the_required_curves():
    assert {"bt2446a", "bt2390", "hable", "reinhard", "youtube", "local"} <= set(tc.REGISTRY)
    assert tc.curve_names() == list(tc.REGISTRY)
    for name, curve in tc.REGISTRY.items():
        assert isinstance(curve, tc.ToneCurve)
        assert curve.name == name
        assert curve.description and curve.gamut
        assert callable(curve.forward)
        assert curve.inverse is None or callable(curve.inverse)
        assert not (curve.spatial and curve.inverse is not None)
    assert any(c.spatial for c in tc.REGISTRY.values())


def test_get_curve_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        tc.get_curve("aces")
    msg = str(err.value)
    assert "'aces'" in msg
    for name in tc.curve_names():
        assert name in msg
    assert tc.get_curve("hable") is tc.REGISTRY["hable"]


def test_tone_curve_is_frozen():
    with pytest.raises(AttributeError):
        tc.get_curve("hable").name = "other"  # type: ignore[misc]


# --- sweeps -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", tc.curve_names())
def test_sweep_finite_in_range_monotonic(name):
    curve = tc.get_curve(name)
    for colour in COLOURS:
        hdr = GRID[:, None] * colour[None, :]
        sdr = _forward(curve, hdr)
        assert sdr.shape == hdr.shape
        assert np.all(np.isfinite(sdr))
        assert sdr.min() >= 0.0 and sdr.max() <= 1.0
        # Displayed SDR luminance never decreases as the HDR input gets brighter.
        y = luminance(np.power(sdr, 2.4), "bt709")
        assert np.all(np.diff(y) >= -1e-9), f"{name} not monotonic for {colour}"
    grey = _forward(curve, np.repeat(GRID[:, None], 3, axis=1))
    assert np.all(np.diff(grey, axis=0) >= -1e-9)
    np.testing.assert_allclose(grey[:, 0], grey[:, 1], atol=1e-6)  # grey stays grey
    np.testing.assert_allclose(grey[:, 0], grey[:, 2], atol=1e-6)
    assert grey[-1, 0] == pytest.approx(1.0)  # 10000 cd/m2 is at or above SDR white


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_sweep_finite_nonnegative(name):
    curve = tc.get_curve(name)
    codes = np.linspace(0.0, 1.0, 257)
    cube = np.meshgrid(codes[::32], codes[::32], codes[::32], indexing="ij")
    sdr = np.stack(cube, axis=-1).reshape(-1, 3)
    sdr = np.concatenate([sdr, np.repeat(codes[:, None], 3, axis=1)])
    hdr = curve.inverse(sdr)
    assert np.all(np.isfinite(hdr)) and hdr.min() >= 0.0
    grey = curve.inverse(np.repeat(codes[:, None], 3, axis=1))[:, 0]
    assert np.all(np.diff(grey) >= 0.0)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", INVERTIBLE)
def test_round_trip_hdr_sdr_hdr(name):
    curve = tc.get_curve(name)
    grey = np.repeat(np.geomspace(0.005, 1000.0, 300)[:, None], 3, axis=1)
    colours709 = np.array([[0.8, 0.3, 0.2], [0.2, 0.7, 0.3], [0.3, 0.3, 0.9], [0.9, 0.8, 0.1]])
    colours = apply_matrix(colours709, MATRIX_BT709_TO_BT2020)
    coloured = (np.geomspace(0.01, 150.0, 100)[:, None, None] * colours[None]).reshape(-1, 3)
    for hdr in (grey, coloured):
        back = curve.inverse(curve.forward(hdr))
        err = np.abs(eotf_inverse_st2084(back) - eotf_inverse_st2084(hdr))
        assert err.max() <= 1e-6, f"{name}: PQ round-trip error {err.max():.2e}"


@pytest.mark.parametrize("name", INVERTIBLE)
def test_round_trip_sdr_hdr_sdr(name):
    curve = tc.get_curve(name)
    codes = np.repeat(np.linspace(0.02, 1.0, 300)[:, None], 3, axis=1)
    err = np.abs(curve.forward(curve.inverse(codes)) - codes).max()
    assert err <= (1e-3 if name == "bt2446a" else 1e-6)


def test_peak_nits_changes_the_white_point():
    for name in ("bt2446a", "bt2390", "hable", "reinhard"):
        curve = tc.get_curve(name)
        at_4000 = curve.forward(np.full((1, 3), 4000.0), peak_nits=4000.0)
        at_1000 = curve.forward(np.full((1, 3), 1000.0), peak_nits=4000.0)
        assert at_4000[0, 0] == pytest.approx(1.0, abs=1e-6)
        assert at_1000[0, 0] < 0.99
        back = curve.inverse(at_1000, peak_nits=4000.0)
        assert back[0, 0] == pytest.approx(1000.0, rel=1e-5)
    with pytest.raises(ValueError):
        tc.hdr_to_sdr_bt2390(np.ones(3), peak_nits=0.0)


# --- reference values -----------------------------------------------------------------------


def _bt2446a_grey_scalar(nits: float, l_hdr: float = 1000.0) -> float:
    """BT.2446-1 Method A for a grey, written out from the Report (C'b = C'r = 0)."""
    y = (nits / l_hdr) ** (1 / 2.4)
    rho_hdr = 1 + 32 * (l_hdr / 10000) ** (1 / 2.4)
    rho_sdr = 1 + 32 * (100 / 10000) ** (1 / 2.4)
    yp = math.log(1 + (rho_hdr - 1) * y) / math.log(rho_hdr)
    if yp <= 0.7399:
        yc = 1.0770 * yp
    elif yp < 0.9909:
        yc = -1.1510 * yp**2 + 2.7811 * yp - 0.6302
    else:
        yc = 0.5 * yp + 0.5
    return (rho_sdr**yc - 1) / (rho_sdr - 1)


def test_bt2446a_reference_values():
    # rho for L_HDR = 1000 and L_SDR = 100 (Report ITU-R BT.2446-1, Method A).
    assert 1 + 32 * 0.1 ** (1 / 2.4) == pytest.approx(13.2598, abs=1e-4)
    assert 1 + 32 * 0.01 ** (1 / 2.4) == pytest.approx(5.6970, abs=1e-4)
    nits = np.array([0.01, 1.0, 26.0, 100.0, 203.0, 500.0, 1000.0])
    sdr = tc.hdr_to_sdr_bt2446a(np.repeat(nits[:, None], 3, axis=1))
    expected = [_bt2446a_grey_scalar(n) for n in nits]
    np.testing.assert_allclose(sdr[:, 1], expected, atol=1e-9)
    # HDR reference white (203 cd/m2, BT.2408) lands at SDR code 0.6869; the peak at 1.0.
    assert sdr[4, 1] == pytest.approx(0.686855, abs=1e-6)
    assert sdr[-1, 1] == pytest.approx(1.0, abs=1e-12)
    back = tc.sdr_to_hdr_bt2446a(sdr)
    np.testing.assert_allclose(back[:, 0], nits, rtol=1e-9)


def test_bt2390_identity_below_knee_start():
    # maxLum = PQ(100)/PQ(1000) = 0.6758, KS = 1.5 maxLum - 0.5 = 0.5137: below
    # PQ^-1(KS * PQ(1000)) ~ 17 cd/m2 the EETF is the identity, so SDR = (L/100)^(1/2.4).
    pq_peak = eotf_inverse_st2084(1000.0)
    ks = 1.5 * eotf_inverse_st2084(100.0) / pq_peak - 0.5
    assert ks == pytest.approx(0.51366, abs=1e-4)
    below = np.array([0.001, 0.1, 1.0, 10.0, 0.99 * float(eotf_st2084(ks * pq_peak))])
    sdr = tc.hdr_to_sdr_bt2390(np.repeat(below[:, None], 3, axis=1))
    np.testing.assert_allclose(sdr[:, 0], (below / 100.0) ** (1 / 2.4), rtol=1e-9)
    above = tc.hdr_to_sdr_bt2390(np.full((1, 3), 300.0))[0, 0]
    assert (300.0 / 100.0) ** (1 / 2.4) > 1.0 > above  # compressed, not clipped


def test_youtube_fit_reference_values():
    # The public fit: y = 0.74 x + 0.01175 in PQ below 400 cd/m2; the line reaches
    # PQ(100 cd/m2) = 0.508078 at x = 0.6707140831310812; flat PQ(100) above 1000 cd/m2.
    x0, x1, x2, y0, y1, y2 = tc._youtube_params()
    assert x1 == pytest.approx(0.6707140831310812, abs=1e-12)
    assert y2 == pytest.approx(0.508078421517399, abs=1e-12)
    assert x0 == pytest.approx(0.6526, abs=1e-3) and x2 == pytest.approx(0.7518, abs=1e-3)
    nits = np.array([1.0, 100.0, 399.0])
    sdr = tc.hdr_to_sdr_youtube(np.repeat(nits[:, None], 3, axis=1))[:, 0]
    expected = (eotf_st2084(0.74 * eotf_inverse_st2084(nits) + 0.01175) / 100.0) ** (1 / 2.4)
    np.testing.assert_allclose(sdr, expected, rtol=1e-9)
    top = tc.hdr_to_sdr_youtube(np.array([[1000.0] * 3, [4000.0] * 3]))
    np.testing.assert_allclose(top, 1.0, atol=1e-12)


def test_reinhard_and_hable_reference_values():
    # Extended Reinhard, L_white = 10 (1000 cd/m2): L = 1 -> 1 * (1 + 1/100) / 2 = 0.505.
    sdr = tc.hdr_to_sdr_reinhard(np.full((1, 3), 100.0))[0, 0]
    assert sdr == pytest.approx(0.505 ** (1 / 2.4), rel=1e-12)
    # Hable: f(x) = (x(Ax + CB) + DE) / (x(Ax + B) + DF) - E/F; f(2)/f(20) at 100 cd/m2.
    def f(x):
        return (x * (0.15 * x + 0.05) + 0.004) / (x * (0.15 * x + 0.5) + 0.06) - 0.02 / 0.3

    sdr = tc.hdr_to_sdr_hable(np.full((1, 3), 100.0))[0, 0]
    assert sdr == pytest.approx((f(2.0) / f(20.0)) ** (1 / 2.4), rel=1e-12)


# --- shapes, dtypes, bad values ---------------------------------------------------------------


@pytest.mark.parametrize("name", GLOBAL)
def test_shapes_dtypes_and_non_finite_input(name):
    curve = tc.get_curve(name)
    for shape in [(3,), (5, 3), (2, 4, 3)]:
        hdr = np.full(shape, 150.0)
        assert curve.forward(hdr).shape == shape
        assert curve.forward(hdr).dtype == np.float64
    hdr32 = np.full((4, 3), 150.0, dtype=np.float32)
    assert curve.forward(hdr32).dtype == np.float32
    if curve.inverse is not None:
        assert curve.inverse(curve.forward(hdr32)).dtype == np.float32
    bad = np.array([[np.nan, 1.0, 1.0], [np.inf, np.inf, np.inf], [-np.inf, -5.0, 2.0]])
    out = curve.forward(bad)
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
    if curve.inverse is not None:
        back = curve.inverse(np.array([[np.nan, 0.5, 2.0], [-1.0, np.inf, 0.3]]))
        assert np.all(np.isfinite(back)) and back.min() >= 0.0
    with pytest.raises(ValueError):
        curve.forward(np.ones((4, 2)))


def test_gamut_out_of_bt709_colours_are_handled():
    # Pure BT.2020 green is far outside BT.709: it must come out in range, and with the
    # desaturating curves with its luminance kept (below white).
    green = np.array([[0.0, 50.0, 0.0]])
    for name in tc.curve_names():
        curve = tc.get_curve(name)
        out = _forward(curve, green)
        assert np.all((out >= 0.0) & (out <= 1.0))
    sdr = tc.hdr_to_sdr_reinhard(green)
    y_in = luminance(green, "bt2020")[0] / 100.0
    y_ld = y_in * (1 + y_in / 100.0) / (1 + y_in)
    assert luminance(np.power(sdr, 2.4), "bt709")[0] == pytest.approx(y_ld, rel=1e-3)


def test_desaturate_into_cube():
    rgb = np.array([[1.5, 0.2, -0.1], [0.3, 0.3, 0.3], [2.0, 2.0, 2.0], [-0.2, 0.5, 0.1]])
    out = tc.desaturate_into_cube(rgb)
    assert out.min() >= 0.0 and out.max() <= 1.0
    y_in = np.clip(luminance(rgb, "bt709"), 0, 1)
    np.testing.assert_allclose(luminance(out, "bt709"), y_in, atol=1e-9)
    np.testing.assert_allclose(out[1], rgb[1])  # in-gamut colours untouched
    np.testing.assert_allclose(out[2], 1.0)  # above white -> white


# --- local (spatial) --------------------------------------------------------------------------


def _two_surround_picture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark (20 cd/m2) left half, bright (200 cd/m2) right half, isolated 60 cd/m2 pixels."""
    height, width = 64, 128
    hdr = np.empty((height, width, 3))
    hdr[:, : width // 2] = 20.0
    hdr[:, width // 2 :] = 200.0
    ys, xs = np.meshgrid(np.arange(8, 56, 8), np.arange(8, 120, 8), indexing="ij")
    hdr[ys, xs] = 60.0
    dark = xs < width // 2 - 4
    bright = xs >= width // 2 + 4
    return hdr, (ys[dark], xs[dark]), (ys[bright], xs[bright])


def test_local_is_spatially_varying():
    hdr, dark, bright = _two_surround_picture()
    sdr = tc.hdr_to_sdr_local(hdr)
    assert sdr.shape == hdr.shape and np.all(np.isfinite(sdr))
    assert sdr.min() >= 0.0 and sdr.max() <= 1.0
    in_dark, in_bright = sdr[dark][:, 1], sdr[bright][:, 1]
    # Same HDR value, same neighbourhood -> same SDR value ...
    assert np.ptp(in_dark) < 1e-3 and np.ptp(in_bright) < 1e-3
    # ... different neighbourhoods -> clearly different SDR values (measured 0.81 against
    # 0.49, neither clipped): not a global function.
    assert in_dark.max() < 0.99
    assert in_dark.mean() - in_bright.mean() > 0.2
    # A global curve maps them identically.
    global_sdr = tc.hdr_to_sdr_bt2390(hdr)
    assert np.ptp(np.concatenate([global_sdr[dark][:, 1], global_sdr[bright][:, 1]])) < 1e-9


def test_local_flat_pictures_follow_the_base_line_and_clip_highlights():
    levels = np.array([1.0, 26.0, 203.0, 5000.0])
    flat = np.broadcast_to(levels[:, None, None, None], (4, 8, 8, 3))
    sdr = tc.hdr_to_sdr_local(flat)
    assert sdr.shape == (4, 8, 8, 3)
    expected_nits = 10 ** (math.log10(18.0) + 0.75 * (np.log10(levels) - math.log10(26.0)))
    expected = np.minimum(expected_nits / 100.0, 1.0) ** (1 / 2.4)
    np.testing.assert_allclose(sdr[:, 4, 4, 0], expected, rtol=1e-6)
    assert sdr[-1].min() == pytest.approx(1.0)  # highlights clip


def test_local_needs_a_picture_and_survives_bad_values():
    with pytest.raises(ValueError):
        tc.hdr_to_sdr_local(np.ones((10, 3)))
    hdr, _, _ = _two_surround_picture()
    hdr = hdr.astype(np.float32)
    hdr[0, 0] = np.nan
    hdr[1, 1] = np.inf
    hdr[2, 2] = -3.0
    out = tc.hdr_to_sdr_local(hdr)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0
