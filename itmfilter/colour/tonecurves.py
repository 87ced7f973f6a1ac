"""Tone curves: an HDR master (linear BT.2020, cd/m2) down to SDR (BT.709 R'G'B', BT.1886).

These are the operators that make the SDR half of a training/benchmark pair: the MLP later
learns SDR -> HDR for each picture, so every curve here is one plausible way a studio, a
video platform or a colourist could have produced the SDR that ships.

Conventions (shared by every curve):

* HDR in: linear BT.2020 RGB in cd/m2, channel-last ``(..., 3)``; spatial curves need a
  whole picture ``(..., H, W, 3)``. NaN becomes 0 cd/m2, values are clipped to
  [0, 10000] cd/m2 (the SMPTE ST 2084 range) before anything else.
* SDR out: BT.709 R'G'B' code values in [0, 1] for a BT.1886 display with
  L_W = 100 cd/m2 and L_B = 0 (ITU-R BT.1886-0 Annex 1, i.e. a pure 2.4 power), so code
  1.0 is 100 cd/m2 (:data:`~itmfilter.colour.transfer.SDR_PEAK_NITS`).
* Inverse (where the curve is a global, invertible function): SDR code values in [0, 1]
  (NaN -> 0, clipped) back to linear BT.2020 cd/m2, finite and >= 0.
* dtype: float32 in gives float32 out, anything else float64.
* ``peak_nits`` is the master's peak luminance in cd/m2 (HDR10 MaxCLL or mastering
  display max, default 1000); curves that ignore it say so.

Gamut: each curve converts BT.2020 to BT.709 with
:data:`~itmfilter.colour.primaries.MATRIX_BT2020_TO_BT709` and then brings the result
into the BT.709 cube; :attr:`ToneCurve.gamut` says how, in one line. Most use
:func:`desaturate_into_cube`, a luminance-preserving move toward the achromatic axis
(chroma is reduced only as much as needed, hue in RGB is kept; luminance above SDR
white clips to white).

The curves are entries of :data:`REGISTRY` (libplacebo ``pl_tone_map_function`` style):
name, description, forward, inverse (or None), whether it is spatial, and how gamut is
handled. Look curves up with :func:`get_curve`; CLI choices come from :func:`curve_names`.

References
----------
- Report ITU-R BT.2446-1 (2021), Methods for conversion of high dynamic range content
  to standard dynamic range content and vice-versa, Method A.
- Report ITU-R BT.2390-7 (2019), High dynamic range television for production and
  international programme exchange: the EETF (reference display mapping), which later
  revisions moved to Report ITU-R BT.2408-7 Annex 5.
- J. Hable, "Uncharted 2: HDR Lighting", GDC 2010 (filmic curve and constants).
- E. Reinhard, M. Stark, P. Shirley, J. Ferwerda, "Photographic tone reproduction for
  digital images", ACM SIGGRAPH 2002, equation 4 (extended operator with L_white).
- T. Yoshihara (toru-ver4), "YouTube の HDR to SDR 変換の特性を少し調べる", blog post
  2019-11-19 (https://trev16.hatenablog.com/entry/2019/11/19/220840) and code in
  github.com/toru-ver4/sample_code, 2019/011_hdr_to_sdr_tonemapping: the public
  reverse-engineered fit of YouTube's HDR10 -> SDR conversion, the "YouTube" degradation
  model of HDRTVNet (Chen et al., ICCV 2021) and HDRTV4K (Guo et al., CVPR 2023).
- K. He, J. Sun, X. Tang, "Guided image filtering", IEEE TPAMI 35(6), 2013 (used by
  ``local``); F. Durand, J. Dorsey, "Fast bilateral filtering for the display of
  high-dynamic-range images", ACM SIGGRAPH 2002 (base/detail tone mapping).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from itmfilter.colour.primaries import (
    LUMINANCE_WEIGHTS_BT2020,
    MATRIX_BT709_TO_BT2020,
    MATRIX_BT2020_TO_BT709,
    apply_matrix,
    luminance,
)
from itmfilter.colour.transfer import (
    PQ_PEAK_NITS,
    SDR_PEAK_NITS,
    eotf_bt1886,
    eotf_inverse_bt1886,
    eotf_inverse_st2084,
    eotf_st2084,
)

__all__ = [
    "DEFAULT_PEAK_NITS",
    "ToneCurve",
    "REGISTRY",
    "get_curve",
    "curve_names",
    "desaturate_into_cube",
    "hdr_to_sdr_bt2446a",
    "sdr_to_hdr_bt2446a",
    "hdr_to_sdr_bt2390",
    "sdr_to_hdr_bt2390",
    "hdr_to_sdr_hable",
    "sdr_to_hdr_hable",
    "hdr_to_sdr_reinhard",
    "sdr_to_hdr_reinhard",
    "hdr_to_sdr_youtube",
    "sdr_to_hdr_youtube",
    "hdr_to_sdr_local",
    "guided_filter",
]

DEFAULT_PEAK_NITS = 1000.0
"""Default master peak luminance, cd/m2 (the usual HDR10 grading display, BT.2446 L_HDR)."""


@dataclass(frozen=True)
class ToneCurve:
    """One HDR -> SDR operator.

    Attributes
    ----------
    name : str
        Registry key, also the CLI choice.
    description : str
        One line for ``--help``.
    forward : callable
        ``forward(hdr_nits, *, peak_nits=1000.0, **params) -> sdr``: linear BT.2020
        cd/m2 ``(..., 3)`` (``(..., H, W, 3)`` when ``spatial``) to BT.709 R'G'B' code
        values in [0, 1].
    inverse : callable or None
        ``inverse(sdr, *, peak_nits=1000.0, **params) -> hdr_nits``, the exact inverse of
        ``forward`` wherever ``forward`` did not clip; None when the curve is not a
        global function (spatial operators).
    spatial : bool
        True when the output of a pixel depends on its neighbourhood.
    gamut : str
        How BT.2020 colours outside BT.709 are handled, one line.
    domain : str
        Where the curve itself operates (PQ code value, relative linear light, log10).
    """

    name: str
    description: str
    forward: Callable[..., np.ndarray]
    inverse: Callable[..., np.ndarray] | None
    spatial: bool
    gamut: str
    domain: str = ""


# --- shared helpers -------------------------------------------------------------------


def _work_dtype(arr: np.ndarray) -> type:
    return np.float32 if arr.dtype in (np.float32, np.float16) else np.float64


def _hdr_in(hdr_nits, min_ndim: int = 1) -> np.ndarray:
    """Validated HDR input: float, (..., 3), NaN -> 0, clipped to [0, 10000] cd/m2."""
    arr = np.asarray(hdr_nits)
    if arr.ndim < min_ndim or arr.shape[-1] != 3:
        want = "(..., H, W, 3)" if min_ndim >= 3 else "(..., 3)"
        raise ValueError(
            f"expected linear BT.2020 RGB in cd/m2 shaped {want}, got shape {arr.shape}"
        )
    arr = arr.astype(_work_dtype(arr), copy=False)
    return np.clip(np.nan_to_num(arr, nan=0.0, posinf=PQ_PEAK_NITS, neginf=0.0), 0.0, PQ_PEAK_NITS)


def _sdr_in(sdr) -> np.ndarray:
    """Validated SDR input: float, (..., 3), NaN -> 0, clipped to [0, 1] code value."""
    arr = np.asarray(sdr)
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise ValueError(
            f"expected BT.709 R'G'B' code values shaped (..., 3), got shape {arr.shape}"
        )
    arr = arr.astype(_work_dtype(arr), copy=False)
    return np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _check_peak(peak_nits: float) -> float:
    peak = float(peak_nits)
    if not (math.isfinite(peak) and 0.0 < peak <= PQ_PEAK_NITS):
        raise ValueError(f"peak_nits must be in (0, 10000] cd/m2, got {peak_nits!r}")
    return peak


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    """max(R, G, B) keeping the last axis (faster than ``max(axis=-1)`` on (..., 3))."""
    return np.maximum(np.maximum(rgb[..., 0:1], rgb[..., 1:2]), rgb[..., 2:3])


def _channel_min(rgb: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(rgb[..., 0:1], rgb[..., 1:2]), rgb[..., 2:3])


def desaturate_into_cube(rgb709) -> np.ndarray:
    """Bring linear BT.709 RGB into the unit cube keeping luminance (and RGB hue).

    Each pixel moves along the line to the achromatic colour of the same BT.709
    luminance Y (ITU-R BT.709-6 item 3.2 weights), just far enough that no channel is
    below 0 or above 1: ``rgb' = Y + s (rgb - Y)`` with the largest s in [0, 1] that fits.
    Pixels with Y >= 1 become white (1, 1, 1): luminance above SDR white is clipped.

    Parameters
    ----------
    rgb709 : numpy.ndarray, shape (..., 3)
        Linear BT.709 RGB relative to SDR white (1.0 = 100 cd/m2), may be out of range.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.709 RGB in [0, 1], same dtype.
    """
    rgb = np.asarray(rgb709)
    y = np.clip(luminance(rgb, "bt709"), 0.0, 1.0)[..., None]
    lo = _channel_min(rgb)
    hi = _channel_max(rgb)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_lo = np.where(lo < 0.0, y / (y - lo), 1.0)
        s_hi = np.where(hi > 1.0, (1.0 - y) / (hi - y), 1.0)
    s = np.clip(np.nan_to_num(np.minimum(s_lo, s_hi), nan=0.0), 0.0, 1.0)
    out = y + s * (rgb - y)
    return np.clip(out, 0.0, 1.0).astype(rgb.dtype, copy=False)


def _rel2020_to_sdr(rgb_rel2020: np.ndarray, gamut: str = "desaturate") -> np.ndarray:
    """Linear BT.2020 relative to SDR white -> BT.709 R'G'B' code values (BT.1886, 100 cd/m2)."""
    rgb709 = apply_matrix(rgb_rel2020, MATRIX_BT2020_TO_BT709)
    if gamut == "desaturate":
        rgb709 = desaturate_into_cube(rgb709)
    else:  # "clip": per-channel hard clip
        rgb709 = np.clip(rgb709, 0.0, 1.0)
    return np.clip(eotf_inverse_bt1886(rgb709 * SDR_PEAK_NITS), 0.0, 1.0)


