"""The residual gain layer of a still: a low-resolution log2 gain over a model's prediction.

``HDR = (max(M, 0) + K) * 2^g - K`` where the SDR's largest channel code is at or above a
threshold (the decoder knows where: it has the SDR, so the mask costs no bytes), ``HDR = M``
elsewhere. ``M`` is the model's prediction (cd/m2), ``K = 203 / 64`` cd/m2 (the gain-map offset
of :data:`itmfilter.quality.baselines.GAINMAP_OFFSET_NITS`, kept here as a number so the model
layer stays below quality), and ``g`` the per-channel log2((HDR + K) / (M + K)) of the master,
box-averaged over masked pixels to 1/scale resolution, the cells without a masked pixel filled
smoothly (push-pull: they cost the image coder little), min/max normalised to 8 bits and coded
as an AVIF still (AV1, 4:4:4, Pillow's libavif). Threshold 0 makes the layer a gain map over the
model everywhere. With base 1 the gain multiplies the SDR placed per ITU-R BT.2408 instead
of a model (``M = 203 * M_709->2020 (clip(R'G'B', 0, 1))^2.4``): an ISO 21496-1 style gain map
carried in the same payload, no model needed. Bytes and decoding: ``sidecar/SPEC.md`` section 11.3.

With the PQ domain flag the layer carries a difference of SMPTE ST 2084 code values instead of
a log2 gain: ``HDR = PQ^-1(PQ(max(M, 0)) + g)``, ``g`` the master's PQ less the base's, box-averaged
the same way. PQ steps are near-uniform in what PU21 (and a viewer) sees, a log2 gain over a
fixed offset is not: over the placed SDR (a gain map in the same payload) the PQ difference
measured +2.8 to +3.7 dB PU21-PSNR at 8-16 KB on the val split's `bridge` and within 0.2 dB on
`st_fagans_interior`; over a grid model the two domains are within 0.2 dB.

AVIF, not JPEG: AV1 decoding is bit-exact by specification, JPEG's IDCT is not.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np
from PIL import Image

from itmfilter.colour.primaries import MATRIX_BT709_TO_BT2020
from itmfilter.colour.transfer import SDR_WHITE_NITS_BT2408, eotf_inverse_st2084, eotf_st2084

RESIDUAL_OFFSET_NITS = 203.0 / 64.0
CODEC_AVIF = 2
AVIF_SPEED = 6
AVIF_ADVANCED: dict[str, str] | None = {"tune": "ssim"}
"""libaom options for the gain image's coder (Pillow's ``advanced``; None: libavif's defaults).
``tune=ssim``, chosen on the val split (``benchmarks/stills_rate.py run --split val``, ``local``
grade, 8 / 16 / 32 KB): at the same budgets the stills scored +1.07 / +0.56 / +0.94 dB
(``bridge``) and +0.76 / +0.64 / +0.44 dB (``st_fagans_interior``) over libaom's default
tuning, whose psycho-visual choices PU21-PSNR does not reward."""
AVIF_QUALITY_RANGE = (10, 100)
HEAD = struct.Struct("<BBBBBee")
BASE_MODEL = 0
BASE_SDR_PLACED = 1
DOMAIN_PQ = 0x10
"""Flag in the base byte: the layer is a PQ difference, not a log2 gain (since still payload 2.1)."""
DOMAINS = ("log2", "pq")


class ResidualFormatError(ValueError):
    """Bytes that are not a valid residual layer; the message says what is wrong."""


def highlight_mask(sdr: np.ndarray, threshold_code: int) -> np.ndarray:
    """``(H, W)`` bool: the SDR's largest channel, as an 8-bit code (round(v * 255)), is at or
    above ``threshold_code`` (0-255; 0: everywhere)."""
    codes = np.round(np.asarray(sdr, np.float32).max(-1) * np.float32(255))
    return codes >= np.float32(threshold_code)


def sdr_placed(sdr: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` BT.709 R'G'B' [0, 1] -> BT.2020 cd/m2 placed per BT.2408 (BT.1886 with
    zero black, a 2.4 power; white at 203 cd/m2), float32 throughout."""
    lin = np.power(np.clip(np.asarray(sdr, np.float32), np.float32(0), np.float32(1)), np.float32(2.4))
    lin = lin * np.float32(SDR_WHITE_NITS_BT2408)
    m = np.asarray(MATRIX_BT709_TO_BT2020, np.float32)
    return (lin[..., 0:1] * m[:, 0] + lin[..., 1:2] * m[:, 1] + lin[..., 2:3] * m[:, 2]).astype(np.float32)


