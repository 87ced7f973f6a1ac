"""The grid model of a still: MMR3 polynomial + a small MLP fed by a learned bilateral grid.

For an SDR pixel ``s = (R', G', B')`` (BT.709 code values [0, 1]) at pixel centre ``(x, y)``
(both in [-1, 1], :func:`itmfilter.model.net.pixel_grid`)::

    PQ(s, x, y) = clip(MMR3(s) + MLP([s, F(x, y, l)]), 0, 1)        (hidden > 0)
    PQ(s, x, y) = clip(MMR3(s) + F(x, y, l)[:3], 0, 1)              (hidden = 0)

``MMR3`` is the third-order polynomial of :func:`itmfilter.model.net.mmr_features` (22 x 3
coefficients), ``l = clip(0.2126 R' + 0.7152 G' + 0.0722 B', 0, 1)`` the SDR's BT.709 luma,
``F`` a grid of ``C`` channels over ``width x height`` cells (``depth`` luma bins: a bilateral
grid; ``depth = 0``: a 2D grid over x, y only) read by trilinear (bilinear) interpolation with
the grid's corners on the picture's outer pixel centres, and ``MLP`` ``layers`` hidden layers
of ``hidden`` ReLU units and a linear output of 3. The output is a PQ BT.2020 R'G'B' code
value (SMPTE ST 2084), as :class:`itmfilter.model.net.ITMNet`'s.

Grid and MLP are fitted jointly per picture (:func:`fit_grid_model`: Adam on random pixel
batches, MSE in PU21 units); the grid is then quantised to ``grid_bits`` per channel and the
MLP fine-tuned on the quantised grid, then quantised to int8 per tensor. :func:`pack_grid_model`
writes the bytes (layout in ``sidecar/SPEC.md`` section 11), :func:`unpack_grid_model` reads
them, and :func:`predict_nits` is the decoder: fixed-order float32 NumPy arithmetic, so a
given machine and library reproduce it bit for bit.
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
import zstandard
from torch import nn

from itmfilter.colour.tensor import eotf_inverse_st2084 as pq_encode_t
from itmfilter.colour.tensor import eotf_st2084 as pq_decode_t
from itmfilter.colour.transfer import eotf_st2084
from itmfilter.model.net import MMR_TERMS, fit_mmr_prior, mmr_features, pixel_grid
from itmfilter.model.scene import SceneFormatError, axis_weights, unpack_scene_residual

GRID_MAGIC = b"G1"
LUMA_BT709 = (0.2126, 0.7152, 0.0722)
ZSTD_LEVEL = 19
# PU21 (Mantiuk & Azimi 2021, banding+glare parameters), as itmfilter.quality.metrics: the
# training loss is measured in the units the encoder is scored in.
_PU21 = (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204, 596.3148142)


class GridFormatError(ValueError):
    """Bytes that are not a valid grid model; the message says what is wrong."""


@dataclass(frozen=True)
class GridConfig:
    """Shape of a grid model. ``width``/``height``: grid cells across/down (>= 2 each);
    ``depth``: luma bins (0: a 2D grid, else >= 2); ``channels``: C; ``hidden``: MLP width
    (0: no MLP, the grid's first 3 channels are added to the polynomial: needs C >= 3);
    ``layers``: hidden layers; ``grid_bits``: quantiser bits of the grid (1-8)."""

    width: int = 16
    height: int = 8
    depth: int = 8
    channels: int = 4
    hidden: int = 16
    layers: int = 2
    grid_bits: int = 7

    def __post_init__(self) -> None:
        if self.width < 2 or self.height < 2 or self.depth == 1 or not 0 <= self.depth <= 255:
            raise ValueError(f"bad grid shape {self.width}x{self.height}x{self.depth}")
        if not 1 <= self.channels <= 255 or not 0 <= self.hidden <= 255 or not 0 <= self.layers <= 255:
            raise ValueError("bad grid model channels/hidden/layers")
        if self.hidden == 0 and self.channels < 3:
            raise ValueError("a grid model without an MLP needs at least 3 channels")
        if self.hidden and self.layers < 1:
            raise ValueError("an MLP needs at least one hidden layer")
        if not 1 <= self.grid_bits <= 8:
            raise ValueError(f"grid_bits {self.grid_bits} outside 1-8")

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """(C, [D,] H, W)."""
        return (self.channels, self.height, self.width) if self.depth == 0 else (
            self.channels, self.depth, self.height, self.width)

    def mlp_shapes(self) -> list[tuple[int, ...]]:
        """Weight and bias shapes in order: (out, in) then (out,) per layer."""
        if not self.hidden:
            return []
        shapes, width = [], 3 + self.channels
        for _ in range(self.layers):
            shapes += [(self.hidden, width), (self.hidden,)]
            width = self.hidden
        return shapes + [(3, width), (3,)]


# Model sizes by name (coded bytes measured on 1024x512 pictures, docs/stills-rate.md):
# P ~0.3 KB is the polynomial with a 2x2 PQ offset plane, the rest bilateral grids.
GRID_SIZES = {
    "P": GridConfig(width=2, height=2, depth=0, channels=3, hidden=0, layers=0, grid_bits=8),
    "XS": GridConfig(width=8, height=4, depth=8, channels=4, hidden=16, layers=2),
    "S": GridConfig(width=16, height=8, depth=8, channels=4, hidden=16, layers=2),
    "M": GridConfig(width=32, height=16, depth=8, channels=4, hidden=32, layers=2),
    "L": GridConfig(width=64, height=32, depth=8, channels=4, hidden=32, layers=2),
}


@dataclass
class GridModel:
    """A decoded grid model: float32 arrays ready for :func:`predict_pq`."""

    config: GridConfig
    mmr: np.ndarray          # (22, 3) float32
    grid: np.ndarray         # grid_shape float32
    mlp: list[np.ndarray]    # config.mlp_shapes(), float32
    scene: object = None     # a video shot's scene residual (:class:`itmfilter.model.scene.SceneResidual`), or None
    zoom: float = 0.0        # a video shot's zoom rate: the picture's scale in the scene grows by this a frame


# --- the decoder (float32 NumPy, fixed order) -----------------------------------------------


def _luma(sdr: np.ndarray) -> np.ndarray:
    r, g, b = sdr[:, 0], sdr[:, 1], sdr[:, 2]
    y = np.float32(LUMA_BT709[0]) * r + np.float32(LUMA_BT709[1]) * g + np.float32(LUMA_BT709[2]) * b
    return np.clip(y, np.float32(0), np.float32(1))


def grid_features(model: GridModel, sdr: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``(N, C)`` float32 features at ``(N, 3)`` SDR and ``(N, 2)`` positions."""
    cfg = model.config
    ix, fx = axis_weights(xy[:, 0], cfg.width)
    iy, fy = axis_weights(xy[:, 1], cfg.height)
    one = np.float32(1)
    if cfg.depth == 0:
        g = model.grid  # (C, H, W)
        top = g[:, iy, ix] * (one - fx) + g[:, iy, ix + 1] * fx
        bottom = g[:, iy + 1, ix] * (one - fx) + g[:, iy + 1, ix + 1] * fx
        return (top * (one - fy) + bottom * fy).T
    iz, fz = axis_weights(_luma(sdr) * np.float32(2) - one, cfg.depth)
    # Per channel, 1-D gathers (``take``) at flat cell indices: the same binary32 operations in
    # the same order as indexing the (C, D, H, W) grid with four index arrays, ~2x faster.
    gx, gy, gz = one - fx, one - fy, one - fz
    w = cfg.width
    base = (iz * cfg.height + iy) * w + ix
    out = np.empty((base.shape[0], cfg.channels), np.result_type(model.grid.dtype, np.float32))
    for c in range(cfg.channels):
        cells = model.grid[c].reshape(-1)  # (D * H * W,)
        acc = None
        for at, wz in ((base, gz), (base + cfg.height * w, fz)):
            top = cells.take(at) * gx + cells.take(at + 1) * fx
            bottom = cells.take(at + w) * gx + cells.take(at + w + 1) * fx
            term = (top * gy + bottom * fy) * wz
            acc = term if acc is None else acc + term
        out[:, c] = acc
    return out


def mmr_terms(sdr: np.ndarray) -> np.ndarray:
    """``(N, 22)`` third-order MMR terms of ``(N, 3)`` R'G'B' in float32 NumPy (the order of
    :func:`itmfilter.model.net.mmr_features`): the decoder's polynomial is ``mmr_terms(s) @ mmr``."""
    r, g, b = sdr[:, 0], sdr[:, 1], sdr[:, 2]
    rg = r * g
    first = np.stack([r, g, b, rg, r * b, g * b, rg * b], axis=-1)
    return np.concatenate([np.ones_like(sdr[:, :1]), first, first * first, first * first * first], axis=-1)


def predict_pq(model: GridModel, sdr: np.ndarray, *, xy: np.ndarray | None = None,
               chunk: int = 1 << 16) -> np.ndarray:
    """SDR ``(H, W, 3)`` BT.709 R'G'B' [0, 1] -> ``(H, W, 3)`` float32 PQ BT.2020 R'G'B' [0, 1].

    ``xy``: the grid coordinates of the pixels, ``(H, W, 2)`` float32 (default: the pixel
    centres of :func:`itmfilter.model.net.pixel_grid`; a video shot passes them shifted by
    the camera's motion and scaled to the shot's extent)."""
    sdr = np.ascontiguousarray(sdr, dtype=np.float32)
    h, w, _ = sdr.shape
    xy = (pixel_grid(h, w).numpy() if xy is None else np.asarray(xy, dtype=np.float32)).reshape(-1, 2)
    return finish_pq(model, pre_scene_pq(model, sdr, xy=xy, chunk=chunk), xy, chunk).reshape(h, w, 3)


def pre_scene_pq(model: GridModel, sdr: np.ndarray, *, xy: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """``(N, 3)`` float32: the polynomial plus the grid's MLP (or its features) at the SDR
    pixels ``sdr`` (any shape ending in 3) and grid coordinates ``xy`` (``(N, 2)``), before the
    scene residual and the clip. The model's scene is not read, so models that differ only in
    their scene residual share this (the encoder scores many residuals over one model)."""
    flat = np.ascontiguousarray(sdr, dtype=np.float32).reshape(-1, 3)
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    out = np.empty_like(flat)
    relu = np.float32(0)
    for start in range(0, flat.shape[0], chunk):  # bounds the MLP's activations at any picture size
        s, p = flat[start:start + chunk], xy[start:start + chunk]
        pq = mmr_terms(s) @ model.mmr
        feats = grid_features(model, s, p)
        if model.config.hidden:
            act = np.concatenate([s, feats], axis=1)
            for k in range(0, len(model.mlp) - 2, 2):
                act = np.maximum(act @ model.mlp[k].T + model.mlp[k + 1], relu)
            pq = pq + (act @ model.mlp[-2].T + model.mlp[-1])
        else:
            pq = pq + feats[:, :3]
        out[start:start + chunk] = pq
    return out


def finish_pq(model: GridModel, pre: np.ndarray, xy: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """The decoder's PQ ``(N, 3)`` from :func:`pre_scene_pq`'s ``pre``: the model's scene
    residual read at ``xy`` ``(N, 2)`` and added before the clip to [0, 1]. Per pixel, so the
    same bits however the pixels are split into chunks (which bound the residual's reads)."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    out = np.empty_like(pre)
    for start in range(0, pre.shape[0], chunk):
        pq = pre[start:start + chunk]
        if model.scene is not None:  # a shot's scene residual, added before the clip
            pq = pq + model.scene.sample(xy[start:start + chunk])
        out[start:start + chunk] = np.clip(pq, np.float32(0), np.float32(1))
    return out


def predict_nits(model: GridModel, sdr: np.ndarray) -> np.ndarray:
    """SDR -> HDR ``(H, W, 3)`` float32 linear BT.2020 cd/m2 (the PQ EOTF of :func:`predict_pq`)."""
    return np.asarray(eotf_st2084(predict_pq(model, sdr)), dtype=np.float32)


@dataclass(frozen=True)
class PlacedGrid:
    """A grid model placed on one video frame (``sidecar/SPEC.md`` section 4.5): the pixel
    centres ``p`` of :func:`itmfilter.model.net.pixel_grid` read the grid at
    ``(p + origin) / half`` per axis (binary64, rounded to binary32 once). ``origin`` is the
    scene position of the frame (its accumulated motion minus the grid's centre), ``half``
    the grid's half-size in picture units (>= 1: the grid covers the whole pan)."""

    model: GridModel
    origin: tuple[float, float]
    half: tuple[float, float]
    age: int = 0  # frames since the shot's KEY: a zoom's scale grows with it

    @property
    def scale(self) -> float:
        """The frame's scale in the scene: ``1 + zoom * age`` (binary64), clamped to
        [:data:`MIN_SCALE`, :data:`MAX_SCALE`]; 1 without a zoom record."""
        return min(max(1.0 + float(self.model.zoom) * self.age, MIN_SCALE), MAX_SCALE)

    def xy(self, height: int, width: int) -> np.ndarray:
        """``(H, W, 2)`` float32 grid coordinates of the frame's pixels: ``(p s + origin) / half``."""
        base = pixel_grid(height, width).numpy().astype(np.float64)
        o, h = np.asarray(self.origin, np.float64), np.asarray(self.half, np.float64)
        return ((base * self.scale + o) / h).astype(np.float32)

    def aged(self) -> "PlacedGrid":
        """The placement one frame later (before that frame's own shift)."""
        return replace(self, age=self.age + 1)

    def predict_pq(self, sdr: np.ndarray) -> np.ndarray:
        """SDR ``(H, W, 3)`` -> PQ ``(H, W, 3)`` float32, as :func:`predict_pq` at this placement."""
        h, w = sdr.shape[:2]
        return predict_pq(self.model, sdr, xy=self.xy(h, w))

    def moved(self, shift: tuple[float, float]) -> "PlacedGrid":
        """The placement of the next frame when the camera moved by ``shift`` (pixel-grid units);
        a subclass keeps its own fields (``dataclasses.replace``)."""
        return replace(self, origin=(float(self.origin[0]) + float(shift[0]), float(self.origin[1]) + float(shift[1])))

    def finite(self) -> bool:
        """True when every coefficient and the placement are finite."""
        arrays = [self.model.mmr, self.model.grid, *self.model.mlp]
        return bool(all(np.isfinite(a).all() for a in arrays) and np.isfinite([*self.origin, *self.half]).all()
                    and min(self.half) > 0)


# --- bytes ------------------------------------------------------------------------------------


def _quantise_grid(grid: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel min/max (fp16-representable) and ``bits``-bit codes."""
    c = grid.shape[0]
    flat = grid.reshape(c, -1)
    lo = flat.min(1).astype(np.float16).astype(np.float32)
    hi = flat.max(1).astype(np.float16).astype(np.float32)
    hi = np.where(hi > lo, hi, lo + np.float32(1e-3)).astype(np.float16).astype(np.float32)
    levels = (1 << bits) - 1
    shape = (c,) + (1,) * (grid.ndim - 1)
    q = np.round((grid - lo.reshape(shape)) / (hi - lo).reshape(shape) * levels).clip(0, levels).astype(np.uint8)
    return q, lo, hi


def _dequantise_grid(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    shape = (q.shape[0],) + (1,) * (q.ndim - 1)
    step = (hi - lo).reshape(shape) / np.float32((1 << bits) - 1)
    return (lo.reshape(shape) + q.astype(np.float32) * step).astype(np.float32)


DELTA_ROWS_FLAG = 0x01
"""Grid model flag bit 0: each row of grid codes stored as its first code, then differences mod 256."""
COMPACT_FLAG = 0x02
"""Grid model flag bit 1 (track format 1.11), the compact layout: the polynomial's 66
coefficients and the MLP tensors' scales as binary16 (132 + 2T bytes, not 264 + 4T), and the
grid codes and the MLP's int8 tensors each in a zstd frame of its own, so each gets its own
entropy tables. The fit rounds the polynomial before it fits the grid and the MLP over it, so
they absorb the rounding (at most 0.0017 PQ on a fitted shot's polynomial over the whole SDR
cube). On the 1080p benchmark clip's M and M-48x24 models the two frames cost 220-381 bytes less
than one (``benchmarks/grid_entropy.py``, ``docs/grid-entropy.md``), so 364-525 bytes less a KEY
of 7-19 KB in all."""
KNOWN_FLAGS = DELTA_ROWS_FLAG | COMPACT_FLAG


def pack_grid_model(config: GridConfig, mmr: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    mlp: list[tuple[float, np.ndarray]], compact: bool = False) -> bytes:
    """The model's bytes (``sidecar/SPEC.md`` section 11.2) from quantised parts: grid codes
    ``q`` (uint8, grid_shape) with per-channel ``lo``/``hi``, MLP tensors as (scale, int8).
    ``compact``: the layout of :data:`COMPACT_FLAG` (the caller has rounded the polynomial and
    the scales to binary16, or accepts the rounding)."""
    planes = q.reshape(-1, q.shape[-1]).astype(np.int16)
    planes = np.concatenate([planes[:, :1], np.diff(planes, axis=1) % 256], 1).astype(np.uint8)
    tensors = b"".join(m.astype(np.int8).tobytes() for _, m in mlp)
    zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    flags = DELTA_ROWS_FLAG | (COMPACT_FLAG if compact else 0)
    head = GRID_MAGIC + struct.pack("<HHBBBBBB", config.width, config.height, config.depth, config.channels,
                                    config.hidden, config.layers, config.grid_bits, flags)
    body = np.asarray(mmr, dtype="<f2" if compact else "<f4").tobytes()
    body += b"".join(struct.pack("<ee", float(a), float(b)) for a, b in zip(lo, hi))
    body += b"".join(struct.pack("<e" if compact else "<f", float(s)) for s, _ in mlp)
    if not compact:
        z = zstd.compress(planes.tobytes() + tensors)
        return head + body + struct.pack("<I", len(z)) + z
    z_grid, z_mlp = zstd.compress(planes.tobytes()), zstd.compress(tensors) if tensors else b""
    return head + body + struct.pack("<I", len(z_grid)) + z_grid + struct.pack("<I", len(z_mlp)) + z_mlp


def _field_bytes(cfg: GridConfig, flags: int) -> int:
    """Bytes of the fixed fields after the 12-byte head: the polynomial, lo/hi, the scales."""
    width = 2 if flags & COMPACT_FLAG else 4
    return width * MMR_TERMS * 3 + 4 * cfg.channels + width * len(cfg.mlp_shapes())


def fixed_bytes(cfg: GridConfig, compact: bool = False) -> int:
    """Bytes of a packed model of ``cfg`` besides its zstd frames' contents: the head, the fixed
    fields and the frames' length fields (one; two in the compact layout)."""
    return 12 + _field_bytes(cfg, COMPACT_FLAG if compact else 0) + (8 if compact else 4)


def _read_head(data: bytes) -> tuple[GridConfig, int]:
    """The config and flags byte of the grid model that opens ``data`` (its 12 fixed bytes)."""
    if len(data) < 12 or data[:2] != GRID_MAGIC:
        raise GridFormatError("not a grid model (bad magic)")
    width, height, depth, channels, hidden, layers, bits, flags = struct.unpack("<HHBBBBBB", data[2:12])
    if flags & ~KNOWN_FLAGS:
        raise GridFormatError(f"grid model flags 0x{flags:02x} hold bits this reader does not know "
                              f"(it knows 0x{KNOWN_FLAGS:02x}): a newer format; upgrade itmfilter")
    try:
        return GridConfig(width, height, depth, channels, hidden, layers, bits), flags
    except ValueError as exc:
        raise GridFormatError(str(exc)) from None


def _frames(data: bytes, cfg: GridConfig, flags: int) -> tuple[list[tuple[int, int]], int]:
    """The zstd frames of the grid model opening ``data`` as ``(start, length)`` (one; two in
    the compact layout: the grid's, then the MLP's, of length 0 without an MLP) and the model's
    end. Raises :class:`GridFormatError` when ``data`` is too short to hold them."""
    pos = 12 + _field_bytes(cfg, flags)
    frames = []
    for _ in range(2 if flags & COMPACT_FLAG else 1):
        if len(data) < pos + 4:
            raise GridFormatError("grid model is truncated")
        (zlen,) = struct.unpack("<I", data[pos:pos + 4])
        if len(data) < pos + 4 + zlen:
            raise GridFormatError("grid model is truncated")
        frames.append((pos + 4, zlen))
        pos += 4 + zlen
    return frames, pos


def grid_model_length(data: bytes) -> int:
    """Bytes of the grid model (:func:`pack_grid_model`) that opens ``data``: its fixed fields,
    the config's scale count, and the zstd frames their length fields give. Raises
    :class:`GridFormatError` when ``data`` is too short to say or to hold it."""
    cfg, flags = _read_head(data)
    return _frames(data, cfg, flags)[1]


def _inflate(data: bytes, start: int, length: int, size: int, what: str) -> bytes:
    """The zstd frame at ``data[start:start + length]``, which must hold exactly ``size`` bytes."""
    if not length and not size:  # the compact layout's MLP frame of a model without an MLP
        return b""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data[start:start + length], max_output_size=1 << 26)
    except zstandard.ZstdError as exc:
        raise GridFormatError(f"grid model {what} does not decompress ({exc})") from None
    if len(raw) != size:
        raise GridFormatError(f"grid model {what} holds {len(raw)} bytes, the config needs {size}")
    return raw


def unpack_grid_model(data: bytes) -> GridModel:
    """Parse :func:`pack_grid_model`'s bytes; raises :class:`GridFormatError`."""
    cfg, flags = _read_head(data)
    channels = cfg.channels
    shapes = cfg.mlp_shapes()
    frames, end = _frames(data, cfg, flags)
    if end != len(data):
        raise GridFormatError("grid model length does not match its contents")
    pos = 12
    real = "<f2" if flags & COMPACT_FLAG else "<f4"  # binary16 -> binary32 is exact
    mmr = np.frombuffer(data, real, MMR_TERMS * 3, pos).astype(np.float32).reshape(MMR_TERMS, 3)
    pos += np.dtype(real).itemsize * MMR_TERMS * 3
    lohi = np.frombuffer(data, "<f2", 2 * channels, pos).astype(np.float32).reshape(channels, 2)
    pos += 4 * channels
    scales = np.frombuffer(data, real, len(shapes), pos).astype(np.float32)
    n = int(np.prod(cfg.grid_shape))
    weights = sum(int(np.prod(s)) for s in shapes)
    if flags & COMPACT_FLAG:
        raw = _inflate(data, *frames[0], n, "grid") + _inflate(data, *frames[1], weights, "MLP")
    else:
        raw = _inflate(data, *frames[0], n + weights, "payload")
    planes = np.frombuffer(raw, np.uint8, n).reshape(-1, cfg.width)
    if flags & DELTA_ROWS_FLAG:
        planes = (np.cumsum(planes.astype(np.int64), axis=1) % 256).astype(np.uint8)
    grid = _dequantise_grid(planes.reshape(cfg.grid_shape), lohi[:, 0], lohi[:, 1], cfg.grid_bits)
    mlp, off = [], n
    for shape, scale in zip(shapes, scales):
        k = int(np.prod(shape))
        mlp.append((np.frombuffer(raw, np.int8, k, off).astype(np.float32) * scale).reshape(shape))
        off += k
    return GridModel(cfg, np.ascontiguousarray(mmr), grid, mlp)


# --- refinement: a finer grid sent after the model (video, sidecar/SPEC.md section 4) -----------

REFINE_KIND_2X = 1
"""Refinement kind 1: the grid at twice the spatial resolution (``2W - 1`` x ``2H - 1`` cells,
the same luma bins and channels), as the coarse grid upsampled plus a coded residual; the
polynomial and the MLP are unchanged."""
MIN_SCALE, MAX_SCALE = 0.125, 8.0
"""A zoomed frame's scale in the scene is clamped to this range."""
REFINE_KIND_ZOOM = 3
"""Refinement kind 3: the shot's zoom rate (binary32, ``|z| <= MAX_ZOOM``): frame ``t`` frames
after the KEY reads the grid (and the scene residual) at ``(p (1 + z t) + origin) / half``, so a
zoom about the picture's centre keeps each pixel on its place in the scene. Sent first, in the KEY."""
MAX_ZOOM = 1.0 / 64
REFINE_KIND_SCENE = 2
"""Refinement kind 2: a scene residual (:mod:`itmfilter.model.scene`), a PQ correction image
over the grid square added before the model's clip; it replaces any earlier one, and a later
kind-1 refinement keeps it."""
REFINE_KIND_SCENE_WINDOW = 4
"""Refinement kind 4 (format 1.9): a scene residual over a window of the grid square
(:data:`itmfilter.model.scene.WINDOW_KIND`): a piece of a long shot's residual, covering
what the frames after it see; it replaces any earlier scene residual, as kind 2 does."""
_REFINE_MAX_SIDE = 65535  # the model's u16 cell counts
_REFINE_MAX_CELLS = 1 << 24  # a refined grid's values: a decoder never holds more


def refined_config(config: GridConfig) -> GridConfig:
    """The config after a kind-1 refinement: ``2W - 1`` x ``2H - 1`` cells, all else as is."""
    return replace(config, width=2 * config.width - 1, height=2 * config.height - 1)


def upsample_grid(grid: np.ndarray) -> np.ndarray:
    """``(C, [D,] H, W)`` float32 -> ``(C, [D,] 2H - 1, 2W - 1)``: the old cells on the even
    indices, each new cell the mean of its two neighbours, along x (the last axis) first, then
    y: ``f32(f32(a + b) * 0.5)``. A trilinear read of the result equals the read of the input
    (up to that rounding): the new cells lie on the straight lines between the old ones."""
    g = np.asarray(grid, dtype=np.float32)
    half = np.float32(0.5)
    for axis in (-1, -2):
        g = np.moveaxis(g, axis, -1)
        out = np.empty(g.shape[:-1] + (2 * g.shape[-1] - 1,), np.float32)
        out[..., 0::2] = g
        out[..., 1::2] = (g[..., :-1] + g[..., 1:]) * half
        g = np.moveaxis(out, -1, axis)
    return np.ascontiguousarray(g)


def pack_grid_refinement(steps: np.ndarray, codes: np.ndarray) -> bytes:
    """A kind-1 refinement's bytes: the kind, one binary16 step per channel, then one zstd frame
    of the int8 residual codes (``refined_config``'s grid shape, channel-major)."""
    steps = np.asarray(steps, dtype="<f2")
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(np.asarray(codes, np.int8).tobytes())
    return bytes([REFINE_KIND_2X]) + steps.tobytes() + z


def apply_grid_refinement(model: GridModel, data: bytes) -> GridModel:
    """The model after the refinement ``data`` (:func:`pack_grid_refinement`): grid =
    ``upsample_grid(grid) + f32(code) * step_c`` (binary32, multiply then add); raises
    :class:`GridFormatError` on a malformed refinement."""
    cfg = model.config
    if len(data) >= 1 and data[0] == REFINE_KIND_ZOOM:
        if len(data) != 5:
            raise GridFormatError(f"zoom record of {len(data)} bytes (5 expected)")
        (zoom,) = struct.unpack_from("<f", data, 1)
        if not (math.isfinite(zoom) and abs(zoom) <= MAX_ZOOM):
            raise GridFormatError(f"zoom rate {zoom} is not finite or exceeds {MAX_ZOOM}")
        return replace(model, zoom=zoom)
    if len(data) >= 1 and data[0] in (REFINE_KIND_SCENE, REFINE_KIND_SCENE_WINDOW):
        try:
            return replace(model, scene=unpack_scene_residual(data))
        except SceneFormatError as exc:
            raise GridFormatError(str(exc)) from None
    if len(data) < 1 or data[0] != REFINE_KIND_2X:
        raise GridFormatError(f"unknown grid refinement kind {data[0] if data else None}")
    if 2 * max(cfg.width, cfg.height) - 1 > _REFINE_MAX_SIDE:
        raise GridFormatError("grid refinement would exceed 65535 cells a side")
    c = cfg.channels
    if len(data) < 1 + 2 * c:
        raise GridFormatError("grid refinement is truncated")
    steps = np.frombuffer(data, "<f2", c, 1).astype(np.float32)
    if not np.isfinite(steps).all() or (steps < 0).any():
        raise GridFormatError("grid refinement has a non-finite or negative step")
    fine = refined_config(cfg)
    n = int(np.prod(fine.grid_shape))
    if n > _REFINE_MAX_CELLS:
        raise GridFormatError(f"grid refinement would hold {n} values, more than {_REFINE_MAX_CELLS}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data[1 + 2 * c:], max_output_size=max(n, 1))
    except zstandard.ZstdError as exc:
        raise GridFormatError(f"grid refinement does not decompress ({exc})") from None
    if len(raw) != n:
        raise GridFormatError(f"grid refinement holds {len(raw)} codes, the grid needs {n}")
    codes = np.frombuffer(raw, np.int8).astype(np.float32).reshape(fine.grid_shape)
    shape = (c,) + (1,) * (codes.ndim - 1)
    grid = (upsample_grid(model.grid) + codes * steps.reshape(shape)).astype(np.float32)
    return GridModel(fine, model.mmr, grid, model.mlp, model.scene, model.zoom)


def pack_zoom(zoom: float) -> bytes:
    """A kind-3 record's bytes: the kind, then the zoom rate as binary32."""
    return bytes([REFINE_KIND_ZOOM]) + struct.pack("<f", float(zoom))


def quantise_refinement(residual: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps (binary16-representable, per channel ``step`` x the channel's residual RMS) and
    int8 codes of a residual ``(C, ...)`` float32 grid."""
    c = residual.shape[0]
    rms = np.sqrt(np.mean(np.square(residual.reshape(c, -1).astype(np.float64)), axis=1))
    steps = np.maximum(step * rms, 1e-4).astype(np.float16).astype(np.float32)
    shape = (c,) + (1,) * (residual.ndim - 1)
    codes = np.round(residual / steps.reshape(shape)).clip(-127, 127).astype(np.int8)
    return steps, codes


# --- the fit (torch) --------------------------------------------------------------------------


def _pu21_t(nits: torch.Tensor) -> torch.Tensor:
    p = _PU21
    y = nits.clamp(0.005, 10000.0).pow(p[3])
    return p[6] * (((p[0] + p[1] * y) / (1 + p[2] * y)).pow(p[4]) - p[5])


class _GridNet(nn.Module):
    """The trainable twin of :func:`predict_pq` (torch grid_sample, align_corners=True)."""

    def __init__(self, cfg: GridConfig, mmr: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = nn.Parameter(torch.zeros((1,) + cfg.grid_shape))
        layers: list[nn.Module] = []
        width = 3 + cfg.channels
        for _ in range(cfg.layers if cfg.hidden else 0):
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU()]
            width = cfg.hidden
        if cfg.hidden:
            last = nn.Linear(width, 3)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            layers.append(last)
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("mmr", mmr.float().clone())

    def coords(self, rgb: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        if self.cfg.depth == 0:
            return xy
        luma = (rgb @ torch.tensor(LUMA_BT709, device=rgb.device)).clamp(0, 1)
        return torch.cat([xy, (luma * 2 - 1)[:, None]], 1)

    def forward(self, rgb, coords, prior, grid=None):
        g = self.grid if grid is None else grid
        n = coords.shape[0]
        view = (1, 1, n, 2) if self.cfg.depth == 0 else (1, 1, 1, n, 3)
        feats = F.grid_sample(g, coords.view(view), mode="bilinear", align_corners=True)
        feats = feats.reshape(self.cfg.channels, n).t()
        if self.cfg.hidden:
            return prior + self.mlp(torch.cat([rgb, feats], 1))
        return prior + feats[:, :3]


@dataclass(frozen=True)
class GridFitOptions:
    """Adam on ``batch`` random pixels for ``steps``, cosine learning rates (MLP, grid), then
    ``finetune_steps`` of the MLP alone on the quantised grid (at 0.3x the rates).

    ``roughness``: weight of the grid's roughness in the loss, the mean absolute difference
    of neighbouring cells along each axis (a refinement: of its residual over the coarse
    grid). The codes are delta-coded and zstd-compressed, so a grid whose neighbours agree
    costs fewer bytes; the penalty also pulls cells no pixel reaches (half of a bilateral
    grid's, which otherwise stay 0 beside fitted neighbours) to their neighbours' values.
    On the stills' val split (``local``, 1024x512, 1800 steps) 3e-4 cut an M model from
    8.6 / 8.0 KB to 4.7 / 5.6 KB at -0.35 / +0.12 dB, an S from 3.2 / 2.9 KB to 1.8 / 2.1 KB at
    +0.17 / +0.07 dB; 1e-3 and 3e-3 cut more and lost up to 2.5 dB."""

    steps: int = 600
    batch: int = 4096
    lr_mlp: float = 3e-3
    lr_grid: float = 2e-2
    finetune_steps: int = 400
    seed: int = 0
    roughness: float = 3e-4
    clipped_weight: float = 1.0
    """Weight in the loss of the pixels whose SDR is clipped (largest channel code >=
    :data:`CLIPPED_CODE`), the others 1; the mean is not renormalised, so where clipped pixels
    carried most of the error the roughness penalty weighs relatively more. Below 1 for a model
    a residual layer will follow (stills): there the SDR holds nothing of the master, the
    residual must carry it whatever the model does, and the model's capacity goes further on
    the pixels where it is the whole answer (:data:`itmfilter.encode.still_rate.STILL_FIT`)."""
    starts: int = 1
    """Initial MLP weights tried (:func:`_best_start`); 1: the seed's alone."""
    trial_steps: int = 0
    """Steps each start trains before the best goes on (with ``starts`` > 1)."""
    compact: bool = False
    """Pack the model in the compact layout (:data:`COMPACT_FLAG`, track format 1.11): the
    polynomial is rounded to binary16 before the grid and the MLP are fitted over it."""


def _cosine(step: int, steps: int, lr: float, final: float = 0.05) -> float:
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / steps)))


class _Trainer:
    """Adam on ``opts.batch`` random pixels a step under a cosine schedule of ``steps`` steps,
    run in parts (:meth:`run`): the same steps, batches and result as one run of ``steps``."""

    def __init__(self, net: _GridNet, rgb, coords, prior, tgt_pu, opts: GridFitOptions, *, grid_fixed=None,
                 steps: int, lr_scale: float = 1.0) -> None:
        self.net, self.rgb, self.coords, self.prior, self.tgt_pu = net, rgb, coords, prior, tgt_pu
        self.opts, self.grid_fixed, self.steps, self.done = opts, grid_fixed, steps, 0
        self.gen = torch.Generator().manual_seed(opts.seed + (0 if grid_fixed is None else 1))
        self.weight = _pixel_weight(rgb, opts.clipped_weight)
        groups = [{"params": list(net.mlp.parameters()), "base": opts.lr_mlp * lr_scale}]
        if grid_fixed is None:
            groups.append({"params": [net.grid], "base": opts.lr_grid * lr_scale})
        self.groups = [g for g in groups if g["params"]]
        for g in self.groups:
            g["lr"] = g["base"]
        self.opt = torch.optim.Adam(self.groups) if self.groups and steps > 0 else None

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        net, grid_fixed = self.net, self.grid_fixed
        out = net(self.rgb[idx], self.coords[idx], self.prior[idx], grid_fixed)
        return _loss(out, self.tgt_pu[idx], net.grid if grid_fixed is None else None, self.opts.roughness,
                     None if self.weight is None else self.weight[idx])

    def run(self, count: int, progress=None) -> None:
        if self.opt is None:
            return
        n = self.rgb.shape[0]
        for _ in range(min(count, self.steps - self.done)):
            for g in self.opt.param_groups:
                g["lr"] = _cosine(self.done, self.steps, g["base"])
            loss = self.loss(torch.randint(0, n, (self.opts.batch,), generator=self.gen).to(self.rgb.device))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.done += 1
            if progress is not None:
                progress(1)


def _train(net: _GridNet, rgb, coords, prior, tgt_pu, opts: GridFitOptions, *, grid_fixed=None,
           steps: int, lr_scale: float = 1.0, progress=None) -> None:
    _Trainer(net, rgb, coords, prior, tgt_pu, opts, grid_fixed=grid_fixed, steps=steps,
             lr_scale=lr_scale).run(steps, progress)


START_SEED_STRIDE = 104729
"""Start ``k`` of a multi-start fit draws its MLP's initial weights from seed ``seed + k`` times
this (start 0 from ``seed`` itself, as a single fit)."""


def _best_start(config: GridConfig, mmr: torch.Tensor, rgb, xy, tgt_pu,
                options: GridFitOptions) -> tuple[_GridNet, _Trainer]:
    """``options.starts`` networks, each from its own initial MLP weights, trained for the first
    ``options.trial_steps`` of the full schedule on the same batches; the one with the lowest
    loss (roughness included) on a fixed draw of 65,536 pixels goes on. The grid fit lands in
    different optima from different initial weights: on two 2 s shots of the 1080p benchmark
    clip (M, 1,800 steps) six seeds spread over 0.8 dB PU21-PSNR at about equal bytes."""
    n = rgb.shape[0]
    probe = torch.randint(0, n, (1 << 16,), generator=torch.Generator().manual_seed(options.seed + 3)).to(rgb.device)
    # without an MLP (the plane P) nothing is drawn: every start would be the same fit
    starts = options.starts if config.hidden else 1
    best = None
    for k in range(starts):
        torch.manual_seed(options.seed + START_SEED_STRIDE * k)
        net = _GridNet(config, mmr).to(rgb.device)  # drawn on the CPU: the same start on any device
        if k == 0:  # the inputs of every start: they depend on the config and the polynomial alone
            coords, prior = net.coords(rgb, xy), mmr_features(rgb) @ net.mmr
        trainer = _Trainer(net, rgb, coords, prior, tgt_pu, options, steps=options.steps)
        trainer.run(options.trial_steps if starts > 1 else 0)  # the bar counts the fit that goes on
        with torch.no_grad():
            score = float(trainer.loss(probe)) if starts > 1 else 0.0
        if best is None or score < best[0]:
            best = (score, net, trainer)
    return best[1], best[2]


CLIPPED_CODE = 250
"""An SDR pixel whose largest channel, as an 8-bit code, is at or above this is clipped (for
:attr:`GridFitOptions.clipped_weight`)."""
_PQ_FLOOR = 1e-6
"""The loss reads the PQ output clamped to ``[_PQ_FLOOR, 1]``, not ``[0, 1]``: the ST 2084 EOTF's
``x^(1/m2)`` has an infinite slope at 0, and an output at or below 0 (whose PU21 is clamped at
0.005 cd/m2 and passes no gradient) made its gradient 0 x inf = NaN and the whole fit NaN. The
floor is about 2e-15 cd/m2, so the loss's value is unchanged (PU21 reads anything below 0.005 as 0.005)."""


def _pixel_weight(rgb: torch.Tensor, clipped_weight: float) -> torch.Tensor | None:
    """Per-pixel loss weights for :attr:`GridFitOptions.clipped_weight` (None: all 1)."""
    if clipped_weight == 1.0:
        return None
    clipped = (rgb.max(1).values * 255).round() >= CLIPPED_CODE
    weight = torch.ones(rgb.shape[0], device=rgb.device)
    weight[clipped] = float(clipped_weight)
    return weight


def _loss(out: torch.Tensor, target_pu: torch.Tensor, rough: torch.Tensor | None, weight: float,
          pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The fits' loss: MSE in PU21 units of the clipped PQ output (scaled by 1e-4; each
    pixel's squared error times ``pixel_weight`` where given), plus ``weight`` x
    :func:`_roughness` of ``rough`` (the grid being fitted, or a refinement's residual over its
    coarse grid; None: no penalty)."""
    err = (_pu21_t(pq_decode_t(out.clamp(_PQ_FLOOR, 1))) - target_pu).pow(2)
    if pixel_weight is not None:
        err = err * pixel_weight[:, None]
    loss = err.mean() * 1e-4
    if weight and rough is not None:
        loss = loss + weight * _roughness(rough)
    return loss


def _roughness(grid: torch.Tensor) -> torch.Tensor:
    """Sum over the spatial (and luma) axes of ``(1, C, [D,] H, W)`` of the mean absolute
    difference between neighbouring cells."""
    total = grid.new_zeros(())
    for axis in range(2, grid.dim()):
        total = total + torch.diff(grid, dim=axis).abs().mean()
    return total


@dataclass
class GridFit:
    """A fitted grid model: its bytes, the decoded model and the seconds the fit took."""

    data: bytes
    model: GridModel
    seconds: float


def fit_grid_model(sdr: np.ndarray, hdr_nits: np.ndarray, config: GridConfig,
                   options: GridFitOptions = GridFitOptions(), progress=None) -> GridFit:
    """Fit a grid model to one picture pair and code it.

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' [0, 1] as stored (quantised); ``hdr_nits``:
    ``(H, W, 3)`` linear BT.2020 cd/m2. ``progress(n)`` is called per Adam step.
    """
    h, w, _ = sdr.shape
    return fit_grid_model_pixels(np.asarray(sdr).reshape(-1, 3), np.asarray(hdr_nits).reshape(-1, 3),
                                 pixel_grid(h, w).reshape(-1, 2).numpy(), config, options, progress)


def quantise_mlp(mlp: nn.Module, compact: bool) -> list[tuple[float, np.ndarray]]:
    """Each tensor of ``mlp`` (weights and biases in ``state_dict`` order) as the packer codes
    it: one scale, the tensor's largest magnitude over 127, and int8 codes. With ``compact``
    the scale is the binary16 value the decoder reads (at least 2**-24)."""
    out = []
    for t in mlp.state_dict().values():
        a = t.detach().cpu().numpy()
        scale = np.float32(max(float(np.abs(a).max()), 1e-12) / 127.0)
        if compact:
            scale = np.float32(np.float16(max(float(scale), 2.0 ** -24)))
        out.append((float(scale), np.round(a / scale).clip(-127, 127).astype(np.int8)))
    return out


def load_mlp(mlp: nn.Module, tensors) -> None:
    """Set ``mlp``'s linear layers from a decoded model's ``mlp`` list (weight, bias, ...)."""
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    for k, lin in enumerate(linears):
        lin.weight.data.copy_(torch.from_numpy(np.asarray(tensors[2 * k], np.float32)))
        lin.bias.data.copy_(torch.from_numpy(np.asarray(tensors[2 * k + 1], np.float32)))


def fit_grid_model_pixels(sdr: np.ndarray, hdr_nits: np.ndarray, xy: np.ndarray, config: GridConfig,
                          options: GridFitOptions = GridFitOptions(), progress=None, device=None) -> GridFit:
    """Fit a grid model to pixels pooled from one or more pictures and code it.

    ``sdr``: ``(N, 3)`` BT.709 R'G'B' [0, 1]; ``hdr_nits``: ``(N, 3)`` linear BT.2020 cd/m2;
    ``xy``: ``(N, 2)`` grid coordinates in [-1, 1] (a still's pixel centres, or the frames
    of a video shot placed in the shot's common coordinates). ``progress(n)`` is called per
    Adam step. ``device``: where the Adam steps run (None: the CPU); the polynomial, the
    initial weights and the batches are drawn on the CPU whatever it is, so a CUDA fit starts
    from the same place and differs only by the device's arithmetic.
    """
    t0 = time.perf_counter()
    device = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # the MLP's initial weights, whatever ran before
        rgb = torch.from_numpy(np.array(sdr, dtype=np.float32).reshape(-1, 3))
        tgt = torch.from_numpy(np.array(hdr_nits, dtype=np.float32).reshape(-1, 3))
        xy = torch.from_numpy(np.array(xy, dtype=np.float32).reshape(-1, 2))
        gen = torch.Generator().manual_seed(options.seed)
        sample = torch.randperm(rgb.shape[0], generator=gen)[: 1 << 18]
        mmr = fit_mmr_prior(rgb[sample], pq_encode_t(tgt[sample]))
        if options.compact:  # what the decoder will read; the grid and the MLP fit over it
            mmr = mmr.half().float()
        rgb, xy, tgt_pu = rgb.to(device), xy.to(device), _pu21_t(tgt.to(device))
        net, trainer = _best_start(config, mmr, rgb, xy, tgt_pu, options)
        coords, prior = trainer.coords, trainer.prior
        trainer.run(options.steps, progress)
        q, lo, hi = _quantise_grid(net.grid.detach()[0].cpu().numpy(), config.grid_bits)
        grid_q = torch.from_numpy(_dequantise_grid(q, lo, hi, config.grid_bits))[None].to(device)
        if config.hidden:
            _train(net, rgb, coords, prior, tgt_pu, options, grid_fixed=grid_q,
                   steps=options.finetune_steps, lr_scale=0.3, progress=progress)
        mlp = quantise_mlp(net.mlp, options.compact)
    data = pack_grid_model(config, mmr.numpy(), q, lo, hi, mlp, compact=options.compact)
    return GridFit(data, unpack_grid_model(data), time.perf_counter() - t0)


def fit_grid_refinement(model: GridModel, sdr: np.ndarray, hdr_nits: np.ndarray, xy: np.ndarray,
                        options: GridFitOptions = GridFitOptions(), progress=None, device=None) -> np.ndarray:
    """The residual ``(C, [D,] 2H - 1, 2W - 1)`` float32 that, added to ``upsample_grid`` of
    ``model``'s grid, best fits the pixels (``sdr`` ``(N, 3)`` BT.709 R'G'B' [0, 1],
    ``hdr_nits`` ``(N, 3)`` linear BT.2020 cd/m2, ``xy`` ``(N, 2)`` grid coordinates) with the
    decoded polynomial and MLP held fixed: Adam on the fine grid alone for ``options.steps``
    (cosine, ``lr_grid``), on ``device`` (None: the CPU; the batches are drawn on the CPU).
    Pair with :func:`quantise_refinement` and :func:`pack_grid_refinement`."""
    device = torch.device(device or "cpu")
    fine = refined_config(model.config)
    base = upsample_grid(model.grid)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        rgb = torch.from_numpy(np.array(sdr, dtype=np.float32).reshape(-1, 3))
        tgt = torch.from_numpy(np.array(hdr_nits, dtype=np.float32).reshape(-1, 3))
        xy = torch.from_numpy(np.array(xy, dtype=np.float32).reshape(-1, 2))
        net = _GridNet(fine, torch.from_numpy(np.asarray(model.mmr, np.float32)))
        load_mlp(net.mlp, model.mlp)
        for p in net.mlp.parameters():
            p.requires_grad_(False)
        net = net.to(device)
        rgb, xy, tgt = rgb.to(device), xy.to(device), tgt.to(device)
        base_t = torch.from_numpy(base)[None].to(device)
        net.grid.data.copy_(base_t)
        coords = net.coords(rgb, xy)
        prior = mmr_features(rgb) @ net.mmr
        tgt_pu = _pu21_t(tgt)
        gen = torch.Generator().manual_seed(options.seed + 2)
        opt = torch.optim.Adam([net.grid], lr=options.lr_grid)
        for step in range(options.steps):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, options.steps, options.lr_grid)
            idx = torch.randint(0, rgb.shape[0], (options.batch,), generator=gen).to(device)
            out = net(rgb[idx], coords[idx], prior[idx])
            loss = _loss(out, tgt_pu[idx], net.grid - base_t, options.roughness)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(1)
        return (net.grid.detach()[0].cpu().numpy() - base).astype(np.float32)
