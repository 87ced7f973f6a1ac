"""Transfer functions: PQ (SMPTE ST 2084), HLG (ITU-R BT.2100-2), BT.1886, sRGB, BT.709.

Naming follows colour-science, in PEP 8 case: ``eotf_st2084`` maps a non-linear code
value to display light, ``eotf_inverse_st2084`` goes back, ``oetf_*`` maps scene light
to a code value and ``ootf_*`` scene light to display light.

Conventions shared by every function here:

* Inputs are anything :func:`numpy.asarray` accepts (python floats, lists, arrays of
  any shape). HLG OOTF/EOTF functions need channel-last RGB ``(..., 3)`` because they
  use the BT.2020 luminance of each pixel.
* dtype: a float32 (or float16) array is computed and returned in float32 (frame-sized
  float64 temporaries would cost too much memory; PQ codes stay within 1e-5), a float64
  array in float64; everything else (python numbers, ints, lists) in float64. A 0-d
  input gives a numpy scalar, an n-d input an array of the same shape.
* Units: ``nits`` means absolute display luminance in cd/m2; code values and relative
  scene/display light are normalised to [0, 1].
* Speed: the PQ and BT.1886 curves run over frame-sized arrays in cache-sized blocks
  with the same operations in the same order, so the result is bit for bit that of the
  whole-array formula, without frame-sized temporaries (benchmarks/colour_speed.py).
* Out-of-domain input is clipped to the function's domain first, so ``+inf`` gives the
  top of the output range and ``-inf`` the bottom. NaN propagates to NaN, never raises.
"""

from __future__ import annotations

import numpy as np

from itmfilter.colour.primaries import LUMINANCE_WEIGHTS_BT2020

__all__ = [
    "PQ_PEAK_NITS",
    "PQ_M1",
    "PQ_M2",
    "PQ_C1",
    "PQ_C2",
    "PQ_C3",
    "SDR_PEAK_NITS",
    "SDR_WHITE_NITS_BT2408",
    "HLG_PEAK_NITS",
    "eotf_st2084",
    "eotf_inverse_st2084",
    "oetf_bt2100_hlg",
    "oetf_inverse_bt2100_hlg",
    "gamma_bt2100_hlg",
    "ootf_bt2100_hlg",
    "ootf_inverse_bt2100_hlg",
    "eotf_bt2100_hlg",
    "eotf_inverse_bt2100_hlg",
    "eotf_bt1886",
    "eotf_inverse_bt1886",
    "eotf_srgb",
    "eotf_inverse_srgb",
    "oetf_bt709",
    "oetf_inverse_bt709",
]

# --- Luminance anchors, cd/m2 -------------------------------------------------------

PQ_PEAK_NITS = 10000.0
"""Absolute peak of the PQ signal, cd/m2 (SMPTE ST 2084:2014, code value 1.0)."""

SDR_PEAK_NITS = 100.0
"""Reference white of our SDR signal on a BT.1886 display, cd/m2 (ITU-R BT.1886-0 /
ITU-R BT.2035 reference display peak)."""

SDR_WHITE_NITS_BT2408 = 203.0
"""HDR reference (graphics) white, cd/m2 (ITU-R BT.2408-7, section 2.2)."""

HLG_PEAK_NITS = 1000.0
"""Nominal peak of the HLG reference display, cd/m2 (ITU-R BT.2100-2, Table 5)."""

# --- SMPTE ST 2084:2014 constants, as the spec writes them -----------------------------

PQ_M1 = 2610 / 4096 * (1 / 4)
PQ_M2 = 2523 / 4096 * 128
PQ_C1 = 3424 / 4096
PQ_C2 = 2413 / 4096 * 32
PQ_C3 = 2392 / 4096 * 32

# --- ITU-R BT.2100-2 Table 5, HLG -------------------------------------------------------

_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)
# BT.2100-2 Table 5: Y_S = 0.2627 R_S + 0.6780 G_S + 0.0593 B_S (BT.2020 luminance).
_HLG_LUMA_WEIGHTS = tuple(float(k) for k in LUMINANCE_WEIGHTS_BT2020)

# --- IEC 61966-2-1:1999 (sRGB) and ITU-R BT.709-6 ---------------------------------------

