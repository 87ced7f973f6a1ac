"""RGB primaries, white points and the 3x3 matrices between RGB spaces and CIE XYZ.

Matrices are computed from chromaticities as in SMPTE RP 177-1993 ("normalized primary
matrix"), then checked in the tests against the published ITU-R BT.2087-0 matrix.
Every matrix is a read-only float64 ``(3, 3)`` array applied to column vectors:
``xyz = M @ rgb``, i.e. :func:`apply_matrix` computes ``rgb @ M.T`` over ``(..., 3)``.

Linear RGB is channel-last ``(..., 3)``; ``Y = 1`` is the white of the RGB space.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "PRIMARIES_BT709",
    "PRIMARIES_BT2020",
    "PRIMARIES_P3",
    "WHITEPOINT_D65",
    "MATRIX_BRADFORD",
    "LUMINANCE_WEIGHTS_BT709",
    "LUMINANCE_WEIGHTS_BT2020",
    "xy_to_xyz",
    "matrix_rgb_to_xyz",
    "matrix_chromatic_adaptation_bradford",
    "matrix_rgb_to_rgb",
    "apply_matrix",
    "luminance",
    "MATRIX_BT709_TO_XYZ",
    "MATRIX_XYZ_TO_BT709",
    "MATRIX_BT2020_TO_XYZ",
    "MATRIX_XYZ_TO_BT2020",
    "MATRIX_P3_TO_XYZ",
    "MATRIX_BT709_TO_BT2020",
    "MATRIX_BT2020_TO_BT709",
    "MATRIX_P3_TO_BT2020",
    "MATRIX_BT2020_TO_P3",
]


def _frozen(a) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr


# CIE 1931 xy of the R, G, B primaries, shape (3, 2).
PRIMARIES_BT709 = _frozen([[0.640, 0.330], [0.300, 0.600], [0.150, 0.060]])
"""ITU-R BT.709-6 Part 2, item 1.3 (also sRGB)."""

PRIMARIES_BT2020 = _frozen([[0.708, 0.292], [0.170, 0.797], [0.131, 0.046]])
"""ITU-R BT.2020-2 Table 3 (same in ITU-R BT.2100-2 Table 2)."""

PRIMARIES_P3 = _frozen([[0.680, 0.320], [0.265, 0.690], [0.150, 0.060]])
"""SMPTE RP 431-2:2011 / EG 432-1:2010 P3 primaries (used with D65 for HDR10 mastering)."""

WHITEPOINT_D65 = _frozen([0.3127, 0.3290])
"""CIE D65 xy as written in ITU-R BT.709-6 / BT.2020-2 (four decimals)."""

MATRIX_BRADFORD = _frozen(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)
"""Bradford cone response matrix XYZ -> (rho, gamma, beta) (Lam 1985; ICC.1:2010 Annex E)."""

LUMINANCE_WEIGHTS_BT709 = _frozen([0.2126, 0.7152, 0.0722])
"""Published luminance weights of ITU-R BT.709-6 Part 2, item 3.2."""

LUMINANCE_WEIGHTS_BT2020 = _frozen([0.2627, 0.6780, 0.0593])
"""Published luminance weights of ITU-R BT.2020-2 Table 4 / BT.2100-2 Table 6."""


def _as_xy(a, shape: tuple[int, ...], what: str, *, positive_y: bool) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {shape} (CIE 1931 xy), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite xy chromaticities, got {arr.tolist()}")
    # Primaries may be imaginary (ACES AP0 blue has y = -0.077); a white point may not.
    if positive_y and np.any(arr[..., 1] <= 0):
        raise ValueError(f"{what} must have y > 0, got {arr.tolist()}")
    return arr


def xy_to_xyz(xy) -> np.ndarray:
    """CIE xy chromaticity -> XYZ tristimulus with Y = 1. ``xy``: (..., 2); returns (..., 3)."""
    xy = np.asarray(xy, dtype=np.float64)
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([x / y, np.ones_like(x), (1 - x - y) / y], axis=-1)


def matrix_rgb_to_xyz(primaries, whitepoint) -> np.ndarray:
    """Normalised primary matrix RGB -> CIE XYZ (SMPTE RP 177-1993, section 3.3).

    Parameters
    ----------
    primaries : array_like, shape (3, 2)
        xy of the R, G, B primaries (imaginary primaries such as ACES AP0 are fine).
    whitepoint : array_like, shape (2,)
        xy of the white point, y > 0; RGB (1, 1, 1) maps to its XYZ with Y = 1.

    Returns
    -------
    numpy.ndarray, shape (3, 3), float64
        M with ``XYZ = M @ RGB``; its middle row holds the luminance weights.
    """
    p = _as_xy(primaries, (3, 2), "primaries", positive_y=False)
    w = _as_xy(whitepoint, (2,), "whitepoint", positive_y=True)
    # Columns are the primaries' XYZ up to a scale chosen so white comes out right.
    xyz_primaries = np.stack([p[:, 0], p[:, 1], 1 - p[:, 0] - p[:, 1]], axis=0)
    if abs(np.linalg.det(xyz_primaries)) < 1e-12:
        raise ValueError(f"primaries {p.tolist()} are collinear in xy and span no RGB space")
    scale = np.linalg.solve(xyz_primaries, xy_to_xyz(w))
    return xyz_primaries * scale[None, :]


def matrix_chromatic_adaptation_bradford(src_whitepoint, dst_whitepoint) -> np.ndarray:
    """Bradford (linear, von Kries in the Bradford cone space) adaptation matrix, XYZ -> XYZ.

    Parameters
    ----------
    src_whitepoint, dst_whitepoint : array_like, shape (2,)
        xy of the source and destination white points.

    Returns
    -------
    numpy.ndarray, shape (3, 3), float64
        M with ``XYZ_dst = M @ XYZ_src``; identity when the white points match.
    """
    src = xy_to_xyz(_as_xy(src_whitepoint, (2,), "src_whitepoint", positive_y=True))
    dst = xy_to_xyz(_as_xy(dst_whitepoint, (2,), "dst_whitepoint", positive_y=True))
    cone_src = MATRIX_BRADFORD @ src
    cone_dst = MATRIX_BRADFORD @ dst
    return np.linalg.inv(MATRIX_BRADFORD) @ np.diag(cone_dst / cone_src) @ MATRIX_BRADFORD


def matrix_rgb_to_rgb(src_primaries, src_whitepoint, dst_primaries, dst_whitepoint) -> np.ndarray:
    """Linear RGB -> linear RGB matrix, with Bradford adaptation when the white points differ.

    For example an OpenEXR file whose ``chromaticities`` attribute gives ACES AP0 with
    the ACES white converts to BT.2020/D65 with
    ``matrix_rgb_to_rgb(ap0, ap0_white, PRIMARIES_BT2020, WHITEPOINT_D65)``.

    Parameters
    ----------
    src_primaries, dst_primaries : array_like, shape (3, 2)
        xy of the R, G, B primaries.
    src_whitepoint, dst_whitepoint : array_like, shape (2,)
        xy of the white points.

    Returns
    -------
    numpy.ndarray, shape (3, 3), float64
        M with ``rgb_dst = M @ rgb_src``; use :func:`apply_matrix`.
    """
    to_xyz = matrix_rgb_to_xyz(src_primaries, src_whitepoint)
    from_xyz = np.linalg.inv(matrix_rgb_to_xyz(dst_primaries, dst_whitepoint))
    src_w = np.asarray(src_whitepoint, dtype=np.float64)
    dst_w = np.asarray(dst_whitepoint, dtype=np.float64)
    if np.allclose(src_w, dst_w, rtol=0.0, atol=1e-12):
        return from_xyz @ to_xyz
    return from_xyz @ matrix_chromatic_adaptation_bradford(src_w, dst_w) @ to_xyz


def apply_matrix(rgb, matrix) -> np.ndarray:
    """Apply a 3x3 colour matrix to every pixel: ``rgb @ matrix.T`` over ``(..., 3)``.

    Parameters
    ----------
    rgb : array_like, shape (..., 3)
        Linear values (RGB or XYZ), any unit (the matrices here are unit-free).
    matrix : array_like, shape (3, 3)
        Column-vector matrix, e.g. :data:`MATRIX_BT709_TO_BT2020`.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        float32 when ``rgb`` is float32 (or float16), else float64. NaN/inf propagate.
    """
    arr = np.asarray(rgb)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"apply_matrix expects channel-last (..., 3) values, got shape {arr.shape}")
    m = np.asarray(matrix)
    if m.shape != (3, 3):
        raise ValueError(f"apply_matrix expects a (3, 3) matrix, got shape {m.shape}")
    dtype = np.float32 if arr.dtype in (np.float32, np.float16) else np.float64
    with np.errstate(invalid="ignore", over="ignore"):
        return arr.astype(dtype, copy=False) @ m.astype(dtype).T


_LUMINANCE_WEIGHTS = {
    "bt709": LUMINANCE_WEIGHTS_BT709,
    "bt2020": LUMINANCE_WEIGHTS_BT2020,
}


def luminance(rgb, primaries: Literal["bt2020", "bt709", "p3"] = "bt2020") -> np.ndarray:
    """Relative luminance Y of linear RGB, ``(..., 3) -> (...)``.

    BT.2020 uses 0.2627, 0.6780, 0.0593 (BT.2020-2 Table 4); BT.709 uses 0.2126, 0.7152,
    0.0722 (BT.709-6 item 3.2); P3 (D65) uses the middle row of its RP 177 matrix.

    Parameters
    ----------
    rgb : array_like, shape (..., 3)
        Linear RGB in any unit (cd/m2 in gives cd/m2 out).
    primaries : {"bt2020", "bt709", "p3"}
        Which RGB space ``rgb`` is in.

    Returns
    -------
    numpy.ndarray, shape (...)
        float32 for float32 input, else float64.
    """
    if primaries in _LUMINANCE_WEIGHTS:
        weights = _LUMINANCE_WEIGHTS[primaries]
    elif primaries == "p3":
        weights = MATRIX_P3_TO_XYZ[1]
    else:
        raise ValueError(
            f"unknown primaries {primaries!r} for luminance; expected one of "
            f"{sorted([*_LUMINANCE_WEIGHTS, 'p3'])}"
        )
    arr = np.asarray(rgb)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"luminance expects channel-last (..., 3) RGB, got shape {arr.shape}")
    dtype = np.float32 if arr.dtype in (np.float32, np.float16) else np.float64
    with np.errstate(invalid="ignore", over="ignore"):
        return arr.astype(dtype, copy=False) @ weights.astype(dtype)


MATRIX_BT709_TO_XYZ = _frozen(matrix_rgb_to_xyz(PRIMARIES_BT709, WHITEPOINT_D65))
MATRIX_XYZ_TO_BT709 = _frozen(np.linalg.inv(MATRIX_BT709_TO_XYZ))
MATRIX_BT2020_TO_XYZ = _frozen(matrix_rgb_to_xyz(PRIMARIES_BT2020, WHITEPOINT_D65))
MATRIX_XYZ_TO_BT2020 = _frozen(np.linalg.inv(MATRIX_BT2020_TO_XYZ))
MATRIX_P3_TO_XYZ = _frozen(matrix_rgb_to_xyz(PRIMARIES_P3, WHITEPOINT_D65))
MATRIX_BT709_TO_BT2020 = _frozen(MATRIX_XYZ_TO_BT2020 @ MATRIX_BT709_TO_XYZ)
"""ITU-R BT.2087-0 section 2 prints this matrix to four decimals."""
MATRIX_BT2020_TO_BT709 = _frozen(np.linalg.inv(MATRIX_BT709_TO_BT2020))
MATRIX_P3_TO_BT2020 = _frozen(MATRIX_XYZ_TO_BT2020 @ MATRIX_P3_TO_XYZ)
MATRIX_BT2020_TO_P3 = _frozen(np.linalg.inv(MATRIX_P3_TO_BT2020))