def push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill cells of weight 0 in ``(h, w, c)`` weighted means from coarser weighted means (a still's
    residual layer and a video shot's scene residual, :mod:`itmfilter.model.scene`)."""
    if values.shape[0] <= 1 and values.shape[1] <= 1:
        return values / np.maximum(weights, 1e-12)[..., None]
    h, w = weights.shape
    hh, ww = (h + 1) // 2, (w + 1) // 2
    vp = np.pad(values * weights[..., None], ((0, hh * 2 - h), (0, ww * 2 - w), (0, 0)))
    wp = np.pad(weights, ((0, hh * 2 - h), (0, ww * 2 - w)))
    cv = vp.reshape(hh, 2, ww, 2, -1).sum((1, 3))
    cw = wp.reshape(hh, 2, ww, 2).sum((1, 3))
    coarse = push_pull(cv / np.maximum(cw, 1e-12)[..., None], np.minimum(cw, 1.0))
    up = np.repeat(np.repeat(coarse, 2, 0), 2, 1)[:h, :w]
    a = np.minimum(weights, 1.0)[..., None]
    return a * values + (1 - a) * up


def upsample_bilinear(small: np.ndarray, height: int, width: int, scale: int) -> np.ndarray:
    """``(h, w, c)`` float32 at 1/scale -> ``(height, width, c)``: sample centres aligned
    (``u = (x + 0.5) / scale - 0.5``, clamped to the edge samples), float32 throughout."""
    if scale == 1:
        return small[:height, :width]
    sh, sw = small.shape[:2]

    def axis(n: int, cells: int):
        u = (np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
        u = np.clip(u, np.float32(0), np.float32(cells - 1))
        i0 = np.minimum(np.floor(u).astype(np.int64), max(cells - 2, 0))
        f = (u - i0.astype(np.float32)).astype(np.float32)
        i1 = np.minimum(i0 + 1, cells - 1)
        return i0, i1, f

    y0, y1, fy = axis(height, sh)
    x0, x1, fx = axis(width, sw)
    one = np.float32(1)
    fx3, fy3 = fx[None, :, None], fy[:, None, None]
    top = small[y0][:, x0] * (one - fx3) + small[y0][:, x1] * fx3
    bottom = small[y1][:, x0] * (one - fx3) + small[y1][:, x1] * fx3
    return (top * (one - fy3) + bottom * fy3).astype(np.float32)


class ResidualPlan:
    """The gain image for one (threshold, scale, channels) over one model prediction, ready to
    be coded at any quality (:meth:`code`); ``empty`` when no pixel is masked.

    ``clip_percent``: the 8-bit range spans the gains' ``clip_percent`` to ``100 - clip_percent``
    percentiles (over the masked cells, all channels together) instead of their minimum and
    maximum; the few cells outside are clipped to it. Over a good model most gains lie near 0
    and a handful of outliers would otherwise set a coarse step for all of them (0.02 % gained
    up to 2 dB at 16-32 KB on the val split; larger percentages clip highlights that matter).
    A pair ``(low, high)`` clips the two tails by different percentages.
    An encoder choice only: the range travels in the header either way."""

    def __init__(self, sdr: np.ndarray, model_nits: np.ndarray, hdr_nits: np.ndarray, threshold_code: int,
                 scale: int, channels: int = 3, base: int = BASE_MODEL, clip_percent: float | tuple[float, float] = 0.0,
                 domain: str = "log2") -> None:
        if scale not in (1, 2, 4, 8) or channels not in (1, 3) or not 0 <= threshold_code <= 255:
            raise ValueError(f"bad residual setting t{threshold_code} 1/{scale} {channels}ch")
        if domain not in DOMAINS or (domain == "pq" and channels != 3):
            raise ValueError(f"bad residual domain {domain!r} ({channels} channels; pq needs 3)")
        self.threshold_code, self.scale, self.channels, self.base = threshold_code, scale, channels, base
        self.domain = domain
        if base == BASE_SDR_PLACED:
            model_nits = sdr_placed(sdr)
        mask = highlight_mask(sdr, threshold_code).astype(np.float64)
        self.empty = bool(mask.sum() == 0)
        k = RESIDUAL_OFFSET_NITS
        m, t = np.maximum(model_nits, 0).astype(np.float64), np.maximum(hdr_nits, 0).astype(np.float64)
        if domain == "pq":
            gain = eotf_inverse_st2084(np.minimum(t, 10000.0)) - eotf_inverse_st2084(np.minimum(m, 10000.0))
        elif channels == 1:
            w = np.array([0.2627, 0.6780, 0.0593])
            gain = np.log2((t @ w + k) / (m @ w + k))[..., None]
        else:
            gain = np.log2((t + k) / (m + k))
        h, wd = mask.shape
        sh, sw = math.ceil(h / scale), math.ceil(wd / scale)
        pad = ((0, sh * scale - h), (0, sw * scale - wd))
        num = np.pad(gain * mask[..., None], pad + ((0, 0),)).reshape(sh, scale, sw, scale, -1).sum((1, 3))
        den = np.pad(mask, pad).reshape(sh, scale, sw, scale).sum((1, 3))
        valid = den > 0
        small = np.where(valid[..., None], num / np.maximum(den, 1e-12)[..., None], 0.0)
        if not self.empty:
            small = push_pull(small, valid.astype(np.float64))
        low, high = clip_percent if isinstance(clip_percent, tuple) else (clip_percent, clip_percent)
        if not (0.0 <= low < 50.0 and 0.0 <= high < 50.0):
            raise ValueError(f"clip_percent {clip_percent} is outside [0, 50)")
        self.clip_percent = clip_percent
        cells = small[valid]
        lo = float(np.percentile(cells, low)) if valid.any() else 0.0
        hi = float(np.percentile(cells, 100.0 - high)) if valid.any() else 0.0
        # the range travels as fp16: round it now so encoder and decoder agree
        self.gmin = float(np.float16(lo))
        self.gmax = float(np.float16(max(hi, lo + 1e-3)))
        if self.gmax <= self.gmin:
            self.gmax = float(np.nextafter(np.float16(self.gmin), np.float16(np.inf)))
        self.codes = np.round((small - self.gmin) / (self.gmax - self.gmin) * 255).clip(0, 255).astype(np.uint8)

    def code(self, quality: int) -> bytes:
        """The layer's bytes with the gain image as AVIF at ``quality`` (10-100)."""
        buf = io.BytesIO()
        extra = {"advanced": AVIF_ADVANCED} if AVIF_ADVANCED else {}
        if self.channels == 1:
            Image.fromarray(self.codes[..., 0], "L").save(buf, format="AVIF", quality=quality, speed=AVIF_SPEED,
                                                          subsampling="4:0:0", **extra)
        else:
            Image.fromarray(self.codes, "RGB").save(buf, format="AVIF", quality=quality, speed=AVIF_SPEED,
                                                    subsampling="4:4:4", **extra)
        base = self.base | (DOMAIN_PQ if self.domain == "pq" else 0)
        head = HEAD.pack(CODEC_AVIF, self.scale, self.channels, self.threshold_code, base, self.gmin, self.gmax)
        return head + buf.getvalue()


def describe_residual(data: bytes) -> dict:
    """The layer's header as a dict (for ``itmfilter info``)."""
    codec, scale, channels, thr, flags, gmin, gmax = HEAD.unpack(data[:HEAD.size])
    base, pq = flags & ~DOMAIN_PQ, bool(flags & DOMAIN_PQ)
    return {"codec": "avif" if codec == CODEC_AVIF else codec, "scale": scale, "channels": channels,
            "threshold_code": thr, "base": "sdr-placed" if base == BASE_SDR_PLACED else "model",
            "domain": "pq" if pq else "log2", ("pq_difference" if pq else "gain_log2"): [gmin, gmax],
            "bytes": len(data)}


def residual_base(data: bytes) -> int:
    """The base a layer's gain multiplies (:data:`BASE_MODEL` or :data:`BASE_SDR_PLACED`)."""
    if len(data) < HEAD.size:
        raise ResidualFormatError("residual layer is truncated")
    return HEAD.unpack(data[:HEAD.size])[4] & ~DOMAIN_PQ


def apply_residual(sdr: np.ndarray, model_nits: np.ndarray | None, data: bytes) -> np.ndarray:
    """Apply a residual layer's bytes to ``model_nits`` ``(H, W, 3)`` cd/m2 under ``sdr``
    (None: the layer's base must be the placed SDR);
    returns ``(H, W, 3)`` float32 linear BT.2020 cd/m2 in [0, 10000]. Raises
    :class:`ResidualFormatError` on bytes it cannot use."""
    if len(data) < HEAD.size:
        raise ResidualFormatError("residual layer is truncated")
    codec, scale, channels, thr, flags, gmin, gmax = HEAD.unpack(data[:HEAD.size])
    base, pq = flags & ~DOMAIN_PQ, bool(flags & DOMAIN_PQ)
    if codec != CODEC_AVIF or scale not in (1, 2, 4, 8) or channels not in (1, 3) or base > BASE_SDR_PLACED \
            or (pq and channels != 3):
        raise ResidualFormatError(f"unknown residual layer (codec {codec}, scale {scale}, channels {channels}, "
                                  f"base byte {flags})")
    if base == BASE_SDR_PLACED:
        model_nits = sdr_placed(sdr)
    elif model_nits is None:
        raise ResidualFormatError("a residual layer over a model needs the model")
    h, w = sdr.shape[:2]
    try:
        img = Image.open(io.BytesIO(data[HEAD.size:]))
        q = np.asarray(img.convert("L") if channels == 1 else img.convert("RGB"), np.float32)
    except Exception as exc:  # Pillow raises several kinds on a damaged image
        raise ResidualFormatError(f"residual image does not decode ({exc})") from None
    q = q[..., None] if q.ndim == 2 else q
    if q.shape[:2] != (math.ceil(h / scale), math.ceil(w / scale)):
        raise ResidualFormatError(f"residual image is {q.shape[1]}x{q.shape[0]}, the picture needs 1/{scale} of {w}x{h}")
    g0, g1 = np.float32(gmin), np.float32(gmax)
    step = (g1 - g0) / np.float32(255)
    gain = upsample_bilinear(g0 + q * step, h, w, scale)
    base = np.maximum(np.asarray(model_nits, np.float32), np.float32(0))
    if pq:
        code = eotf_inverse_st2084(np.minimum(base, np.float32(10000))).astype(np.float32) + gain
        out = np.asarray(eotf_st2084(np.clip(code, np.float32(0), np.float32(1))), np.float32)
    else:
        k = np.float32(RESIDUAL_OFFSET_NITS)
        out = np.clip((base + k) * np.exp2(gain) - k, np.float32(0), np.float32(10000))
    return np.where(highlight_mask(sdr, thr)[..., None], out, np.asarray(model_nits, np.float32)).astype(np.float32)