_SRGB_ALPHA = 0.055
_SRGB_LINEAR_BREAK = 0.0031308
_SRGB_CODE_BREAK = 0.04045
_BT709_ALPHA = 1.099
_BT709_BETA = 0.018
_BT1886_GAMMA = 2.40


def _float_array(x) -> np.ndarray:
    """``x`` as a float array: float32/float16 -> float32, float64 kept, else float64."""
    arr = np.asarray(x)
    if arr.dtype == np.float64 or arr.dtype == np.float32:
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr.astype(np.float64)


def _result(out: np.ndarray, dtype: np.dtype):
    """Cast back to ``dtype``; a 0-d array becomes a numpy scalar."""
    out = np.asarray(out, dtype=dtype)
    return out[()] if out.ndim == 0 else out


_BLOCK = 1 << 15
"""Elements per block of :func:`_map_blocks`: a few float64 scratch blocks fit in L2 cache."""


def _map_blocks(x: np.ndarray, kernel) -> np.ndarray:
    """``kernel(block, out)`` over ``x`` in blocks of :data:`_BLOCK` elements.

    ``kernel`` writes the elementwise result of ``block`` into ``out`` (same size and
    dtype as ``x``); the result has ``x``'s shape. Elementwise ufuncs give the same bits
    per element whatever the block, so blocking only saves memory traffic.
    """
    flat = x.reshape(-1)
    out = np.empty(flat.shape, x.dtype)
    for start in range(0, flat.size, _BLOCK):
        kernel(flat[start : start + _BLOCK], out[start : start + _BLOCK])
    return out.reshape(x.shape)


def _rgb(x) -> np.ndarray:
    arr = _float_array(x)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(
            f"expected channel-last RGB of shape (..., 3), got shape {arr.shape}; "
            "stack the R, G, B planes on the last axis"
        )
    return arr


# --- PQ ---------------------------------------------------------------------------------


def eotf_st2084(e):
    """PQ electro-optical transfer function (SMPTE ST 2084:2014, ITU-R BT.2100-2 Table 4).

    Parameters
    ----------
    e : array_like
        Non-linear PQ code value E', normalised [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Display luminance F_D in cd/m2, [0, 10000].
    """
    e = _float_array(e)
    return _result(_map_blocks(e, _eotf_st2084_block), e.dtype)


def _eotf_st2084_block(e: np.ndarray, out: np.ndarray) -> None:
    e_m2 = np.clip(e, 0.0, 1.0)
    np.power(e_m2, 1 / PQ_M2, out=e_m2)
    num = np.subtract(e_m2, PQ_C1, out=out)
    np.maximum(num, 0.0, out=num)
    den = np.multiply(e_m2, PQ_C3, out=e_m2)
    np.subtract(PQ_C2, den, out=den)
    np.divide(num, den, out=out)
    np.power(out, 1 / PQ_M1, out=out)
    np.multiply(out, PQ_PEAK_NITS, out=out)


def eotf_inverse_st2084(nits):
    """Inverse PQ EOTF (SMPTE ST 2084:2014, ITU-R BT.2100-2 Table 4).

    ``eotf_inverse_st2084(100) == 0.508078421517399``.

    Parameters
    ----------
    nits : array_like
        Display luminance in cd/m2. Clipped to [0, 10000].

    Returns
    -------
    numpy.ndarray or numpy scalar
        PQ code value E', [0, 1]. 0 cd/m2 gives c1 ** m2 = 7.3e-7, not exactly 0, as
        the ST 2084 formula does.
    """
    nits = _float_array(nits)
    return _result(_map_blocks(nits, _eotf_inverse_st2084_block), nits.dtype)


def _eotf_inverse_st2084_block(nits: np.ndarray, out: np.ndarray) -> None:
    y_m1 = np.clip(nits, 0.0, PQ_PEAK_NITS)
    np.divide(y_m1, PQ_PEAK_NITS, out=y_m1)
    np.power(y_m1, PQ_M1, out=y_m1)
    num = np.multiply(y_m1, PQ_C2, out=out)
    np.add(num, PQ_C1, out=num)
    den = np.multiply(y_m1, PQ_C3, out=y_m1)
    np.add(den, 1, out=den)
    np.divide(num, den, out=out)
    np.power(out, PQ_M2, out=out)


# --- HLG --------------------------------------------------------------------------------


