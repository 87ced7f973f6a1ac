"""A grid shot's frame on a CPU, fused: Y'CbCr planes in, HDR10 planes out.

Format 1.4/1.5 grid shots (:class:`itmfilter.model.grid.PlacedGrid`) are decoded normatively
by :func:`itmfilter.model.grid.predict_pq`, float32 NumPy over the whole frame (~0.5 s a
640x360 frame here: not real time). The player takes this path instead, the same formulas
in three passes, within one 10-bit code of the normative decoder (tested):

1. the frame's R'G'B' per pixel (:func:`itmfilter.render.fastpath.sample_sdr`);
2. one numba pass: each pixel's grid features, trilinear in (x, y, BT.709 luma) with the
   placement's per-column and per-row cell weights computed once
   (:func:`itmfilter.model.grid.axis_weights` on :meth:`PlacedGrid.xy`'s coordinates), and
   the model's small MLP on them, a row at a time with the pixels innermost (torch's matrix
   products are slow at widths of 7 to 32);
3. the polynomial prior and the HDR10 coding per pixel
   (:func:`itmfilter.render.fastpath.prior_to_hdr10_planes`, unclipped prior as
   ``predict_pq``).
"""

from __future__ import annotations

import functools

import numpy as np

from itmfilter.model.grid import PlacedGrid, axis_weights
from itmfilter.model.separable import pixel_centres
from itmfilter.render.fastpath import prior_to_hdr10_planes, sample_sdr


@functools.lru_cache(maxsize=1)
def _residual_kernel():
    import numba as nb

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def residual(rgb, ix, fx, iy, fy, grid, depth, wh, bh, wo, bo, out):
        """``out[p]``: what the model adds to its polynomial at pixel ``p``: its MLP of
        ``[R', G', B', F(x, y, luma)]`` (``wh`` ``(L, K, H)``, input-major, ``bh`` ``(L, H)``,
        ``wo`` ``(H, 3)``, ``bo`` ``(3,)``; ``L`` 0: the grid's first 3 channels). ``grid``
        ``(C, D, H, W)`` (``depth`` 0: ``(C, 1, H, W)``, read bilinearly in x, y only)."""
        h, w = rgb.shape[0], rgb.shape[1]
        chans = grid.shape[0]
        layers, hidden = wh.shape[0], wh.shape[2]
        one = np.float32(1.0)
        for row in nb.prange(h):
            # a row at a time, pixels innermost: every loop below runs over the row's pixels
            # (contiguous), so it vectorises; the grid reads are gathers
            y0, wy = iy[row], fy[row]
            act = np.empty((max(3 + chans, hidden), w), dtype=np.float32)
            nxt = np.empty((max(hidden, 1), w), dtype=np.float32)
            z0 = np.zeros(w, dtype=np.int64)
            wz = np.zeros(w, dtype=np.float32)
            for x in range(w):
                act[0, x] = rgb[row, x, 0]
                act[1, x] = rgb[row, x, 1]
                act[2, x] = rgb[row, x, 2]
            if depth > 0:
                for x in range(w):
                    luma = (np.float32(0.2126) * act[0, x] + np.float32(0.7152) * act[1, x]
                            + np.float32(0.0722) * act[2, x])
                    luma = min(max(luma, np.float32(0.0)), one)
                    u = (luma * np.float32(2.0) - one + one) * np.float32(0.5) * np.float32(depth - 1)
                    u = min(max(u, np.float32(0.0)), np.float32(depth - 1))
                    k = min(int(np.floor(u)), depth - 2)
                    z0[x] = k
                    wz[x] = u - np.float32(k)
            for c in range(chans):
                for x in range(w):
                    x0, wx, z = ix[x], fx[x], z0[x]
                    top = grid[c, z, y0, x0] * (one - wx) + grid[c, z, y0, x0 + 1] * wx
                    bottom = grid[c, z, y0 + 1, x0] * (one - wx) + grid[c, z, y0 + 1, x0 + 1] * wx
                    acc = top * (one - wy) + bottom * wy
                    if depth > 0:
                        top = grid[c, z + 1, y0, x0] * (one - wx) + grid[c, z + 1, y0, x0 + 1] * wx
                        bottom = grid[c, z + 1, y0 + 1, x0] * (one - wx) + grid[c, z + 1, y0 + 1, x0 + 1] * wx
                        acc = acc * (one - wz[x]) + (top * (one - wy) + bottom * wy) * wz[x]
                    act[3 + c, x] = acc
            base = row * w
            if layers == 0:
                for c in range(3):
                    for x in range(w):
                        out[base + x, c] = act[3 + c, x]
                continue
            width = 3 + chans
            for layer in range(layers):
                for j in range(hidden):
                    for x in range(w):
                        nxt[j, x] = bh[layer, j]
                    for i in range(width):
                        wt = wh[layer, i, j]
                        for x in range(w):
                            nxt[j, x] += wt * act[i, x]
                for j in range(hidden):
                    for x in range(w):
                        act[j, x] = max(nxt[j, x], np.float32(0.0))
                width = hidden
            for c in range(3):
                for x in range(w):
                    nxt[0, x] = bo[c]
                for j in range(hidden):
                    wt = wo[j, c]
                    for x in range(w):
                        nxt[0, x] += wt * act[j, x]
                for x in range(w):
                    out[base + x, c] = nxt[0, x]

    return residual


