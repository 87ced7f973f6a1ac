"""R'G'B' <-> Y'CbCr integer code values, and chroma subsampling.

Exact formulas of ITU-R BT.709-6 Part 3 / BT.2020-2 Table 4 and 5 / BT.2100-2 Table 9
(non-constant luminance), not an approximation of any library's fixed-point path.

* Narrow ("limited") range, n bits: D_Y = Round((219 E'_Y + 16) 2^(n-8)),
  D_C = Round((224 E'_C + 128) 2^(n-8)); 10-bit black 64, white 940, neutral chroma 512.
* Full range (BT.2100-2 Table 9): D_Y = Round((2^n - 1) E'_Y),
  D_C = Round((2^n - 1) E'_C + 2^(n-1)); 10-bit white 1023, neutral chroma 512.

Code values are ordered Y, Cb, Cr on the last axis, ``(..., 3)`` uint16.

Chroma subsampling uses the H.265/H.264 default siting ``chroma_loc_type 0`` ("left"):
chroma samples are co-sited with the even luma columns and sit halfway between luma
row pairs (4:2:0).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "YCBCR_WEIGHTS",
    "ycbcr_code_range",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "subsample_chroma",
    "upsample_chroma",
]

YcbcrMatrix = Literal["bt709", "bt2020nc"]
Subsampling = Literal["420", "422", "444"]

YCBCR_WEIGHTS: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),  # (K_R, K_B), ITU-R BT.709-6 Part 3 item 3.2
    "bt2020nc": (0.2627, 0.0593),  # ITU-R BT.2020-2 Table 4, BT.2100-2 Table 6
}
"""Luma weights (K_R, K_B) of each Y'CbCr matrix; K_G = 1 - K_R - K_B."""


def _weights(matrix: str) -> tuple[float, float]:
    try:
        return YCBCR_WEIGHTS[matrix]
    except KeyError:
        raise ValueError(
            f"unknown Y'CbCr matrix {matrix!r}; expected one of {sorted(YCBCR_WEIGHTS)}"
        ) from None


def _check_bits(bits: int) -> int:
    if int(bits) != bits or not 8 <= bits <= 16:
        raise ValueError(f"bit depth must be an integer in 8..16, got {bits!r}")
    return int(bits)


def ycbcr_code_range(bits: int = 10, full_range: bool = False) -> tuple[int, int]:
    """Lowest and highest code value that :func:`rgb_to_ycbcr` produces.

    Narrow range keeps to the BT.2100-2 valid codes [2^(n-8), 2^n - 2^(n-8) - 1]
    (4..1019 at 10 bits; the codes outside are reserved for timing); full range uses
    [0, 2^n - 1].
    """
    bits = _check_bits(bits)
    if full_range:
        return 0, 2**bits - 1
    step = 2 ** (bits - 8)
    return step, 2**bits - step - 1


