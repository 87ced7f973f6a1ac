"""HDR-from-SDR baselines that the per-picture MLP is benchmarked against.

Every baseline returns linear BT.2020 RGB in cd/m2 (``(..., 3)``, or ``(H, W, 3)`` where a
picture is needed), finite and >= 0. SDR input is BT.709 R'G'B' code values in [0, 1] for a
BT.1886 display (L_B = 0; NaN becomes 0, values are clipped to [0, 1]).

Three kinds, from no side information to a lot of it:

* no metadata: :func:`sdr_placed_bt2408` (SDR shown on an HDR screen as ITU-R BT.2408
  says), :func:`inverse_bt2446a` (the SDR -> HDR conversion of Report ITU-R BT.2446-1
  Method A);
* a global colour mapping sent per picture: MMR polynomial coefficients
  (:func:`fit_mmr`, :func:`apply_mmr`, :func:`mmr_nbytes`), as Dolby Vision composer
  metadata carries;
* a per-pixel gain map sent as a small JPEG (:func:`encode_gainmap`,
  :func:`decode_gainmap`, :func:`gainmap_nbytes`), as ISO 21496-1 / Ultra HDR do.

References
----------
- Report ITU-R BT.2408-7, Guidance for operational practices in HDR television
  production: HDR reference white 203 cd/m2 (section 2.2) and display-light placement of
  SDR content in HDR.
- Report ITU-R BT.2446-1 (2021), Method A (tone mapping and its SDR -> HDR inverse).
- G.-M. Su, S. Qu, H. Koepfer, Y. Yuan, S. Hulyalkar, "Multiple color channel multiple
  regression predictor", US patent 8,811,490 B2 (Dolby, 2014): the MMR predictor of
  Dolby Vision's composer (orders 1-3, cross terms).
- ISO 21496-1, Gain map metadata for image conversion; Google "Ultra HDR Image
  Format v1.0" and Adobe "Gain Map specification 1.0" (log2 gain, min/max, offsets 1/64).
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
from PIL import Image

from itmfilter.colour.primaries import (
    LUMINANCE_WEIGHTS_BT2020,
    MATRIX_BT709_TO_BT2020,
    apply_matrix,
    luminance,
)
from itmfilter.colour.tonecurves import DEFAULT_PEAK_NITS, sdr_to_hdr_bt2446a
from itmfilter.colour.transfer import (
    PQ_PEAK_NITS,
    SDR_WHITE_NITS_BT2408,
    eotf_bt1886,
    eotf_inverse_st2084,
    eotf_st2084,
)

__all__ = [
    "sdr_placed_bt2408",
    "inverse_bt2446a",
    "mmr_features",
    "fit_mmr",
    "apply_mmr",
    "mmr_nbytes",
    "encode_gainmap",
    "decode_gainmap",
    "gainmap_nbytes",
    "GAINMAP_OFFSET_NITS",
]


def _sdr_in(sdr, min_ndim: int = 1) -> np.ndarray:
    arr = np.asarray(sdr)
    if arr.ndim < min_ndim or arr.shape[-1] != 3:
        want = "(H, W, 3)" if min_ndim >= 3 else "(..., 3)"
        raise ValueError(f"expected BT.709 R'G'B' code values shaped {want}, got shape {arr.shape}")
    dtype = np.float32 if arr.dtype in (np.float32, np.float16) else np.float64
    arr = arr.astype(dtype, copy=False)
    return np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _hdr_in(hdr_nits, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(hdr_nits)
    if arr.shape != shape:
        raise ValueError(
            f"HDR picture shape {arr.shape} does not match the SDR picture {shape}; "
            "pass the HDR master and its SDR at the same size"
        )
    arr = arr.astype(np.float64, copy=False)
    return np.clip(np.nan_to_num(arr, nan=0.0, posinf=PQ_PEAK_NITS, neginf=0.0), 0.0, PQ_PEAK_NITS)


# --- no metadata ---------------------------------------------------------------------------


def sdr_placed_bt2408(sdr, *, white_nits: float = SDR_WHITE_NITS_BT2408) -> np.ndarray:
    """SDR shown on an HDR display as in Report ITU-R BT.2408-7: no expansion at all.

    BT.1886 decoding (L_B = 0, gamma 2.4) with SDR white placed at HDR reference white,
    203 cd/m2 (BT.2408-7 section 2.2), then BT.709 -> BT.2020 primaries
    (ITU-R BT.2087-0, linear matrix). Colours stay inside BT.709.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    white_nits : float
        Luminance given to SDR code 1.0, cd/m2.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2, [0, white_nits].
    """
    rgb709 = eotf_bt1886(_sdr_in(sdr), l_w=white_nits, l_b=0.0)
    return np.maximum(apply_matrix(rgb709, MATRIX_BT709_TO_BT2020), 0.0)


# Report ITU-R BT.2446-1, Method A inverse (SDR -> HDR): luma exponent E(Y'') as two
# quadratics in Y'' = 255 Y' that meet at Y'' = 70; Y''^E(255) = 1000.
_ITM_A1, _ITM_B1, _ITM_C1 = 1.8712e-5, -2.7334e-3, 1.3141
_ITM_A2, _ITM_B2, _ITM_C2 = 2.8305e-6, -7.4622e-4, 1.2528
_ITM_T = 70.0
_ITM_CHROMA = 1.075
_KR, _KG, _KB = (float(k) for k in LUMINANCE_WEIGHTS_BT2020)
_CR_SCALE, _CB_SCALE = 1.4746, 1.8814


def inverse_bt2446a(
    sdr, *, peak_nits: float = DEFAULT_PEAK_NITS, variant: str = "report"
) -> np.ndarray:
    """SDR -> HDR by Report ITU-R BT.2446-1 Method A.

    ``variant="report"`` (default) is the Report's own Method A inverse conversion:
    the BT.709 SDR is moved into a BT.2020 container (linearise with 2.4, BT.2087 matrix,
    re-apply 1/2.4), split into BT.2020 Y'C'bC'r; luma is expanded as
    Y'_HDR = Y''^E(Y'') with Y'' = 255 Y' and E a quadratic in Y'' (a1, b1, c1 =
    1.8712e-5, -2.7334e-3, 1.3141 for Y'' <= 70, else a2, b2, c2 = 2.8305e-6,
    -7.4622e-4, 1.2528), chroma is scaled by S_C = 1.075 Y'_HDR / Y' (1 when Y' = 0),
    R'G'B' in [0, 1000] is clipped, divided by 1000 and raised to 2.4, giving linear light
    relative to ``peak_nits`` (the Report designs it for 1000 cd/m2). It is an expansion
    in its own right, not the exact inverse of the forward tone mapping.

    ``variant="exact"`` is the algebraic inverse of
    :func:`itmfilter.colour.tonecurves.hdr_to_sdr_bt2446a` (the ``bt2446a`` curve), which
    recovers the master wherever the forward did not clip.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    peak_nits : float
        HDR peak (L_HDR), cd/m2.
    variant : {"report", "exact"}

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2, [0, peak_nits].
    """
    if variant == "exact":
        return sdr_to_hdr_bt2446a(sdr, peak_nits=peak_nits)
    if variant != "report":
        raise ValueError(
            f"unknown BT.2446 Method A variant {variant!r}; expected 'report' or 'exact'"
        )
    peak = float(peak_nits)
    if not (math.isfinite(peak) and 0.0 < peak <= PQ_PEAK_NITS):
        raise ValueError(f"peak_nits must be in (0, 10000] cd/m2, got {peak_nits!r}")
    v = _sdr_in(sdr)
    rgb2020 = np.maximum(apply_matrix(np.power(v, 2.4), MATRIX_BT709_TO_BT2020), 0.0)
    rgb_p = np.power(rgb2020, 1.0 / 2.4)
    y = np.clip(rgb_p @ np.array([_KR, _KG, _KB], dtype=rgb_p.dtype), 0.0, 1.0)
    cb = (rgb_p[..., 2] - y) / _CB_SCALE
    cr = (rgb_p[..., 0] - y) / _CR_SCALE
    ypp = 255.0 * y
    e = np.where(
        ypp <= _ITM_T,
        (_ITM_A1 * ypp + _ITM_B1) * ypp + _ITM_C1,
        (_ITM_A2 * ypp + _ITM_B2) * ypp + _ITM_C2,
    )
    y_hdr = np.power(ypp, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(y > 0.0, _ITM_CHROMA * y_hdr / y, 1.0)
    cb_h, cr_h = cb * sc, cr * sc
    r = y_hdr + _CR_SCALE * cr_h
    b = y_hdr + _CB_SCALE * cb_h
    g = (y_hdr - _KR * r - _KB * b) / _KG
    rgb_hdr_p = np.clip(np.stack([r, g, b], axis=-1), 0.0, 1000.0) / 1000.0
    out = np.power(rgb_hdr_p, 2.4) * peak
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, peak).astype(v.dtype, copy=False)


# --- MMR (multiple colour channel multiple regression) ---------------------------------------


def mmr_features(sdr, order: int = 3) -> np.ndarray:
    """MMR regressors of R'G'B' (US 8,811,490: first-order terms with all cross products).

    Order 1: ``[1, r, g, b, rg, rb, gb, rgb]``; order k adds the k-th powers of the seven
    non-constant terms. 8, 15 and 22 terms for orders 1, 2, 3.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        SDR code values (any [0, 1] signal).
    order : int
        1, 2 or 3.

    Returns
    -------
    numpy.ndarray, shape (..., 1 + 7 * order), float64
    """
    if order not in (1, 2, 3):
        raise ValueError(f"MMR order must be 1, 2 or 3, got {order!r}")
    s = np.asarray(sdr, dtype=np.float64)
    r, g, b = s[..., 0], s[..., 1], s[..., 2]
    rg = r * g
    first = np.stack([r, g, b, rg, r * b, g * b, rg * b], axis=-1)
    terms = [np.ones_like(s[..., :1]), first]
    power = first
    for _ in range(order - 1):
        power = power * first
        terms.append(power)
    return np.concatenate(terms, axis=-1)


def _mmr_order(coeffs: np.ndarray) -> int:
    n = coeffs.shape[0]
    if coeffs.ndim != 2 or coeffs.shape[1] != 3 or (n - 1) % 7 or not 1 <= (n - 1) // 7 <= 3:
        raise ValueError(
            "MMR coefficients must have shape (1 + 7 * order, 3) with order 1-3, "
            f"got {coeffs.shape}"
        )
    return (n - 1) // 7


def fit_mmr(
    sdr,
    hdr_nits,
    order: int = 3,
    *,
    ridge: float = 1e-7,
    max_samples: int = 1 << 18,
    seed: int = 0,
) -> np.ndarray:
    """Least-squares MMR predictor from SDR R'G'B' to PQ-encoded BT.2020 R'G'B'.

    Solves (X^T X + lambda D) beta = X^T Y with X = :func:`mmr_features` of the SDR code
    values, Y = ST 2084 inverse EOTF of the HDR master (code values in [0, 1]), D the
    identity without the intercept, lambda = ``ridge`` * trace(X^T X) / n_terms (a relative
    ridge that keeps the 22-term cubic stable on pictures with few distinct colours).
    At most ``max_samples`` pixels are used, drawn uniformly with a fixed seed.

    Parameters
    ----------
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    hdr_nits : array_like, same shape
        Linear BT.2020 RGB of the master, cd/m2.
    order : int
        MMR order, 1-3 (Dolby Vision uses up to 3).
    ridge : float
        Relative ridge strength (0 for plain least squares).
    max_samples : int
        Pixel subsample size.
    seed : int
        Seed of the subsample.

    Returns
    -------
    numpy.ndarray, shape (1 + 7 * order, 3), float64
        Coefficients; column c predicts PQ channel c (R, G, B).
    """
    s = _sdr_in(sdr)
    h = _hdr_in(hdr_nits, s.shape)
    s2 = s.reshape(-1, 3).astype(np.float64)
    h2 = h.reshape(-1, 3)
    n = s2.shape[0]
    if n == 0:
        raise ValueError("cannot fit MMR coefficients to an empty picture")
    if n > max_samples:
        idx = np.random.default_rng(seed).choice(n, size=max_samples, replace=False)
        s2, h2 = s2[idx], h2[idx]
    x = mmr_features(s2, order)
    y = eotf_inverse_st2084(h2)
    xtx = x.T @ x
    lam = ridge * np.trace(xtx) / xtx.shape[0]
    reg = np.eye(xtx.shape[0]) * lam
    reg[0, 0] = 0.0
    try:
        return np.linalg.solve(xtx + reg, x.T @ y)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(xtx + reg, x.T @ y, rcond=None)[0]


def apply_mmr(coeffs, sdr, *, chunk: int = 1 << 16) -> np.ndarray:
    """Predict the HDR picture from SDR with MMR coefficients from :func:`fit_mmr`.

    Parameters
    ----------
    coeffs : array_like, shape (1 + 7 * order, 3)
        MMR coefficients (PQ output).
    sdr : array_like, shape (..., 3)
        BT.709 R'G'B' code values in [0, 1].
    chunk : int
        Pixels per block (bounds memory for 4K pictures).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Linear BT.2020 RGB in cd/m2: ST 2084 EOTF of the prediction clipped to [0, 1].
        float32 for float32 input, else float64.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    order = _mmr_order(c)
    s = _sdr_in(sdr)
    flat = s.reshape(-1, 3)
    out = np.empty(flat.shape, dtype=s.dtype)
    for start in range(0, flat.shape[0], chunk):
        block = flat[start : start + chunk]
        # (C^T X^T)^T: OpenBLAS is far faster with the long axis last than with X @ C.
        pq = np.clip((c.T @ mmr_features(block, order).T).T, 0.0, 1.0)
        out[start : start + chunk] = eotf_st2084(pq.astype(s.dtype, copy=False))
    return out.reshape(s.shape)


def mmr_nbytes(coeffs) -> int:
    """Bytes the coefficients take as float32 (4 per coefficient; 264 for order 3)."""
    return int(np.asarray(coeffs).size) * 4


# --- gain map (ISO 21496-1 / Ultra HDR style) ------------------------------------------------

GAINMAP_OFFSET_NITS = SDR_WHITE_NITS_BT2408 / 64.0
"""Default SDR and HDR offsets, cd/m2: 1/64 of SDR white (ISO 21496-1 / Adobe default)."""


def _resize(plane: np.ndarray, width: int, height: int, resample) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), resample=resample), dtype=np.float32)


