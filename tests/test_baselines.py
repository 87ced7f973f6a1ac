"""Tests of itmfilter.quality.baselines: BT.2408 placement, BT.2446 inverse, MMR, gain map."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from itmfilter.colour import tonecurves as tc
from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
from itmfilter.quality import baselines as bl


def _synthetic_master(height: int = 96, width: int = 128) -> np.ndarray:
    """Smooth HDR picture, 0.05-4000 cd/m2, with gentle colour variation (BT.2020, float32)."""
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = yy / height, xx / width
    lum = 0.05 * (4000 / 0.05) ** (0.7 * xx + 0.3 * yy)
    chroma = np.stack(
        [1 + 0.3 * np.sin(6 * xx), 1 + 0.2 * np.cos(5 * yy), 1 - 0.3 * np.sin(4 * xx * yy)], axis=-1
    )
    return (lum[..., None] * chroma).astype(np.float32)


def _pq_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    pq_a = eotf_inverse_st2084(np.asarray(a, np.float64))
    return np.abs(pq_a - eotf_inverse_st2084(np.asarray(b, np.float64)))


# --- BT.2408 placement ----------------------------------------------------------------------


def test_sdr_placed_bt2408_matches_colour_science():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour

    sdr = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.2, 0.5, 0.9], [0.0, 0.0, 0.0]])
    expected = 203.0 * colour.RGB_to_RGB(
        sdr**2.4, colour.RGB_COLOURSPACES["ITU-R BT.709"], colour.RGB_COLOURSPACES["ITU-R BT.2020"]
    )
    out = bl.sdr_placed_bt2408(sdr)
    np.testing.assert_allclose(out, expected, atol=1e-9)
    np.testing.assert_allclose(out[0], 203.0)  # SDR white at HDR reference white
    half = bl.sdr_placed_bt2408(np.full(3, 0.5))
    np.testing.assert_allclose(half, 203.0 * 0.5**2.4)  # BT.1886, L_B = 0
    bad = bl.sdr_placed_bt2408(np.array([np.nan, np.inf, -1.0]))
    assert np.all(np.isfinite(bad)) and bad.min() >= 0.0


# --- BT.2446-1 Method A inverse -----------------------------------------------------------------


def _report_itm_grey(v: float) -> float:
    """The Report's luma expansion for a grey code value, written out (cd/m2, 1000 peak)."""
    ypp = 255.0 * v
    if ypp <= 70:
        e = 1.8712e-5 * ypp**2 - 2.7334e-3 * ypp + 1.3141
    else:
        e = 2.8305e-6 * ypp**2 - 7.4622e-4 * ypp + 1.2528
    return 1000.0 * (ypp**e / 1000.0) ** 2.4


def test_inverse_bt2446a_report_reference_values():
    codes = np.array([0.0, 0.1, 0.2745, 0.5, 0.75, 1.0])  # 0.2745 = 70/255, the switch
    out = bl.inverse_bt2446a(np.repeat(codes[:, None], 3, axis=1))
    expected = [_report_itm_grey(v) for v in codes]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out[:, 0], out[:, 1], rtol=1e-9)
    assert out[3, 0] == pytest.approx(76.28, abs=0.01)  # mid code -> 76 cd/m2
    # 255^E(255) = 1000 to the Report's digits.
    assert out[-1, 0] == pytest.approx(1000.0, rel=1e-3)
    # The two quadratics of E meet at Y'' = 70 (continuity of the published constants).
    e1 = 1.8712e-5 * 70**2 - 2.7334e-3 * 70 + 1.3141
    e2 = 2.8305e-6 * 70**2 - 7.4622e-4 * 70 + 1.2528
    assert e1 == pytest.approx(e2, abs=1e-4)


def test_inverse_bt2446a_sweep_and_variants():
    codes = np.linspace(0.0, 1.0, 256)
    grey = bl.inverse_bt2446a(np.repeat(codes[:, None], 3, axis=1))[:, 0]
    assert np.all(np.diff(grey) > 0.0)
    rng = np.random.default_rng(3)
    sdr = rng.random((500, 3))
    sdr[0] = [np.nan, np.inf, -2.0]
    out = bl.inverse_bt2446a(sdr)
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1000.0
    # "exact" is the algebraic inverse of the bt2446a curve.
    hdr = np.array([[100.0, 100.0, 100.0], [30.0, 12.0, 5.0], [500.0, 400.0, 450.0]])
    back = bl.inverse_bt2446a(tc.hdr_to_sdr_bt2446a(hdr), variant="exact")
    np.testing.assert_allclose(back, hdr, rtol=1e-9)
    with pytest.raises(ValueError, match="report"):
        bl.inverse_bt2446a(sdr, variant="nope")


# --- MMR ----------------------------------------------------------------------------------------


def test_mmr_features_layout():
    s = np.array([[0.5, 0.25, 2.0]])
    for order, n in ((1, 8), (2, 15), (3, 22)):
        assert bl.mmr_features(s, order).shape == (1, n)
    f = bl.mmr_features(s, 3)[0]
    r, g, b = 0.5, 0.25, 2.0
    first = [r, g, b, r * g, r * b, g * b, r * g * b]
    np.testing.assert_allclose(f, [1.0] + first + [t**2 for t in first] + [t**3 for t in first])
    with pytest.raises(ValueError):
        bl.mmr_features(s, 4)


