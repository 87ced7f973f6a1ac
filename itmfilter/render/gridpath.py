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
   then a shot's scene residual (:mod:`itmfilter.model.scene`) read at the same coordinates;
3. the polynomial prior and the HDR10 coding per pixel
   (:func:`itmfilter.render.fastpath.prior_to_hdr10_planes`, unclipped prior as
   ``predict_pq``).
"""

from __future__ import annotations

import functools

import numpy as np

from itmfilter.model.grid import PlacedGrid, axis_weights, mmr_terms
from itmfilter.render.fastpath import (
    guided_fit_fast,
    guided_probe_error_fast,
    guided_sample_error_fast,
    guided_to_hdr10_planes,
    pixels_rgb,
    prior_to_hdr10_planes,
    probe_pixels_fast,
    sample_sdr,
)
from itmfilter.render.ladder import (
    guided_samples,
    probe_scores,
    refine_block_list,
    refine_blocks,
)


@functools.lru_cache(maxsize=1)
def _kernels():
    import numba as nb

    # a module global, not a closure cell: numba keys a cached kernel by its closure's pickled
    # contents, and a dispatcher pickles differently in every process (recompiled on every start)
    global _run_grid

    @nb.njit(inline="always", fastmath=True, cache=True)
    def _run_grid(rgb, start, n, xi, xf, yi, yf, grid, depth, wh, bh, wo, bo, act, nxt, z0, wz, out):
        """``out[start + t]`` for ``t < n``: what the model adds to its polynomial at pixel
        ``start + t`` of ``rgb`` ``(N, 3)``: its MLP of ``[R', G', B', F(x, y, luma)]``, the
        pixel's grid cell and weights ``xi[t], xf[t]`` across and ``yi[t], yf[t]`` down
        (``wh`` ``(L, K, H)``, input-major, ``bh`` ``(L, H)``, ``wo`` ``(H, 3)``, ``bo``
        ``(3,)``; ``L`` 0: the grid's first 3 channels). ``grid`` ``(C, D, H, W)`` (``depth``
        0: ``(C, 1, H, W)``, read bilinearly in x, y only). Pixels innermost: every loop runs
        over the ``n`` pixels (contiguous), so it vectorises; the grid reads are gathers."""
        chans = grid.shape[0]
        layers, hidden = wh.shape[0], wh.shape[2]
        one = np.float32(1.0)
        for t in range(n):
            act[0, t] = rgb[start + t, 0]
            act[1, t] = rgb[start + t, 1]
            act[2, t] = rgb[start + t, 2]
        if depth > 0:
            for t in range(n):
                luma = (np.float32(0.2126) * act[0, t] + np.float32(0.7152) * act[1, t]
                        + np.float32(0.0722) * act[2, t])
                luma = min(max(luma, np.float32(0.0)), one)
                u = (luma * np.float32(2.0) - one + one) * np.float32(0.5) * np.float32(depth - 1)
                u = min(max(u, np.float32(0.0)), np.float32(depth - 1))
                k = min(int(np.floor(u)), depth - 2)
                z0[t] = k
                wz[t] = u - np.float32(k)
        for c in range(chans):
            for t in range(n):
                x0, wx, y0, wy, z = xi[t], xf[t], yi[t], yf[t], z0[t]
                top = grid[c, z, y0, x0] * (one - wx) + grid[c, z, y0, x0 + 1] * wx
                bottom = grid[c, z, y0 + 1, x0] * (one - wx) + grid[c, z, y0 + 1, x0 + 1] * wx
                acc = top * (one - wy) + bottom * wy
                if depth > 0:
                    top = grid[c, z + 1, y0, x0] * (one - wx) + grid[c, z + 1, y0, x0 + 1] * wx
                    bottom = grid[c, z + 1, y0 + 1, x0] * (one - wx) + grid[c, z + 1, y0 + 1, x0 + 1] * wx
                    acc = acc * (one - wz[t]) + (top * (one - wy) + bottom * wy) * wz[t]
                act[3 + c, t] = acc
        if layers == 0:
            for c in range(3):
                for t in range(n):
                    out[start + t, c] = act[3 + c, t]
            return
        width = 3 + chans
        for layer in range(layers):
            for j in range(hidden):
                for t in range(n):
                    nxt[j, t] = bh[layer, j]
                for i in range(width):
                    wt = wh[layer, i, j]
                    for t in range(n):
                        nxt[j, t] += wt * act[i, t]
            for j in range(hidden):
                for t in range(n):
                    act[j, t] = max(nxt[j, t], np.float32(0.0))
            width = hidden
        for c in range(3):
            for t in range(n):
                nxt[0, t] = bo[c]
            for j in range(hidden):
                wt = wo[j, c]
                for t in range(n):
                    nxt[0, t] += wt * act[j, t]
            for t in range(n):
                out[start + t, c] = nxt[0, t]

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def rows(rgb, w, ix, fx, iy, fy, grid, depth, wh, bh, wo, bo, out):
        """Every pixel of a ``(rows, w)`` grid of pixels (``rgb`` ``(rows * w, 3)``), a row at a
        time: the columns' cells ``ix, fx`` shared by every row, the row's ``iy, fy``."""
        width = max(3 + grid.shape[0], wh.shape[2])
        for row in nb.prange(iy.shape[0]):
            act = np.empty((width, w), dtype=np.float32)
            nxt = np.empty((max(wh.shape[2], 1), w), dtype=np.float32)
            z0 = np.zeros(w, dtype=np.int64)
            wz = np.zeros(w, dtype=np.float32)
            yi = np.full(w, iy[row], dtype=np.int64)
            yf = np.full(w, fy[row], dtype=np.float32)
            _run_grid(rgb, row * w, w, ix, fx, yi, yf, grid, depth, wh, bh, wo, bo, act, nxt, z0, wz, out)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def points(rgb, ix, fx, iy, fy, grid, depth, wh, bh, wo, bo, out):
        """Scattered pixels (``rgb`` ``(N, 3)``, each with its own cells), 256 at a time."""
        n_all = rgb.shape[0]
        size = 256
        width = max(3 + grid.shape[0], wh.shape[2])
        for chunk in nb.prange((n_all + size - 1) // size):
            start = chunk * size
            n = min(size, n_all - start)
            act = np.empty((width, size), dtype=np.float32)
            nxt = np.empty((max(wh.shape[2], 1), size), dtype=np.float32)
            z0 = np.zeros(size, dtype=np.int64)
            wz = np.zeros(size, dtype=np.float32)
            _run_grid(rgb, start, n, ix[start:start + n], fx[start:start + n], iy[start:start + n], fy[start:start + n],
                grid, depth, wh, bh, wo, bo, act, nxt, z0, wz, out)

    @nb.njit(parallel=True, cache=True, nogil=True)
    def scene_rows(values, ix, fx, iy, fy, out):
        """Add a scene residual ``values`` ``(H, W, 3)`` read bilinearly to ``out`` ``(rows * w, 3)``
        for the pixels of a grid of rows (cells ``iy, fy``) and columns (``ix, fx``): each row
        of ``values`` along x first, then along y, binary32 (no fastmath: the normative order,
        :meth:`itmfilter.model.scene.SceneResidual.sample_axes`)."""
        w = ix.shape[0]
        one = np.float32(1)
        for row in nb.prange(iy.shape[0]):
            j, b = iy[row], fy[row]
            for col in range(w):
                i, a = ix[col], fx[col]
                for c in range(3):
                    top = values[j, i, c] * (one - a) + values[j, i + 1, c] * a
                    bottom = values[j + 1, i, c] * (one - a) + values[j + 1, i + 1, c] * a
                    out[row * w + col, c] += top * (one - b) + bottom * b

    @nb.njit(parallel=True, cache=True, nogil=True)
    def scene_points(values, ix, fx, iy, fy, out):
        """Add a scene residual ``values`` ``(H, W, 3)`` read bilinearly to ``out`` ``(N, 3)`` at
        ``N`` scattered pixels (cells ``ix, fx`` across, ``iy, fy`` down, one each a pixel), in
        :func:`scene_rows`' binary32 order (no fastmath)."""
        one = np.float32(1)
        for n in nb.prange(ix.shape[0]):
            i, a, j, b = ix[n], fx[n], iy[n], fy[n]
            for c in range(3):
                top = values[j, i, c] * (one - a) + values[j, i + 1, c] * a
                bottom = values[j + 1, i, c] * (one - a) + values[j + 1, i + 1, c] * a
                out[n, c] += top * (one - b) + bottom * b

    return rows, points, scene_rows, scene_points


@functools.lru_cache(maxsize=8)
def _all_centres(n: int) -> np.ndarray:
    out = _centres(n, np.arange(n))
    out.flags.writeable = False
    return out


def _centres(n: int, idx) -> np.ndarray:
    """:func:`itmfilter.model.separable.pixel_centres` in NumPy (the same binary32 operations:
    ``(i + 0.5) / n * 2 - 1``), without a tensor's overhead on the player's thread."""
    f32 = np.float32
    return (np.asarray(idx).astype(f32) + f32(0.5)) / f32(n) * f32(2) - f32(1)


def _axis(n: int, half: float, origin: float, idx=None, scale: float = 1.0) -> np.ndarray:
    """The grid coordinates of rows (or columns) ``idx`` (default all ``n``) of a frame at
    ``scale`` in the scene: :meth:`PlacedGrid.xy`'s (binary64, rounded to binary32 once)."""
    centres = _all_centres(n) if idx is None else _centres(n, idx)
    return ((centres.astype(np.float64) * scale + origin) / half).astype(np.float32)


def _coords(placed: PlacedGrid, n: int, half: float, origin: float, cells: int, idx=None):
    """The grid cells and weights of rows (or columns) ``idx`` (default all ``n``)."""
    return axis_weights(_axis(n, half, origin, idx, placed.scale), cells)


def _model_arrays(placed: PlacedGrid):
    """The kernels' view of the model: ``grid`` ``(C, D, H, W)``, ``depth`` and the MLP as
    input-major ``wh, bh, wo, bo`` (module docstring of :func:`_kernels`)."""
    model = placed.model
    cfg = model.config
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
    return grid, int(cfg.depth), wh, bh, np.ascontiguousarray(wo), np.ascontiguousarray(bo)


def residual_grid(placed: PlacedGrid, rgb: np.ndarray, h: int, w: int, rows=None, cols=None,
                  scene: bool = True) -> np.ndarray:
    """What the model adds to its polynomial on a grid of pixels of an ``h x w`` frame: SDR
    ``rgb`` ``(A, B, 3)`` at rows ``rows`` and columns ``cols`` (default: all) -> ``(A * B, 3)``
    float32, row-major; without the shot's scene residual if not ``scene``."""
    cfg = placed.model.config
    ix, fx = _coords(placed, w, placed.half[0], placed.origin[0], cfg.width, cols)
    iy, fy = _coords(placed, h, placed.half[1], placed.origin[1], cfg.height, rows)
    a, b = rgb.shape[:2]
    out = np.empty((a * b, 3), np.float32)
    _kernels()[0](np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3), b, ix, fx, iy, fy,
                  *_model_arrays(placed), out)
    axes = scene_axes(placed, h, w, rows, cols) if scene else None
    if axes is not None:  # the shot's scene residual, read at the same coordinates
        _kernels()[2](*axes, out)
    return out


