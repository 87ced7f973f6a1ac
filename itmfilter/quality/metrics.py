"""HDR quality metrics as used in the paper: PU21-PSNR, PSNR in PQ, Delta E ITP, SSIM on PU values.

Every function takes linear BT.2020 RGB in absolute units (cd/m2), shaped ``(H, W, 3)``,
float32 or float64, reference first and test second. Encodings are computed in float64 when
either input is float64, float32 otherwise (SSIM moments always in float64); numpy and
scipy.ndimage keep a 1920x1080 :func:`evaluate` well under a second on two cores.

Invalid values never crash a metric: NaN becomes 0 cd/m2, +inf 10000 cd/m2, negative values
0 cd/m2 and values above 10000 cd/m2 are clipped to 10000 (the ST 2084 and PU21 range).
:func:`evaluate` reports how many non-finite values the test picture held.

References
----------
- R. K. Mantiuk, M. Azimi, "PU21: A novel perceptually uniform encoding for adapting existing
  quality metrics for HDR", Picture Coding Symposium 2021; reference code gfxdisp/pu21
  (``pu21_encoder.m``, ``pu21_metric.m``).
- SMPTE ST 2084:2014, High Dynamic Range EOTF of Mastering Reference Displays.
- ITU-R BT.2100-2 (07/2018), Image parameter values for HDR television (ICtCp).
- ITU-R BT.2124-0 (01/2019), Objective metric for the assessment of the potential visibility of
  colour differences in television (Delta E ITP).
- Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 13(4), 2004 (SSIM).
- Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for image quality
  assessment", Asilomar 2003 (MS-SSIM).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from itmfilter.colour.primaries import LUMINANCE_WEIGHTS_BT2020
from itmfilter.colour.transfer import PQ_PEAK_NITS, eotf_inverse_st2084

__all__ = [
    "PU21_L_MIN",
    "PU21_L_MAX",
    "PU21_PEAK",
    "pu21_encode",
    "luminance_bt2020",
    "psnr_pu21",
    "psnr_pu21_y",
    "psnr_pq",
    "delta_e_itp",
    "ssim_pu21",
    "ms_ssim_pu21",
    "evaluate",
    "flicker",
    "flicker_relative",
]

# PU21 valid luminance range, cd/m2 (gfxdisp/pu21, pu21_encoder.m).
PU21_L_MIN = 0.005
PU21_L_MAX = 10000.0

# 'banding_glare' parameters p1..p7, updated 06/02/2020 in gfxdisp/pu21 (pu21_encoder.m); the
# authors recommend this set.
_PU21_BANDING_GLARE = (
    0.353487901,
    0.3734658629,
    8.277049286e-05,
    0.9062562627,
    0.09150303166,
    0.9099517204,
    596.3148142,
)

# Peak value used by the reference for PSNR and as SSIM's dynamic range: pu21_metric.m calls
# psnr(T, R, 256) and ssim(..., 'DynamicRange', 256). PU21 maps about 0.1-100 cd/m2 to 0-256,
# like an 8-bit SDR picture, so scores read like SDR scores.
PU21_PEAK = 256.0

# BT.2100-2 Table 6: BT.2020 RGB -> LMS, and PQ L'M'S' -> ICtCp.
_MATRIX_BT2020_TO_LMS = (
    (1688 / 4096, 2146 / 4096, 262 / 4096),
    (683 / 4096, 2951 / 4096, 462 / 4096),
    (99 / 4096, 309 / 4096, 3688 / 4096),
)
_MATRIX_LMS_P_TO_ICTCP = (
    (2048 / 4096, 2048 / 4096, 0 / 4096),
    (6610 / 4096, -13613 / 4096, 7003 / 4096),
    (17933 / 4096, -17390 / 4096, -543 / 4096),
)

# BT.2124-0: Delta E ITP = 720 * sqrt(dI^2 + dT^2 + dP^2), T = 0.5 * Ct, P = Cp; 1 is about one
# just noticeable difference.
_ITP_SCALE = 720.0

# SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03

# MS-SSIM (Wang et al. 2003) weights for scales 1..5, finest first.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# --------------------------------------------------------------------------------------------
# Input handling


def _work_dtype(*arrays: np.ndarray) -> type:
    return np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32


def _as_picture(x, name: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"{name}: expected linear BT.2020 RGB in cd/m2 shaped (H, W, 3), "
            f"got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: picture is empty, shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{name}: expected float32 or float64 cd/m2, got {array.dtype}; "
            "convert code values to linear light first"
        )
    return array


def _as_pair(ref, test) -> tuple[np.ndarray, np.ndarray]:
    ref = _as_picture(ref, "reference")
    test = _as_picture(test, "test")
    if ref.shape != test.shape:
        raise ValueError(
            f"reference and test differ in shape: {ref.shape} vs {test.shape}; "
            "compare pictures of the same size"
        )
    return ref, test


def _sanitised(x: np.ndarray, dtype: type) -> np.ndarray:
    """Copy of ``x`` in cd/m2: NaN -> 0, +inf -> 10000, clipped to [0, 10000]."""
    clean = np.array(x, dtype=dtype, copy=True)
    np.nan_to_num(clean, copy=False, nan=0.0, posinf=PQ_PEAK_NITS, neginf=0.0)
    return np.clip(clean, 0.0, PQ_PEAK_NITS, out=clean)


def _count_nonfinite(x: np.ndarray) -> int:
    return int(x.size - np.count_nonzero(np.isfinite(x)))


def _pair_clean(ref, test) -> tuple[np.ndarray, np.ndarray]:
    ref, test = _as_pair(ref, test)
    dtype = _work_dtype(ref, test)
    return _sanitised(ref, dtype), _sanitised(test, dtype)


# --------------------------------------------------------------------------------------------
# Encodings (numpy, channel-last, dtype preserved)


def _pu21(nits: np.ndarray) -> np.ndarray:
    p = [nits.dtype.type(v) for v in _PU21_BANDING_GLARE]
    y_p = np.power(np.clip(nits, PU21_L_MIN, PU21_L_MAX), p[3])
    return p[6] * (np.power((p[0] + p[1] * y_p) / (1 + p[2] * y_p), p[4]) - p[5])


def _times_matrix(rgb: np.ndarray, rows) -> np.ndarray:
    """Apply a 3x3 matrix (given as rows) to channel-last pixels."""
    return rgb @ np.asarray(rows, dtype=rgb.dtype).T


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # BT.2020 weights (BT.2020-2 Table 4). The PU21 reference uses BT.709 weights because it
    # assumes sRGB primaries; our pictures are BT.2020.
    return rgb @ LUMINANCE_WEIGHTS_BT2020.astype(rgb.dtype)


def _itp(rgb: np.ndarray) -> np.ndarray:
    """BT.2020 RGB cd/m2 -> (I, T, P) per BT.2124, channel-last, unscaled (before x720)."""
    lms_p = eotf_inverse_st2084(_times_matrix(rgb, _MATRIX_BT2020_TO_LMS))
    ictcp = _times_matrix(lms_p, _MATRIX_LMS_P_TO_ICTCP)
    ictcp[..., 1] *= 0.5
    return ictcp


def _mean_itp_distance(ref: np.ndarray, test: np.ndarray) -> float:
    diff = _itp(test) - _itp(ref)
    distance = np.sqrt(np.sum(np.square(diff), axis=-1))
    return _ITP_SCALE * float(np.mean(distance, dtype=np.float64))


def _psnr(ref: np.ndarray, test: np.ndarray, peak: float) -> float:
    diff = test - ref
    mse = float(np.mean(np.square(diff), dtype=np.float64))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


# --------------------------------------------------------------------------------------------
# SSIM / MS-SSIM on single (H, W) planes


def _gaussian_window(size: int) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _window_size(height: int, width: int) -> int:
    # Pictures smaller than the 11-pixel window get the largest odd window that fits.
    size = min(_SSIM_WINDOW, height, width)
    return size if size % 2 == 1 else size - 1


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term of two (H, W) planes.

    Averaged over the 'valid' region, where the whole window lies inside the picture, as in
    Wang et al.'s reference code. Moments in float64: E[x^2] - E[x]^2 on PU values near 600
    loses too much in float32.
    """
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.float64, copy=False)
    size = _window_size(*x.shape)
    g = _gaussian_window(size)
    r = size // 2
    valid = (slice(r, x.shape[0] - r), slice(r, x.shape[1] - r))

    def blur(plane: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(plane, g, axis=0), g, axis=1)[valid]

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov = blur(x * y) - mu_xy
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    luminance_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return float(np.mean(luminance_map * cs_map)), float(np.mean(cs_map))