def rgb_to_ycbcr(
    rgb,
    matrix: YcbcrMatrix = "bt709",
    bits: int = 10,
    full_range: bool = False,
) -> np.ndarray:
    """Non-linear R'G'B' -> integer Y'CbCr code values (BT.709-6 / BT.2020-2 / BT.2100-2).

    Parameters
    ----------
    rgb : array_like, shape (..., 3)
        Non-linear R'G'B' (gamma- or PQ-encoded), nominally [0, 1]. Finite values outside
        [0, 1] go through the matrix and are clipped as codes; NaN counts as 0 and
        +inf/-inf as 1/0 before the matrix.
    matrix : {"bt709", "bt2020nc"}
        Luma weights (BT.2020 non-constant luminance for "bt2020nc").
    bits : int
        Bit depth n, 8..16.
    full_range : bool
        Full (PC) range instead of narrow (TV) range.

    Returns
    -------
    numpy.ndarray, shape (..., 3), uint16
        Y, Cb, Cr codes. Rounding is BT.2100's Round(x) = Sign(x) Floor(|x| + 0.5),
        i.e. halves round up for every code that survives the clip; clipped to
        :func:`ycbcr_code_range`.
    """
    k_r, k_b = _weights(matrix)
    bits = _check_bits(bits)
    arr = np.asarray(rgb, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_ycbcr expects channel-last (..., 3) R'G'B', got shape {arr.shape}")
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    y = k_r * r + (1 - k_r - k_b) * g + k_b * b
    cb = (b - y) / (2 * (1 - k_b))
    cr = (r - y) / (2 * (1 - k_r))
    if full_range:
        scale = 2**bits - 1
        codes = np.stack([scale * y, scale * cb + 2 ** (bits - 1), scale * cr + 2 ** (bits - 1)], -1)
    else:
        step = 2 ** (bits - 8)
        codes = np.stack([(219 * y + 16) * step, (224 * cb + 128) * step, (224 * cr + 128) * step], -1)
    lo, hi = ycbcr_code_range(bits, full_range)
    # Clip before rounding so huge finite values cannot overflow the integer cast.
    codes = np.floor(np.clip(codes, lo, hi) + 0.5)
    return codes.astype(np.uint16)


def ycbcr_to_rgb(
    codes,
    matrix: YcbcrMatrix = "bt709",
    bits: int = 10,
    full_range: bool = False,
    dtype=np.float64,
) -> np.ndarray:
    """Integer Y'CbCr code values -> non-linear R'G'B' (inverse of :func:`rgb_to_ycbcr`).

    Parameters
    ----------
    codes : array_like, shape (..., 3)
        Y, Cb, Cr code values (any integer or float dtype; fractional codes are fine,
        e.g. after chroma upsampling).
    matrix, bits, full_range
        As in :func:`rgb_to_ycbcr`.
    dtype : numpy dtype
        float64 (default) or float32 for the result.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        R'G'B', nominally [0, 1]; not clipped, so super-whites and out-of-gamut
        combinations come back as values outside [0, 1].
    """
    k_r, k_b = _weights(matrix)
    bits = _check_bits(bits)
    arr = np.asarray(codes, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"ycbcr_to_rgb expects channel-last (..., 3) codes, got shape {arr.shape}")
    d_y, d_cb, d_cr = arr[..., 0], arr[..., 1], arr[..., 2]
    if full_range:
        scale = 2**bits - 1
        y = d_y / scale
        cb = (d_cb - 2 ** (bits - 1)) / scale
        cr = (d_cr - 2 ** (bits - 1)) / scale
    else:
        step = 2 ** (bits - 8)
        y = (d_y / step - 16) / 219
        cb = (d_cb / step - 128) / 224
        cr = (d_cr / step - 128) / 224
    r = y + 2 * (1 - k_r) * cr
    b = y + 2 * (1 - k_b) * cb
    g = (y - k_r * r - k_b * b) / (1 - k_r - k_b)
    return np.stack([r, g, b], axis=-1).astype(dtype, copy=False)


# --- Chroma subsampling -----------------------------------------------------------------

_FACTORS = {"444": (1, 1), "422": (1, 2), "420": (2, 2)}  # (vertical, horizontal)


def _factors(subsampling: str) -> tuple[int, int]:
    try:
        return _FACTORS[subsampling]
    except KeyError:
        raise ValueError(
            f"unknown chroma subsampling {subsampling!r}; expected one of {sorted(_FACTORS)}"
        ) from None


def _down_horizontal(c: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 at even columns (co-sited), edge samples repeated. Axis -1."""
    w = c.shape[-1]
    padded = np.concatenate([c[..., :1], c, c[..., -1:]], axis=-1)  # index i+1 = column i
    even = np.arange(0, w, 2)
    return (padded[..., even] + 2 * padded[..., even + 1] + padded[..., even + 2]) / 4


def _down_vertical(c: np.ndarray) -> np.ndarray:
    """Mean of row pairs (chroma halfway between them), last row repeated if odd. Axis -2."""
    if c.shape[-2] % 2:
        c = np.concatenate([c, c[..., -1:, :]], axis=-2)
    return (c[..., 0::2, :] + c[..., 1::2, :]) / 2


def _plane_dtype(dtype: np.dtype) -> np.dtype:
    """Integer codes and float32/float64 keep their dtype; anything else becomes float64."""
    if np.issubdtype(dtype, np.integer) or dtype in (np.float32, np.float64):
        return dtype
    return np.dtype(np.float64)


def _like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to ``dtype``: integer code planes are rounded half up and clipped to the dtype."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.floor(values + 0.5), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def subsample_chroma(ycbcr, subsampling: Subsampling = "420"):
    """Split ``(..., H, W, 3)`` Y'CbCr into a luma plane and subsampled chroma planes.

    Chroma siting is H.265 ``chroma_loc_type 0`` (the default, "left"): horizontally a
    [1, 2, 1] / 4 filter centred on the even luma columns, vertically (4:2:0) the mean of
    each row pair. Edges repeat the last sample, so odd sizes give ceil(H/2) x ceil(W/2).

    Parameters
    ----------
    ycbcr : array_like, shape (..., H, W, 3)
        Y, Cb, Cr as floats or as integer code values.
    subsampling : {"420", "422", "444"}

    Returns
    -------
    (y, cb, cr) : tuple of numpy.ndarray
        ``y`` shape (..., H, W); ``cb``, ``cr`` shape (..., ceil(H/2), ceil(W/2)) for
        4:2:0, (..., H, ceil(W/2)) for 4:2:2, (..., H, W) for 4:4:4. Same dtype as the
        input (integer codes are rounded half up).
    """
    fy, fx = _factors(subsampling)
    arr = np.asarray(ycbcr)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"subsample_chroma expects (..., H, W, 3) Y'CbCr, got shape {arr.shape}")
    dtype = _plane_dtype(arr.dtype)
    y = arr[..., 0].astype(dtype, copy=True)
    chroma = []
    for k in (1, 2):
        c = arr[..., k].astype(np.float64)
        if fy == 2:
            c = _down_vertical(c)
        if fx == 2:
            c = _down_horizontal(c)
        chroma.append(_like(c, dtype))
    return y, chroma[0], chroma[1]


def _up_axis(c: np.ndarray, n_out: int, axis: int, offset: float) -> np.ndarray:
    """Linear interpolation of chroma to ``n_out`` luma positions along ``axis``.

    Chroma sample i sits at luma position 2 i + offset; positions beyond the first or
    last chroma sample take that sample's value.
    """
    n_in = c.shape[axis]
    t = (np.arange(n_out) - offset) / 2
    i0 = np.floor(t).astype(np.intp)
    frac = t - i0
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    i0 = np.clip(i0, 0, n_in - 1)
    shape = [1] * c.ndim
    shape[axis] = n_out
    frac = frac.reshape(shape)
    return np.take(c, i0, axis=axis) * (1 - frac) + np.take(c, i1, axis=axis) * frac


def upsample_chroma(y, cb, cr, subsampling: Subsampling = "420") -> np.ndarray:
    """Rebuild ``(..., H, W, 3)`` Y'CbCr from a luma plane and subsampled chroma planes.

    Linear interpolation consistent with the siting of :func:`subsample_chroma`
    (chroma_loc_type 0): horizontally chroma sample j sits on luma column 2 j, so even
    columns copy it and odd columns average neighbours; vertically (4:2:0) chroma row i
    sits at luma row 2 i + 0.5, giving 3/4, 1/4 weights.

    Parameters
    ----------
    y : array_like, shape (..., H, W)
    cb, cr : array_like
        Shapes as returned by :func:`subsample_chroma` for this ``H``, ``W``.
    subsampling : {"420", "422", "444"}

    Returns
    -------
    numpy.ndarray, shape (..., H, W, 3)
        Y, Cb, Cr in ``y``'s dtype (integer codes are rounded half up).
    """
    fy, fx = _factors(subsampling)
    y = np.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"upsample_chroma expects a (..., H, W) luma plane, got shape {y.shape}")
    h, w = y.shape[-2:]
    expected = (*y.shape[:-2], -(-h // fy), -(-w // fx))
    dtype = _plane_dtype(y.dtype)
    planes = [y.astype(dtype, copy=False)]
    for name, c in (("cb", cb), ("cr", cr)):
        c = np.asarray(c, dtype=np.float64)
        if c.shape != expected:
            raise ValueError(
                f"{name} has shape {c.shape}, but {subsampling} chroma for luma {y.shape} "
                f"must have shape {expected}"
            )
        if fy == 2:
            c = _up_axis(c, h, axis=-2, offset=0.5)
        if fx == 2:
            c = _up_axis(c, w, axis=-1, offset=0.0)
        planes.append(_like(c, dtype))
    return np.stack(planes, axis=-1)