def _sdr_to_rel2020(sdr: np.ndarray) -> np.ndarray:
    """BT.709 R'G'B' code values -> linear BT.2020 relative to SDR white (>= 0)."""
    rgb709 = eotf_bt1886(sdr) / SDR_PEAK_NITS
    return np.maximum(apply_matrix(rgb709, MATRIX_BT709_TO_BT2020), 0.0)


def _finite_nonneg(x: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=PQ_PEAK_NITS), 0.0, PQ_PEAK_NITS)


# --- ITU-R BT.2446-1 Method A ------------------------------------------------------------

# Report ITU-R BT.2446-1, Method A: BT.2020 luma weights and Y'CbCr scale factors
# 2(1 - K_R) = 1.4746, 2(1 - K_B) = 1.8814 (ITU-R BT.2020-2 Table 4).
_KR, _KG, _KB = (float(k) for k in LUMINANCE_WEIGHTS_BT2020)
_CR_SCALE = 1.4746
_CB_SCALE = 1.8814
_GAMMA_2446 = 2.4
# Knee of Method A step 2 (tone mapping in the perceptual domain).
_KNEE_LOW, _KNEE_HIGH = 0.7399, 0.9909
_KNEE_SLOPE = 1.0770
_KNEE_A, _KNEE_B, _KNEE_C = -1.1510, 2.7811, -0.6302


