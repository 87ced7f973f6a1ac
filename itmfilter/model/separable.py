"""The network over a grid of pixels, fast on a CPU: the Fourier coordinate layer split by axis.

A player evaluates the network on whole rows and columns of pixels: every pixel of a frame
(the ``full`` rung) or a regular subset of them (the guided rungs). With Fourier features
(``coord_encoding="fourier"``) the coordinate layer's input is the sines and cosines of x
and of y, side by side, so its pre-activation splits exactly into a part of x and a part of y:

    W [gamma(x), gamma(y)] + b  =  W_x gamma(x)  +  (W_y gamma(y) + b)

:func:`evaluate_grid` computes the two parts once per column and once per row (``B + A``
small products instead of ``A B``), adds them per pixel, and runs the rest of the network
as plain matrix products in ``dtype`` on row bands of ~32k pixels, each band's features
written into one reused buffer. On the project's 2-core AVX512-BF16 CPU this takes a
640x360 frame's network from ~71 ms (``ITMNet.forward`` under autocast, chunked) to ~26 ms
at 2 threads in bf16 (``benchmarks/ladder_timing.py`` times the rungs that use it). The
numbers are those of ``ITMNet.forward`` to rounding: the coordinate layer stays fp32 before
its ReLU (as ``forward`` keeps it outside autocast), the fusion layers run in ``dtype``.

What it returns is what the network *adds to its prior* (the fusion stack's output, before
the prior and before any clip to [0, 1]); for a network without a prior that is its output.
The caller adds the prior where it needs it, per pixel, in its own pass.
"""

from __future__ import annotations

import torch
from torch import nn

from itmfilter.model.net import ITMNet

BAND_PIXELS = 1 << 15
"""Pixels per band: 32k x 64 bf16 features (4 MB) and the layer outputs stay within the L2
caches of two cores; 8k and 32k bands time the same here, 128k bands are 40 % slower."""


def separable(net: ITMNet) -> bool:
    """Whether :func:`evaluate_grid` can run ``net``: Fourier or no coordinate features."""
    return net.config.coord_encoding in ("fourier", "none")


