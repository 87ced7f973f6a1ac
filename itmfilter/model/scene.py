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
clip. The image is ``lo_c + code * (hi_c - lo_c) / 255`` per channel (binary16 ``lo, hi``;
binary32 arithmetic), the codes an 8-bit 4:4:4 AVIF still (AV1 decoding is bit-exact by
specification, as for a still's residual layer, :mod:`itmfilter.model.residual`).

Encoding (:func:`build_scene_residual`): every given frame's PQ difference master - model is
splatted into the image's cells with the bilinear weights the decoder reads them with and
normalised (a weighted mean per cell), the cells no pixel reached filled from coarser means
(push-pull), and the range clipped at the 0.01 % tails per channel so that a few outliers do
not set a coarse step for all.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

SCENE_KIND = 2
"""The refinement record kind of a scene residual (kind 1: the grid at twice the cells)."""
_HEAD = struct.Struct("<BHH6e")  # kind, width, height, (lo, hi) per channel
MAX_SIDE = 4096
MAX_CELLS = 1 << 22
"""A scene image of more cells than this is damaged (a decoder never holds more)."""
AVIF_SPEED = 6
TAIL_PERCENT = 0.01


class SceneFormatError(ValueError):
    """Bytes that are not a valid scene residual; the message says what is wrong."""


@dataclass(frozen=True)
class SceneResidual:
    """A decoded scene residual: ``values`` ``(H, W, 3)`` float32 PQ differences over the grid
    square, ``H, W >= 2``."""

    values: np.ndarray

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` grid coordinates -> ``(N, 3)`` float32 corrections (bilinear, binary32:
        ``(v00 (1 - fx) + v01 fx) (1 - fy) + (v10 (1 - fx) + v11 fx) fy``)."""
        from itmfilter.model.grid import axis_weights

        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        h, w = self.values.shape[:2]
        x0, fx = axis_weights(xy[:, 0], w)
        y0, fy = axis_weights(xy[:, 1], h)
        return _bilinear(self.values, y0, fy, x0, fx)

    def sample_axes(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The corrections on the grid of pixels with x coordinates ``xs`` ``(B,)`` and y
        coordinates ``ys`` ``(A,)``: ``(A, B, 3)`` float32, the same values as :meth:`sample`
        (rows interpolated along x first, then along y: the same binary32 operations)."""
        from itmfilter.model.grid import axis_weights

        h, w = self.values.shape[:2]
        x0, fx = axis_weights(np.asarray(xs, np.float32), w)
        y0, fy = axis_weights(np.asarray(ys, np.float32), h)
        one = np.float32(1)
        fx3 = fx[None, :, None]
        rows = self.values[:, x0] * (one - fx3) + self.values[:, x0 + 1] * fx3  # (H, B, 3)
        fy3 = fy[:, None, None]
        return (rows[y0] * (one - fy3) + rows[y0 + 1] * fy3).astype(np.float32)

    @property
    def cells(self) -> tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[0])


def _bilinear(values: np.ndarray, y0, fy, x0, fx) -> np.ndarray:
    one = np.float32(1)
    fx, fy = fx[:, None], fy[:, None]
    top = values[y0, x0] * (one - fx) + values[y0, x0 + 1] * fx
    bottom = values[y0 + 1, x0] * (one - fx) + values[y0 + 1, x0 + 1] * fx
    return (top * (one - fy) + bottom * fy).astype(np.float32)


def scene_cells(width: int, height: int, half: tuple[float, float], scale: int) -> tuple[int, int]:
    """The image size for a shot of ``width x height`` frames whose grid square spans ``half``
    frames a side: one cell per ``scale`` pixels of the scene (at least 2 a side)."""
    return (max(2, int(round(width * float(half[0]) / scale)) + 1),
            max(2, int(round(height * float(half[1]) / scale)) + 1))


def _push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill the cells of weight 0 in ``(h, w, c)`` weighted means from coarser means."""
    h, w = weights.shape
    if h <= 1 and w <= 1:
        return values
    hh, ww = (h + 1) // 2, (w + 1) // 2
    vp = np.pad(values * weights[..., None], ((0, hh * 2 - h), (0, ww * 2 - w), (0, 0)))
    wp = np.pad(weights, ((0, hh * 2 - h), (0, ww * 2 - w)))
    cw = wp.reshape(hh, 2, ww, 2).sum((1, 3))
    cv = vp.reshape(hh, 2, ww, 2, -1).sum((1, 3)) / np.maximum(cw, 1e-12)[..., None]
    coarse = _push_pull(cv, np.minimum(cw, 1.0))
    up = np.repeat(np.repeat(coarse, 2, 0), 2, 1)[:h, :w]
    a = np.minimum(weights, 1.0)[..., None]
    return a * values + (1 - a) * up


def build_scene_residual(diffs: list[np.ndarray], xys: list[np.ndarray], cells: tuple[int, int]) -> np.ndarray:
    """The scene image (``(H, W, 3)`` float64, before coding) of the PQ differences ``diffs``
    (each ``(N, 3)``: master - model at pixels whose grid coordinates are ``xys``, ``(N, 2)``)
    over ``cells = (W, H)``: bilinear splat, weighted mean, push-pull fill."""
    from itmfilter.model.grid import axis_weights

    w, h = cells
    num = np.zeros((h * w, 3))
    den = np.zeros(h * w)
    for diff, xy in zip(diffs, xys):
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        d = np.asarray(diff, np.float64).reshape(-1, 3)
        x0, fx = axis_weights(xy[:, 0], w)
        y0, fy = axis_weights(xy[:, 1], h)
        fx, fy = fx.astype(np.float64), fy.astype(np.float64)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                idx = (y0 + dy) * w + x0 + dx
                wt = wy * wx
                den += np.bincount(idx, wt, minlength=h * w)
                for c in range(3):
                    num[:, c] += np.bincount(idx, wt * d[:, c], minlength=h * w)
    mean = (num / np.maximum(den, 1e-12)[:, None]).reshape(h, w, 3)
    weight = np.minimum(den / max(float(np.median(den[den > 0])) if (den > 0).any() else 1.0, 1e-12), 1.0)
    return _push_pull(mean, weight.reshape(h, w))


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

    def code(self, quality: int) -> bytes:
        """The record's bytes (kind 2) with the codes as AVIF 4:4:4 at ``quality`` (0-100)."""
        buf = io.BytesIO()
        from PIL import Image

        Image.fromarray(self.codes, "RGB").save(buf, format="AVIF", quality=int(quality), speed=AVIF_SPEED,
                                                subsampling="4:4:4")
        h, w = self.codes.shape[:2]
        pairs = [float(v) for c in range(3) for v in (self.lo[c], self.hi[c])]
        return _HEAD.pack(SCENE_KIND, w, h, *pairs) + buf.getvalue()


def unpack_scene_residual(data: bytes) -> SceneResidual:
    """A kind-2 record's bytes -> :class:`SceneResidual`; :class:`SceneFormatError` when they
    are not one (the head, the range, the image's size and decoding are checked)."""
    if len(data) <= _HEAD.size or data[0] != SCENE_KIND:
        raise SceneFormatError("scene residual is truncated or not kind 2")
    _, w, h, *pairs = _HEAD.unpack_from(data)
    if not (2 <= w <= MAX_SIDE and 2 <= h <= MAX_SIDE and w * h <= MAX_CELLS):
        raise SceneFormatError(f"scene residual of {w}x{h} cells (2-{MAX_SIDE} a side, {MAX_CELLS} in all)")
    lohi = np.asarray(pairs, np.float32).reshape(3, 2)
    if not np.isfinite(lohi).all() or (lohi[:, 1] < lohi[:, 0]).any():
        raise SceneFormatError("scene residual has a non-finite or inverted range")
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(data[_HEAD.size:]))
        if img.size != (w, h):
            raise SceneFormatError(f"scene image is {img.size[0]}x{img.size[1]}, its head says {w}x{h}")
        codes = np.asarray(img.convert("RGB"), np.float32)
    except SceneFormatError:
        raise
    except Exception as exc:  # Pillow raises several kinds on a damaged image
        raise SceneFormatError(f"scene image does not decode ({exc})") from None
    step = (lohi[:, 1] - lohi[:, 0]) / np.float32(255)
    return SceneResidual(np.ascontiguousarray((lohi[:, 0] + codes * step).astype(np.float32)))


__all__ = ["MAX_CELLS", "MAX_SIDE", "SCENE_KIND", "SceneFormatError", "ScenePlan", "SceneResidual",
           "build_scene_residual", "scene_cells", "unpack_scene_residual"]
