"""A scene residual: a low-resolution PQ correction image in a grid shot's scene coordinates.

A grid model (:mod:`itmfilter.model.grid`) is a function of the SDR's colour and a coarse
position, so where the SDR clips (a sky, a lamp) every pixel of one colour gets one answer and
the master's detail there is out of its reach. A gain map carries that detail as an image; a
video gain map pays for it on every frame. In a grid shot the frames of a pan are views of one
scene, placed on the grid's ``[-1, 1]`` square by the camera's accumulated motion, so one
image over that square serves the whole shot: the *scene residual*, refinement record kind 2
(``sidecar/SPEC.md`` section 11.6), sent in the shot's refinement stream.

Decoding: a pixel at grid coordinates ``(x, y)`` (the same as the grid reads, clipped to the
square) reads the image bilinearly with its corners on the square's corners
(:func:`itmfilter.model.grid.axis_weights`), and the model's PQ becomes
``clip(MMR3 + MLP + R(x, y), 0, 1)`` per channel: the correction is added before the model's
clip. The image is ``lo_c + code_c * (hi_c - lo_c) / 255`` per channel (binary16 ``lo, hi``;
binary32 arithmetic), the codes an 8-bit 4:4:4 AV1 still picture carried as its bare OBUs (no
AVIF container: its ~270 bytes are 7 % of a 2 s shot at 16 kbit/s), decoded by dav1d through
PyAV: AV1 decoding is exact by specification. The codes are the picture's R'G'B' by the
BT.601 full-range matrix (ITU-R BT.601, as AVIF's default ``nclx`` matrix 6, the Y'CbCr an
image coder decorrelates best), computed in binary32 by this reader, not rounded: a coder's
own YUV-to-RGB step is not part of the format.

Encoding (:func:`build_scene_residual`): every given frame's PQ difference master - model is
splatted into the image's cells with the bilinear weights the decoder reads them with and
normalised (a weighted mean per cell), the cells no pixel reached filled from coarser means
(push-pull), then a few conjugate-gradient steps move it towards the least-squares image under
the decoder's read (the splatted mean is blurred twice, by the splat and by the read), and the
range is clipped at the 0.01 % tails per channel so that a few outliers do not set a coarse step
for all.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from itmfilter.model.residual import push_pull

SCENE_KIND = 2
"""The refinement record kind of a scene residual (kind 1: the grid at twice the cells)."""
WINDOW_KIND = 4
"""The refinement record kind of a *windowed* scene residual (format 1.9): the window, then a
kind-2 record's body; its image spans the window instead of the grid's whole square."""
_HEAD = struct.Struct("<BHH6e")  # kind, width, height, (lo, hi) per channel
_WINDOW = struct.Struct("<B4f")  # kind 4, then the window's centre x, y and half-size x, y (binary32)
MAX_WINDOW = 4.0
"""A window whose centre or half-size exceeds this (grid units) is damaged; half-sizes must
also exceed :data:`MIN_WINDOW`."""
MIN_WINDOW = 2.0 ** -10
MAX_SIDE = 4096
MAX_CELLS = 1 << 22
"""A scene image of more cells than this is damaged (a decoder never holds more)."""
AVIF_SPEED = 5
"""libaom's speed for the scene image (0 slowest, 10 fastest). Speed 5 codes better images than
6: on the 1080p clip's third shot (``benchmarks/scene_residual.py --shot 2 --config S-6bit
--scales 2,3,4 --qualities 20,30,40 --avif-speed N``) each speed-5 image scores +0.03 to +0.14 dB
PU21-PSNR (mean +0.09) above speed 6's best over the three scales at its bytes (interpolated in
log bytes); 4 adds 0.02-0.04 more, 3 scores below 5. A synthetic 1473x541 image codes in ~0.45 s
at 5, ~0.09 at 6 (4: ~0.65, 3: ~0.96). Through the encoder (the 1080p rate benchmark's 2 s shots,
``docs/video-rate-1080p.md``, the reading on speed 5) it gives +0.03 / +0.07 / +0.08 / +0.11 dB
at the 8 / 16 / 32 / 64 kbit/s caps, once a receiver's stream may start in its ahead bytes (before
that, one image's bytes could tip the zoom shot's stream out of its lane)."""
AVIF_ADVANCED: dict[str, str] | None = {"tune": "ssim"}
"""libaom options for the scene image's coder (Pillow's ``advanced``; None: libavif's defaults).
``tune=ssim``: on the 1080p clip's first shot (``benchmarks/scene_residual.py --shot 0 --scales
4,8``) +0.1 to +0.3 dB at equal bytes over the default tuning, and its lowest quality codes half
as many bytes (1/4 at quality 10: 386 against 921 B); the 1080p rate benchmark's 2 s shots gave
39.14 dB at 13.49 kbit/s (16 kbit/s cap; 38.95 at 13.80 before) and 41.28 at 27.50 (32; 41.29
at 27.78). The stills' residual layer uses the same (:mod:`itmfilter.model.residual`)."""
TAIL_PERCENT = 0.01
KR, KB = 0.299, 0.114
"""BT.601 luma weights of red and blue: the matrix between the codes and the coded Y'CbCr."""
_OBU_SEQUENCE_HEADER = 1


