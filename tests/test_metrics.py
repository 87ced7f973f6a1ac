"""Tests for itmfilter.quality.metrics: reference values, colour-science as an oracle, edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from itmfilter.quality import metrics

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour warns that matplotlib is missing
    import colour

# PU21 'banding_glare' p1..p7 (gfxdisp/pu21, pu21_encoder.m), written out again so the tests
# check the module against the published numbers rather than against itself.
P = (
    0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204,
    596.3148142,
)


def pu21_by_hand(y: float) -> float:
    y = min(max(y, 0.005), 10000.0)
    return P[6] * (((P[0] + P[1] * y ** P[3]) / (1 + P[2] * y ** P[3])) ** P[4] - P[5])


def pu21_decode(v: np.ndarray) -> np.ndarray:
    """Inverse PU21, as pu21_encoder.m decode()."""
    v_p = np.maximum(v / P[6] + P[5], 0) ** (1 / P[4])
    return (np.maximum(v_p - P[0], 0) / (P[1] - P[2] * v_p)) ** (1 / P[3])


def random_picture(shape=(48, 64), seed=0, peak=4000.0, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Mostly dark with some highlights, like real HDR content.
    return (peak * rng.random((*shape, 3)) ** 3 + 0.01).astype(dtype)


# --- PU21 -----------------------------------------------------------------------------------


def test_pu21_published_end_points():
    # End points of the 'banding_glare' curve as listed in FFmpeg's vf_siti (p_min, p_max).
    assert metrics.pu21_encode(0.005) == pytest.approx(5.4705e-10, rel=1e-3)
    assert metrics.pu21_encode(10000.0) == pytest.approx(595.3939, abs=1e-4)


@pytest.mark.parametrize("nits", [0.01, 0.1, 1.0, 10.0, 100.0, 203.0, 1000.0, 4000.0])
def test_pu21_matches_formula(nits):
    assert metrics.pu21_encode(nits) == pytest.approx(pu21_by_hand(nits), rel=1e-12)


def test_pu21_sdr_range_maps_to_about_256():
    # The reference's peak of 256 is PU21 at about 100 cd/m2.
    assert metrics.pu21_encode(100.0) == pytest.approx(256.3839, abs=1e-4)


def test_pu21_monotonic_and_clipped():
    nits = np.logspace(np.log10(0.005), 4, 2000)
    pu = metrics.pu21_encode(nits)
    assert np.all(np.diff(pu) > 0)
    assert metrics.pu21_encode(1e-4) == metrics.pu21_encode(0.005)
    assert metrics.pu21_encode(0.0) == metrics.pu21_encode(0.005)
    assert metrics.pu21_encode(-5.0) == metrics.pu21_encode(0.005)
    assert metrics.pu21_encode(1e6) == metrics.pu21_encode(10000.0)


def test_pu21_round_trip_with_reference_decode():
    nits = np.logspace(-2, 4, 50)
    np.testing.assert_allclose(pu21_decode(metrics.pu21_encode(nits)), nits, rtol=1e-9)


@pytest.mark.parametrize("shape", [(), (7,), (4, 5, 3), (2, 3, 4, 3)])
def test_pu21_shapes_and_dtype(shape):
    nits = np.full(shape, 100.0, dtype=np.float32)
    out = metrics.pu21_encode(nits)
    assert out.shape == shape
    assert out.dtype == np.float32
    assert metrics.pu21_encode(nits.astype(np.float64)).dtype == np.float64


def test_pu21_nonfinite_does_not_crash():
    out = metrics.pu21_encode(np.array([np.nan, np.inf, -np.inf, 100.0]))
    assert np.all(np.isfinite(out))
    assert out[1] == pytest.approx(595.3939, abs=1e-4)


# --- PSNR -----------------------------------------------------------------------------------


def test_identical_pictures():
    ref = random_picture()
    scores = metrics.evaluate(ref, ref.copy())
    assert scores["pu21_psnr"] == math.inf
    assert scores["pu21_psnr_y"] == math.inf
    assert scores["pq_psnr"] == math.inf
    assert scores["delta_e_itp"] == 0.0
    assert scores["pu21_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["pu21_ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert metrics.psnr_pu21(ref, ref) == math.inf
    assert metrics.delta_e_itp(ref, ref) == 0.0
    assert metrics.ssim_pu21(ref, ref) == pytest.approx(1.0, abs=1e-12)


def _plus_minus(shape, step: float) -> np.ndarray:
    """+step / -step checkerboard, so the mean squared offset is exactly step^2."""
    signs = np.where(np.indices(shape).sum(axis=0) % 2 == 0, 1.0, -1.0)
    return step * signs


def test_psnr_pu21_known_noise():
    ref = random_picture(peak=2000.0) + 1.0  # keep away from the 0.005 clip
    step = 2.0
    pu_test = metrics.pu21_encode(ref) + _plus_minus(ref.shape, step)
    test = pu21_decode(pu_test)
    assert metrics.psnr_pu21(ref, test) == pytest.approx(20 * math.log10(256 / step), abs=1e-6)


def test_psnr_pu21_y_known_noise():
    # Grey pixels: luminance equals each channel, so the PU21 offset carries over exactly.
    grey = np.repeat(random_picture(peak=2000.0)[..., :1] + 1.0, 3, axis=-1)
    step = 0.5
    pu_test = metrics.pu21_encode(grey[..., 0]) + _plus_minus(grey.shape[:2], step)
    test = np.repeat(pu21_decode(pu_test)[..., None], 3, axis=-1)
    assert metrics.psnr_pu21_y(grey, test) == pytest.approx(20 * math.log10(256 / step), abs=1e-5)


def test_psnr_pq_known_noise():
    ref = random_picture(peak=3000.0) + 1.0
    step = 1e-3
    pq_test = colour.models.eotf_inverse_ST2084(ref) + _plus_minus(ref.shape, step)
    test = colour.models.eotf_ST2084(pq_test)
    assert metrics.psnr_pq(ref, test) == pytest.approx(20 * math.log10(1 / step), abs=1e-6)


def test_psnr_pq_against_colour():
    ref = random_picture(seed=1)
    test = random_picture(seed=2)
    mse = np.mean(
        (colour.models.eotf_inverse_ST2084(ref) - colour.models.eotf_inverse_ST2084(test)) ** 2
    )
    assert metrics.psnr_pq(ref, test) == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)


def test_psnr_pu21_is_over_rgb_channels():
    ref = random_picture(seed=3)
    test = random_picture(seed=4)
    mse = np.mean((metrics.pu21_encode(ref) - metrics.pu21_encode(test)) ** 2)
    assert metrics.psnr_pu21(ref, test) == pytest.approx(10 * math.log10(256**2 / mse), rel=1e-12)


# --- Delta E ITP --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_delta_e_itp_against_colour(dtype, rtol):
    ref = random_picture(seed=5, dtype=dtype)
    test = ref * np.random.default_rng(6).uniform(0.9, 1.1, ref.shape).astype(dtype)
    method = "ITU-R BT.2100-2 PQ"
    expected = np.mean(
        colour.delta_E(
            colour.RGB_to_ICtCp(ref.astype(np.float64), method=method),
            colour.RGB_to_ICtCp(test.astype(np.float64), method=method),
            method="ITP",
        )
    )
    assert metrics.delta_e_itp(ref, test) == pytest.approx(expected, rel=rtol)


def test_ictcp_against_colour():
    rgb = random_picture(seed=7)
    itp = metrics._itp(rgb)
    ictcp = colour.RGB_to_ICtCp(rgb, method="ITU-R BT.2100-2 PQ")
    np.testing.assert_allclose(itp, ictcp * [1.0, 0.5, 1.0], atol=1e-12)


def test_delta_e_itp_grey_step():
    # Between two greys only I differs, so Delta E ITP = 720 * |dI| with I = PQ(Y).
    ref = np.full((16, 16, 3), 100.0)
    test = np.full((16, 16, 3), 110.0)
    d_i = colour.models.eotf_inverse_ST2084(110.0) - colour.models.eotf_inverse_ST2084(100.0)
    assert metrics.delta_e_itp(ref, test) == pytest.approx(720 * d_i, rel=1e-9)


# --- SSIM / MS-SSIM -------------------------------------------------------------------------


def ssim_brute_force(x: np.ndarray, y: np.ndarray, data_range: float = 256.0) -> float:
    """Wang et al. 2004, window by window with a 2-D Gaussian, 'valid' region."""
    r = np.arange(11) - 5
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    wx = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
    wy = np.lib.stride_tricks.sliding_window_view(y, (11, 11))
    mx = np.einsum("ijkl,kl->ij", wx, w)
    my = np.einsum("ijkl,kl->ij", wy, w)
    dx = wx - mx[..., None, None]
    dy = wy - my[..., None, None]
    vx = np.einsum("ijkl,kl->ij", dx * dx, w)
    vy = np.einsum("ijkl,kl->ij", dy * dy, w)
    cov = np.einsum("ijkl,kl->ij", dx * dy, w)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_against_brute_force():
    ref = random_picture(shape=(30, 37), seed=8)
    test = ref * np.random.default_rng(9).uniform(0.7, 1.3, ref.shape)
    pu_ref = metrics.pu21_encode(metrics.luminance_bt2020(ref))
    pu_test = metrics.pu21_encode(metrics.luminance_bt2020(test))
    expected = ssim_brute_force(pu_ref, pu_test)
    assert metrics.ssim_pu21(ref, test) == pytest.approx(expected, rel=1e-10)
    assert metrics.evaluate(ref, test)["pu21_ssim"] == pytest.approx(expected, rel=1e-10)


def test_ssim_falls_with_noise():
    ref = random_picture(shape=(64, 64), seed=10)
    rng = np.random.default_rng(11)
    scores = [
        metrics.ssim_pu21(ref, ref * (1 + sigma * rng.standard_normal(ref.shape)).clip(0))
        for sigma in (0.01, 0.1, 0.5)
    ]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_ms_ssim_scales():
    assert metrics._ms_ssim_scales(1080, 1920) == 5
    assert metrics._ms_ssim_scales(176, 176) == 5
    assert metrics._ms_ssim_scales(175, 500) == 4
    assert metrics._ms_ssim_scales(21, 21) == 1


def test_ms_ssim_small_picture_is_ssim():
    ref = random_picture(shape=(20, 20), seed=12)
    test = ref * 1.2
    assert metrics.ms_ssim_pu21(ref, test) == pytest.approx(metrics.ssim_pu21(ref, test), rel=1e-12)


def test_ms_ssim_full_scales():
    ref = random_picture(shape=(180, 200), seed=13)
    test = ref * np.random.default_rng(14).uniform(0.8, 1.2, ref.shape)
    score = metrics.ms_ssim_pu21(ref, test)
    assert 0 < score < 1
    assert metrics.evaluate(ref, test)["pu21_ms_ssim"] == pytest.approx(score, rel=1e-12)


def test_tiny_pictures_do_not_crash():
    for shape in [(1, 1), (2, 5), (10, 10)]:
        ref = random_picture(shape=shape, seed=15)
        scores = metrics.evaluate(ref, ref * 1.1)
        assert all(np.isfinite(v) for v in scores.values())


# --- evaluate, validation, invalid values ------------------------------------------------


def test_evaluate_keys_and_consistency():
    ref = random_picture(seed=16)
    test = ref * np.random.default_rng(17).uniform(0.95, 1.05, ref.shape)
    scores = metrics.evaluate(ref, test)
    assert set(scores) == {
        "pu21_psnr", "pu21_psnr_y", "pq_psnr", "delta_e_itp", "pu21_ssim", "pu21_ms_ssim",
        "nonfinite_test",
    }
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["pu21_psnr"] == pytest.approx(metrics.psnr_pu21(ref, test), rel=1e-12)
    assert scores["pu21_psnr_y"] == pytest.approx(metrics.psnr_pu21_y(ref, test), rel=1e-12)
    assert scores["pq_psnr"] == pytest.approx(metrics.psnr_pq(ref, test), rel=1e-12)
    assert scores["delta_e_itp"] == pytest.approx(metrics.delta_e_itp(ref, test), rel=1e-12)
    assert scores["nonfinite_test"] == 0.0


def test_float32_close_to_float64():
    ref = random_picture(seed=18)
    test = ref * np.random.default_rng(19).uniform(0.9, 1.1, ref.shape)
    s64 = metrics.evaluate(ref, test)
    s32 = metrics.evaluate(ref.astype(np.float32), test.astype(np.float32))
    for key in s64:
        assert s32[key] == pytest.approx(s64[key], rel=1e-4, abs=1e-4), key


@pytest.mark.parametrize(
    "ref_shape, test_shape",
    [((8, 8), (8, 8)), ((8, 8, 4), (8, 8, 4)), ((8, 8, 3), (8, 9, 3)), ((0, 8, 3), (0, 8, 3)),
     ((1, 8, 8, 3), (1, 8, 8, 3))],
)
def test_shapes_validated(ref_shape, test_shape):
    with pytest.raises(ValueError, match="shape"):
        metrics.evaluate(np.ones(ref_shape), np.ones(test_shape))
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr_pu21(np.ones(ref_shape), np.ones(test_shape))


def test_integer_input_rejected():
    with pytest.raises(ValueError, match="float"):
        metrics.psnr_pq(np.ones((4, 4, 3), np.uint16), np.ones((4, 4, 3), np.uint16))


def test_nonfinite_test_values_are_clipped_and_counted():
    ref = random_picture(seed=20)
    test = ref.copy()
    test[0, 0, 0] = np.nan
    test[1, 1, :] = np.inf
    test[2, 2, 1] = -np.inf
    test[3, 3, 2] = -4.0  # negative but finite: clipped, not counted
    scores = metrics.evaluate(ref, test)
    assert scores["nonfinite_test"] == 5.0
    for key, value in scores.items():
        assert np.isfinite(value), key
    # inf is read as 10000 cd/m2
    clipped = test.copy()
    clipped[0, 0, 0] = 0.0
    clipped[1, 1, :] = 10000.0
    clipped[2, 2, 1] = 0.0
    clipped[3, 3, 2] = 0.0
    assert metrics.psnr_pu21(ref, test) == pytest.approx(metrics.psnr_pu21(ref, clipped), rel=1e-12)


def test_all_nan_test_does_not_crash():
    ref = random_picture(seed=21)
    scores = metrics.evaluate(ref, np.full_like(ref, np.nan))
    assert scores["nonfinite_test"] == ref.size
    assert all(np.isfinite(v) for v in scores.values())


# --- flicker --------------------------------------------------------------------------------


def uniform_frames(levels, shape=(6, 8)):
    return [np.full((*shape, 3), level, dtype=np.float32) for level in levels]


def test_flicker_constant_is_zero():
    assert metrics.flicker(uniform_frames([100.0] * 5)) == 0.0


def test_flicker_alternating_levels():
    frames = uniform_frames([100.0, 400.0, 100.0, 400.0])
    expected = pu21_by_hand(400.0) - pu21_by_hand(100.0)
    assert metrics.flicker(frames) == pytest.approx(expected, rel=1e-5)
    assert metrics.flicker(iter(frames)) == pytest.approx(expected, rel=1e-5)  # any iterable


def test_flicker_short_sequences():
    assert metrics.flicker([]) == 0.0
    assert metrics.flicker(uniform_frames([100.0])) == 0.0


def test_flicker_relative():
    ref = uniform_frames([100.0, 200.0, 300.0])
    # Same changes as the master: nothing beyond them.
    assert metrics.flicker_relative(ref, [f.copy() for f in ref]) == 0.0
    # Static master, alternating reconstruction: all of the change is excess.
    static = uniform_frames([100.0] * 3)
    flashing = uniform_frames([100.0, 400.0, 100.0])
    expected = pu21_by_hand(400.0) - pu21_by_hand(100.0)
    assert metrics.flicker_relative(static, flashing) == pytest.approx(expected, rel=1e-5)
    assert metrics.flicker_relative(iter(static), (f for f in flashing)) == pytest.approx(
        expected, rel=1e-5
    )


def test_flicker_relative_validation():
    with pytest.raises(ValueError, match="length"):
        metrics.flicker_relative(uniform_frames([1.0, 2.0]), uniform_frames([1.0]))
    with pytest.raises(ValueError, match="shape"):
        metrics.flicker_relative(uniform_frames([1.0]), uniform_frames([1.0], shape=(5, 5)))
    with pytest.raises(ValueError, match="shape"):
        metrics.flicker([np.ones((4, 4))])