def oetf_bt2100_hlg(e):
    """HLG opto-electronic transfer function (ITU-R BT.2100-2 Table 5, ARIB STD-B67).

    ``oetf_bt2100_hlg(1 / 12) == 0.5`` and ``oetf_bt2100_hlg(1) == 1`` (to 1e-8).

    Parameters
    ----------
    e : array_like
        Scene linear light E of one colour component, normalised [0, 1]. Clipped to
        [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Non-linear HLG signal E', [0, 1].
    """
    e = _float_array(e)
    dtype = e.dtype
    e = np.clip(e, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_part = _HLG_A * np.log(np.maximum(12 * e - _HLG_B, 1e-30)) + _HLG_C
    out = np.where(e <= 1 / 12, np.sqrt(3 * e), log_part)
    return _result(out, dtype)


def oetf_inverse_bt2100_hlg(e_prime):
    """Inverse HLG OETF (ITU-R BT.2100-2 Table 5).

    Parameters
    ----------
    e_prime : array_like
        Non-linear HLG signal E', [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Scene linear light E, normalised [0, 1].
    """
    e_prime = _float_array(e_prime)
    dtype = e_prime.dtype
    v = np.clip(e_prime, 0.0, 1.0)
    out = np.where(v <= 0.5, v * v / 3, (np.exp((v - _HLG_C) / _HLG_A) + _HLG_B) / 12)
    return _result(out, dtype)


def gamma_bt2100_hlg(l_w: float = HLG_PEAK_NITS) -> float:
    """HLG system gamma for a display of nominal peak ``l_w`` cd/m2.

    ITU-R BT.2100-2 Table 5 note: gamma = 1.2 + 0.42 log10(L_W / 1000); 1.2 at 1000 cd/m2.
    The formula is specified for 400..2000 cd/m2 and used here as is outside it.
    """
    if not (np.isfinite(l_w) and l_w > 0):
        raise ValueError(f"HLG display peak l_w must be a positive number of cd/m2, got {l_w!r}")
    return float(1.2 + 0.42 * np.log10(l_w / 1000.0))


def _hlg_luma(rgb: np.ndarray) -> np.ndarray:
    w_r, w_g, w_b = _HLG_LUMA_WEIGHTS
    return w_r * rgb[..., 0] + w_g * rgb[..., 1] + w_b * rgb[..., 2]


def ootf_bt2100_hlg(rgb_scene, l_w: float = HLG_PEAK_NITS, l_b: float = 0.0):
    """HLG opto-optical transfer function, scene to display light (ITU-R BT.2100-2 Table 5).

    F_D = alpha * Y_S ** (gamma - 1) * E with alpha = L_W, Y_S the BT.2020 luminance of
    the scene RGB and gamma from :func:`gamma_bt2100_hlg`.

    Parameters
    ----------
    rgb_scene : array_like, shape (..., 3)
        Scene linear RGB (R_S, G_S, B_S), normalised [0, 1]. Clipped to [0, 1].
    l_w : float
        Nominal peak luminance of the display, cd/m2.
    l_b : float
        Display black luminance, cd/m2. Since BT.2100-2 the OOTF itself has no black
        term (the black lift beta lives in the EOTF, see :func:`eotf_bt2100_hlg`), so it
        does not change the result; it is accepted so the HLG functions share one
        signature.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Display linear RGB (R_D, G_D, B_D) in cd/m2, [0, l_w].
    """
    del l_b  # not part of the BT.2100-2 OOTF, see docstring
    rgb = _rgb(rgb_scene)
    dtype = rgb.dtype
    rgb = np.clip(rgb, 0.0, 1.0)
    gamma = gamma_bt2100_hlg(l_w)
    y_s = _hlg_luma(rgb)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Y_S = 0 means E = 0; with gamma < 1 (l_w < ~577) 0**(gamma-1) would be inf.
        scale = np.where(y_s > 0, l_w * np.power(y_s, gamma - 1), 0.0)
    out = rgb * scale[..., None]
    return _result(out, dtype)


def ootf_inverse_bt2100_hlg(rgb_nits, l_w: float = HLG_PEAK_NITS, l_b: float = 0.0):
    """Inverse HLG OOTF, display to scene light (ITU-R BT.2100-2 Table 5).

    E = (Y_D / alpha) ** ((1 - gamma) / gamma) * F_D / alpha, alpha = L_W.

    Parameters
    ----------
    rgb_nits : array_like, shape (..., 3)
        Display linear RGB in cd/m2. Clipped to [0, l_w].
    l_w : float
        Nominal peak luminance of the display, cd/m2.
    l_b : float
        Display black, cd/m2; no effect on the BT.2100-2 OOTF (see
        :func:`ootf_bt2100_hlg`).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Scene linear RGB, normalised: [0, 1] for colours the HLG display can show;
        saturated colours outside its volume come back above 1, not clipped.
    """
    del l_b  # not part of the BT.2100-2 OOTF, see ootf_bt2100_hlg
    rgb = _rgb(rgb_nits)
    dtype = rgb.dtype
    gamma = gamma_bt2100_hlg(l_w)
    rel = np.clip(rgb, 0.0, l_w) / l_w
    y_d = _hlg_luma(rel)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(y_d > 0, np.power(y_d, (1 - gamma) / gamma), 0.0)
    out = rel * scale[..., None]
    return _result(out, dtype)


def _hlg_beta(l_w: float, l_b: float) -> float:
    """BT.2100-2 black level lift beta = sqrt(3 * (L_B / L_W) ** (1 / gamma))."""
    if not (np.isfinite(l_b) and 0 <= l_b < l_w):
        raise ValueError(f"HLG display black l_b must be in [0, l_w={l_w}) cd/m2, got {l_b!r}")
    return float(np.sqrt(3 * (l_b / l_w) ** (1 / gamma_bt2100_hlg(l_w))))


def eotf_bt2100_hlg(rgb_prime, l_w: float = HLG_PEAK_NITS, l_b: float = 0.0):
    """HLG electro-optical transfer function (ITU-R BT.2100-2 Table 5).

    F_D = OOTF[OETF^-1[max(0, (1 - beta) E' + beta)]], beta the black level lift.

    Parameters
    ----------
    rgb_prime : array_like, shape (..., 3)
        Non-linear HLG R'G'B', [0, 1]. Clipped to [0, 1].
    l_w : float
        Nominal peak luminance of the display, cd/m2.
    l_b : float
        Display luminance for black, cd/m2, [0, l_w).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Display linear RGB in cd/m2, [l_b, l_w] for achromatic input.
    """
    rgb = _rgb(rgb_prime)
    dtype = rgb.dtype
    beta = _hlg_beta(l_w, l_b)
    lifted = np.maximum((1 - beta) * np.clip(rgb, 0.0, 1.0) + beta, 0.0)
    out = ootf_bt2100_hlg(oetf_inverse_bt2100_hlg(lifted), l_w)
    return _result(out, dtype)


def eotf_inverse_bt2100_hlg(rgb_nits, l_w: float = HLG_PEAK_NITS, l_b: float = 0.0):
    """Inverse HLG EOTF (ITU-R BT.2100-2 Table 5).

    Parameters
    ----------
    rgb_nits : array_like, shape (..., 3)
        Display linear RGB in cd/m2. Clipped to [0, l_w].
    l_w : float
        Nominal peak luminance of the display, cd/m2.
    l_b : float
        Display luminance for black, cd/m2, [0, l_w).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Non-linear HLG R'G'B', [0, 1] (light below the display black clips to 0).
    """
    rgb = _rgb(rgb_nits)
    dtype = rgb.dtype
    beta = _hlg_beta(l_w, l_b)
    e_prime = oetf_bt2100_hlg(ootf_inverse_bt2100_hlg(rgb, l_w))
    out = np.clip((e_prime - beta) / (1 - beta), 0.0, 1.0)
    return _result(out, dtype)


# --- BT.1886 ----------------------------------------------------------------------------


def _bt1886_a_b(l_w: float, l_b: float) -> tuple[float, float]:
    if not (np.isfinite(l_w) and np.isfinite(l_b) and 0 <= l_b < l_w):
        raise ValueError(
            f"BT.1886 needs 0 <= l_b < l_w (cd/m2), got l_w={l_w!r}, l_b={l_b!r}"
        )
    n = l_w ** (1 / _BT1886_GAMMA) - l_b ** (1 / _BT1886_GAMMA)
    return n**_BT1886_GAMMA, l_b ** (1 / _BT1886_GAMMA) / n


def eotf_bt1886(v, l_w: float = SDR_PEAK_NITS, l_b: float = 0.0):
    """Reference EOTF of flat panel displays (ITU-R BT.1886-0 Annex 1).

    L = a * max(V + b, 0) ** 2.4.

    Parameters
    ----------
    v : array_like
        Non-linear video signal V, normalised [0, 1] (0 = black code, 1 = white code).
        Clipped to [0, 1].
    l_w, l_b : float
        Display white and black luminance, cd/m2.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Screen luminance L in cd/m2, [l_b, l_w].
    """
    v = _float_array(v)
    a, b = _bt1886_a_b(l_w, l_b)

    def kernel(block: np.ndarray, out: np.ndarray) -> None:
        np.clip(block, 0.0, 1.0, out=out)
        np.add(out, b, out=out)
        np.maximum(out, 0.0, out=out)
        np.power(out, _BT1886_GAMMA, out=out)
        np.multiply(out, a, out=out)

    return _result(_map_blocks(v, kernel), v.dtype)


def eotf_inverse_bt1886(nits, l_w: float = SDR_PEAK_NITS, l_b: float = 0.0):
    """Inverse BT.1886 EOTF (ITU-R BT.1886-0 Annex 1).

    Parameters
    ----------
    nits : array_like
        Screen luminance in cd/m2. Clipped to [l_b, l_w].
    l_w, l_b : float
        Display white and black luminance, cd/m2.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Non-linear video signal V, [0, 1].
    """
    nits = _float_array(nits)
    dtype = nits.dtype
    a, b = _bt1886_a_b(l_w, l_b)
    l = np.clip(nits, l_b, l_w)
    out = np.clip(np.power(l / a, 1 / _BT1886_GAMMA) - b, 0.0, 1.0)
    return _result(out, dtype)


# --- sRGB -------------------------------------------------------------------------------


def eotf_srgb(v):
    """sRGB EOTF, the piecewise curve of IEC 61966-2-1:1999 section 5.2.

    Parameters
    ----------
    v : array_like
        Non-linear sRGB value V', [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Linear light L, normalised [0, 1] (1 = display white).
    """
    v = _float_array(v)
    dtype = v.dtype
    v = np.clip(v, 0.0, 1.0)
    out = np.where(
        v <= _SRGB_CODE_BREAK,
        v / 12.92,
        np.power((v + _SRGB_ALPHA) / (1 + _SRGB_ALPHA), 2.4),
    )
    return _result(out, dtype)


def eotf_inverse_srgb(l):
    """Inverse sRGB EOTF (IEC 61966-2-1:1999 section 5.3).

    Parameters
    ----------
    l : array_like
        Linear light L, normalised [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Non-linear sRGB value V', [0, 1].
    """
    l = _float_array(l)
    dtype = l.dtype
    l = np.clip(l, 0.0, 1.0)
    out = np.where(
        l <= _SRGB_LINEAR_BREAK,
        12.92 * l,
        (1 + _SRGB_ALPHA) * np.power(l, 1 / 2.4) - _SRGB_ALPHA,
    )
    return _result(out, dtype)


# --- BT.709 camera OETF -----------------------------------------------------------------


def oetf_bt709(l):
    """Reference camera OETF (ITU-R BT.709-6 Part 1, 1.2).

    V = 4.500 L for L < 0.018, else 1.099 L ** 0.45 - 0.099.

    Parameters
    ----------
    l : array_like
        Scene linear light L, normalised [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Non-linear signal V, [0, 1].
    """
    l = _float_array(l)
    dtype = l.dtype
    l = np.clip(l, 0.0, 1.0)
    out = np.where(
        l < _BT709_BETA,
        4.5 * l,
        _BT709_ALPHA * np.power(l, 0.45) - (_BT709_ALPHA - 1),
    )
    return _result(out, dtype)


def oetf_inverse_bt709(v):
    """Inverse BT.709 camera OETF (ITU-R BT.709-6 Part 1, 1.2).

    Parameters
    ----------
    v : array_like
        Non-linear signal V, [0, 1]. Clipped to [0, 1].

    Returns
    -------
    numpy.ndarray or numpy scalar
        Scene linear light L, [0, 1].
    """
    v = _float_array(v)
    dtype = v.dtype
    v = np.clip(v, 0.0, 1.0)
    out = np.where(
        v < 4.5 * _BT709_BETA,
        v / 4.5,
        np.power((v + (_BT709_ALPHA - 1)) / _BT709_ALPHA, 1 / 0.45),
    )
    return _result(out, dtype)