class SceneFormatError(ValueError):
    """Bytes that are not a valid scene residual; the message says what is wrong."""


def axis_weights(coord: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower cell index and weight of the upper one for a coordinate in [-1, 1] over ``cells``
    samples, corners on the ends (``u = (coord + 1) / 2 * (cells - 1)``): how a grid model
    (:mod:`itmfilter.model.grid`, which imports it from here) and a scene residual are read."""
    u = (coord + np.float32(1)) * np.float32(0.5) * np.float32(cells - 1)
    u = np.clip(u, np.float32(0), np.float32(cells - 1))
    i0 = np.minimum(np.floor(u).astype(np.int64), cells - 2)
    return i0, (u - i0.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class SceneResidual:
    """A decoded scene residual: ``values`` ``(H, W, 3)`` float32 PQ differences over the grid
    square, ``H, W >= 2``; or, with ``window`` ``(cx, cy, hx, hy)`` (binary32, kind 4), over
    that rectangle of the square: a grid coordinate ``x`` reads the image at
    ``f32(f32(x - cx) / hx)`` (likewise ``y``), so the image's corners lie on the window's."""

    values: np.ndarray
    window: tuple[float, float, float, float] | None = None

    def local(self, coord: np.ndarray, axis: int) -> np.ndarray:
        """Grid coordinates along ``axis`` (0: x, 1: y) -> the image's own ``[-1, 1]``
        coordinates (the identity without a window)."""
        coord = np.asarray(coord, np.float32)
        if self.window is None:
            return coord
        centre, half = np.float32(self.window[axis]), np.float32(self.window[2 + axis])
        return ((coord - centre) / half).astype(np.float32)

    def weights(self, coord: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`axis_weights` of grid coordinates along ``axis`` over the image's cells."""
        return axis_weights(self.local(coord, axis), self.values.shape[1 - axis])

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` grid coordinates -> ``(N, 3)`` float32 corrections (bilinear, binary32:
        ``(v00 (1 - fx) + v01 fx) (1 - fy) + (v10 (1 - fx) + v11 fx) fy``)."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        x0, fx = self.weights(xy[:, 0], 0)
        y0, fy = self.weights(xy[:, 1], 1)
        return _bilinear(self._planes, y0, fy, x0, fx)

    @cached_property
    def _planes(self) -> np.ndarray:
        """``values`` channel-major and contiguous, ``(C, H, W)``: made once, read by every
        :meth:`sample` (a frame's chunks, a shot's frames)."""
        return np.ascontiguousarray(np.moveaxis(self.values, -1, 0))

    def sample_axes(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The corrections on the grid of pixels with x coordinates ``xs`` ``(B,)`` and y
        coordinates ``ys`` ``(A,)``: ``(A, B, 3)`` float32, the same values as :meth:`sample`
        (rows interpolated along x first, then along y: the same binary32 operations)."""
        x0, fx = self.weights(xs, 0)
        y0, fy = self.weights(ys, 1)
        one = np.float32(1)
        fx3 = fx[None, :, None]
        rows = self.values[:, x0] * (one - fx3) + self.values[:, x0 + 1] * fx3  # (H, B, 3)
        fy3 = fy[:, None, None]
        return (rows[y0] * (one - fy3) + rows[y0 + 1] * fy3).astype(np.float32)

    @property
    def cells(self) -> tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[0])


def _bilinear(planes: np.ndarray, y0, fy, x0, fx) -> np.ndarray:
    """``planes`` ``(C, H, W)`` (contiguous) read bilinearly at cells ``(y0, x0)`` with upper
    weights ``fy``, ``fx``, ``(N, C)``: per channel, 1-D gathers (``take``) at flat cell indices,
    the same binary32 operations in the same order as indexing an ``(H, W, C)`` image with
    ``[y0, x0]``, and faster."""
    one = np.float32(1)
    gx, gy = one - fx, one - fy
    width = planes.shape[2]
    at = y0 * width + x0
    out = np.empty((at.shape[0], planes.shape[0]), np.float32)
    for c in range(planes.shape[0]):
        cells = planes[c].reshape(-1)
        top = cells.take(at) * gx + cells.take(at + 1) * fx
        bottom = cells.take(at + width) * gx + cells.take(at + width + 1) * fx
        out[:, c] = top * gy + bottom * fy
    return out


def scene_cells(width: int, height: int, half: tuple[float, float], scale: int) -> tuple[int, int]:
    """The image size for a shot of ``width x height`` frames whose grid square spans ``half``
    frames a side: one cell per ``scale`` pixels of the scene (at least 2 a side)."""
    return (max(2, int(round(width * float(half[0]) / scale)) + 1),
            max(2, int(round(height * float(half[1]) / scale)) + 1))


def build_scene_residual(diffs: list[np.ndarray], xys: list[np.ndarray], cells: tuple[int, int],
                         solve_steps: int = 0) -> np.ndarray:
    """The scene image (``(H, W, 3)`` float64, before coding) of the PQ differences ``diffs``
    (each ``(N, 3)``: master - model at pixels whose grid coordinates are ``xys``, ``(N, 2)``)
    over ``cells = (W, H)``: bilinear splat, weighted mean, push-pull fill; then, with
    ``solve_steps``, that many conjugate-gradient steps towards the least-squares image under
    the decoder's bilinear read (:func:`_least_squares`)."""
    w, h = cells
    num = np.zeros((h * w, 3))  # A'd: each pixel's difference spread onto its four cells
    den = np.zeros(h * w)
    bands: dict[int, np.ndarray] = {}  # A'A: its nine diagonals, by cell offset
    for diff, xy in zip(diffs, xys):
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        d = np.asarray(diff, np.float64).reshape(-1, 3)
        x0, fx = axis_weights(xy[:, 0], w)
        y0, fy = axis_weights(xy[:, 1], h)
        fx, fy = fx.astype(np.float64), fy.astype(np.float64)
        base = y0 * w + x0
        corners = [(dy * w + dx, wy * wx) for dy, wy in ((0, 1 - fy), (1, fy)) for dx, wx in ((0, 1 - fx), (1, fx))]
        for at, wt in corners:
            idx = base + at
            den += np.bincount(idx, wt, minlength=h * w)
            for c in range(3):
                num[:, c] += np.bincount(idx, wt * d[:, c], minlength=h * w)
            if solve_steps:
                for other, wo in corners:
                    band = bands.setdefault(other - at, np.zeros(h * w))
                    band += np.bincount(idx, wt * wo, minlength=h * w)
    mean = (num / np.maximum(den, 1e-12)[:, None]).reshape(h, w, 3)
    typical = max(float(np.median(den[den > 0])) if (den > 0).any() else 1.0, 1e-12)
    image = push_pull(mean, np.minimum(den / typical, 1.0).reshape(h, w))
    if solve_steps:
        image = _least_squares(image, bands, num, solve_steps, RIDGE * typical)
    return image


RIDGE = 0.02
"""The least-squares image's pull towards the splatted one, per cell, as a share of a typical
cell's bilinear weight: it keeps the cells few pixels reach from ringing."""


def _least_squares(start: np.ndarray, bands: dict[int, np.ndarray], spread: np.ndarray, steps: int,
                   ridge: float) -> np.ndarray:
    """Conjugate gradients on ``(A'A + ridge I) x = A'd + ridge start`` from ``start``, ``A`` the
    bilinear read of every given pixel: the splatted mean blurs twice (splat, then read), the
    solved image is what the read needs. ``A'A`` comes as its nine diagonals (``bands[o][c]``:
    the sum over pixels of the weights they give cells ``c`` and ``c + o``) and ``A'd`` as
    ``spread`` (``(cells, 3)``), both summed over the pixels once, so a step costs the cells,
    not the pixels (binary64)."""
    h, w = start.shape[:2]
    m = h * w
    pad = w + 1
    diagonals = [(o, b[:, None]) for o, b in bands.items()]

    def normal(v):  # (A'A + ridge I) v
        padded = np.zeros((m + 2 * pad, 3))
        padded[pad:pad + m] = v
        out = ridge * v
        for o, b in diagonals:
            out = out + b * padded[pad + o:pad + o + m]
        return out

    x = start.reshape(-1, 3).astype(np.float64)
    r = spread + ridge * x - normal(x)
    p = r.copy()
    rr = (r * r).sum(0)
    for _ in range(steps):
        ap = normal(p)
        alpha = rr / np.maximum((p * ap).sum(0), 1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        new = (r * r).sum(0)
        p = r + (new / np.maximum(rr, 1e-30)) * p
        rr = new
    return x.reshape(h, w, 3)


class ScenePlan:
    """A scene image quantised to 8 bits per channel, ready to be coded at any quality."""

    def __init__(self, image: np.ndarray) -> None:
        image = np.asarray(image, np.float64)
        h, w = image.shape[:2]
        if not (2 <= w <= MAX_SIDE and 2 <= h <= MAX_SIDE and w * h <= MAX_CELLS):
            raise ValueError(f"a scene image of {w}x{h} cells is outside 2-{MAX_SIDE} a side, {MAX_CELLS} in all")
        flat = image.reshape(-1, 3)
        lo = np.percentile(flat, TAIL_PERCENT, axis=0).astype(np.float16).astype(np.float64)
        hi = np.percentile(flat, 100 - TAIL_PERCENT, axis=0).astype(np.float16).astype(np.float64)
        hi = np.where(hi > lo, hi, lo + 1e-3).astype(np.float16).astype(np.float64)
        self.lo, self.hi = lo, hi
        self.codes = np.round((image - lo) / (hi - lo) * 255).clip(0, 255).astype(np.uint8)

    def code(self, quality: int, window: tuple[float, float, float, float] | None = None) -> bytes:
        """The record's bytes (kind 2): the head, then the codes as the OBUs of an 8-bit 4:4:4
        AV1 still at ``quality`` (0-100; Pillow's libavif, the AVIF container stripped). With
        ``window`` ``(cx, cy, hx, hy)`` (grid units), kind 4: the window, then that body."""
        h, w = self.codes.shape[:2]
        pairs = [float(v) for c in range(3) for v in (self.lo[c], self.hi[c])]
        body = _HEAD.pack(SCENE_KIND, w, h, *pairs) + _av1_still(self.codes, quality)
        if window is None:
            return body
        return _WINDOW.pack(WINDOW_KIND, *(float(v) for v in window)) + body[1:]


def _av1_still(codes: np.ndarray, quality: int) -> bytes:
    """The AV1 OBUs of ``codes`` ``(h, w, 3)`` uint8 as libavif codes them (via Pillow): the
    item data of the AVIF file, after checking that it holds one still in BT.601 full range."""
    from PIL import Image

    buf = io.BytesIO()
    extra = {"advanced": AVIF_ADVANCED} if AVIF_ADVANCED else {}
    Image.fromarray(codes, "RGB").save(buf, format="AVIF", quality=int(quality), speed=AVIF_SPEED,
                                       subsampling="4:4:4", **extra)
    data, pos, mdat, colr = buf.getvalue(), 0, None, None
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"mdat":
            mdat = data[pos + 8:pos + size]
        elif kind == b"meta":
            at = data.find(b"colrnclx", pos, pos + size)
            colr = data[at + 8:at + 15] if at >= 0 else None
        pos += size
    # nclx: primaries, transfer, matrix (u16 each), full-range flag: matrix 6 (BT.601), full range
    if mdat is None or colr is None or struct.unpack(">H", colr[4:6])[0] != 6 or not colr[6] & 0x80:
        raise RuntimeError("libavif did not code the scene image as one BT.601 full-range still")
    return mdat


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        if pos >= len(data):
            raise SceneFormatError("scene image's OBUs are truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            return value, pos
    raise SceneFormatError("scene image has a malformed OBU size")


def _still_size(obus: bytes) -> tuple[int, int]:
    """The frame size an AV1 still's sequence header declares (``reduced_still_picture_header``
    required: a still, not a stream), read before anything is decoded, so a hostile record
    cannot make the decoder allocate a picture larger than its head allows."""
    pos = 0
    while pos < len(obus):
        header = obus[pos]
        kind, extension, has_size = (header >> 3) & 0xF, (header >> 2) & 1, (header >> 1) & 1
        pos += 1 + extension
        if not has_size:
            raise SceneFormatError("scene image has an OBU without a size")
        size, pos = _leb128(obus, pos)
        body = obus[pos:pos + size]
        pos += size
        if kind != _OBU_SEQUENCE_HEADER:
            continue
        bits = int.from_bytes(body[:12].ljust(12, b"\0"), "big")
        read = iter(range(95, -1, -1))

        def take(n: int) -> int:
            return sum(((bits >> next(read)) & 1) << (n - 1 - k) for k in range(n))

        take(3)  # seq_profile
        take(1)  # still_picture
        if not take(1):
            raise SceneFormatError("scene image is not an AV1 still (no reduced still-picture header)")
        take(5)  # seq_level_idx
        wbits, hbits = take(4) + 1, take(4) + 1
        return take(wbits) + 1, take(hbits) + 1
    raise SceneFormatError("scene image has no AV1 sequence header")


@lru_cache(maxsize=1)
def _matrix() -> tuple[np.float32, ...]:
    """Y'CbCr (full range, Cb/Cr less 128) -> R'G'B' factors, binary32: R = Y + a Cr,
    B = Y + b Cb, G = Y - c Cb - d Cr (ITU-R BT.601)."""
    kg = 1 - KR - KB
    return tuple(np.float32(v) for v in (2 * (1 - KR), 2 * (1 - KB), 2 * (1 - KB) * KB / kg, 2 * (1 - KR) * KR / kg))


def _decode_still(obus: bytes, width: int, height: int) -> np.ndarray:
    """The codes ``(height, width, 3)`` float32 (unrounded R'G'B', clipped to [0, 255]) of an AV1
    4:4:4 8-bit still; :class:`SceneFormatError` if it is anything else or does not decode."""
    import av

    if _still_size(obus) != (width, height):
        raise SceneFormatError(f"scene image is {'x'.join(map(str, _still_size(obus)))}, its head says {width}x{height}")
    try:
        ctx = av.CodecContext.create("libdav1d", "r")
        frames = ctx.decode(av.Packet(obus)) + ctx.decode(None)
    except (av.FFmpegError, ValueError) as exc:
        raise SceneFormatError(f"scene image does not decode ({exc})") from None
    if len(frames) != 1 or frames[0].format.name != "yuv444p" or (frames[0].width, frames[0].height) != (width, height):
        raise SceneFormatError("scene image does not decode to one 8-bit 4:4:4 picture of its size")
    f = frames[0]
    y, cb, cr = (np.frombuffer(p, np.uint8).reshape(height, -1)[:, :width].astype(np.float32) for p in f.planes)
    a, b, c, d = _matrix()
    half = np.float32(128)
    cb, cr = cb - half, cr - half
    rgb = np.stack([y + a * cr, y - c * cb - d * cr, y + b * cb], -1)
    return np.clip(rgb, np.float32(0), np.float32(255))


def unpack_scene_residual(data: bytes) -> SceneResidual:
    """A kind-2 or kind-4 record's bytes -> :class:`SceneResidual`; :class:`SceneFormatError`
    when they are not one (the window, the head, the range, the image's size and decoding are
    checked)."""
    if len(data) > _WINDOW.size and data[0] == WINDOW_KIND:
        _, *window = _WINDOW.unpack_from(data)
        window = tuple(float(np.float32(v)) for v in window)
        if not (all(np.isfinite(window)) and all(abs(v) <= MAX_WINDOW for v in window)
                and min(window[2:]) >= MIN_WINDOW):
            raise SceneFormatError(f"scene residual window {window} is not finite, exceeds {MAX_WINDOW} "
                                   f"or has a half-size below {MIN_WINDOW}")
        inner = unpack_scene_residual(bytes([SCENE_KIND]) + data[_WINDOW.size:])
        return SceneResidual(inner.values, window)
    if len(data) <= _HEAD.size or data[0] != SCENE_KIND:
        raise SceneFormatError("scene residual is truncated or not kind 2 or 4")
    _, w, h, *pairs = _HEAD.unpack_from(data)
    if not (2 <= w <= MAX_SIDE and 2 <= h <= MAX_SIDE and w * h <= MAX_CELLS):
        raise SceneFormatError(f"scene residual of {w}x{h} cells (2-{MAX_SIDE} a side, {MAX_CELLS} in all)")
    lohi = np.asarray(pairs, np.float32).reshape(3, 2)
    if not np.isfinite(lohi).all() or (lohi[:, 1] < lohi[:, 0]).any():
        raise SceneFormatError("scene residual has a non-finite or inverted range")
    codes = _decode_still(data[_HEAD.size:], w, h)
    step = (lohi[:, 1] - lohi[:, 0]) / np.float32(255)
    return SceneResidual(np.ascontiguousarray((lohi[:, 0] + codes * step).astype(np.float32)))


__all__ = ["MAX_CELLS", "MAX_SIDE", "MAX_WINDOW", "MIN_WINDOW", "SCENE_KIND", "WINDOW_KIND", "SceneFormatError", "ScenePlan", "SceneResidual", "axis_weights",
           "build_scene_residual", "scene_cells", "unpack_scene_residual"]
