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

Speed (benchmarks/colour_speed.py, docs/colour-speed.md): the per-pixel conversions run in
cache-sized blocks with preallocated scratch. ``rgb_to_ycbcr`` always does float64
arithmetic, so its codes are those of the exact formula for any input dtype;
``ycbcr_to_rgb(..., dtype=np.float32)`` and 16-bit-or-narrower chroma planes are computed
in float32, exact where the values allow (integer chroma weights) and otherwise within
float32 rounding.
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


def ycbcr_weights(matrix: str) -> tuple[float, float]:
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


def code_scale(bits: int = 10, full_range: bool = False) -> tuple[int, int, int, int]:
    """``(gain_y, offset_y, gain_c, offset_c)``: code = E' * gain + offset (BT.2100-2 table 9),
    for E'_Y in [0, 1] and E'_Cb, E'_Cr in [-0.5, 0.5], before rounding and clipping.

    Narrow range: (219 E'_Y + 16) 2^(n-8); the power-of-two step is exact, so it folds into
    the gain and offset without changing a bit of the product. Full range: (2^n - 1) E'_Y
    and (2^n - 1) E'_C + 2^(n-1).
    """
    bits = _check_bits(bits)
    if full_range:
        scale = 2**bits - 1
        return scale, 0, scale, 2 ** (bits - 1)
    step = 2 ** (bits - 8)
    return 219 * step, 16 * step, 224 * step, 128 * step


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
    k_r, k_b = ycbcr_weights(matrix)
    bits = _check_bits(bits)
    arr = np.asarray(rgb)
    if not (np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize <= 8):
        arr = arr.astype(np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_ycbcr expects channel-last (..., 3) R'G'B', got shape {arr.shape}")
    gain_y, offset_y, gain_c, offset_c = code_scale(bits, full_range)
    lo, hi = ycbcr_code_range(bits, full_range)
    pixels = arr.reshape(-1, 3)
    codes = np.empty(pixels.shape, np.uint16)
    # Always float64 arithmetic (float32 input is widened per block): the codes are those
    # of the exact formula, and cache-sized blocks keep it fast.
    rgb_block = np.empty((3, _PIXELS_PER_BLOCK))
    code_block = np.empty((3, _PIXELS_PER_BLOCK))
    for start in range(0, len(pixels), _PIXELS_PER_BLOCK):
        src = pixels[start : start + _PIXELS_PER_BLOCK]
        n = len(src)
        rgb_p, code_p = rgb_block[:, :n], code_block[:, :n]
        np.copyto(rgb_p, src.T)
        if not np.isfinite(rgb_p.sum()):
            np.nan_to_num(rgb_p, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        r, g, b = rgb_p
        d_y, d_cb, d_cr = code_p
        # E'_Y = K_R R' + K_G G' + K_B B', in this order.
        np.multiply(r, k_r, out=d_y)
        np.multiply(g, 1 - k_r - k_b, out=d_cr)
        np.add(d_y, d_cr, out=d_y)
        np.multiply(b, k_b, out=d_cr)
        np.add(d_y, d_cr, out=d_y)
        # E'_Cb = (B' - E'_Y) / (2 (1 - K_B)), E'_Cr = (R' - E'_Y) / (2 (1 - K_R)).
        np.subtract(b, d_y, out=d_cb)
        np.divide(d_cb, 2 * (1 - k_b), out=d_cb)
        np.subtract(r, d_y, out=d_cr)
        np.divide(d_cr, 2 * (1 - k_r), out=d_cr)
        np.multiply(d_y, gain_y, out=d_y)
        np.add(d_y, offset_y, out=d_y)
        np.multiply(code_p[1:], gain_c, out=code_p[1:])
        np.add(code_p[1:], offset_c, out=code_p[1:])
        # Clip before rounding so huge finite values cannot overflow the integer cast;
        # after the clip x + 0.5 > 0, so truncation is BT.2100's Floor(x + 0.5).
        np.clip(code_p, lo, hi, out=code_p)
        np.add(code_p, 0.5, out=code_p)
        np.copyto(codes[start : start + n].T, code_p, casting="unsafe")
    return codes.reshape(arr.shape)


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
    k_r, k_b = ycbcr_weights(matrix)
    bits = _check_bits(bits)
    dtype = np.dtype(dtype)
    arr = np.asarray(codes)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"ycbcr_to_rgb expects channel-last (..., 3) codes, got shape {arr.shape}")
    work = np.float32 if dtype == np.float32 and _fits_float32(arr.dtype) else np.float64
    if full_range:
        scale = 2**bits - 1
        gain_y, offset_y = 1 / scale, 0.0
        gain_c, offset_c = 1 / scale, -(2 ** (bits - 1)) / scale
    else:
        step = 2 ** (bits - 8)
        gain_y, offset_y = 1 / (219 * step), -16 / 219
        gain_c, offset_c = 1 / (224 * step), -128 / 224
    # R' = Y' + 2 (1 - K_R) Cr', B' = Y' + 2 (1 - K_B) Cb', G' = (Y' - K_R R' - K_B B') / K_G.
    k_g = 1 - k_r - k_b
    r_cr, b_cb = 2 * (1 - k_r), 2 * (1 - k_b)
    g_cb, g_cr = -k_b * b_cb / k_g, -k_r * r_cr / k_g
    pixels = arr.reshape(-1, 3)
    out = np.empty(pixels.shape, dtype if dtype in (np.float32, np.float64) else np.float64)
    ycc_block = np.empty((3, _PIXELS_PER_BLOCK), work)
    rgb_block = np.empty((3, _PIXELS_PER_BLOCK), work)
    for start in range(0, len(pixels), _PIXELS_PER_BLOCK):
        src = pixels[start : start + _PIXELS_PER_BLOCK]
        n = len(src)
        ycc, rgb_p = ycc_block[:, :n], rgb_block[:, :n]
        np.copyto(ycc, src.T, casting="unsafe")
        y, cb, cr = ycc
        r, g, b = rgb_p
        np.multiply(y, gain_y, out=y)
        np.add(y, offset_y, out=y)
        np.multiply(ycc[1:], gain_c, out=ycc[1:])
        np.add(ycc[1:], offset_c, out=ycc[1:])
        np.multiply(cr, r_cr, out=r)
        np.add(r, y, out=r)
        np.multiply(cb, b_cb, out=b)
        np.add(b, y, out=b)
        np.multiply(cb, g_cb, out=g)
        np.add(g, y, out=g)
        np.multiply(cr, g_cr, out=cb)
        np.add(g, cb, out=g)
        np.copyto(out[start : start + n].T, rgb_p, casting="unsafe")
    return out.reshape(arr.shape).astype(dtype, copy=False)


_PIXELS_PER_BLOCK = 1 << 14
"""Pixels per block of the per-pixel conversions: their float64 scratch fits in L2 cache."""


def _fits_float32(dtype: np.dtype) -> bool:
    """Values of ``dtype`` are exact in float32 (codes up to 16 bits, float16/32)."""
    if np.issubdtype(dtype, np.integer):
        return dtype.itemsize <= 2
    return dtype in (np.float16, np.float32)


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
    """c[2j-1] + 2 c[2j] + c[2j+1] at even columns (co-sited), edge samples repeated. Axis -1.

    The sum, not yet divided by 4; added in the order (left + 2 centre) + right.
    """
    w = c.shape[-1]
    n_out, n_odd = -(-w // 2), w // 2
    odd = c[..., 1::2]
    out = np.multiply(c[..., 0::2], 2)
    np.add(out[..., 1:], odd[..., : n_out - 1], out=out[..., 1:])  # left neighbours
    out[..., 0] += c[..., 0]
    np.add(out[..., :n_odd], odd, out=out[..., :n_odd])  # right neighbours
    if w % 2:
        out[..., -1] += c[..., -1]
    return out


def _down_vertical(c: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Sum of row pairs in ``dtype`` (chroma halfway between them), last row repeated if odd. Axis -2."""
    h = c.shape[-2]
    out = np.empty((*c.shape[:-2], -(-h // 2), c.shape[-1]), dtype)
    np.add(c[..., 0 : h - 1 : 2, :], c[..., 1::2, :], out=out[..., : h // 2, :], dtype=dtype)
    if h % 2:
        np.add(c[..., -1:, :], c[..., -1:, :], out=out[..., -1:, :], dtype=dtype)
    return out


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
    if fy == fx == 1:
        return y, arr[..., 1].astype(dtype, copy=True), arr[..., 2].astype(dtype, copy=True)
    # 8/16-bit codes: exact integer sums, then round half up as (sum + divisor/2) // divisor,
    # the same codes as the float64 formula. float32 planes stay float32.
    exact_int = np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2
    work = np.dtype(np.int32) if exact_int else (dtype if dtype == np.float32 else np.dtype(np.float64))
    divisor = fy * 2 * fx  # row pair sum, then the [1, 2, 1] weights (sum 4)
    chroma = []
    for k in (1, 2):
        c = arr[..., k]
        c = _down_vertical(c, work) if fy == 2 else c.astype(work)
        c = _down_horizontal(c)
        if exact_int:
            c += divisor // 2
            c //= divisor
            chroma.append(c.astype(dtype))
        else:
            c /= divisor  # a power of two: same bits as the float64 (/2 then /4)
            chroma.append(_like(c, dtype))
    return y, chroma[0], chroma[1]


def _up_vertical(c: np.ndarray, h: int) -> np.ndarray:
    """4:2:0 chroma rows (at luma rows 2 i + 0.5) linearly interpolated to ``h`` luma rows.

    Luma row 2 i is 1/4 c[i-1] + 3/4 c[i], row 2 i + 1 is 3/4 c[i] + 1/4 c[i+1]; the first
    and last rows use their nearest chroma row for the missing neighbour.
    """
    quarter = c * 0.25
    three_quarters = np.multiply(c, 0.75, out=c)  # c is the caller's scratch copy
    out = np.empty((*c.shape[:-2], h, c.shape[-1]), c.dtype)
    n_even, n_odd = -(-h // 2), h // 2
    even, odd = out[..., 0::2, :], out[..., 1::2, :]
    np.add(quarter[..., :1, :], three_quarters[..., :1, :], out=even[..., :1, :])
    np.add(quarter[..., : n_even - 1, :], three_quarters[..., 1:n_even, :], out=even[..., 1:, :])
    n_inner = min(n_odd, c.shape[-2] - 1)
    np.add(three_quarters[..., :n_inner, :], quarter[..., 1 : n_inner + 1, :], out=odd[..., :n_inner, :])
    if n_odd > n_inner:  # last luma row below the last chroma row
        np.add(three_quarters[..., -1:, :], quarter[..., -1:, :], out=odd[..., -1:, :])
    return out


def _up_horizontal_into(c: np.ndarray, out: np.ndarray) -> None:
    """Chroma on even luma columns into ``out`` (..., W): even columns copy, odd columns
    average their two neighbours (the last one repeats the last chroma sample)."""
    w, n_c = out.shape[-1], c.shape[-1]
    np.copyto(out[..., 0::2], c, casting="unsafe")
    n_odd = w // 2
    n_inner = min(n_odd, n_c - 1)
    mean = np.add(c[..., :n_inner], c[..., 1 : n_inner + 1])
    np.multiply(mean, 0.5, out=mean)
    np.copyto(out[..., 1 : 2 * n_inner : 2], mean, casting="unsafe")
    if n_odd > n_inner:
        np.copyto(out[..., -1], c[..., -1], casting="unsafe")


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
    chroma = [np.asarray(cb), np.asarray(cr)]
    for name, c in zip(("cb", "cr"), chroma):
        if c.shape != expected:
            raise ValueError(
                f"{name} has shape {c.shape}, but {subsampling} chroma for luma {y.shape} "
                f"must have shape {expected}"
            )
    # Weights 3/4, 1/4, 1/2 on codes of up to 16 bits are exact in float32, so 8/16-bit
    # chroma going to float32 or integer planes is computed in float32 with the same
    # result as float64; float32 chroma to float32 planes differs by float32 rounding.
    fast = all(_fits_float32(c.dtype) for c in chroma) and (
        dtype == np.float32 or (np.issubdtype(dtype, np.integer) and all(c.dtype.kind in "iu" for c in chroma))
    )
    work = np.float32 if fast else np.float64
    out = np.empty((*y.shape, 3), dtype)
    out[..., 0] = y
    for k, c in enumerate(chroma, start=1):
        c = c.astype(work)  # a copy, scaled in place below
        if fy == 2:
            c = _up_vertical(c, h)
        if fx == 1:
            np.copyto(out[..., k], _like(c, dtype), casting="unsafe")
        elif np.issubdtype(dtype, np.integer):
            full = np.empty((*y.shape[:-1], w), work)
            _up_horizontal_into(c, full)
            out[..., k] = _like(full, dtype)
        else:
            _up_horizontal_into(c, out[..., k])
    return out
