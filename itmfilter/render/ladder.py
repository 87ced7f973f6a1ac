"""The quality ladder: cheaper ways to run a frame's network, for real time on CPUs.

The full network costs ~9k MAC per pixel: 1080p takes ~116 ms in bf16 on 2 cores, so
24 fps (41.7 ms a frame) is out of reach at full resolution (docs/ladder-timing.md). The
cheaper rungs evaluate the network on an area-averaged, ``downscale``-times smaller SDR
picture and carry its effect back to full resolution as a *gain map* in linear light,
as ISO 21496-1 / Ultra HDR gain maps do:

    P        = SDR placed per BT.2408: BT.1886 (2.4 power), 203 cd/m2 white, BT.709 ->
               BT.2020, in cd/m2 (full resolution and low resolution alike)
    g_low    = (HDR_low + k) / (P_low + k)         HDR_low = the network at low res, cd/m2
    HDR_full = (P_full + k) * bilinear_up(g_low) - k, then PQ-encoded

``k`` (:data:`GAIN_OFFSET_NITS`) is the gain maps' offset: it keeps the ratio finite at
black and makes a flat region exact whatever its level. The gain is per R, G, B channel
(``gain="rgb"``, the default) or one gain on BT.2020 luminance (``gain="luma"``).

The gain-map measurement (the ``rgb``/``luma`` modes; the default ``prior`` mode
and a real 1080p picture are measured in ``docs/ladder-timing.md``, players/README.md).
On the built-in sample (``itmfilter/assets/sample.exr``, 480x270, SDR made with
``get_curve("bt2446a").forward``, the blind init adapted to it with the default
:class:`~itmfilter.model.adapt.AdaptOptions`, both upscaled bilinearly to 1080p; fp32;
PU21-PSNR in dB):

    rung      rgb gain: vs full / vs master     luma gain: vs full / vs master
    full            inf / 46.81                        inf / 46.81
    half          63.87 / 46.97                      36.68 / 36.26
    quarter       57.33 / 47.13                      36.67 / 36.27
    eighth        48.60 / 45.80                      36.48 / 36.17

Per channel wins by ~10 dB against the master: the network's work on this picture is
mostly colour (BT.2446a folds BT.2020 colours into BT.709; the network unfolds them), and
a luminance gain keeps the SDR's chromaticity. (The same at 2160p: rgb 72.6 / 62.9 /
57.2 dB vs full.) Half and quarter are slightly *closer to the master* than full here:
the area average smooths the network's own pixel noise.

With the untrained network (the BT.2408 prior alone) every gain is 1 and every rung is
exact; the rungs only lose the network's *spatial detail* finer than ``downscale``
pixels, which is the trade.

The guided rungs (``guided-half`` ... ``guided-eighth``) take a different road, as
bilateral-grid slicing does in HDRNet: the network runs on real pixels, one in every
``step x step`` block (``step`` = the rung's ``downscale``), and each node of a grid with
a spacing of ``2 step`` pixels fits, by ridge-regularised weighted least squares over the
4 x 4 samples around it, an affine map from the guide (R', G', B', a knee that rises
from SDR luma 0.9 to white, 1) to what the network adds to its own per-pixel prior (PQ).
At full resolution the prior runs per pixel and the two node rows and columns around each
pixel are lerped into its transform (:func:`guided_coefficients`, :func:`guided_fit`).
Edges inside a cell keep their own colours' correction, which the plain rungs (the
network on the cell's mean colour) lose. Chosen with a torch prototype during
development (not kept in the repository; the shipped rungs' own figures are in
docs/ladder-timing.md) on the 1080p spatially varying grade against the full network
(PU21-PSNR, ``step`` 8): an affine map in R'G'B' 44.2 dB, with the
knee 45.5 (a cubic R'G'B' 45.1; the prior's PQ as guide 41.1; 8 luma bins as a full
bilateral grid 42.3 at twice the cells' size, no better at the same size); node spacing
2 step 44.2 against 4 step 42.0 and 1 step 43.8; the fit in PQ or as a linear-light gain:
the same within 0.1 dB; Catmull-Rom instead of bilinear slicing: the same. The plain
``prior`` rung at the same network cost (``eighth``): 39.1 dB.

On a CPU the player runs the gain and guided rungs through :mod:`itmfilter.render.fastpath`
(the same formulas fused into one pass over the Y'CbCr planes); this module is the reference.

Layout: SDR ``(H, W, 3)`` BT.709 R'G'B' code values [0, 1] float32 in, PQ BT.2020
R'G'B' code values [0, 1] float32 numpy ``(H, W, 3)`` out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from itmfilter.colour.primaries import LUMINANCE_WEIGHTS_BT2020, MATRIX_BT709_TO_BT2020
from itmfilter.colour.tensor import eotf_inverse_st2084_, eotf_st2084
from itmfilter.colour.transfer import SDR_WHITE_NITS_BT2408
from itmfilter.model.inference import (
    CHUNK_PIXELS,
    CUDA_CHUNK_PIXELS,
    predict_pq,
    resolve_precision,
)
from itmfilter.model.net import ITMNet
from itmfilter.model.separable import evaluate_blocks, evaluate_grid, pixel_centres, separable
from itmfilter.quality.metrics import psnr_pu21

GAIN_OFFSET_NITS = 203.0 / 64
"""Gain offset k in cd/m2: 1/64 of SDR white, the Ultra HDR default offset (1/64)."""

GAIN_MODES = ("rgb", "luma", "prior")

# BT.2020-2 luminance weights for linear RGB.
_LUMA_2020 = tuple(float(k) for k in LUMINANCE_WEIGHTS_BT2020)


@dataclass(frozen=True)
class Rung:
    """One rung: ``downscale`` 1 evaluates the network on every pixel. ``guided``: the
    network runs on every ``downscale``-th pixel each way and a per-cell affine colour
    transform carries it to every pixel (:func:`guided_coefficients`); otherwise on the
    area-averaged picture, carried back as a gain map or a residual (module docstring)."""

    name: str
    downscale: int
    description: str
    guided: bool = False


RUNGS: tuple[Rung, ...] = (
    Rung("full", 1, "network on every pixel"),
    Rung("guided-half", 2, "network on 1 pixel in 4, per-cell affine colour transform", True),
    Rung("guided-quarter", 4, "network on 1 pixel in 16, per-cell affine colour transform", True),
    Rung("guided-sixth", 6, "network on 1 pixel in 36, per-cell affine colour transform", True),
    Rung("guided-eighth", 8, "network on 1 pixel in 64, per-cell affine colour transform", True),
    Rung("half", 2, "network at 1/2 resolution (1/4 of the pixels), gain map upsampled"),
    Rung("quarter", 4, "network at 1/4 resolution (1/16 of the pixels), gain map upsampled"),
    Rung("eighth", 8, "network at 1/8 resolution (1/64 of the pixels), gain map upsampled"),
    Rung("sixteenth", 16, "network at 1/16 resolution (1/256 of the pixels), gain map upsampled"),
)
"""Every rung, best first. The guided rungs come before the gain-map rungs of the same network cost:
on the spatially varying grade they are 0.8-1.8 dB closer to the master at 1080p
(docs/ladder-timing.md); ``half`` and ``quarter`` remain for comparison and ``--rung``."""

RUNG_NAMES = tuple(r.name for r in RUNGS)

LADDER: tuple[str, ...] = ("full", "guided-half", "guided-quarter", "guided-sixth", "guided-eighth",
                           "eighth", "sixteenth")
"""The rungs ``auto`` and :class:`RungController` walk, best first, each cheaper than the
one before it (the network on 1, 1/4, 1/16, 1/36, 1/64, 1/64 (no fit), 1/256 of the
pixels). The plain ``half`` and ``quarter`` are not on it: the guided rung of the same
network cost is better on both grades measured."""

GRID_LADDER: tuple[str, ...] = ("full", "guided-quarter", "guided-sixth", "guided-eighth")
"""The rungs of a grid shot's frames (format 1.4+), best first. A grid model costs a few
hundred multiply-adds a pixel, so its ``guided-half`` (a fit per 4 x 4 pixels and probes in
a fifth of the blocks) costs more than the model on every pixel, and the plain rungs
have no road of their own (:func:`itmfilter.render.frame.grid_step`)."""


def get_rung(rung: str | Rung) -> Rung:
    """The :class:`Rung` called ``rung`` (a Rung passes through)."""
    if isinstance(rung, Rung):
        return rung
    for r in RUNGS:
        if r.name == rung:
            return r
    raise ValueError(f"unknown rung {rung!r}; expected one of {', '.join(RUNG_NAMES)}")


def _place_sdr_planar(sdr: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` BT.709 R'G'B' [0, 1] -> ``(3, H, W)`` linear BT.2020 cd/m2 (BT.2408)."""
    linear = sdr.clamp(0.0, 1.0).pow(2.4)
    m = torch.tensor(MATRIX_BT709_TO_BT2020.tolist(), dtype=linear.dtype, device=linear.device)
    placed = torch.einsum("ij,jhw->ihw", m * SDR_WHITE_NITS_BT2408, linear)
    return placed


