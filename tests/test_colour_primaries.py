"""Primaries and matrices: ITU-R BT.2087 published matrix, colour-science as oracle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from itmfilter.colour import primaries as pr

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour warns about matplotlib being absent
    colour = pytest.importorskip("colour")

ACES_AP0 = [[0.7347, 0.2653], [0.0, 1.0], [0.0001, -0.0770]]
ACES_WHITE = [0.32168, 0.33767]
RNG = np.random.default_rng(7)


def test_primaries_constants():
    np.testing.assert_array_equal(pr.PRIMARIES_BT709, [[0.64, 0.33], [0.30, 0.60], [0.15, 0.06]])
    np.testing.assert_array_equal(pr.PRIMARIES_BT2020, [[0.708, 0.292], [0.170, 0.797], [0.131, 0.046]])
    np.testing.assert_array_equal(pr.PRIMARIES_P3, [[0.680, 0.320], [0.265, 0.690], [0.150, 0.060]])
    np.testing.assert_array_equal(pr.WHITEPOINT_D65, [0.3127, 0.3290])
    for const in (pr.PRIMARIES_BT2020, pr.MATRIX_BT709_TO_BT2020, pr.WHITEPOINT_D65):
        with pytest.raises(ValueError):
            const[0] = 0  # read-only: nobody can corrupt a shared constant


def test_bt709_to_bt2020_matches_bt2087():
    # ITU-R BT.2087-0 section 2, printed to four decimals.
    bt2087 = [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    np.testing.assert_allclose(pr.MATRIX_BT709_TO_BT2020, bt2087, atol=5e-5 + 1e-12)
    np.testing.assert_allclose(pr.MATRIX_BT2020_TO_BT709 @ pr.MATRIX_BT709_TO_BT2020, np.eye(3), atol=1e-12)


def test_bt2020_npm_luminance_row():
    # BT.2020-2 Table 4 luminance weights are the NPM's middle row, rounded to 4 decimals.
    np.testing.assert_allclose(pr.MATRIX_BT2020_TO_XYZ[1], [0.2627, 0.6780, 0.0593], atol=5e-5)
    np.testing.assert_allclose(pr.MATRIX_BT709_TO_XYZ[1], [0.2126, 0.7152, 0.0722], atol=5e-5)


@pytest.mark.parametrize(
    ("ours", "name"),
    [
        ("MATRIX_BT709_TO_XYZ", "ITU-R BT.709"),
        ("MATRIX_BT2020_TO_XYZ", "ITU-R BT.2020"),
        ("MATRIX_P3_TO_XYZ", "P3-D65"),
    ],
)
def test_npm_matches_colour(ours, name):
    space = colour.RGB_COLOURSPACES[name]
    np.testing.assert_allclose(getattr(pr, ours), space.matrix_RGB_to_XYZ, atol=1e-9)
    oracle = colour.normalised_primary_matrix(space.primaries, space.whitepoint)
    np.testing.assert_allclose(getattr(pr, ours), oracle, atol=1e-14)


def test_rgb_to_rgb_matrices_match_colour():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle_709 = colour.matrix_RGB_to_RGB("ITU-R BT.709", "ITU-R BT.2020", None)
        oracle_p3 = colour.matrix_RGB_to_RGB("P3-D65", "ITU-R BT.2020", None)
    np.testing.assert_allclose(pr.MATRIX_BT709_TO_BT2020, oracle_709, atol=1e-9)
    np.testing.assert_allclose(pr.MATRIX_P3_TO_BT2020, oracle_p3, atol=1e-9)
    np.testing.assert_allclose(pr.MATRIX_BT2020_TO_P3 @ pr.MATRIX_P3_TO_BT2020, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(pr.MATRIX_XYZ_TO_BT2020 @ pr.MATRIX_BT2020_TO_XYZ, np.eye(3), atol=1e-12)
    for m in (pr.MATRIX_BT709_TO_BT2020, pr.MATRIX_BT2020_TO_BT709, pr.MATRIX_P3_TO_BT2020):
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)  # D65 white stays white


def test_matrix_rgb_to_rgb_same_white():
    m = pr.matrix_rgb_to_rgb(pr.PRIMARIES_BT709, pr.WHITEPOINT_D65, pr.PRIMARIES_BT2020, pr.WHITEPOINT_D65)
    np.testing.assert_allclose(m, pr.MATRIX_BT709_TO_BT2020, atol=1e-15)


def test_matrix_rgb_to_rgb_bradford_matches_colour():
    # OpenEXR with ACES AP0 chromaticities (imaginary blue, ACES white) -> BT.2020 / D65.
    ours = pr.matrix_rgb_to_rgb(ACES_AP0, ACES_WHITE, pr.PRIMARIES_BT2020, pr.WHITEPOINT_D65)
    cat = colour.adaptation.matrix_chromatic_adaptation_VonKries(
        colour.xy_to_XYZ(ACES_WHITE), colour.xy_to_XYZ(pr.WHITEPOINT_D65), transform="Bradford"
    )
    oracle = (
        np.linalg.inv(colour.normalised_primary_matrix(pr.PRIMARIES_BT2020, pr.WHITEPOINT_D65))
        @ cat
        @ colour.normalised_primary_matrix(ACES_AP0, ACES_WHITE)
    )
    np.testing.assert_allclose(ours, oracle, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        published = colour.matrix_RGB_to_RGB("ACES2065-1", "ITU-R BT.2020", "Bradford")
    np.testing.assert_allclose(ours, published, atol=1e-4)  # colour uses AP0's published NPM
    # Bradford sends the source white to the destination white: RGB (1,1,1) -> (1,1,1).
    np.testing.assert_allclose(ours @ np.ones(3), np.ones(3), atol=1e-12)


def test_bradford_identity_and_inverse():
    np.testing.assert_allclose(
        pr.matrix_chromatic_adaptation_bradford(pr.WHITEPOINT_D65, pr.WHITEPOINT_D65), np.eye(3), atol=1e-15
    )
    d50 = [0.3457, 0.3585]
    fwd = pr.matrix_chromatic_adaptation_bradford(pr.WHITEPOINT_D65, d50)
    back = pr.matrix_chromatic_adaptation_bradford(d50, pr.WHITEPOINT_D65)
    np.testing.assert_allclose(fwd @ back, np.eye(3), atol=1e-12)


def test_matrix_validation():
    with pytest.raises(ValueError, match="shape"):
        pr.matrix_rgb_to_xyz([[0.6, 0.3], [0.3, 0.6]], pr.WHITEPOINT_D65)
    with pytest.raises(ValueError, match="y > 0"):
        pr.matrix_rgb_to_xyz(pr.PRIMARIES_BT709, [0.3, 0.0])
    with pytest.raises(ValueError, match="collinear"):
        pr.matrix_rgb_to_xyz([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], pr.WHITEPOINT_D65)
    with pytest.raises(ValueError, match="finite"):
        pr.matrix_rgb_to_xyz([[np.nan, 0.3], [0.3, 0.6], [0.15, 0.06]], pr.WHITEPOINT_D65)


def test_apply_matrix_shapes_and_dtypes():
    m = pr.MATRIX_BT709_TO_BT2020
    one = pr.apply_matrix([1.0, 0.0, 0.0], m)
    assert one.shape == (3,) and one.dtype == np.float64
    np.testing.assert_allclose(one, m[:, 0])
    img = RNG.uniform(0, 1, (4, 5, 3))
    out = pr.apply_matrix(img, m)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, np.einsum("ij,hwj->hwi", m, img), atol=1e-15)
    out32 = pr.apply_matrix(img.astype(np.float32), m)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out, atol=1e-6)
    assert pr.apply_matrix(np.ones((2, 3), np.float16), m).dtype == np.float32
    assert pr.apply_matrix(np.ones((2, 3), np.uint8), m).dtype == np.float64
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        pr.apply_matrix(np.ones((4, 4)), m)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        pr.apply_matrix(np.ones(3), np.eye(4))


def test_apply_matrix_nan_inf():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = pr.apply_matrix([[np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0], [0.5, 0.5, 0.5]], pr.MATRIX_BT2020_TO_BT709)
    assert np.all(np.isnan(out[0]))
    assert np.isinf(out[1, 0])
    np.testing.assert_allclose(out[2], 0.5, atol=1e-12)


def test_luminance():
    np.testing.assert_allclose(pr.luminance([1.0, 0.0, 0.0]), 0.2627)
    np.testing.assert_allclose(pr.luminance(np.eye(3)), [0.2627, 0.6780, 0.0593])
    np.testing.assert_allclose(pr.luminance(np.eye(3), "bt709"), [0.2126, 0.7152, 0.0722])
    np.testing.assert_allclose(pr.luminance(np.eye(3), "p3"), pr.MATRIX_P3_TO_XYZ[1])
    np.testing.assert_allclose(pr.luminance(np.full((4, 5, 3), 100.0)), np.full((4, 5), 100.0))
    assert pr.luminance(np.ones((2, 3), np.float32)).dtype == np.float32
    # BT.709 content placed in BT.2020 keeps its luminance.
    rgb709 = RNG.uniform(0, 1, (10, 3))
    np.testing.assert_allclose(
        pr.luminance(pr.apply_matrix(rgb709, pr.MATRIX_BT709_TO_BT2020)), pr.luminance(rgb709, "bt709"), atol=2e-4
    )
    with pytest.raises(ValueError, match="unknown primaries"):
        pr.luminance(np.ones(3), "bt601")
    assert np.isnan(pr.luminance([np.nan, 0.0, 0.0]))
