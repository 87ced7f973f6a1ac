"""A grid shot's frame in torch, on the frame's device: Y'CbCr planes in, HDR10 planes out.

On a CPU a grid shot's frame takes the fused numba pass (:mod:`itmfilter.render.gridpath`). On
CUDA that pass would run on the host's cores, beside a GPU that does the same arithmetic in a
fraction of the time, and every frame would make a round trip to the host. This path keeps the
frame on its device from the decoded 4:2:0 planes to the 10-bit output planes, as the network's
``torch`` path does (:mod:`itmfilter.colour.tensor`), and computes the normative decoder's
formulas (:func:`itmfilter.model.grid.predict_pq`) in binary32:

1. R'G'B' from the planes (:func:`itmfilter.colour.tensor.planes420_to_rgb`);
2. each pixel's grid features: the bilateral grid read trilinearly in (x, y, BT.709 luma). The
   cells and weights along x depend on the column alone and along y on the row alone, so they
   are computed once per column and per row on the host, by the decoder's own
   :func:`itmfilter.model.grid.axis_weights` on :meth:`PlacedGrid.xy`'s coordinates, and only
   the luma axis is per pixel;
3. the small MLP on ``[R', G', B', features]`` (float32 matrix products; TF32 is turned off
   around them, since its 10-bit mantissa would move PQ codes);
4. the MMR3 polynomial, the shot's scene residual (bilinear, per column and per row likewise),
   the sum clipped to [0, 1] and coded as BT.2020 non-constant-luminance Y'CbCr, 4:2:0, narrow
   range (:func:`itmfilter.colour.tensor.rgb_to_planes420`).

Rows are processed in bands of at most :data:`BAND_PIXELS` pixels, so the working set is bounded
whatever the frame size (a 2160p frame's per-pixel features would otherwise take ~0.5 GB).
Within one 10-bit code of the normative decoder (tested on the CPU; the order of the binary32
operations follows the fused path's).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from itmfilter.colour.tensor import planes420_to_rgb, rgb_to_planes420
from itmfilter.model.grid import LUMA_BT709, PlacedGrid, axis_weights
from itmfilter.model.separable import pixel_centres

BAND_PIXELS = 1 << 20
"""Pixels per band of rows (about 1 M: a 2160p frame in 8 bands, a 1080p one in 2)."""


def _axis(n: int, half: float, origin: float, scale: float) -> np.ndarray:
    """The grid coordinates of a frame's ``n`` columns (or rows): :meth:`PlacedGrid.xy`'s,
    binary64 then rounded to binary32 once."""
    centres = pixel_centres(n).numpy().astype(np.float64)
    return ((centres * scale + origin) / half).astype(np.float32)


def _weights(idx: np.ndarray, frac: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(device),
            torch.from_numpy(np.ascontiguousarray(frac, dtype=np.float32)).to(device))


@contextlib.contextmanager
def _no_tf32():
    """float32 matrix products in float32 (not TF32) on CUDA; a no-op elsewhere."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _mmr_terms(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 22)`` MMR3 terms, :func:`itmfilter.model.grid.mmr_terms`'s order."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    rg = r * g
    first = torch.stack([r, g, b, rg, r * b, g * b, rg * b], dim=-1)
    return torch.cat([torch.ones_like(rgb[:, :1]), first, first * first, first * first * first], dim=-1)