def _area_downscale(planar: torch.Tensor, d: int) -> torch.Tensor:
    """Box-average ``(3, H, W)`` by ``d``; edges replicated up to a multiple of ``d``."""
    _, h, w = planar.shape
    ph, pw = -h % d, -w % d
    x = planar.unsqueeze(0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, d).squeeze(0)


def _low_res_grid(h: int, w: int, d: int, device) -> torch.Tensor:
    """Centres of the ``d x d`` cells in the full picture's [-1, 1] coordinates, ``(N, 2)``."""
    lh, lw = -(-h // d), -(-w // d)
    ys = ((torch.arange(lh, device=device, dtype=torch.float32) + 0.5) * d) / h * 2 - 1
    xs = ((torch.arange(lw, device=device, dtype=torch.float32) + 0.5) * d) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


@torch.no_grad()
def _evaluate(net: ITMNet, rgb: torch.Tensor, xy: torch.Tensor, dtype: torch.dtype,
              chunk: int | None = None) -> torch.Tensor:
    """The network over ``(N, 3)`` pixels in chunks (see reconstruct.py for why)."""
    if chunk is None:
        chunk = CUDA_CHUNK_PIXELS if rgb.device.type == "cuda" else CHUNK_PIXELS
    out = torch.empty_like(rgb)
    autocast = torch.autocast(rgb.device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        for start in range(0, rgb.shape[0], chunk):
            stop = start + chunk
            out[start:stop] = net(rgb[start:stop], xy[start:stop]).float()
    return out


BAND_ROWS = 32
"""Rows per band of the full-resolution pass: a 1080p band's scratch (~0.7 MB) stays in
cache, and in-place ops on it avoid allocating a fresh 25 MB tensor per elementwise op,
which made the whole-frame version 3-5x slower here."""


def _low_res_gain(net, x, d, device, precision, gain, k) -> torch.Tensor:
    """The gain map ``(3 or 1, lh, lw)`` of ``(H, W, 3)`` SDR ``x`` at downscale ``d``."""
    h, w, _ = x.shape
    sdr_low = _area_downscale(x.permute(2, 0, 1), d)  # (3, lh, lw) code values
    return gain_map(net, sdr_low, h, w, d, device, precision, gain, k)


def _net_at_cells(net, sdr_low: torch.Tensor, h: int, w: int, d: int, device, precision: str):
    """``(rgb_low (N, 3), pq_low (N, 3))``: the network at the centres of the ``d x d``
    cells of an ``h x w`` picture, fed the cells' mean SDR ``sdr_low`` ``(3, lh, lw)``."""
    dtype = resolve_precision(precision, device)
    rgb_low = sdr_low.permute(1, 2, 0).reshape(-1, 3).contiguous()
    return rgb_low, _evaluate(net, rgb_low, _low_res_grid(h, w, d, device), dtype)


@torch.no_grad()
def gain_map(net, sdr_low: torch.Tensor, h: int, w: int, d: int, device, precision: str = "auto",
             gain: str = "rgb", k: float = GAIN_OFFSET_NITS) -> torch.Tensor:
    """The gain map ``(3 or 1, lh, lw)`` from the SDR already area-averaged over ``d x d``
    cells, ``(3, lh, lw)`` R'G'B' of an ``h x w`` picture: the network at the cells'
    centres over the SDR placed per BT.2408, both offset by ``k`` cd/m2."""
    lh, lw = sdr_low.shape[1:]
    _, pq_low = _net_at_cells(net, sdr_low, h, w, d, device, precision)
    hdr_low = eotf_st2084(pq_low.clamp(0.0, 1.0)).reshape(lh, lw, 3).permute(2, 0, 1)
    placed_low = _place_sdr_planar(sdr_low)
    if gain == "luma":
        luma = torch.tensor(_LUMA_2020, device=device).view(3, 1, 1)
        hdr_y = (hdr_low * luma).sum(0, keepdim=True)
        return (hdr_y + k) / ((placed_low * luma).sum(0, keepdim=True) + k)
    return (hdr_low + k) / (placed_low + k)


@torch.no_grad()
def residual_map(net, sdr_low: torch.Tensor, h: int, w: int, d: int, device, precision: str = "auto") -> torch.Tensor:
    """``(3, lh, lw)`` PQ residual of the network over its own per-pixel prior at the cell
    centres: ``net(sdr_low, xy) - net.prior(sdr_low)`` (see :func:`gain_mode`)."""
    lh, lw = sdr_low.shape[1:]
    rgb_low, pq_low = _net_at_cells(net, sdr_low, h, w, d, device, precision)
    return (pq_low - net.prior(rgb_low)).reshape(lh, lw, 3).permute(2, 0, 1).contiguous()


def gain_mode(net: ITMNet, gain: str = "auto") -> str:
    """``auto``: ``prior`` for networks with a per-picture polynomial prior (the default
    config), else ``rgb``.

    ``prior`` rungs keep the per-pixel part of the mapping exact and upsample only what
    the network adds: PQ_full = prior(SDR_full) + bilinear_up(net(SDR_low) - prior(SDR_low)).
    The polynomial is a function of each pixel's own colour (66 multiply-adds), so a
    tone curve's steep per-pixel inverse survives at every rung; the residual is the
    smooth spatial correction. A gain map instead assumes every pixel of a cell needs the
    same ratio, which a non-linear curve breaks at every edge inside a cell.
    """
    if gain == "auto":
        return "prior" if net.config.prior == "mmr3" else "rgb"
    if gain == "prior" and net.config.prior != "mmr3":
        raise ValueError(f"gain mode 'prior' needs an mmr3-prior network, not prior={net.config.prior!r}")
    return gain


def _apply_prior_rung(net, x, d, device, precision, encode_pq):
    """Prior rung (:func:`gain_mode`): the network's PQ residual over its prior, upsampled,
    added to the prior at full resolution; ``(H, W, 3)`` PQ or cd/m2."""
    h, w, _ = x.shape
    r = residual_map(net, _area_downscale(x.permute(2, 0, 1), d), h, w, d, device, precision)
    up = F.interpolate(r.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False)[0]
    out = torch.empty((h, w, 3), dtype=torch.float32, device=device)
    rows = h if device.type == "cuda" else BAND_ROWS
    for top in range(0, h, rows):
        band = slice(top, min(h, top + rows))
        pq = net.prior(x[band].clamp(0.0, 1.0).reshape(-1, 3)).reshape(-1, w, 3).clamp_(0.0, 1.0)
        pq.add_(up[:, band].permute(1, 2, 0)).clamp_(0.0, 1.0)
        out[band] = pq if encode_pq else eotf_st2084(pq)
    return out


# --- guided rungs ---------------------------------------------------------------------------

GUIDED_RIDGE = 1e-4
"""Ridge on the four slopes of each cell's fit, relative to the cell's sample weight: a cell
whose samples barely vary in colour keeps a near-constant residual. Chosen on the 1080p
spatially varying grade (1e-3: -0.4 dB, 1e-5: +0.1 dB at ``guided-eighth`` but less stable)."""

GUIDED_KNEE = 0.9
"""SDR luma (BT.709 Y' code value) above which the fifth guide feature rises from 0 to 1 at
white: the network lifts near-white and clipped pixels far above what an affine function
of R'G'B' fitted to the rest of a cell predicts (+0.5 to +1.5 dB on the spatially varying
grade; nothing on a global curve)."""

GUIDE_FEATURES = 5
_LUMA_709 = (0.2126, 0.7152, 0.0722)
GUIDED_SPLAT = (0.25, 0.75, 0.75, 0.25)
"""Tent weights of samples ``2i-2 .. 2i+1`` (in sample steps) on node ``i``: nodes sit every
two samples, half a sample before an even one, so each node draws from the 4 x 4 samples
within one node spacing (each sample's weights on its nodes sum to 1 each way)."""


def guided_features(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` SDR R'G'B' [0, 1] -> ``(..., 5)`` guide: R', G', B', the knee
    ``max(0, (Y' - GUIDED_KNEE) / (1 - GUIDED_KNEE))`` and 1."""
    y = rgb[..., 0:1] * _LUMA_709[0] + rgb[..., 1:2] * _LUMA_709[1] + rgb[..., 2:3] * _LUMA_709[2]
    knee = ((y - GUIDED_KNEE) / (1.0 - GUIDED_KNEE)).clamp_(min=0.0)
    return torch.cat([rgb, knee, torch.ones_like(knee)], dim=-1)


def guided_samples(n: int, step: int) -> np.ndarray:
    """Indices of the sampled rows (or columns) of ``n``: ``step // 2 + k * step``."""
    return np.arange(step // 2, n, step)


def guided_nodes(n: int, step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(i0, weight, nodes)``: for each of ``n`` rows (or columns) the node below it and the
    weight of the node after it, and how many nodes there are. Node ``i`` lies at pixel
    ``step // 2 + (2 i - 0.5) * step`` (half a sample before sample ``2 i``; for even
    ``step`` that is pixel index ``2 i step``), so nodes are ``2 step`` pixels apart."""
    u = (np.arange(n, dtype=np.float64) - step // 2) / (2 * step) + 0.25
    i0 = np.floor(u).astype(np.int64)
    nodes = int(i0[-1]) + 2
    return i0, (u - i0).astype(np.float32), nodes


def _splat(x: torch.Tensor, nodes: int, dim: int) -> torch.Tensor:
    """Tent-weighted sums of ``x``'s samples along ``dim`` (2 or 3 of ``(C, 1, A, B)``) onto ``nodes``."""
    k = torch.tensor(GUIDED_SPLAT, dtype=x.dtype, device=x.device)
    n = x.shape[dim]
    tail = max(0, 2 * nodes + 2 - (n + 2))
    if dim == 2:
        x = F.pad(x, (0, 0, 2, tail))
        return F.conv2d(x, k.view(1, 1, 4, 1), stride=(2, 1))[:, :, :nodes]
    x = F.pad(x, (2, tail, 0, 0))
    return F.conv2d(x, k.view(1, 1, 1, 4), stride=(1, 2))[:, :, :, :nodes]


@torch.no_grad()
def guided_fit(rgb: torch.Tensor, resid: torch.Tensor, h: int, w: int, step: int,
               ridge: float = GUIDED_RIDGE) -> torch.Tensor:
    """Per-node affine colour transforms ``(gh, gw, 5, 3)`` float32 from the samples.

    ``rgb``: ``(A, B, 3)`` SDR R'G'B' at the sampled pixels of an ``h x w`` picture (rows
    and columns :func:`guided_samples`), ``resid``: ``(A, B, 3)`` what to carry (PQ).
    Each node solves weighted least squares ``resid ~ guided_features(rgb) @ C`` over
    the samples within one node spacing (tent weights, as a bilateral grid's splat, but on
    x and y only), with :data:`GUIDED_RIDGE` on the slopes; a node without samples takes
    the picture's own fit. In float64 (the normal equations of cubes of [0, 1] values).
    """
    (_, gh), (_, gw) = guided_nodes(h, step)[1:], guided_nodes(w, step)[1:]
    g = guided_features(rgb.double())  # (A, B, 5)
    r = resid.double()
    k = GUIDE_FEATURES
    iu, ju = torch.triu_indices(k, k)
    prods = torch.cat([(g[..., iu] * g[..., ju]), (g[..., :, None] * r[..., None, :]).flatten(-2)], dim=-1)
    sums = _splat(_splat(prods.permute(2, 0, 1).unsqueeze(1), gh, 2), gw, 3)[:, 0].permute(1, 2, 0)
    gram = torch.zeros(gh, gw, k, k, dtype=torch.float64, device=rgb.device)
    gram[..., iu, ju] = sums[..., : iu.numel()]
    gram[..., ju, iu] = sums[..., : iu.numel()]
    rhs = sums[..., iu.numel():].reshape(gh, gw, k, 3)
    weight = gram[..., k - 1, k - 1]
    # the picture's own fit (unweighted): the anchor of nodes with no samples
    flat_g, flat_r = g.reshape(-1, k), r.reshape(-1, 3)
    total = flat_g.T @ flat_g
    slope_ridge = torch.zeros(k, dtype=torch.float64, device=rgb.device)
    slope_ridge[: k - 1] = ridge
    anchor = 1e-6 * flat_g.shape[0] / (gh * gw) + 1e-12  # tiny: decides only where a node has no samples
    whole = torch.linalg.solve(total + torch.diag(slope_ridge * total[k - 1, k - 1] + anchor), flat_g.T @ flat_r)
    eye = torch.eye(k, dtype=torch.float64, device=rgb.device)
    system = gram + torch.diag_embed(slope_ridge * weight[..., None]) + anchor * eye
    return torch.linalg.solve(system, rhs + anchor * whole).float()


def _guided_base(net: ITMNet, rgb: torch.Tensor) -> torch.Tensor:
    """The per-pixel part a guided rung keeps exact: the network's prior in PQ, clipped
    to [0, 1] (zeros for a network without a prior)."""
    base = net.prior(rgb)
    return torch.zeros_like(rgb) if base is None else base.clamp(0.0, 1.0)


@torch.no_grad()
def guided_coefficients(net: ITMNet, rgb_samples: torch.Tensor, h: int, w: int, step: int, device,
                        precision: str = "auto", fit: Callable | None = None, with_residual: bool = False):
    """A guided rung's transforms ``(gh, gw, 5, 3)`` for an ``h x w`` picture.

    ``rgb_samples``: ``(A, B, 3)`` SDR R'G'B' [0, 1] of the pixels at rows
    ``guided_samples(h, step)`` and columns ``guided_samples(w, step)`` (real pixels, not
    cell means: the fit needs the colours a cell holds). The network runs there (at the
    pixel centres' coordinates); what it adds to its prior (PQ, both clipped to [0, 1])
    is fitted per node by :func:`guided_fit`, or by ``fit`` (same arguments, numpy in and
    out: the fused pass's numba twin), which then gives a numpy array.
    ``with_residual``: ``(transforms, residual)``, the samples' ``(A, B, 3)`` residual (torch)
    beside them, for :func:`refine_blocks`.
    """
    dtype = resolve_precision(precision, device)
    a, b, _ = rgb_samples.shape
    ys = pixel_centres(h, guided_samples(h, step), device=device)
    xs = pixel_centres(w, guided_samples(w, step), device=device)
    rgb = rgb_samples.reshape(-1, 3).to(device=device, dtype=torch.float32).contiguous()
    if device.type == "cpu" and separable(net):
        # the coordinate layer split by axis (rows and columns of samples): ~2.5x faster here;
        # the prior, computed once, is both what the network adds to and the fit's base
        out = evaluate_grid(net, rgb.reshape(a, b, 3), ys, xs, dtype=dtype)
        prior = net.prior(rgb)
        if prior is None:
            resid = out.clamp_(0.0, 1.0)
        else:
            resid = out.add_(prior).clamp_(0.0, 1.0).sub_(prior.clamp_(0.0, 1.0))
    else:
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        out = _evaluate(net, rgb, torch.stack([gx, gy], dim=-1).reshape(-1, 2), dtype).clamp_(0.0, 1.0)
        resid = out - _guided_base(net, rgb)
    resid = resid.reshape(a, b, 3)
    if fit is not None:
        coef = fit(rgb.reshape(a, b, 3).cpu().numpy(), resid.cpu().numpy(), h, w, step)
    else:
        coef = guided_fit(rgb.reshape(a, b, 3), resid, h, w, step)
    return (coef, resid) if with_residual else coef


def node_lerp(n: int, step: int, nodes: int, idx: np.ndarray | None = None):
    """``(lo, hi, weight)`` numpy: for each of ``n`` rows (or columns; only those at ``idx``)
    the two nodes around it, clipped to the ``nodes`` there are, and the weight of ``hi``
    (:func:`guided_nodes`)."""
    i0, wt = guided_nodes(n, step)[:2]
    if idx is not None:
        i0, wt = i0[idx], wt[idx]
    return np.minimum(i0, nodes - 1), np.minimum(i0 + 1, nodes - 1), wt


def _lerp_index(n: int, step: int, nodes: int, device, idx: np.ndarray | None = None):
    return tuple(torch.from_numpy(v).to(device) for v in node_lerp(n, step, nodes, idx))


GUIDED_REFINE_SHARE = 0.03
"""Share of a guided rung's ``step x step`` blocks where the full network replaces the
fitted transform: the blocks the transforms fit worst, by their samples and by their
probes (:func:`probe_pixels`). Where a cell's colours are not affine in the guide (clipped
highlights, sharp colour edges under a spatially varying grade) the error concentrates in
few blocks. On the spatially varying grade against the master (``benchmarks/ladder_timing.py
--refine-shares 0,0.01,0.02,0.03``, docs/ladder-timing.md), 1080p: guided-quarter 41.93 ->
42.67 dB, guided-sixth 41.47 -> 42.62 (the full network: 42.77); 640x360: guided-half
41.13 -> 42.22 (full: 42.20). The first per cent carries most of the gain (guided-sixth
42.43 / 42.56 / 42.62 dB at 1 / 2 / 3 %). The global curve gains nothing and loses
nothing (its error is below :data:`GUIDED_REFINE_TOL`)."""

GUIDED_REFINE_SHARES = {8: 0.02}
"""Per-step exceptions to :data:`GUIDED_REFINE_SHARE`. ``guided-eighth`` (step 8), the rung that
keeps 1080p24 on 2 cores, refines 2 %, chosen by its samples alone (no probes:
:data:`PROBE_SHARES`): each per cent of its blocks is the full network on ~21k pixels, ~5 ms
a 1080p frame here, so 3 % more than tripled its network work. On the 1080p spatially varying
grade 41.05 -> 41.83 dB at 2 % (full network 42.77; with probes it would be 42.37, at a cost
the player cannot pay on these cores)."""

GUIDED_REFINE_TOL = 1.0 / 1023
"""A block is refined only where its samples' fit error exceeds one 10-bit PQ code."""


@torch.no_grad()
def guided_sample_error(rgb: torch.Tensor, resid: torch.Tensor, coef, h: int, w: int, step: int) -> torch.Tensor:
    """How far the fitted transforms miss the network at its own samples: ``(A, B)`` largest
    absolute PQ error over R, G, B of ``guided_features(rgb) @ lerped transform - resid``
    (the samples' transforms interpolated as the per-pixel pass interpolates them)."""
    rows, cols = guided_samples(h, step), guided_samples(w, step)
    r = np.repeat(rows, cols.size)
    c = np.tile(cols, rows.size)
    err = guided_point_error(rgb.reshape(-1, 3), resid.reshape(-1, 3), coef, r, c, h, w, step)
    return err.reshape(rows.size, cols.size)


@torch.no_grad()
def guided_point_error(rgb: torch.Tensor, resid: torch.Tensor, coef, rows: np.ndarray, cols: np.ndarray,
                       h: int, w: int, step: int) -> torch.Tensor:
    """How far the fitted transforms miss ``resid`` ``(N, 3)`` (what the network adds to its
    clipped prior, PQ) at ``N`` pixels ``(rows, cols)`` of SDR ``rgb`` ``(N, 3)``: ``(N,)`` largest
    absolute error over R, G, B, each pixel's transform interpolated as the per-pixel pass does."""
    coef = torch.as_tensor(coef, dtype=torch.float32)
    gh, gw = coef.shape[:2]
    y0, y1, wy = _lerp_index(h, step, gh, coef.device, np.asarray(rows))
    x0, x1, wx = _lerp_index(w, step, gw, coef.device, np.asarray(cols))
    top = torch.lerp(coef[y0, x0], coef[y0, x1], wx.view(-1, 1, 1))
    bottom = torch.lerp(coef[y1, x0], coef[y1, x1], wx.view(-1, 1, 1))
    c = torch.lerp(top, bottom, wy.view(-1, 1, 1))  # (N, 5, 3)
    # a product and a sum, not einsum: its batched matrix product of N tiny matrices left
    # threads busy in the player afterwards (every rung slowed to ~10 fps until the end)
    pred = (guided_features(rgb.float().to(coef.device))[:, :, None] * c).sum(dim=1)
    return (pred - resid.float().to(coef.device)).abs().amax(dim=-1)


PROBE_SHARE = 0.1
"""Share of a guided rung's blocks that get a probe: the brightest ones (by their largest Y').
10 %: the same refinement as 20 % or every block on the pictures measured (:func:`probe_pixels`)
at half the network work of 20 % (a probe costs the network at one pixel)."""

PROBE_SHARES = {8: 0.0}
"""Per-step exceptions to :data:`PROBE_SHARE`. ``guided-eighth``, the rung that keeps 1080p24 on
2 cores, has no probes: inside the player (decoder and mpv on the same cores) the probes' few
thousand network evaluations cost ~6 ms a 1080p frame (filter 34 -> 28 frames/s at a 1 %
refinement), and a real 10 s clip then dropped 2-3 frames a run where it dropped none; it keeps
the samples' score and refines 2 % (:data:`GUIDED_REFINE_SHARES`)."""


def probe_pixels(luma, h: int, w: int, step: int, share: float | None = None) -> tuple[np.ndarray, ...]:
    """Probes of the brightest ``share`` of the ``step x step`` blocks: ``(blocks, rows,
    cols)`` int64, the blocks' raster indices (of ``nbh * nbw``) and each one's pixel of the
    largest ``luma`` ``(H, W)`` (the SDR's Y' codes, or its R'G'B''s BT.709 luma), the
    first in raster order among equals. Blocks on the right and bottom edges hold only the
    picture's own pixels.

    Why there: a block's transform is fitted to the network at one sample in it, and it
    fails where the block holds colours the samples around it do not, above all the
    clipped highlights of a spatially varying grade, where the network puts back detail
    no affine map of the SDR has. Scoring blocks by the fit's error at such a pixel
    (:func:`guided_probe_error`) as well as at their samples finds most of them. Measured
    on the built-in picture's 1080p spatially varying grade, ``guided-eighth`` refining 2 %
    of its blocks: 41.83 dB by the samples alone, 42.37 with a probe in every block, 42.37
    in the brightest 20 %, 42.39 at 10 % (42.15 at 5 %; the full network 42.77; refining
    the 2 % of largest true error, which no player knows: 42.44); 640x360 ``guided-half``
    at 2 %: 41.73, 42.18, 42.18 and 42.17 (full 42.20). Probing the blocks of largest contrast
    (brightest pixel against the sample) instead: 42.11 at 20 %; the darkest pixel as a
    second probe: +0.01 dB.
    """
    share = probe_share(step) if share is None else share
    if share <= 0:  # no probes at this step: no pass over the picture
        return (np.zeros(0, np.int64),) * 3
    if isinstance(luma, torch.Tensor):
        lum = luma.detach().to(device="cpu", dtype=torch.float32)
    else:
        lum = torch.from_numpy(np.asarray(luma, dtype=np.float32))  # codes up to 1023: exact
    nbh, nbw = -(-h // step), -(-w // step)
    # pad with -inf past the edges, then the argmax of each block's step*step pixels
    padded = torch.full((nbh * step, nbw * step), float("-inf"), dtype=lum.dtype)
    padded[:h, :w] = lum[:h, :w]
    blocks = padded.reshape(nbh, step, nbw, step).permute(0, 2, 1, 3).reshape(nbh, nbw, step * step)
    best, flat = blocks.max(dim=-1)  # torch: the first of equal maxima
    bi, bj = np.meshgrid(np.arange(nbh), np.arange(nbw), indexing="ij")
    rows = (bi * step + flat.numpy() // step).ravel().astype(np.int64)
    cols = (bj * step + flat.numpy() % step).ravel().astype(np.int64)
    chosen = brightest_blocks(best.numpy().ravel(), share)
    return chosen, rows[chosen], cols[chosen]


def probe_share(step: int) -> float:
    """The share of blocks probed at ``step`` (:data:`PROBE_SHARES`, else :data:`PROBE_SHARE`)."""
    return PROBE_SHARES.get(step, PROBE_SHARE)


def brightest_blocks(maxima: np.ndarray, share: float = PROBE_SHARE) -> np.ndarray:
    """Raster indices (sorted) of the ``share`` of blocks with the largest ``maxima``
    ``(nbh * nbw,)``; one rule for the reference and the fused path, so both probe the
    same blocks."""
    maxima = np.asarray(maxima, dtype=np.float32)
    if share <= 0:
        return np.zeros(0, np.int64)
    k = int(min(maxima.size, max(1, round(share * maxima.size))))
    return np.sort(np.argpartition(-maxima, k - 1)[:k]).astype(np.int64)


def refine_blocks(error, h: int, w: int, step: int, share: float | None = None,
                  tol: float = GUIDED_REFINE_TOL, probe=None) -> np.ndarray:
    """Which ``step x step`` blocks of an ``h x w`` picture the full network redoes:
    ``(ceil(h / step), ceil(w / step))`` bool. A block's score is the largest sample error
    (:func:`guided_sample_error`) among its own sample and the 8 around it (the error of a
    badly fitted cell shows at its edges' samples too); the ``share`` of blocks with the
    highest scores above ``tol`` are chosen (``None``: :data:`GUIDED_REFINE_SHARES` for this
    ``step``, else :data:`GUIDED_REFINE_SHARE`). Blocks
    past the last sample take its score. ``probe``: each block's error at its probe pixel
    (:func:`guided_probe_error`, ``nbh * nbw`` in raster order); a block scores the larger."""
    share = GUIDED_REFINE_SHARES.get(step, GUIDED_REFINE_SHARE) if share is None else share
    nbh, nbw = -(-h // step), -(-w // step)
    e = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=np.float32)
    # 3 x 3 maximum (edge samples count once), then blocks past the last sample take its score
    p = np.pad(e, 1, mode="edge")
    score = np.maximum.reduce([p[i:i + e.shape[0], j:j + e.shape[1]] for i in range(3) for j in range(3)])
    score = score[np.minimum(np.arange(nbh), e.shape[0] - 1)][:, np.minimum(np.arange(nbw), e.shape[1] - 1)]
    if probe is not None:
        p = np.asarray(probe.cpu() if isinstance(probe, torch.Tensor) else probe, dtype=np.float32)
        score = np.maximum(score, p.reshape(nbh, nbw))
    flat = score.ravel()
    count = int(min(flat.size, round(share * flat.size)))
    mask = np.zeros(flat.size, dtype=bool)
    if count > 0:
        top = np.argpartition(flat, flat.size - count)[flat.size - count:]
        mask[top[flat[top] > tol]] = True
    return mask.reshape(nbh, nbw)


def refine_block_list(blocks: np.ndarray, h: int, w: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen ``blocks`` as a list: ``(index, rows, cols)``: ``index`` ``(nbh, nbw)``
    int32, each block's place in the list or -1; ``rows``, ``cols`` ``(K, step)`` int64, the
    pixel rows and columns of each listed block (past the picture's edge: its last row or
    column, computed and never shown)."""
    bi, bj = np.nonzero(blocks)
    index = np.full(blocks.shape, -1, np.int32)
    index[bi, bj] = np.arange(bi.size, dtype=np.int32)
    d = np.arange(step)
    rows = np.minimum(bi[:, None] * step + d, h - 1).astype(np.int64)
    cols = np.minimum(bj[:, None] * step + d, w - 1).astype(np.int64)
    return index, rows, cols


@torch.no_grad()
def residual_on_blocks(net: ITMNet, rgb: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: int, w: int,
                       dtype: torch.dtype) -> torch.Tensor:
    """What ``net`` adds to its prior on the listed blocks (:func:`refine_block_list`) of an
    ``h x w`` picture with SDR ``rgb`` ``(K, s, s, 3)``: ``(K, s, s, 3)`` float32 (the split
    evaluation where the coordinates allow it, else the network's forward less its prior)."""
    if separable(net):
        return evaluate_blocks(net, rgb, rows, cols, h, w, dtype=dtype)
    k, s = rows.shape
    ry = pixel_centres(h, rows, device=rows.device)[:, :, None].expand(k, s, s)
    cx = pixel_centres(w, cols, device=cols.device)[:, None, :].expand(k, s, s)
    xy = torch.stack([cx, ry], dim=-1).reshape(-1, 2)
    flat = rgb.reshape(-1, 3).float()
    out = _evaluate(net, flat, xy, dtype)
    prior = net.prior(flat)
    return (out if prior is None else out - prior).reshape(k, s, s, 3)


def probe_scores(chosen: np.ndarray, error, h: int, w: int, step: int) -> np.ndarray:
    """The probed blocks' ``error`` ``(N,)`` in a ``(nbh * nbw,)`` float32 array (0 elsewhere)
    for :func:`refine_blocks`."""
    out = np.zeros(-(-h // step) * -(-w // step), np.float32)
    out[chosen] = np.asarray(error.cpu() if isinstance(error, torch.Tensor) else error, dtype=np.float32)
    return out


@torch.no_grad()
def guided_probe_error(net: ITMNet, rgb: torch.Tensor, rows: np.ndarray, cols: np.ndarray, coef, h: int, w: int,
                       step: int, dtype: torch.dtype) -> torch.Tensor:
    """Each block's fit error at its probe pixel (:func:`probe_pixels`): the network runs at
    the ``N`` probes (SDR ``rgb`` ``(N, 3)``) and what it adds to its clipped prior is
    compared with the lerped transform there (:func:`guided_point_error`); ``(N,)``."""
    n = rows.shape[0]
    r, c = torch.from_numpy(rows).view(n, 1), torch.from_numpy(cols).view(n, 1)
    pts = rgb.reshape(n, 3).float()
    out = residual_on_blocks(net, pts.view(n, 1, 1, 3), r.to(pts.device), c.to(pts.device), h, w, dtype).reshape(n, 3)
    prior = net.prior(pts)
    if prior is None:
        resid = out.clamp_(0.0, 1.0)
    else:
        resid = out.add_(prior).clamp_(0.0, 1.0).sub_(prior.clamp_(0.0, 1.0))
    return guided_point_error(pts, resid, coef, rows, cols, h, w, step)


def _apply_guided_rung(net, x, step, device, precision, encode_pq, y_plane=None):
    """Guided rung: prior(SDR) + the per-node transforms, bilinearly interpolated, applied
    to each pixel's guide; ``(H, W, 3)`` PQ or cd/m2; the worst-fitted blocks (by their
    samples and their probes: ``y_plane`` picks those, default the BT.709 luma of ``x``) redone
    by the full network."""
    h, w, _ = x.shape
    ys = torch.from_numpy(guided_samples(h, step)).to(device)
    xs = torch.from_numpy(guided_samples(w, step)).to(device)
    rgb_samples = x[ys][:, xs].clamp(0.0, 1.0)
    coef, resid = guided_coefficients(net, rgb_samples, h, w, step, device, precision,
                                      with_residual=True)  # (gh, gw, 5, 3)
    gh, gw = coef.shape[:2]
    y0, y1, wy = _lerp_index(h, step, gh, device)
    x0, x1, wx = _lerp_index(w, step, gw, device)
    out = torch.empty((h, w, 3), dtype=torch.float32, device=device)
    rows = h if device.type == "cuda" else BAND_ROWS
    for top in range(0, h, rows):
        band = slice(top, min(h, top + rows))
        c = torch.lerp(coef[y0[band]], coef[y1[band]], wy[band].view(-1, 1, 1, 1))  # (n, gw, 5, 3)
        c = torch.lerp(c[:, x0], c[:, x1], wx.view(1, -1, 1, 1))  # (n, w, 5, 3)
        sdr = x[band].clamp(0.0, 1.0)
        pq = _guided_base(net, sdr.reshape(-1, 3)).reshape(sdr.shape)
        pq.add_(torch.einsum("nwk,nwkc->nwc", guided_features(sdr), c)).clamp_(0.0, 1.0)
        out[band] = pq
    dtype = resolve_precision(precision, device)
    if y_plane is None and probe_share(step) > 0:
        y_plane = x.clamp(0.0, 1.0) @ torch.tensor(_LUMA_709, device=device)
    chosen, prows, pcols = probe_pixels(y_plane, h, w, step)
    probe = None
    if len(chosen):
        pr, pc = torch.from_numpy(prows).to(device), torch.from_numpy(pcols).to(device)
        probe = probe_scores(chosen, guided_probe_error(net, x[pr, pc].clamp(0.0, 1.0), prows, pcols, coef, h, w,
                                                        step, dtype), h, w, step)
    blocks = refine_blocks(guided_sample_error(rgb_samples.cpu(), resid.cpu(), coef.cpu(), h, w, step), h, w, step,
                           probe=probe)
    if blocks.any():
        # the worst-fitted blocks: the full network, as the full rung computes it
        _, rows, cols = (torch.from_numpy(v).to(device) for v in refine_block_list(blocks, h, w, step))
        sdr = x[rows[:, :, None], cols[:, None, :]].clamp(0.0, 1.0)  # (K, s, s, 3)
        resid = residual_on_blocks(net, sdr, rows, cols, h, w, dtype)
        prior = net.prior(sdr.reshape(-1, 3))
        full = (resid.reshape(-1, 3) + (0 if prior is None else prior)).clamp_(0.0, 1.0).reshape(resid.shape)
        out[rows[:, :, None], cols[:, None, :]] = full  # edge blocks write their last row/column twice alike
    return out if encode_pq else eotf_st2084(out)


@torch.no_grad()
def _apply_gain_rung(net, sdr, rung: Rung, device, precision, gain, offset_nits, encode_pq, y_plane=None):
    """Gain-map rung; returns ``(H, W, 3)`` float32 torch, PQ or cd/m2 (``encode_pq``)."""
    if gain not in GAIN_MODES:
        raise ValueError(f"unknown gain mode {gain!r}; expected one of {GAIN_MODES}")
    device = torch.device(device)
    x = torch.as_tensor(np.ascontiguousarray(sdr, dtype=np.float32) if isinstance(sdr, np.ndarray)
                        else sdr).to(device=device, dtype=torch.float32)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"sdr must be (H, W, 3) R'G'B', got shape {tuple(x.shape)}")
    h, w, _ = x.shape
    d, k = rung.downscale, float(offset_nits)
    if rung.guided:
        return _apply_guided_rung(net.to(device).eval(), x, d, device, precision, encode_pq, y_plane)
    if gain == "prior":
        return _apply_prior_rung(net.to(device).eval(), x, d, device, precision, encode_pq)
    g = _low_res_gain(net.to(device).eval(), x, d, device, precision, gain, k)
    lh, lw = g.shape[1:]
    # Bilinear with align_corners=False puts low-res sample i at full-res (i + 0.5) d - 0.5,
    # the centre of its d x d cell: the same place the network evaluated it. Separable:
    # horizontally once on the few low-res rows, vertically per band (a lerp of two rows),
    # the same numbers as F.interpolate on the whole frame at a third of its cost here.
    g_rows = F.interpolate(g.unsqueeze(0), size=(lh, lw * d), mode="bilinear",
                           align_corners=False)[0, :, :, :w].permute(1, 2, 0).contiguous()
    sy = ((torch.arange(h, dtype=torch.float32, device=device) + 0.5) / d - 0.5).clamp_(min=0.0)
    y0 = sy.floor().long()
    wy = (sy - y0).view(-1, 1, 1)
    y0 = y0.clamp_(max=lh - 1)
    y1 = (y0 + 1).clamp_(max=lh - 1)
    m = torch.tensor(MATRIX_BT709_TO_BT2020.tolist(), dtype=torch.float32, device=device).T * SDR_WHITE_NITS_BT2408
    out = torch.empty((h, w, 3), dtype=torch.float32, device=device)
    rows = h if device.type == "cuda" else BAND_ROWS  # on a GPU one band: fewer launches
    for top in range(0, h, rows):
        band = slice(top, min(h, top + rows))
        g_band = torch.lerp(g_rows[y0[band]], g_rows[y1[band]], wy[band])
        linear = x[band].clamp(0.0, 1.0).pow_(2.4)
        nits = linear @ m
        nits.add_(k).mul_(g_band).sub_(k).clamp_(min=0.0)
        out[band] = eotf_inverse_st2084_(nits) if encode_pq else nits
    return out


def _run_rung(net, sdr, rung, device, precision, gain, offset_nits, encode_pq: bool, y_plane=None) -> torch.Tensor:
    rung = get_rung(rung)
    if rung.downscale == 1:
        pq = predict_pq(net, sdr, device=device, precision=precision).clamp_(0.0, 1.0)
        return pq if encode_pq else eotf_st2084(pq)
    return _apply_gain_rung(net, sdr, rung, device, precision, gain_mode(net, gain), offset_nits, encode_pq, y_plane)


def apply_rung(
    net: ITMNet,
    sdr,
    rung: str | Rung = "half",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    *,
    gain: str = "auto",
    offset_nits: float = GAIN_OFFSET_NITS,
    y_plane=None,
) -> np.ndarray:
    """Run ``net`` over ``sdr`` at ``rung``.

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' code values [0, 1] float32 (numpy or torch).
    ``rung``: a name of :data:`RUNGS` or a :class:`Rung`; ``full`` is exactly
    :func:`itmfilter.model.inference.predict_pq`. ``precision``: ``auto``/``fp32``/``bf16`` for
    the network. ``gain``: ``auto``, ``prior`` (:func:`gain_mode`), ``rgb`` or ``luma``
    (module docstring). ``y_plane``: ``(H, W)``, the SDR's Y' codes where the caller has
    them, which pick the guided rungs' probe pixels (:func:`probe_pixels`; default: the
    BT.709 luma of ``sdr``). Returns PQ BT.2020 R'G'B' code values [0, 1], ``(H, W, 3)``
    float32 numpy.
    """
    return apply_rung_tensor(net, sdr, rung, device, precision, gain=gain,
                             offset_nits=offset_nits, y_plane=y_plane).cpu().numpy()


@torch.no_grad()
def apply_rung_tensor(
    net: ITMNet,
    sdr,
    rung: str | Rung = "half",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    *,
    gain: str = "auto",
    offset_nits: float = GAIN_OFFSET_NITS,
    y_plane=None,
) -> torch.Tensor:
    """:func:`apply_rung` leaving the result on ``device`` as a float32 tensor (the CUDA
    player keeps the frame on the GPU up to its Y'CbCr planes)."""
    return _run_rung(net, sdr, rung, device, precision, gain, offset_nits, encode_pq=True, y_plane=y_plane)


def time_rungs(
    run: Callable[[str], object],
    rungs=RUNG_NAMES,
    *,
    repeats: int = 3,
    give_up_s: float | None = None,
    statistic: Callable = statistics.median,
) -> dict[str, float]:
    """Seconds of ``run(rung_name)`` for each rung, in the order given: the ``statistic``
    (median, or e.g. ``min``) of ``repeats`` runs after one untimed warm-up call each (it
    also compiles and allocates). With ``give_up_s``, timing stops after the first rung
    slower than that (pass the rungs cheapest first: the ones after it are slower still)."""
    timings = {}
    for name in rungs:
        run(name)
        runs = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            run(name)
            runs.append(time.perf_counter() - t)
        timings[get_rung(name).name] = statistic(runs)
        if give_up_s is not None and timings[get_rung(name).name] > give_up_s:
            break
    return timings


def measure_rung_costs(
    net: ITMNet,
    sdr,
    ref_nits=None,
    rungs=RUNG_NAMES,
    *,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    gain: str = "auto",
) -> dict[str, dict[str, float]]:
    """PU21-PSNR (dB) of each rung against the ``full`` rung and against ``ref_nits``.

    ``ref_nits``: optional ``(H, W, 3)`` linear BT.2020 cd/m2 reference (the HDR master).
    Returns ``{rung: {"psnr_vs_full": dB, "psnr_vs_ref": dB or nan}}``; ``full`` against
    itself is ``inf``.
    """

    full = eotf_st2084(torch.from_numpy(apply_rung(net, sdr, "full", device, precision))).numpy()
    costs = {}
    for name in rungs:
        pq = apply_rung(net, sdr, name, device, precision, gain=gain)
        nits = eotf_st2084(torch.from_numpy(pq)).numpy()
        costs[get_rung(name).name] = {
            "psnr_vs_full": psnr_pu21(full, nits),
            "psnr_vs_ref": psnr_pu21(ref_nits, nits) if ref_nits is not None else float("nan"),
        }
    return costs


RUNG_HEADROOM = 0.9
"""Share of the frame period a rung's measured filter time may take. The decoder runs ahead in
its own thread and mpv shows raw frames, so the filter can use most of the period: in
``benchmarks/playback.py --real`` (docs/playback-benchmark.md) the full network at 640x360 and
``guided-eighth`` at 1080p24 showed every frame with the filter busy 89 % of the period (0.75
had left both unused). :class:`RungController` still steps down when frames drop."""


GRID_RUNG_HEADROOM = 0.6
""":data:`RUNG_HEADROOM` for a grid shot's ladder (:data:`GRID_LADDER`). Its rungs are numba
passes on every core from end to end, so the decoder, the pipe to mpv and mpv itself, on the
same cores while playing, slow them more than the first frame's timing shows: at 1080p24 on
the 2-core machine (``docs/playback-benchmark.md``), ``guided-sixth`` timed 25.7 ms ran at
34.5 ms a frame in play (83 % of the period) and dropped 3-5 frames in 2 of 4 runs before the
controller stepped down; ``guided-eighth`` timed 16.6 ms ran at 24-29 ms and dropped none in
6 runs. In play they cost 1.35-1.75 times their timing, so 0.9 of the period in play is about
0.6 in the timing. The network's ladder keeps 0.9: its guided-eighth, torch and numba, ran at
about 1.1 times its timing in play (31.3 ms timed, 34.7 ms a frame)."""


def choose_rung(frame_budget_s: float, timings: dict[str, float], headroom: float = RUNG_HEADROOM) -> str:
    """The best rung (in :data:`RUNGS` order) whose measured time fits ``headroom`` of the frame period.

    ``frame_budget_s``: seconds per frame available to the filter (1 / fps, less any
    fixed per-frame cost the caller knows of). ``timings``: seconds per frame by rung name
    (from :func:`time_rungs`). ``headroom`` (:data:`RUNG_HEADROOM`) leaves the rest of the
    period to the decoder, the frame's trip to mpv and mpv itself, which share the cores: so a rung
    that fits is never passed over for a worse one (``sixteenth`` is chosen only where
    nothing better that was timed fits). When none fits, the fastest measured rung is
    returned.
    """
    if not timings:
        raise ValueError("choose_rung needs at least one measured rung")
    limit = frame_budget_s * headroom
    for name in RUNG_NAMES:
        if name in timings and timings[name] <= limit:
            return name
    return min(timings, key=timings.get)


class RungController:
    """Keeps the rung honest while playing: steps down a rung when frames drop.

    Call :meth:`frame_done` for every frame (``dropped`` True when it was skipped or
    shown late). When more than ``max_drop_share`` of the last ``window`` frames dropped,
    the controller moves to the next faster rung of :data:`LADDER` and starts a new window
    (from a rung off the ladder, to the first ladder rung that runs the network on fewer
    pixels).
    """

    def __init__(self, rung: str, window: int = 24, max_drop_share: float = 0.1,
                 ladder: tuple[str, ...] = LADDER) -> None:
        self.rung = get_rung(rung).name
        self.ladder = ladder
        self.window = window
        self.max_drop_share = max_drop_share
        self.changes: list[tuple[int, str]] = []
        self._seen = 0
        self._recent: list[bool] = []

    def frame_done(self, dropped: bool) -> str:
        self._seen += 1
        self._recent.append(bool(dropped))
        if len(self._recent) >= self.window:
            share = sum(self._recent) / len(self._recent)
            self._recent.clear()
            if share > self.max_drop_share:
                slower = next_faster_rung(self.rung, self.ladder)
                if slower is not None:
                    self.rung = slower
                    self.changes.append((self._seen, self.rung))
        return self.rung


def next_faster_rung(rung: str, ladder: tuple[str, ...] = LADDER) -> str | None:
    """The rung after ``rung`` on ``ladder`` (None at its end); from a rung off the ladder,
    the first ladder rung whose network runs on fewer pixels."""
    if rung in ladder:
        index = ladder.index(rung)
        return ladder[index + 1] if index + 1 < len(ladder) else None
    d = get_rung(rung).downscale
    return next((name for name in ladder if get_rung(name).downscale > d), None)


__all__ = [
    "GAIN_MODES",
    "GAIN_OFFSET_NITS",
    "GUIDED_KNEE",
    "GUIDED_RIDGE",
    "GUIDED_SPLAT",
    "GUIDE_FEATURES",
    "LADDER",
    "guided_coefficients",
    "guided_features",
    "guided_fit",
    "guided_nodes",
    "guided_samples",
    "next_faster_rung",
    "GRID_LADDER",
    "RUNGS",
    "RUNG_NAMES",
    "Rung",
    "RungController",
    "apply_rung",
    "apply_rung_tensor",
    "gain_map",
    "gain_mode",
    "residual_map",
    "choose_rung",
    "get_rung",
    "measure_rung_costs",
    "time_rungs",
]
