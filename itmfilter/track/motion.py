"""Motion-compensated weight prediction: a global translation applied to a weight set.

A camera pan moves the picture under the network's coordinate input. If frame ``t``
shows what frame ``t - 1`` showed ``v`` pixels further on (``SDR_t(p) ~ SDR_{t-1}(p + v)``),
the set that served frame ``t - 1`` serves frame ``t`` when its coordinates are shifted:
``net_t(sdr, xy) = net_{t-1}(sdr, xy + d)`` with ``d = (2 v_x / W, 2 v_y / H)`` in the
units of :func:`itmfilter.model.pixel_grid` (pixel centres in [-1, 1]). For every
coordinate encoding this shifted network is another weight set of the same network, so a
DELTA can predict from the *shifted* previous set and code only what the shift does not
explain (sidecar/SPEC.md, DELTA coding 2):

* ``fourier``: the features are ``sin(f_k x), ..., cos(f_k x), ...`` per axis; a shift by
  ``d_a`` on axis ``a`` turns the pair ``(s, c)`` of band ``k`` into
  ``(s cos t + c sin t, c cos t - s sin t)`` with ``t = f_k d_a``, so the columns
  ``(W_s, W_c)`` of ``coord.0.weight`` for that pair become
  ``(W_s cos t - W_c sin t, W_s sin t + W_c cos t)``. Exact.
* ``siren``: the first layer is affine in ``xy``: ``coord.0.bias += coord.0.weight @ d``.
  Exact.
* ``none``: there are no coordinates; the set is unchanged.

Arithmetic (normative): the parameters are widened to binary64, ``t``, its cosine and
sine, the products and sums are binary64, and the results are rounded to binary32 once.
Frequencies are ``f_k = 2**k * pi`` (binary64 pi), ``k = 0 .. fourier_bands - 1``.
"""

from __future__ import annotations

import math

import numpy as np

from itmfilter.model.net import ModelConfig

from .format import param_layout


def _tensor_offsets(config: ModelConfig) -> dict[str, tuple[int, tuple[int, ...]]]:
    offsets, pos = {}, 0
    for name, shape in param_layout(config):
        offsets[name] = (pos, shape)
        pos += int(np.prod(shape))
    return offsets


def warp_params(config: ModelConfig, params: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """The flat float32 set whose network equals ``params``' network evaluated at
    ``xy + shift`` (``shift`` = (dx, dy) in pixel-grid units, i.e. 2 / width per pixel
    horizontally and 2 / height per pixel vertically). Returns a new array."""
    out = np.array(params, dtype=np.float32, copy=True)
    dx, dy = float(shift[0]), float(shift[1])
    if not (math.isfinite(dx) and math.isfinite(dy)):
        raise ValueError(f"motion shift must be finite, got ({dx}, {dy})")
    if config.coord_encoding == "none" or (dx == 0.0 and dy == 0.0):
        return out
    offsets = _tensor_offsets(config)
    w_off, w_shape = offsets["coord.0.weight"]
    rows, cols = w_shape
    weight = out[w_off : w_off + rows * cols].astype(np.float64).reshape(rows, cols)
    if config.coord_encoding == "siren":
        b_off, _ = offsets["coord.0.bias"]
        bias = out[b_off : b_off + rows].astype(np.float64)
        out[b_off : b_off + rows] = (bias + weight[:, 0] * dx + weight[:, 1] * dy).astype(np.float32)
        return out
    bands = config.fourier_bands
    if cols != 4 * bands:
        raise ValueError(f"coord.0.weight has {cols} columns; a {bands}-band Fourier encoding needs {4 * bands}")
    new = weight.copy()
    for axis, d in enumerate((dx, dy)):
        base = axis * 2 * bands
        for k in range(bands):
            t = (2.0**k) * math.pi * d
            c, s = math.cos(t), math.sin(t)
            ws, wc = weight[:, base + k], weight[:, base + bands + k]
            new[:, base + k] = ws * c - wc * s
            new[:, base + bands + k] = ws * s + wc * c
    out[w_off : w_off + rows * cols] = new.astype(np.float32).ravel()
    return out


def pixels_to_shift(v: tuple[float, float], width: int, height: int) -> tuple[float, float]:
    """A displacement ``v`` in pixels -> the shift in pixel-grid units."""
    return (2.0 * float(v[0]) / width, 2.0 * float(v[1]) / height)


__all__ = ["warp_params", "pixels_to_shift"]