class _Model:
    """A placed grid model's arrays on ``device`` and its per-column, per-row read positions
    for one frame size."""

    def __init__(self, placed: PlacedGrid, h: int, w: int, device) -> None:
        model, cfg = placed.model, placed.model.config
        self.cfg = cfg
        grid = np.asarray(model.grid, np.float32)
        if not cfg.depth:
            grid = grid[:, None]
        self.grid = torch.from_numpy(np.ascontiguousarray(grid)).to(device)  # (C, D, GH, GW)
        self.mmr = torch.from_numpy(np.ascontiguousarray(model.mmr, dtype=np.float32)).to(device)
        self.mlp = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device) for a in model.mlp]
        xs = _axis(w, placed.half[0], placed.origin[0], placed.scale)
        ys = _axis(h, placed.half[1], placed.origin[1], placed.scale)
        self.ix, self.fx = _weights(*axis_weights(xs, cfg.width), device)
        self.iy, self.fy = _weights(*axis_weights(ys, cfg.height), device)
        self.scene_rows = self.sy = self.sfy = None
        scene = model.scene
        if scene is not None:
            sx, sfx = _weights(*scene.weights(xs, 0), device)
            self.sy, self.sfy = _weights(*scene.weights(ys, 1), device)
            values = torch.from_numpy(np.ascontiguousarray(scene.values, dtype=np.float32)).to(device)
            fx3 = sfx[None, :, None]
            # the image read along x once for every column: (SH, W, 3), then per row below
            self.scene_rows = values[:, sx] * (1 - fx3) + values[:, sx + 1] * fx3

    def features(self, rgb: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """``(C, R, W)`` grid features of the band of rows ``r0:r1`` with SDR ``rgb`` ``(R, W, 3)``."""
        cfg, grid = self.cfg, self.grid
        c, _, gh, gw = grid.shape
        flat = grid.reshape(c, -1)
        ix, fx = self.ix[None, :], self.fx[None, :]
        iy, fy = self.iy[r0:r1, None], self.fy[r0:r1, None]
        one = torch.ones((), dtype=torch.float32, device=rgb.device)
        if cfg.depth:
            luma = (rgb[..., 0] * LUMA_BT709[0] + rgb[..., 1] * LUMA_BT709[1]
                    + rgb[..., 2] * LUMA_BT709[2]).clamp_(0.0, 1.0)
            u = ((luma * 2.0 - one + one) * 0.5 * float(cfg.depth - 1)).clamp_(0.0, float(cfg.depth - 1))
            z0 = torch.clamp(torch.floor(u), max=cfg.depth - 2)
            wz = u - z0
            base = (z0.to(torch.int64) * gh + iy) * gw + ix
        else:
            base = (iy * gw + ix).expand(r1 - r0, -1)

        def bilinear(start):
            def at(off):
                return flat[:, start + off]

            top = at(0) * (one - fx) + at(1) * fx
            bottom = at(gw) * (one - fx) + at(gw + 1) * fx
            return top * (one - fy) + bottom * fy

        acc = bilinear(base)
        if cfg.depth:
            acc = acc * (one - wz) + bilinear(base + gh * gw) * wz
        return acc

    def pq(self, rgb: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """``(R, W, 3)`` PQ codes [0, 1] of the band ``r0:r1`` (SDR ``rgb`` ``(R, W, 3)``)."""
        rows, w, _ = rgb.shape
        flat = rgb.reshape(-1, 3)
        feats = self.features(rgb, r0, r1).reshape(self.grid.shape[0], -1).T  # (N, C)
        with _no_tf32():
            out = _mmr_terms(flat) @ self.mmr
            if self.cfg.hidden:
                act = torch.cat([flat, feats], dim=1)
                for k in range(0, len(self.mlp) - 2, 2):
                    act = torch.relu(act @ self.mlp[k].T + self.mlp[k + 1])
                out = out + (act @ self.mlp[-2].T + self.mlp[-1])
            else:
                out = out + feats[:, :3]
        out = out.reshape(rows, w, 3)
        if self.scene_rows is not None:  # the shot's scene residual, added before the clip
            fy3 = self.sfy[r0:r1, None, None]
            sy = self.sy[r0:r1]
            out = out + (self.scene_rows[sy] * (1 - fy3) + self.scene_rows[sy + 1] * fy3)
        return out.clamp_(0.0, 1.0)


def grid_planes_tensor(placed: PlacedGrid, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, *,
                       bits: int = 8, full_range: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A grid shot's frame: SDR 4:2:0 code planes (``y`` ``(H, W)``, ``cb``/``cr``
    ``(ceil(H/2), ceil(W/2))``, any integer dtype, on one device) -> the HDR10 Y, Cb, Cr planes
    (int32 10-bit codes, BT.2020 NCL, PQ, narrow range, 4:2:0) on the same device."""
    h, w = y.shape
    model = _Model(placed, h, w, y.device)
    rgb = planes420_to_rgb(y, cb, cr, bits=bits, full_range=full_range)
    pq = torch.empty_like(rgb)
    band = max(1, BAND_PIXELS // max(w, 1))
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        pq[r0:r1] = model.pq(rgb[r0:r1], r0, r1)
    return rgb_to_planes420(pq, bits=10, full_range=False)


__all__ = ["BAND_PIXELS", "grid_planes_tensor"]