def scene_axes(placed: PlacedGrid, h: int, w: int, rows=None, cols=None):
    """A shot's scene residual as :func:`itmfilter.render.fastpath.guided_to_hdr10_planes`
    reads it: ``(values, ix, fx, iy, fy)`` for rows ``rows`` and columns ``cols`` (default
    all) of an ``h x w`` frame, or None for a model without one."""
    scene = placed.model.scene
    if scene is None:
        return None
    ix, fx = scene.weights(_axis(w, placed.half[0], placed.origin[0], cols, placed.scale), 0)
    iy, fy = scene.weights(_axis(h, placed.half[1], placed.origin[1], rows, placed.scale), 1)
    return scene.values, ix, fx, iy, fy


def scene_grid(placed: PlacedGrid, h: int, w: int, rows=None, cols=None) -> np.ndarray | None:
    """The scene residual alone on a grid of pixels (:func:`residual_grid`'s layout), or None."""
    axes = scene_axes(placed, h, w, rows, cols)
    if axes is None:
        return None
    out = np.zeros((axes[3].shape[0] * axes[1].shape[0], 3), np.float32)
    _kernels()[2](*axes, out)
    return out


def residual_points(placed: PlacedGrid, rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    h: int, w: int, scene: bool = True) -> np.ndarray:
    """What the model adds to its polynomial at ``N`` scattered pixels ``(rows, cols)`` of an
    ``h x w`` frame with SDR ``rgb`` ``(N, 3)``: ``(N, 3)`` float32; without the shot's scene
    residual if not ``scene``."""
    cfg = placed.model.config
    ix, fx = _coords(placed, w, placed.half[0], placed.origin[0], cfg.width, np.asarray(cols).ravel())
    iy, fy = _coords(placed, h, placed.half[1], placed.origin[1], cfg.height, np.asarray(rows).ravel())
    out = np.empty((ix.shape[0], 3), np.float32)
    _kernels()[1](np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3), ix, fx, iy, fy,
                  *_model_arrays(placed), out)
    field = scene_points(placed, rows, cols, h, w) if scene else None
    if field is not None:
        out += field
    return out