def _cubic_pair(seed: int = 1, size: tuple[int, int] = (120, 160)):
    """SDR picture and an HDR master whose PQ code values are an exact order-3 MMR of it."""
    rng = np.random.default_rng(seed)
    sdr = rng.random(size + (3,))
    x = bl.mmr_features(sdr, 3)
    beta = rng.normal(0.0, 1.0, (22, 3))
    pred = x @ beta
    beta *= 0.8 / (pred.max() - pred.min())
    beta[0] += 0.05 - (x @ beta).min()  # PQ targets in [0.05, 0.85]
    return sdr, eotf_st2084(x @ beta), beta


def test_mmr_recovers_an_exact_cubic():
    sdr, hdr, beta = _cubic_pair()
    coeffs = bl.fit_mmr(sdr, hdr, order=3)
    assert coeffs.shape == (22, 3)
    np.testing.assert_allclose(coeffs, beta, atol=2e-3)
    rec = bl.apply_mmr(coeffs, sdr)
    assert rec.shape == sdr.shape
    assert _pq_error(rec, hdr).max() < 1e-4
    # Without the ridge it is plain least squares, and exact to rounding.
    exact = bl.fit_mmr(sdr, hdr, order=3, ridge=0.0)
    np.testing.assert_allclose(exact, beta, atol=1e-8)
    # A subsample is enough for an exact model.
    sub = bl.fit_mmr(sdr, hdr, order=3, max_samples=2000, ridge=0.0)
    np.testing.assert_allclose(sub, beta, atol=1e-6)
    assert bl.mmr_nbytes(coeffs) == 22 * 3 * 4


def test_mmr_on_a_tone_mapped_picture_and_bad_input():
    hdr = _synthetic_master()
    sdr = tc.hdr_to_sdr_bt2390(hdr)
    coeffs = bl.fit_mmr(sdr, hdr)
    rec = bl.apply_mmr(coeffs, sdr.astype(np.float32), chunk=1000)
    assert rec.dtype == np.float32 and np.all(np.isfinite(rec)) and rec.min() >= 0.0
    # A global curve is close to a per-channel cubic in PQ: below BT.2390's clip the error is small.
    below_peak = hdr.max(axis=-1) < 900.0
    assert np.median(_pq_error(rec, hdr)[below_peak]) < 0.01
    with pytest.raises(ValueError):
        bl.apply_mmr(np.zeros((21, 3)), sdr)
    with pytest.raises(ValueError):
        bl.fit_mmr(sdr, hdr[:10])


# --- gain map -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4])
def test_gainmap_round_trip(channels, scale):
    hdr = _synthetic_master()
    sdr = tc.hdr_to_sdr_bt2390(hdr)
    jpeg, params = bl.encode_gainmap(sdr, hdr, scale=scale, quality=90, channels=channels)
    assert jpeg[:2] == b"\xff\xd8"  # a JPEG
    img = Image.open(io.BytesIO(jpeg))
    assert img.size == (math.ceil(128 / scale), math.ceil(96 / scale))
    assert img.mode == ("L" if channels == 1 else "RGB")
    json.dumps(params)  # serialisable
    assert params["gain_min_log2"] < 0.0 < params["gain_max_log2"]
    rec = bl.decode_gainmap(sdr, jpeg, params)
    assert rec.shape == hdr.shape and rec.dtype == np.float32
    assert np.all(np.isfinite(rec)) and rec.min() >= 0.0
    err = _pq_error(rec, hdr)
    # Measured: mean 0.001-0.0025, 99th percentile 0.004-0.015 PQ.
    assert err.mean() < 0.005
    assert np.quantile(err, 0.99) < 0.03
    meta = json.dumps(params, separators=(",", ":"), sort_keys=True).encode()
    assert bl.gainmap_nbytes(jpeg, params) == len(jpeg) + len(meta)
    assert bl.gainmap_nbytes(jpeg, params) < 2000  # ~1 kB for a 96x128 picture


def test_best_gainmap_fits_the_budget_and_beats_every_single_setting_it_swept():
    from itmfilter.quality.metrics import psnr_pu21

    hdr = _synthetic_master()
    sdr = tc.hdr_to_sdr_bt2390(hdr)
    budget = 1500
    data, params, score = bl.best_gainmap(sdr, hdr, budget, psnr_pu21)
    assert bl.gainmap_nbytes(data, params) <= budget
    assert score == psnr_pu21(hdr, bl.decode_gainmap(sdr, data, params))
    for scale, ch in ((4, 1), (2, 3)):  # two of the settings it tried, at a quality that fits
        one, p1 = bl.encode_gainmap(sdr, hdr, scale=scale, quality=30, channels=ch)
        assert bl.gainmap_nbytes(one, p1) <= budget
        assert score >= psnr_pu21(hdr, bl.decode_gainmap(sdr, one, p1))
    assert bl.best_gainmap(sdr, hdr, 50, psnr_pu21) is None  # nothing fits 50 bytes


def test_gainmap_unit_gain_is_near_lossless_and_bad_arguments():
    hdr = _synthetic_master(48, 64)
    sdr = tc.hdr_to_sdr_youtube(hdr)
    placed = bl.sdr_placed_bt2408(sdr)
    jpeg, params = bl.encode_gainmap(sdr, placed, scale=2)
    rec = bl.decode_gainmap(sdr, jpeg, params)
    assert _pq_error(rec, placed).max() < 1e-3
    with pytest.raises(ValueError):
        bl.encode_gainmap(sdr, hdr, channels=2)
    with pytest.raises(ValueError):
        bl.encode_gainmap(sdr, hdr[:10])
    with pytest.raises(ValueError):
        bl.encode_gainmap(sdr.reshape(-1, 3), hdr.reshape(-1, 3))
    with pytest.raises(ValueError):
        bl.decode_gainmap(sdr, jpeg, dict(params, channels=3))