def _rho(l_nits: float) -> float:
    """BT.2446-1 Method A rho = 1 + 32 (L / 10000) ** (1 / 2.4)."""
    return 1.0 + 32.0 * (l_nits / PQ_PEAK_NITS) ** (1.0 / _GAMMA_2446)


def _knee_2446a(yp: np.ndarray) -> np.ndarray:
    quad = (_KNEE_A * yp + _KNEE_B) * yp + _KNEE_C
    upper = np.where(yp < _KNEE_HIGH, quad, 0.5 * yp + 0.5)
    return np.where(yp <= _KNEE_LOW, _KNEE_SLOPE * yp, upper)


def _knee_inverse_2446a(yc: np.ndarray) -> np.ndarray:
    yc = np.clip(yc, 0.0, 1.0)
    c_low = _KNEE_SLOPE * _KNEE_LOW  # 0.79687
    c_high = 0.5 * _KNEE_HIGH + 0.5  # 0.99545
    disc = np.maximum(_KNEE_B**2 - 4.0 * _KNEE_A * (_KNEE_C - yc), 0.0)
    quad = (-_KNEE_B + np.sqrt(disc)) / (2.0 * _KNEE_A)
    return np.where(yc <= c_low, yc / _KNEE_SLOPE, np.where(yc < c_high, quad, 2.0 * yc - 1.0))