def scene_points(placed: PlacedGrid, rows, cols, h: int, w: int) -> np.ndarray | None:
    """The shot's scene residual alone at ``N`` scattered pixels ``(rows, cols)`` of an ``h x w``
    frame, ``(N, 3)`` float32 (:meth:`itmfilter.model.scene.SceneResidual.sample`'s values), or
    None for a model without one."""
    axes = scene_axes(placed, h, w, np.asarray(rows).ravel(), np.asarray(cols).ravel())
    if axes is None:
        return None
    out = np.zeros((axes[1].shape[0], 3), np.float32)
    _kernels()[3](*axes, out)  # one (row, column) pair a pixel
    return out


def grid_hdr10_planes(placed: PlacedGrid, planes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``planes`` (:class:`itmfilter.media.frames.Planes`, 4:2:0) of a grid shot's frame ->
    (Y, Cb, Cr) uint16 HDR10 planes (module docstring)."""
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    h, w = y.shape
    rgb = sample_sdr(y, cb, cr, 1, bits=bits, full_range=full)
    resid = residual_grid(placed, rgb, h, w)
    resid = np.ascontiguousarray(resid.T).reshape(3, h, w)
    return prior_to_hdr10_planes(y, cb, cr, resid, np.asarray(placed.model.mmr, np.float64), 1, bits=bits,
                                 full_range=full, clip_prior=False)


def _clipped_over_prior(mmr: np.ndarray, rgb: np.ndarray, raw: np.ndarray, offset=None) -> np.ndarray:
    """What the model adds to its polynomial once both are clipped to [0, 1], as a guided
    rung fits it (:func:`itmfilter.render.ladder.guided_coefficients`): ``clip(p + raw) - clip(p)``,
    less ``offset`` (the scene residual the rung adds at every pixel after its transform), so
    that the rung's ``clip(clip(p) + fit + offset)`` is the model's ``clip(p + raw)`` where the
    fit is exact."""
    prior = mmr_terms(np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3)) @ np.asarray(mmr, np.float32)
    out = np.clip(prior + raw.reshape(-1, 3), 0, 1) - np.clip(prior, 0, 1)
    if offset is not None:
        out -= offset.reshape(-1, 3)
    return out.astype(np.float32)


def grid_guided_planes(placed: PlacedGrid, planes, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grid shot's frame through a guided rung (:mod:`itmfilter.render.ladder`): the model
    runs on one pixel in ``step x step``, per-node affine transforms of the SDR carry it to
    every pixel over the exact per-pixel polynomial, and the worst-fitted blocks (by their
    samples and by the probes at the brightest blocks' brightest pixels) get the model
    itself, as the network's guided rungs do. A shot's scene residual is a field finer than
    the transforms' nodes: it is read at every pixel and added after the transform, which is
    fitted to what the model adds beside it. Needs 4:2:0 planes and numba."""
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    h, w = y.shape
    mmr = np.asarray(placed.model.mmr, np.float32)
    rgb = sample_sdr(y, cb, cr, step, bits=bits, full_range=full)
    a, b = rgb.shape[:2]
    rows, cols = guided_samples(h, step), guided_samples(w, step)
    raw = residual_grid(placed, rgb, h, w, rows, cols, scene=False)
    field = scene_grid(placed, h, w, rows, cols)
    if field is not None:
        raw += field  # as residual_grid adds it (the same binary32 sum), read once
    resid = _clipped_over_prior(mmr, rgb, raw, field).reshape(a, b, 3)
    coef = guided_fit_fast(rgb, resid, h, w, step)
    chosen, prows, pcols = probe_pixels_fast(y, step)
    probe = None
    if len(chosen):
        prgb = pixels_rgb(planes, prows, pcols)
        raw = residual_points(placed, prgb, prows, pcols, h, w, scene=False)
        off = scene_points(placed, prows, pcols, h, w)
        if off is not None:
            raw += off
        probe = probe_scores(chosen, guided_probe_error_fast(prgb, raw, mmr, coef, prows, pcols, h, w, step, off),
                             h, w, step)
    blocks = refine_blocks(guided_sample_error_fast(rgb, resid, coef, h, w, step), h, w, step, probe=probe)
    index = refined = None
    if blocks.any():
        index, brows, bcols = refine_block_list(blocks, h, w, step)
        k = brows.shape[0]
        r = np.broadcast_to(brows[:, :, None], (k, step, step)).ravel()
        c = np.broadcast_to(bcols[:, None, :], (k, step, step)).ravel()
        refined = residual_points(placed, pixels_rgb(planes, r, c), r, c, h, w).reshape(k, step, step, 3)
    return guided_to_hdr10_planes(y, cb, cr, coef, np.asarray(mmr, np.float64), step, bits=bits, full_range=full,
                                  index=index, refined=refined, offset=scene_axes(placed, h, w))