def _axis_parts(net: ITMNet, ys: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The coordinate layer's pre-activation split by axis: ``(A, F)`` for the rows (with the
    bias) and ``(B, F)`` for the columns, fp32."""
    first = net.coord[0]
    weight = first.weight.detach().float()
    freqs = net.freqs.float()
    bands = freqs.numel()

    def encode(t: torch.Tensor) -> torch.Tensor:
        # the same order as ITMNet.fourier_features: sines of every band, then cosines
        angles = t.float()[:, None] * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    cols = encode(xs) @ weight[:, : 2 * bands].T
    rows = encode(ys) @ weight[:, 2 * bands:].T + first.bias.detach().float()
    return rows, cols


@torch.no_grad()
def evaluate_grid(net: ITMNet, rgb: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, *,
                  dtype: torch.dtype = torch.float32, band_pixels: int = BAND_PIXELS) -> torch.Tensor:
    """What ``net`` adds to its prior at every pixel of a grid, ``(A * B, 3)`` float32.

    ``rgb``: ``(A, B, 3)`` SDR R'G'B' [0, 1] of the pixels at rows ``ys`` ``(A,)`` and
    columns ``xs`` ``(B,)``, both pixel centres in [-1, 1] (:func:`itmfilter.model.net.pixel_grid`'s
    convention); row-major order out. ``dtype``: the fusion layers' arithmetic (bf16 or fp32).
    """
    _check(net)
    a, b, _ = rgb.shape
    if ys.shape != (a,) or xs.shape != (b,):
        raise ValueError(f"expected {a} rows and {b} columns, got {tuple(ys.shape)} and {tuple(xs.shape)}")
    parts = _axis_parts(net, ys.to(rgb.device), xs.to(rgb.device)) if net.coord is not None else None
    band_rows = max(1, band_pixels // max(b, 1))

    def coordinates(start: int, n: int, dst: torch.Tensor) -> None:
        # whole rows per band: the row part broadcast over the columns' parts
        top = start // b
        dst.view(n // b, b, -1).copy_(parts[0][top:top + n // b, None, :] + parts[1][None])

    return _run(net, rgb.reshape(-1, 3), coordinates, band_rows * b, dtype)


@torch.no_grad()
def evaluate_blocks(net: ITMNet, rgb: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: int, w: int, *,
                    dtype: torch.dtype = torch.float32, band_pixels: int = BAND_PIXELS) -> torch.Tensor:
    """What ``net`` adds to its prior on square blocks of an ``h x w`` picture,
    ``(K, s, s, 3)`` float32: block ``k`` holds the pixels at rows ``rows[k]`` and columns
    ``cols[k]`` (integer ``(K, s)`` each), with SDR ``rgb`` ``(K, s, s, 3)``. The axis parts
    are computed for every row and column once; a block's coordinates are its ``s`` row
    parts plus its ``s`` column parts, broadcast (no per-pixel gather)."""
    _check(net)
    k, s = rows.shape
    parts = None
    if net.coord is not None:
        parts = _axis_parts(net, pixel_centres(h, device=rgb.device), pixel_centres(w, device=rgb.device))
    rows, cols = rows.long(), cols.long()
    per = s * s
    band_blocks = max(1, band_pixels // per)

    def coordinates(start: int, n: int, dst: torch.Tensor) -> None:
        first, count = start // per, n // per
        r = parts[0][rows[first:first + count]]  # (count, s, F)
        c = parts[1][cols[first:first + count]]
        dst.view(count, s, s, -1).copy_(r[:, :, None, :] + c[:, None, :, :])

    return _run(net, rgb.reshape(-1, 3), coordinates, band_blocks * per, dtype).reshape(k, s, s, 3)


def _check(net: ITMNet) -> None:
    if not separable(net):
        raise ValueError(f"the split evaluation needs Fourier coordinates, not {net.config.coord_encoding!r}")


def _run(net: ITMNet, rgb: torch.Tensor, coordinates, band: int, dtype: torch.dtype) -> torch.Tensor:
    """The network after its coordinate layer's pre-activation, on bands of ``band`` pixels:
    ``coordinates(start, n, dst)`` writes the band's coordinate pre-activations into ``dst``."""
    device = rgb.device
    rgb = rgb.float()
    total = rgb.shape[0]
    layers = [m for m in net.fusion if isinstance(m, nn.Linear)]
    weights = [(m.weight.detach().to(dtype).T.contiguous(), m.bias.detach().to(dtype)) for m in layers]
    colour = net.rgb[0]
    c_weight, c_bias = colour.weight.detach().float().T.contiguous(), colour.bias.detach().float()
    coord = net.coord[0].out_features if net.coord is not None else 0
    out = torch.empty((total, 3), dtype=torch.float32, device=device)
    feats = torch.empty((max(1, min(total, band)), coord + colour.out_features), dtype=dtype, device=device)
    for start in range(0, total, band):
        n = min(band, total - start)
        f = feats[:n]
        if coord:
            coordinates(start, n, f[:, :coord])
        f[:, coord:].copy_(torch.addmm(c_bias, rgb[start:start + n], c_weight))
        h = f.relu_()
        for i, (w, bias) in enumerate(weights):
            h = torch.addmm(bias, h, w)
            if i < len(weights) - 1:
                h.relu_()
        out[start:start + n] = h
    return out


def pixel_centres(n: int, indices=None, device=None) -> torch.Tensor:
    """Pixel centres in [-1, 1] of ``n`` rows (or columns), at ``indices`` (all by default)."""
    idx = torch.arange(n, device=device) if indices is None else torch.as_tensor(indices, device=device)
    return (idx.float() + 0.5) / n * 2 - 1