def encode_gainmap(
    sdr,
    hdr_nits,
    scale: int = 4,
    quality: int = 90,
    *,
    channels: int = 1,
    offset_sdr_nits: float = GAINMAP_OFFSET_NITS,
    offset_hdr_nits: float = GAINMAP_OFFSET_NITS,
) -> tuple[bytes, dict]:
    """Gain map from an SDR picture to its HDR master, JPEG coded (ISO 21496-1 style).

    The SDR is placed as :func:`sdr_placed_bt2408` (BT.2020, white 203 cd/m2). The gain is
    G = log2((Y_hdr + k_hdr) / (Y_sdr + k_sdr)) on BT.2020 luminance (``channels=1``) or
    on each BT.2020 channel (``channels=3``), with offsets k in cd/m2. G is box-filtered
    down by ``scale``, normalised by its min and max (recorded in ``params``), quantised to
    8 bits (map gamma 1) and coded with Pillow's JPEG (4:4:4 for three channels).

    Parameters
    ----------
    sdr : array_like, shape (H, W, 3)
        BT.709 R'G'B' code values in [0, 1].
    hdr_nits : array_like, shape (H, W, 3)
        Linear BT.2020 master, cd/m2.
    scale : int
        Down-sampling factor of the map, 1-8 (2 or 4 usual).
    quality : int
        JPEG quality, 1-100.
    channels : int
        1 (luminance gain, applied to all channels) or 3 (a gain per channel).
    offset_sdr_nits, offset_hdr_nits : float
        k_sdr and k_hdr, cd/m2 (> 0).

    Returns
    -------
    (bytes, dict)
        The JPEG and the metadata (``gain_min_log2``, ``gain_max_log2``, ``gamma``,
        ``offset_sdr_nits``, ``offset_hdr_nits``, ``sdr_white_nits``, ``channels``,
        ``scale``), all JSON-serialisable.
    """
    if channels not in (1, 3):
        raise ValueError(f"gain map channels must be 1 or 3, got {channels!r}")
    if not 1 <= int(scale) <= 8:
        raise ValueError(f"gain map scale must be an integer 1-8, got {scale!r}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality!r}")
    if not (offset_sdr_nits > 0 and offset_hdr_nits > 0):
        raise ValueError("gain map offsets must be > 0 cd/m2")
    s = _sdr_in(sdr, min_ndim=3)
    if s.ndim != 3:
        raise ValueError(f"gain maps take one picture (H, W, 3), got shape {s.shape}")
    h = _hdr_in(hdr_nits, s.shape)
    height, width = s.shape[:2]
    sdr_nits = sdr_placed_bt2408(s).astype(np.float64)
    if channels == 1:
        num = luminance(h, "bt2020")[..., None]
        den = luminance(sdr_nits, "bt2020")[..., None]
    else:
        num, den = h, sdr_nits
    gain = np.log2(
        (np.maximum(num, 0.0) + offset_hdr_nits) / (np.maximum(den, 0.0) + offset_sdr_nits)
    )
    small_w, small_h = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
    small = np.stack(
        [_resize(gain[..., c], small_w, small_h, Image.Resampling.BOX) for c in range(channels)],
        axis=-1,
    )
    g_min, g_max = float(small.min()), float(small.max())
    if g_max - g_min < 1e-6:
        g_max = g_min + 1e-6
    q = np.round((small - g_min) / (g_max - g_min) * 255.0).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if channels == 1:
        Image.fromarray(q[..., 0], mode="L").save(buf, format="JPEG", quality=int(quality))
    else:
        Image.fromarray(q, mode="RGB").save(buf, format="JPEG", quality=int(quality), subsampling=0)
    params = {
        "gain_min_log2": g_min,
        "gain_max_log2": g_max,
        "gamma": 1.0,
        "offset_sdr_nits": float(offset_sdr_nits),
        "offset_hdr_nits": float(offset_hdr_nits),
        "sdr_white_nits": float(SDR_WHITE_NITS_BT2408),
        "channels": int(channels),
        "scale": int(scale),
    }
    return buf.getvalue(), params