def _ms_ssim_scales(height: int, width: int) -> int:
    # A scale is kept while its smaller side still holds the full 11-pixel window.
    scales = 1
    while scales < len(_MS_SSIM_WEIGHTS) and min(height, width) // 2**scales >= _SSIM_WINDOW:
        scales += 1
    return scales


def _halve(plane: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd last row or column is dropped."""
    h, w = plane.shape[0] // 2, plane.shape[1] // 2
    return plane[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))


def _ssim_and_ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """(SSIM, MS-SSIM) of two (H, W) planes; the finest scale is shared."""
    scales = _ms_ssim_scales(*x.shape)
    weights = _MS_SSIM_WEIGHTS[:scales]
    total = sum(weights)
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.float64, copy=False)
    ssim_full = math.nan
    ms_ssim = 1.0
    for scale, weight in enumerate(weights):
        ssim, cs = _ssim_terms(x, y, data_range)
        if scale == 0:
            ssim_full = ssim
        # Negative terms would make a fractional power complex; clamp to 0 as is common practice.
        term = ssim if scale == scales - 1 else cs
        ms_ssim *= max(term, 0.0) ** (weight / total)
        if scale < scales - 1:
            x, y = _halve(x), _halve(y)
    return ssim_full, ms_ssim


# --------------------------------------------------------------------------------------------
# Public API


def pu21_encode(nits) -> np.ndarray:
    """PU21 'banding_glare' encoding of absolute luminance, applied element-wise.

    Parameters
    ----------
    nits : array_like
        Linear light in cd/m2, any shape (luminance, or each RGB channel as the paper does).
        Clipped to [0.005, 10000] cd/m2; NaN counts as 0, +inf as 10000.

    Returns
    -------
    numpy.ndarray or numpy scalar
        PU21 values, same shape (a numpy scalar for 0-d input); float32 for float32 input,
        float64 otherwise. About 0 at 0.005 cd/m2, 256.4 at 100 cd/m2 (the SDR range maps to
        about 0-256) and 595.39 at 10000 cd/m2.

    References: Mantiuk & Azimi 2021 (PCS); gfxdisp/pu21 ``pu21_encoder.m``.
    """
    array = np.asarray(nits)
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    encoded = _pu21(_sanitised(array, dtype))
    return encoded[()] if encoded.ndim == 0 else encoded


def luminance_bt2020(rgb) -> np.ndarray:
    """Luminance in cd/m2 of linear BT.2020 RGB in cd/m2, ``(..., 3) -> (...)``.

    Y = 0.2627 R + 0.6780 G + 0.0593 B (ITU-R BT.2020-2 / BT.2100-2).
    """
    array = np.asarray(rgb)
    if array.shape[-1:] != (3,):
        raise ValueError(f"expected linear RGB shaped (..., 3), got shape {array.shape}")
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    return _luminance(array.astype(dtype, copy=False))


def psnr_pu21(ref, test) -> float:
    """PU21-PSNR in dB over all three RGB channels, peak 256 (as ``pu21_metric(..., 'PSNR')``).

    Each channel of ``(H, W, 3)`` BT.2020 RGB in cd/m2 is PU21-encoded, the squared error is
    averaged over every pixel and channel, and PSNR = 10 log10(256^2 / MSE). Identical
    pictures give ``inf``.
    """
    r, t = _pair_clean(ref, test)
    return _psnr(_pu21(r), _pu21(t), PU21_PEAK)


def psnr_pu21_y(ref, test) -> float:
    """PU21-PSNR in dB on BT.2020 luminance, peak 256 (as ``pu21_metric(..., 'PSNRY')``).

    Inputs are ``(H, W, 3)`` BT.2020 RGB in cd/m2. The reference code computes luminance with
    BT.709 weights; we use BT.2020 weights because our primaries are BT.2020.
    """
    r, t = _pair_clean(ref, test)
    return _psnr(_pu21(_luminance(r)), _pu21(_luminance(t)), PU21_PEAK)


def psnr_pq(ref, test) -> float:
    """PSNR in dB on SMPTE ST 2084 (PQ) encoded R'G'B', code values in [0, 1], peak 1.0.

    Inputs are ``(H, W, 3)`` BT.2020 RGB in cd/m2, clipped to [0, 10000] before encoding.
    """
    r, t = _pair_clean(ref, test)
    return _psnr(eotf_inverse_st2084(r), eotf_inverse_st2084(t), 1.0)


def delta_e_itp(ref, test) -> float:
    """Mean Delta E ITP per ITU-R BT.2124-0 between two ``(H, W, 3)`` BT.2020 pictures in cd/m2.

    RGB -> LMS -> PQ L'M'S' -> ICtCp (BT.2100-2), T = 0.5 Ct, P = Cp,
    Delta E ITP = 720 sqrt(dI^2 + dT^2 + dP^2), averaged over pixels. 1 is about one just
    noticeable difference.
    """
    r, t = _pair_clean(ref, test)
    return _mean_itp_distance(r, t)


def ssim_pu21(ref, test) -> float:
    """SSIM (Wang et al. 2004) on PU21-encoded BT.2020 luminance, in [-1, 1], 1 for identical.

    Luminance only, as ``pu21_metric(..., 'SSIM')`` does. Gaussian window 11x11, sigma 1.5,
    K1 = 0.01, K2 = 0.03, data range 256 (the PU21 peak of the reference), averaged over the
    'valid' region where the whole window lies inside the picture. Pictures under 11 pixels on
    a side use the largest odd window that fits.
    """
    r, t = _pair_clean(ref, test)
    return _ssim_terms(_pu21(_luminance(r)), _pu21(_luminance(t)), PU21_PEAK)[0]


def ms_ssim_pu21(ref, test) -> float:
    """MS-SSIM (Wang et al. 2003) on PU21-encoded BT.2020 luminance, 1 for identical.

    Five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling
    between scales, SSIM settings as :func:`ssim_pu21`. A scale is used only if its smaller
    side still holds 11 pixels (176 pixels are needed for all five); with fewer scales the
    retained weights are renormalised to sum to 1, so a picture under 22 pixels gets plain
    SSIM. Negative per-scale terms are clamped to 0 before the fractional powers.
    """
    r, t = _pair_clean(ref, test)
    return _ssim_and_ms_ssim(_pu21(_luminance(r)), _pu21(_luminance(t)), PU21_PEAK)[1]


def evaluate(ref, test) -> dict[str, float]:
    """All picture metrics for a ``(H, W, 3)`` BT.2020 reference and test, in cd/m2.

    Returns a dict with ``pu21_psnr``, ``pu21_psnr_y``, ``pq_psnr`` (dB; ``inf`` when equal),
    ``delta_e_itp`` (mean, BT.2124), ``pu21_ssim``, ``pu21_ms_ssim`` and ``nonfinite_test``,
    the number of NaN/inf values found in ``test`` (replaced as the module notes say). Each
    encoding is computed once, so this is faster than calling the metrics one by one.
    """
    ref, test = _as_pair(ref, test)
    dtype = _work_dtype(ref, test)
    r, t = _sanitised(ref, dtype), _sanitised(test, dtype)
    pu_y_r, pu_y_t = _pu21(_luminance(r)), _pu21(_luminance(t))
    ssim, ms_ssim = _ssim_and_ms_ssim(pu_y_r, pu_y_t, PU21_PEAK)
    return {
        "pu21_psnr": _psnr(_pu21(r), _pu21(t), PU21_PEAK),
        "pu21_psnr_y": _psnr(pu_y_r, pu_y_t, PU21_PEAK),
        "pq_psnr": _psnr(eotf_inverse_st2084(r), eotf_inverse_st2084(t), 1.0),
        "delta_e_itp": _mean_itp_distance(r, t),
        "pu21_ssim": ssim,
        "pu21_ms_ssim": ms_ssim,
        "nonfinite_test": float(_count_nonfinite(test)),
    }


def _frames_pu_y(frames: Iterable, name: str):
    """PU21 luminance planes of a frame sequence, one frame at a time."""
    for index, frame in enumerate(frames):
        array = _as_picture(frame, f"{name} frame {index}")
        yield _pu21(_luminance(_sanitised(array, _work_dtype(array))))


def flicker(frames_nits: Iterable) -> float:
    """Mean absolute frame-to-frame change of the mean PU21 luminance of a sequence.

    ``frames_nits`` yields ``(H, W, 3)`` BT.2020 frames in cd/m2 (consumed once, one frame held
    at a time). Result in PU21 units (256 is about the SDR range); 0.0 for fewer than two frames.
    """
    previous = None
    changes = []
    for pu in _frames_pu_y(frames_nits, "frames"):
        mean = float(np.mean(pu, dtype=np.float64))
        if previous is not None:
            changes.append(abs(mean - previous))
        previous = mean
    return float(np.mean(changes)) if changes else 0.0


def flicker_relative(ref_frames: Iterable, test_frames: Iterable) -> float:
    """Temporal change of the test beyond the reference's own change, in PU21 units.

    For each consecutive pair of frames, ``mean_x |dPU_test(x) - dPU_ref(x)|`` with dPU the
    per-pixel change of PU21 luminance; the result is the mean over pairs (0.0 for fewer than
    two frames). Both sequences yield ``(H, W, 3)`` BT.2020 frames in cd/m2 and must have the
    same length and frame size.
    """
    ref_planes = _frames_pu_y(ref_frames, "reference")
    test_planes = _frames_pu_y(test_frames, "test")
    previous = None
    excess = []
    index = 0
    while True:
        pu_r = next(ref_planes, None)
        pu_t = next(test_planes, None)
        if pu_r is None and pu_t is None:
            break
        if pu_r is None or pu_t is None:
            longer = "test" if pu_r is None else "reference"
            raise ValueError(
                "reference and test sequences differ in length: "
                f"{longer} has more than {index} frames"
            )
        if pu_r.shape != pu_t.shape:
            raise ValueError(
                f"frame {index}: reference and test differ in shape: {pu_r.shape} vs {pu_t.shape}"
            )
        if previous is not None:
            prev_r, prev_t = previous
            if pu_r.shape != prev_r.shape:
                raise ValueError(
                    f"frame {index}: frame size changed within the sequence, "
                    f"{prev_r.shape} -> {pu_r.shape}"
                )
            change_beyond_ref = (pu_t - prev_t) - (pu_r - prev_r)
            excess.append(float(np.mean(np.abs(change_beyond_ref), dtype=np.float64)))
        previous = (pu_r, pu_t)
        index += 1
    return float(np.mean(excess)) if excess else 0.0