def hdr_to_sdr_bt2446a(hdr_nits, *, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """HDR -> SDR by Report ITU-R BT.2446-1 (2021), Method A.

    Linear BT.2020 RGB normalised to L_HDR = ``peak_nits`` (clipped to [0, 1]) is gamma
    encoded (1/2.4); luma Y' is mapped by the three steps of the Report (perceptual
    linearisation with rho_HDR, the knee, back with rho_SDR for L_SDR = 100 cd/m2), and the
    chroma by the Report's colour correction (C'b, C'r scaled by Y'_SDR / (1.1 Y'), luma
    lowered by max(0.1 C'r,tmo, 0)). The Report's output is BT.2020 R'G'B' (gamma 2.4); it
    is linearised, converted to BT.709 and brought into gamut by :func:`desaturate_into_cube`.

    Parameters
    ----------
    hdr_nits : array_like, shape (..., 3)
        Linear BT.2020 RGB, cd/m2.
    peak_nits : float
        L_HDR, the master peak in cd/m2 (Report's example: 1000).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1] (BT.1886, 100 cd/m2 white).
    """
    peak = _check_peak(peak_nits)
    rgb = np.clip(_hdr_in(hdr_nits) / peak, 0.0, 1.0)
    rgb_p = np.power(rgb, 1.0 / _GAMMA_2446)
    y = rgb_p @ np.array([_KR, _KG, _KB], dtype=rgb_p.dtype)
    rho_hdr, rho_sdr = _rho(peak), _rho(SDR_PEAK_NITS)
    yp = np.log1p((rho_hdr - 1.0) * y) / math.log(rho_hdr)
    yc = _knee_2446a(yp)
    y_sdr = (np.power(rho_sdr, yc) - 1.0) / (rho_sdr - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(y > 0.0, y_sdr / (1.1 * y), 0.0)
    cb = f * (rgb_p[..., 2] - y) / _CB_SCALE
    cr = f * (rgb_p[..., 0] - y) / _CR_SCALE
    y_tmo = y_sdr - np.maximum(0.1 * cr, 0.0)
    rgb_sdr_p = _ycbcr_to_rgb_2020(y_tmo, cb, cr)
    rgb_sdr = np.power(np.clip(rgb_sdr_p, 0.0, None), _GAMMA_2446)
    return _rel2020_to_sdr(rgb_sdr.astype(rgb.dtype, copy=False))


def _ycbcr_to_rgb_2020(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    r = y + _CR_SCALE * cr
    b = y + _CB_SCALE * cb
    g = (y - _KR * r - _KB * b) / _KG
    return np.stack([r, g, b], axis=-1)


def sdr_to_hdr_bt2446a(sdr, *, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """Exact algebraic inverse of :func:`hdr_to_sdr_bt2446a` (Report ITU-R BT.2446-1 Method A).

    Every step of Method A is invertible: the luma offset max(0.1 C'r, 0), the rho_SDR
    step, the knee (linear / quadratic / linear), the rho_HDR step and the chroma
    scaling. Colours that the forward clipped (BT.709 gamut, values above ``peak_nits``)
    do not come back. For the Report's own SDR -> HDR conversion (its Table 4, not an
    exact inverse) see :func:`itmfilter.quality.baselines.inverse_bt2446a`.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits : float
        L_HDR the forward used, cd/m2.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2, [0, peak_nits].
    """
    peak = _check_peak(peak_nits)
    rgb_sdr = _sdr_to_rel2020(_sdr_in(sdr))
    rgb_sdr_p = np.power(rgb_sdr, 1.0 / _GAMMA_2446)
    y_tmo = rgb_sdr_p @ np.array([_KR, _KG, _KB], dtype=rgb_sdr_p.dtype)
    cb = (rgb_sdr_p[..., 2] - y_tmo) / _CB_SCALE
    cr = (rgb_sdr_p[..., 0] - y_tmo) / _CR_SCALE
    y_sdr = np.clip(y_tmo + np.maximum(0.1 * cr, 0.0), 0.0, 1.0)
    rho_hdr, rho_sdr = _rho(peak), _rho(SDR_PEAK_NITS)
    yc = np.log1p((rho_sdr - 1.0) * y_sdr) / math.log(rho_sdr)
    yp = _knee_inverse_2446a(yc)
    y = (np.power(rho_hdr, yp) - 1.0) / (rho_hdr - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_f = np.where(y_sdr > 0.0, 1.1 * y / y_sdr, 0.0)
    rgb_p = _ycbcr_to_rgb_2020(y, cb * inv_f, cr * inv_f)
    out = np.power(np.clip(rgb_p, 0.0, 1.0), _GAMMA_2446) * peak
    return _finite_nonneg(out).astype(rgb_sdr.dtype, copy=False)


# --- ITU-R BT.2390 EETF ------------------------------------------------------------------


def _bt2390_params(peak: float, target: float) -> tuple[float, float, float]:
    """PQ of the master peak, normalised target max (maxLum) and knee start KS."""
    pq_peak = float(eotf_inverse_st2084(peak))
    max_lum = float(eotf_inverse_st2084(target)) / pq_peak
    return pq_peak, max_lum, 1.5 * max_lum - 0.5


def _hermite_2390(e1: np.ndarray, ks: float, max_lum: float) -> np.ndarray:
    t = (e1 - ks) / (1.0 - ks)
    t2, t3 = t * t, t * t * t
    return (2 * t3 - 3 * t2 + 1) * ks + (t3 - 2 * t2 + t) * (1 - ks) + (-2 * t3 + 3 * t2) * max_lum


def _eetf_2390(e1: np.ndarray, ks: float, max_lum: float) -> np.ndarray:
    e1 = np.clip(e1, 0.0, 1.0)
    if ks >= 1.0:  # target at least as bright as the master: nothing to compress
        return e1
    return np.where(e1 < ks, e1, _hermite_2390(e1, ks, max_lum))


def _eetf_inverse_2390(e2: np.ndarray, ks: float, max_lum: float) -> np.ndarray:
    if ks >= 1.0:
        return np.clip(e2, 0.0, 1.0)
    # The spline is monotonic with zero slope at T = 1, so invert it on a table that is
    # dense near T = 1 (T = 1 - (1 - u)^2), where the inverse is steep.
    u = np.linspace(0.0, 1.0, 8193)
    t = 1.0 - (1.0 - u) ** 2
    e1_tab = ks + t * (1.0 - ks)
    e2_tab = np.minimum(np.maximum.accumulate(_hermite_2390(e1_tab, ks, max_lum)), max_lum)
    e2_tab[-1] = max_lum  # the spline's end (T = 1) is maxLum; rounding can put it an ulp off
    # Near T = 1 the flat spline rounds to equal values: np.interp's result on repeated
    # sample points is not specified, so each run of equal values keeps its last point, and
    # maxLum maps back to the master peak (T = 1).
    last = np.append(np.diff(e2_tab) > 0.0, True)
    # The spline's flat top turns a few ulps into ~1e-5 in PQ (1e-14 below maxLum gave 999.86 for
    # 1000 cd/m2: NumPy's array and scalar powers round differently), so within 1e-12 is maxLum.
    e2c = np.clip(e2, 0.0, max_lum)
    e2c = np.where(e2c >= max_lum - 1e-12, max_lum, e2c)
    knee = np.interp(e2c, e2_tab[last], e1_tab[last]).astype(e2.dtype, copy=False)
    return np.where(e2c < ks, e2c, knee)


def hdr_to_sdr_bt2390(
    hdr_nits, *, peak_nits: float = DEFAULT_PEAK_NITS, target_nits: float = SDR_PEAK_NITS
) -> np.ndarray:
    """HDR -> SDR by the EETF of Report ITU-R BT.2390-7 (now Report ITU-R BT.2408-7 Annex 5).

    The EETF works in PQ: E1 = PQ(L) / PQ(``peak_nits``) (master black taken as 0),
    maxLum = PQ(``target_nits``) / PQ(``peak_nits``), knee start KS = 1.5 maxLum - 0.5,
    identity below KS and the Report's Hermite spline from KS to the master peak, which
    lands on maxLum. It is applied to maxRGB = max(R, G, B) of linear BT.2020 and the
    pixel is scaled by EETF(maxRGB) / maxRGB (hue and RGB ratios kept, no channel above
    the target). The target black is 0, so the Report's black-level lift vanishes.

    Parameters
    ----------
    hdr_nits : array_like, shape (..., 3)
        Linear BT.2020 RGB, cd/m2.
    peak_nits : float
        Master peak L_W in cd/m2; luminance above it is clipped.
    target_nits : float
        Target display peak L_max, cd/m2 (100, the SDR reference white).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    """
    peak = _check_peak(peak_nits)
    pq_peak, max_lum, ks = _bt2390_params(peak, float(target_nits))
    rgb = np.minimum(_hdr_in(hdr_nits), peak)
    m = _channel_max(rgb)
    e1 = eotf_inverse_st2084(m) / pq_peak
    m_out = eotf_st2084(_eetf_2390(e1, ks, max_lum) * pq_peak)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(m > 0.0, m_out / m, 0.0)
    rel = (rgb * ratio / SDR_PEAK_NITS).astype(rgb.dtype, copy=False)
    return _rel2020_to_sdr(rel)


def sdr_to_hdr_bt2390(
    sdr, *, peak_nits: float = DEFAULT_PEAK_NITS, target_nits: float = SDR_PEAK_NITS
) -> np.ndarray:
    """Inverse of :func:`hdr_to_sdr_bt2390`: the BT.2390 EETF inverted on maxRGB.

    Exact (to the 8193-point inversion table, < 1e-6 in PQ) wherever the forward did
    not clip gamut or luminance above ``peak_nits``; SDR 1.0 returns ``peak_nits``.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits, target_nits : float
        As given to the forward, cd/m2.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2.
    """
    peak = _check_peak(peak_nits)
    pq_peak, max_lum, ks = _bt2390_params(peak, float(target_nits))
    rgb = _sdr_to_rel2020(_sdr_in(sdr)) * SDR_PEAK_NITS
    m = _channel_max(rgb)
    e2 = eotf_inverse_st2084(m) / pq_peak
    m_in = eotf_st2084(_eetf_inverse_2390(e2, ks, max_lum) * pq_peak)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(m > 0.0, m_in / m, 0.0)
    return _finite_nonneg(rgb * ratio).astype(rgb.dtype, copy=False)


# --- Hable (Uncharted 2) filmic -----------------------------------------------------------

# J. Hable, GDC 2010: shoulder strength A, linear strength B, linear angle C, toe strength D,
# toe numerator E, toe denominator F.
_HABLE_A, _HABLE_B, _HABLE_C, _HABLE_D, _HABLE_E, _HABLE_F = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30


def _hable(x):
    a, b, c, d, e, f = _HABLE_A, _HABLE_B, _HABLE_C, _HABLE_D, _HABLE_E, _HABLE_F
    return (x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f) - e / f


def _hable_inverse(z):
    """Non-negative x with _hable(x) = z, for z in [0, _hable(inf)) (a quadratic in x)."""
    a, b, c, d, e, f = _HABLE_A, _HABLE_B, _HABLE_C, _HABLE_D, _HABLE_E, _HABLE_F
    w = z + e / f
    qa = a * (w - 1.0)  # < 0 for w < 1
    qb = b * (w - c)
    qc = d * (w * f - e)  # >= 0
    disc = np.maximum(qb * qb - 4.0 * qa * qc, 0.0)
    return np.maximum((qb + np.sqrt(disc)) / (-2.0 * qa), 0.0)


def hdr_to_sdr_hable(
    hdr_nits,
    *,
    peak_nits: float = DEFAULT_PEAK_NITS,
    exposure: float = 2.0,
    white_nits: float | None = None,
) -> np.ndarray:
    """HDR -> SDR by John Hable's Uncharted 2 filmic curve (GDC 2010), per channel.

    x = ``exposure`` * L / 100 cd/m2 on each linear BT.2020 channel, out =
    f(x) / f(x_white) with Hable's rational f and constants A..F = 0.15, 0.50, 0.10, 0.20,
    0.02, 0.30; x_white is ``white_nits`` (default ``peak_nits``) through the same scaling,
    so the white point maps to SDR 1.0. Per-channel application desaturates highlights
    as in the original game pipeline.

    Parameters
    ----------
    hdr_nits : array_like, shape (..., 3)
        Linear BT.2020 RGB, cd/m2.
    peak_nits : float
        Master peak, cd/m2; the default white point.
    exposure : float
        Exposure bias (Hable's ExposureBias, 2.0).
    white_nits : float or None
        Luminance mapped to SDR white, cd/m2 (Hable's W = 11.2 in his units).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    """
    peak = _check_peak(peak_nits)
    white = peak if white_nits is None else float(white_nits)
    rgb = _hdr_in(hdr_nits)
    scale = exposure / SDR_PEAK_NITS
    rel = _hable(rgb * scale) / _hable(white * scale)
    return _rel2020_to_sdr(rel.astype(rgb.dtype, copy=False))


def sdr_to_hdr_hable(
    sdr,
    *,
    peak_nits: float = DEFAULT_PEAK_NITS,
    exposure: float = 2.0,
    white_nits: float | None = None,
) -> np.ndarray:
    """Inverse of :func:`hdr_to_sdr_hable`: Hable's curve solved per channel (a quadratic).

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits, exposure, white_nits
        As given to the forward.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2, [0, white_nits].
    """
    peak = _check_peak(peak_nits)
    white = peak if white_nits is None else float(white_nits)
    rel = _sdr_to_rel2020(_sdr_in(sdr))
    scale = exposure / SDR_PEAK_NITS
    z = np.clip(rel, 0.0, 1.0) * _hable(white * scale)
    return _finite_nonneg(_hable_inverse(z) / scale).astype(rel.dtype, copy=False)


# --- Reinhard extended ----------------------------------------------------------------------


def hdr_to_sdr_reinhard(
    hdr_nits, *, peak_nits: float = DEFAULT_PEAK_NITS, white_nits: float | None = None
) -> np.ndarray:
    """HDR -> SDR by the extended Reinhard operator (Reinhard et al., SIGGRAPH 2002, eq. 4).

    On BT.2020 luminance L relative to 100 cd/m2: L_d = L (1 + L / L_white^2) / (1 + L),
    L_white = ``white_nits`` / 100 (default ``peak_nits``), which maps exactly to 1. The
    RGB pixel is scaled by L_d / L (colour ratios kept).

    Parameters
    ----------
    hdr_nits : array_like, shape (..., 3)
        Linear BT.2020 RGB, cd/m2.
    peak_nits : float
        Master peak, cd/m2; the default white.
    white_nits : float or None
        Smallest luminance that maps to SDR white, cd/m2.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    """
    peak = _check_peak(peak_nits)
    l_white = (peak if white_nits is None else float(white_nits)) / SDR_PEAK_NITS
    rgb = _hdr_in(hdr_nits) / SDR_PEAK_NITS
    lum = luminance(rgb, "bt2020")[..., None]
    l_d = lum * (1.0 + lum / (l_white * l_white)) / (1.0 + lum)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lum > 0.0, l_d / lum, 0.0)
    return _rel2020_to_sdr((rgb * ratio).astype(rgb.dtype, copy=False))


def sdr_to_hdr_reinhard(
    sdr, *, peak_nits: float = DEFAULT_PEAK_NITS, white_nits: float | None = None
) -> np.ndarray:
    """Inverse of :func:`hdr_to_sdr_reinhard` (the positive root of its quadratic in L).

    L = (L_w^2 / 2) (L_d - 1 + sqrt((1 - L_d)^2 + 4 L_d / L_w^2)).

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits, white_nits
        As given to the forward.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2.
    """
    peak = _check_peak(peak_nits)
    l_white = (peak if white_nits is None else float(white_nits)) / SDR_PEAK_NITS
    rel = _sdr_to_rel2020(_sdr_in(sdr))
    l_d = np.clip(luminance(rel, "bt2020"), 0.0, 1.0)[..., None]
    w2 = l_white * l_white
    lum = 0.5 * w2 * (l_d - 1.0 + np.sqrt((1.0 - l_d) ** 2 + 4.0 * l_d / w2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(l_d > 0.0, lum / l_d, 0.0)
    return _finite_nonneg(rel * ratio * SDR_PEAK_NITS).astype(rel.dtype, copy=False)


# --- YouTube (toru-ver4's public fit) -------------------------------------------------------

# The fit, in PQ code values per channel (Yoshihara 2019): y = 0.74 x + 0.01175 below the
# knee start PQ(400 cd/m2); a quadratic Bezier from there through the control point
# (x where the line reaches PQ(100), PQ(100)) to (PQ(1000), PQ(100)); PQ(100) above.
_YT_SLOPE, _YT_OFFSET = 0.74, 0.01175
_YT_KNEE_START_NITS, _YT_KNEE_END_NITS = 400.0, 1000.0


@functools.cache
def _youtube_params() -> tuple[float, float, float, float, float, float]:
    x0 = float(eotf_inverse_st2084(_YT_KNEE_START_NITS))
    y0 = _YT_SLOPE * x0 + _YT_OFFSET
    y2 = float(eotf_inverse_st2084(SDR_PEAK_NITS))
    x1 = (y2 - _YT_OFFSET) / _YT_SLOPE  # 0.67071..., about 473.5 cd/m2
    x2 = float(eotf_inverse_st2084(_YT_KNEE_END_NITS))
    return x0, x1, x2, y0, y2, y2


def _youtube_eetf(x: np.ndarray) -> np.ndarray:
    x0, x1, x2, y0, y1, y2 = _youtube_params()
    # Solve x(t) = (1-t)^2 x0 + 2(1-t)t x1 + t^2 x2 for t in [0, 1].
    qa = x0 - 2 * x1 + x2
    xc = np.clip(x, x0, x2)
    t = (-(x1 - x0) + np.sqrt(np.maximum((x1 - x0) ** 2 - qa * (x0 - xc), 0.0))) / qa
    bez = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * y1 + t * t * y2
    return np.where(x < x0, _YT_SLOPE * x + _YT_OFFSET, np.where(x <= x2, bez, y2))


def _youtube_eetf_inverse(y: np.ndarray) -> np.ndarray:
    x0, x1, x2, y0, y1, y2 = _youtube_params()
    lin = np.maximum((y - _YT_OFFSET) / _YT_SLOPE, 0.0)
    # y(t) = (1-t)^2 y0 + (1 - (1-t)^2) y2 since y1 == y2, so t = 1 - sqrt((y2 - y)/(y2 - y0)).
    t = 1.0 - np.sqrt(np.clip((y2 - y) / (y2 - y0), 0.0, 1.0))
    bez = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * x1 + t * t * x2
    return np.where(y < y0, lin, bez)


def hdr_to_sdr_youtube(hdr_nits, *, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """HDR -> SDR as YouTube's HDR10 -> SDR conversion, by the public reverse-engineered fit.

    Yoshihara (2019) measured YouTube's conversion with test patterns and fitted, per
    channel in PQ code values: a straight line y = 0.74 x + 0.01175 up to 400 cd/m2, a
    quadratic Bezier roll-off from 400 to 1000 cd/m2 ending on PQ(100 cd/m2), flat above.
    The result is decoded with the ST 2084 EOTF, divided by 100 cd/m2, converted
    BT.2020 -> BT.709 with the 3x3 matrix and clipped per channel, then encoded with a
    2.4 gamma (as in his emulation). This is the "YouTube" degradation model that
    HDRTVNet (ICCV 2021) and HDRTV4K (CVPR 2023) train on. The fit is static: YouTube's
    curve does not follow the master's metadata, so ``peak_nits`` is accepted and ignored.

    Parameters
    ----------
    hdr_nits : array_like, shape (..., 3)
        Linear BT.2020 RGB, cd/m2.
    peak_nits : float
        Ignored (kept for a uniform call signature).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    """
    _check_peak(peak_nits)
    rgb = _hdr_in(hdr_nits)
    y = _youtube_eetf(eotf_inverse_st2084(rgb))
    rel = (eotf_st2084(y) / SDR_PEAK_NITS).astype(rgb.dtype, copy=False)
    return _rel2020_to_sdr(rel, gamut="clip")


def sdr_to_hdr_youtube(sdr, *, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """Inverse of :func:`hdr_to_sdr_youtube` (line and Bezier inverted per PQ channel).

    SDR 1.0 returns 1000 cd/m2 (the end of the fitted roll-off); SDR black returns 0.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits : float
        Ignored.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2, [0, 1000].
    """
    _check_peak(peak_nits)
    rel = _sdr_to_rel2020(_sdr_in(sdr))
    y = eotf_inverse_st2084(rel * SDR_PEAK_NITS)
    out = eotf_st2084(_youtube_eetf_inverse(y))
    # PQ code _YT_OFFSET (black of the fit) and below decode to 0.
    out = np.where(y <= _YT_OFFSET, 0.0, out)
    return _finite_nonneg(out).astype(rel.dtype, copy=False)


# --- local (spatially varying) ---------------------------------------------------------------


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Guided filter of He, Sun and Tang (TPAMI 2013), grey guide, over the last two axes.

    Parameters
    ----------
    guide, src : numpy.ndarray, shape (..., H, W)
        Guide image I and filtering input p (same shape). Leading axes are independent.
    radius : int
        Window radius r in pixels (window (2r+1)^2, box means with reflected borders).
    eps : float
        Regularisation, in squared units of ``guide``; edges whose variance is well above
        it are kept, smaller variations are smoothed.

    Returns
    -------
    numpy.ndarray, shape (..., H, W)
        q = mean(a) I + mean(b), same dtype as ``src``.
    """
    size = (1,) * (guide.ndim - 2) + (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    mean_i = box(guide)
    mean_p = mean_i if src is guide else box(src)
    corr_ip = box(guide * src)
    corr_ii = corr_ip if src is guide else box(guide * guide)
    var_i = np.maximum(corr_ii - mean_i * mean_i, 0.0)
    a = (corr_ip - mean_i * mean_p) / (var_i + eps)
    b = mean_p - a * mean_i
    return (box(a) * guide + box(b)).astype(src.dtype, copy=False)


def hdr_to_sdr_local(
    hdr_nits,
    *,
    peak_nits: float = DEFAULT_PEAK_NITS,
    grey_nits: float = 26.0,
    sdr_grey_nits: float = 18.0,
    compression: float = 0.75,
    detail_gain: float = 1.4,
    radius_fraction: float = 0.02,
    eps: float = 0.02,
    saturation: float = 1.0,
) -> np.ndarray:
    """HDR -> SDR by local tone mapping: base/detail split on log luminance (spatial).

    A colourist's local contrast grade, after Durand and Dorsey (SIGGRAPH 2002) with the
    guided filter (He et al., TPAMI 2013) as the edge-preserving filter:

    1. l = log10 of BT.2020 luminance (floored at 1e-4 cd/m2);
    2. base = guided_filter(l, l), radius ``radius_fraction`` * max(H, W), ``eps`` in
       decades^2; detail = l - base;
    3. base is compressed about a pivot: HDR ``grey_nits`` (BT.2408 18 % grey, 26 cd/m2)
       lands on ``sdr_grey_nits``, slopes scaled by ``compression``; detail is boosted by
       ``detail_gain``;
    4. the pixel is scaled by 10^(out - l) (colour ratios to the power ``saturation``),
       and everything above SDR white clips: highlights are clipped, not rolled off.

    The same HDR value lands on different SDR values in different neighbourhoods, so the
    SDR -> HDR relation is not a global function; there is no inverse. On a flat picture
    the map is the global line ``log10(sdr_grey) + compression (l - log10(grey))``.
    ``peak_nits`` is accepted and ignored (highlights clip). About 0.3 s at 1920x1080.

    Parameters
    ----------
    hdr_nits : array_like, shape (..., H, W, 3)
        Linear BT.2020 RGB pictures, cd/m2; leading axes are separate pictures.
    peak_nits : float
        Ignored.
    grey_nits, sdr_grey_nits : float
        Pivot in the HDR master and where it lands in SDR, cd/m2.
    compression : float
        Slope of the base layer in log-log (1 = no compression).
    detail_gain : float
        Gain of the detail layer (> 1 boosts local contrast).
    radius_fraction : float
        Filter radius as a fraction of the larger picture side (at least 1 pixel).
    eps : float
        Guided filter regularisation, (log10 units)^2.
    saturation : float
        Exponent on the colour ratios RGB / Y (1 keeps them).

    Returns
    -------
    numpy.ndarray, shape (..., H, W, 3)
        BT.709 R'G'B' code values in [0, 1].
    """
    _check_peak(peak_nits)
    rgb = _hdr_in(hdr_nits, min_ndim=3)
    height, width = rgb.shape[-3], rgb.shape[-2]
    floor = np.asarray(1e-4, dtype=rgb.dtype)
    lum = np.maximum(luminance(rgb, "bt2020"), floor)
    log_l = np.log10(lum)
    radius = max(1, int(round(radius_fraction * max(height, width))))
    base = guided_filter(log_l, log_l, radius, eps)
    detail = log_l - base
    out_log = (
        math.log10(sdr_grey_nits)
        + compression * (base - math.log10(grey_nits))
        + detail_gain * detail
    )
    lum_out = np.power(np.asarray(10.0, dtype=rgb.dtype), out_log) / SDR_PEAK_NITS
    ratio_rgb = rgb / lum[..., None]
    if saturation != 1.0:
        ratio_rgb = np.power(ratio_rgb, saturation)
    rel = (ratio_rgb * lum_out[..., None]).astype(rgb.dtype, copy=False)
    return _rel2020_to_sdr(rel)


# --- registry ------------------------------------------------------------------------------

_DESAT = (
    "matrix BT.2020->BT.709, then luminance-preserving desaturation toward grey until every "
    "channel is in [0, 1]; luminance above SDR white clips to white"
)

REGISTRY: dict[str, ToneCurve] = {
    c.name: c
    for c in (
        ToneCurve(
            name="bt2446a",
            description="ITU-R BT.2446-1 Method A (luma knee in a perceptual domain, "
            "chroma correction), L_HDR = peak_nits",
            forward=hdr_to_sdr_bt2446a,
            inverse=sdr_to_hdr_bt2446a,
            spatial=False,
            gamut="BT.2446 output is BT.2020 R'G'B'; then " + _DESAT,
            domain="gamma 1/2.4 luma relative to L_HDR",
        ),
        ToneCurve(
            name="bt2390",
            description="ITU-R BT.2390 EETF (Hermite knee in PQ) on maxRGB, "
            "master peak_nits -> 100 cd/m2",
            forward=hdr_to_sdr_bt2390,
            inverse=sdr_to_hdr_bt2390,
            spatial=False,
            gamut=_DESAT,
            domain="PQ code value normalised to the master peak",
        ),
        ToneCurve(
            name="hable",
            description="Hable / Uncharted 2 filmic curve per channel, white point = peak_nits",
            forward=hdr_to_sdr_hable,
            inverse=sdr_to_hdr_hable,
            spatial=False,
            gamut="tone map per BT.2020 channel, then " + _DESAT,
            domain="relative linear light (1 = 100 cd/m2) times exposure",
        ),
        ToneCurve(
            name="reinhard",
            description="extended Reinhard on luminance, L_white = peak_nits",
            forward=hdr_to_sdr_reinhard,
            inverse=sdr_to_hdr_reinhard,
            spatial=False,
            gamut=_DESAT,
            domain="relative linear luminance (1 = 100 cd/m2)",
        ),
        ToneCurve(
            name="youtube",
            description="YouTube HDR10 -> SDR (public fit: PQ line to 400 cd/m2, Bezier "
            "roll-off to 1000 cd/m2), the HDRTVNet/HDRTV4K degradation",
            forward=hdr_to_sdr_youtube,
            inverse=sdr_to_hdr_youtube,
            spatial=False,
            gamut="matrix BT.2020->BT.709, then hard clip of each channel to [0, 1] "
            "(as the public emulation)",
            domain="PQ code value per channel",
        ),
        ToneCurve(
            name="local",
            description="local tone mapping: guided-filter base/detail on log luminance, "
            "base compressed, detail boosted, highlights clipped",
            forward=hdr_to_sdr_local,
            inverse=None,
            spatial=True,
            gamut=_DESAT,
            domain="log10 luminance, cd/m2",
        ),
    )
}
"""All tone curves by name."""


def curve_names() -> list[str]:
    """Names of the registered tone curves, in registry order."""
    return list(REGISTRY)


def get_curve(name: str) -> ToneCurve:
    """The :class:`ToneCurve` called ``name``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown tone curve {name!r}; valid names: {', '.join(curve_names())}"
        ) from None