def _axes(placed: PlacedGrid, h: int, w: int):
    """Per-column and per-row cell indices and weights: :meth:`PlacedGrid.xy`'s coordinates
    (binary64, rounded to binary32 once) depend on the column alone in x and the row alone in y."""
    o, half = np.asarray(placed.origin, np.float64), np.asarray(placed.half, np.float64)
    xs = ((pixel_centres(w).numpy().astype(np.float64) + o[0]) / half[0]).astype(np.float32)
    ys = ((pixel_centres(h).numpy().astype(np.float64) + o[1]) / half[1]).astype(np.float32)
    cfg = placed.model.config
    ix, fx = axis_weights(xs, cfg.width)
    iy, fy = axis_weights(ys, cfg.height)
    return ix, fx, iy, fy


def grid_hdr10_planes(placed: PlacedGrid, planes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``planes`` (:class:`itmfilter.media.frames.Planes`, 4:2:0) of a grid shot's frame ->
    (Y, Cb, Cr) uint16 HDR10 planes (module docstring)."""
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    h, w = y.shape
    model = placed.model
    cfg = model.config
    rgb = sample_sdr(y, cb, cr, 1, bits=bits, full_range=full)
    grid = np.ascontiguousarray(model.grid if cfg.depth else model.grid[:, None], dtype=np.float32)
    layers, hidden = (cfg.layers, cfg.hidden) if cfg.hidden else (0, 1)
    wh = np.zeros((layers, max(3 + cfg.channels, hidden), hidden), np.float32)
    bh = np.zeros((layers, hidden), np.float32)
    for k in range(layers):
        weight = np.asarray(model.mlp[2 * k], np.float32)  # (out, in)
        wh[k, : weight.shape[1], :] = weight.T
        bh[k] = model.mlp[2 * k + 1]
    wo = np.asarray(model.mlp[-2], np.float32).T if cfg.hidden else np.zeros((1, 3), np.float32)
    bo = np.asarray(model.mlp[-1], np.float32) if cfg.hidden else np.zeros(3, np.float32)
    resid = np.empty((h * w, 3), np.float32)
    _residual_kernel()(rgb, *_axes(placed, h, w), grid, int(cfg.depth), wh, bh, np.ascontiguousarray(wo),
                       np.ascontiguousarray(bo), resid)
    resid = np.ascontiguousarray(resid.T).reshape(3, h, w)
    return prior_to_hdr10_planes(y, cb, cr, resid, np.asarray(model.mmr, np.float64), 1, bits=bits,
                                 full_range=full, clip_prior=False)