def decode_gainmap(sdr, jpeg_bytes: bytes, params: dict) -> np.ndarray:
    """HDR picture from SDR and a gain map made by :func:`encode_gainmap`.

    The JPEG is decoded, de-quantised to log2 gain, bilinearly up-sampled to the SDR size
    (pixel-centre aligned) and applied to the placed SDR (BT.2020 cd/m2):
    HDR = (SDR + k_sdr) * 2^G - k_hdr, clipped to [0, 10000].

    Parameters
    ----------
    sdr : array_like, shape (H, W, 3)
        BT.709 R'G'B' code values in [0, 1], the picture the map was made for.
    jpeg_bytes : bytes
        The coded map.
    params : dict
        Metadata returned with it.

    Returns
    -------
    numpy.ndarray, shape (H, W, 3)
        Linear BT.2020 RGB in cd/m2, float32.
    """
    s = _sdr_in(sdr, min_ndim=3)
    if s.ndim != 3:
        raise ValueError(f"gain maps take one picture (H, W, 3), got shape {s.shape}")
    height, width = s.shape[:2]
    img = Image.open(io.BytesIO(jpeg_bytes))
    q = np.asarray(img, dtype=np.float32)
    if q.ndim == 2:
        q = q[..., None]
    channels = int(params["channels"])
    if q.shape[-1] != channels:
        raise ValueError(f"gain map JPEG has {q.shape[-1]} channel(s), metadata says {channels}")
    gamma = float(params.get("gamma", 1.0))
    g_min, g_max = float(params["gain_min_log2"]), float(params["gain_max_log2"])
    norm = np.power(q / 255.0, 1.0 / gamma) if gamma != 1.0 else q / 255.0
    small = g_min + norm * (g_max - g_min)
    gain = np.stack(
        [_resize(small[..., c], width, height, Image.Resampling.BILINEAR) for c in range(channels)],
        axis=-1,
    )
    white = float(params.get("sdr_white_nits", SDR_WHITE_NITS_BT2408))
    sdr_nits = sdr_placed_bt2408(s, white_nits=white).astype(np.float32)
    k_sdr, k_hdr = float(params["offset_sdr_nits"]), float(params["offset_hdr_nits"])
    out = (sdr_nits + k_sdr) * np.exp2(gain) - k_hdr
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, PQ_PEAK_NITS).astype(np.float32)


def gainmap_nbytes(jpeg_bytes: bytes, params: dict) -> int:
    """Side information in bytes: the JPEG plus the metadata as compact JSON (UTF-8)."""
    meta = json.dumps(params, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return len(jpeg_bytes) + len(meta)


def best_gainmap(sdr, hdr_nits, max_bytes: int, score, *, scales=(1, 2, 4, 8), channels=(1, 3),
                 qualities=(30, 95)) -> tuple[bytes, dict, float] | None:
    """The best JPEG gain map (:func:`encode_gainmap`) of at most ``max_bytes`` (image and
    parameters, :func:`gainmap_nbytes`): for each scale and channel count the highest JPEG
    quality in ``qualities`` that fits (bisection: sizes grow with quality), decoded and scored
    with ``score(hdr_nits, decoded_nits)`` (higher is better). Returns ``(bytes, params, score)``
    of the best, or None when nothing fits. The competitor at its strongest within a budget,
    not one setting."""
    best = None
    for scale in scales:
        for ch in channels:
            def code(q):
                data, params = encode_gainmap(sdr, hdr_nits, scale=scale, quality=q, channels=ch)
                return data, params, gainmap_nbytes(data, params)

            lo, hi = qualities
            hit = code(lo)
            if hit[2] > max_bytes:
                continue
            top = code(hi)
            if top[2] <= max_bytes:
                hit = top
            else:
                while hi - lo > 1:  # invariant: lo fits, hi does not
                    mid = (lo + hi) // 2
                    trial = code(mid)
                    lo, hi, hit = (mid, hi, trial) if trial[2] <= max_bytes else (lo, mid, hit)
            value = float(score(hdr_nits, decode_gainmap(sdr, hit[0], hit[1])))
            if best is None or value > best[2]:
                best = (hit[0], hit[1], value)
    return best
