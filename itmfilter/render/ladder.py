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

On a CPU the player runs the gain rungs through :mod:`itmfilter.render.fastpath` (the same
formulas fused into one pass over the Y'CbCr planes); this module is the reference.

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
from itmfilter.quality.metrics import psnr_pu21

GAIN_OFFSET_NITS = 203.0 / 64
"""Gain offset k in cd/m2: 1/64 of SDR white, the Ultra HDR default offset (1/64)."""

GAIN_MODES = ("rgb", "luma", "prior")

# BT.2020-2 luminance weights for linear RGB.
_LUMA_2020 = tuple(float(k) for k in LUMINANCE_WEIGHTS_BT2020)


@dataclass(frozen=True)
class Rung:
    """One rung: ``downscale`` 1 evaluates the network on every pixel."""

    name: str
    downscale: int
    description: str


RUNGS: tuple[Rung, ...] = (
    Rung("full", 1, "network on every pixel"),
    Rung("half", 2, "network at 1/2 resolution (1/4 of the pixels), gain map upsampled"),
    Rung("quarter", 4, "network at 1/4 resolution (1/16 of the pixels), gain map upsampled"),
    Rung("eighth", 8, "network at 1/8 resolution (1/64 of the pixels), gain map upsampled"),
    Rung("sixteenth", 16, "network at 1/16 resolution (1/256 of the pixels), gain map upsampled"),
)
"""The rungs, best first."""

RUNG_NAMES = tuple(r.name for r in RUNGS)


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


@torch.no_grad()
def _apply_gain_rung(net, sdr, rung: Rung, device, precision, gain, offset_nits, encode_pq):
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


def _run_rung(net, sdr, rung, device, precision, gain, offset_nits, encode_pq: bool) -> torch.Tensor:
    rung = get_rung(rung)
    if rung.downscale == 1:
        pq = predict_pq(net, sdr, device=device, precision=precision).clamp_(0.0, 1.0)
        return pq if encode_pq else eotf_st2084(pq)
    return _apply_gain_rung(net, sdr, rung, device, precision, gain_mode(net, gain), offset_nits, encode_pq)


def apply_rung(
    net: ITMNet,
    sdr,
    rung: str | Rung = "half",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    *,
    gain: str = "auto",
    offset_nits: float = GAIN_OFFSET_NITS,
) -> np.ndarray:
    """Run ``net`` over ``sdr`` at ``rung``.

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' code values [0, 1] float32 (numpy or torch).
    ``rung``: a name of :data:`RUNGS` or a :class:`Rung`; ``full`` is exactly
    :func:`itmfilter.model.inference.predict_pq`. ``precision``: ``auto``/``fp32``/``bf16`` for
    the network. ``gain``: ``auto``, ``prior`` (:func:`gain_mode`), ``rgb`` or ``luma``
    (module docstring). Returns PQ BT.2020
    R'G'B' code values [0, 1], ``(H, W, 3)`` float32 numpy.
    """
    return apply_rung_tensor(net, sdr, rung, device, precision, gain=gain,
                             offset_nits=offset_nits).cpu().numpy()


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
) -> torch.Tensor:
    """:func:`apply_rung` leaving the result on ``device`` as a float32 tensor (the CUDA
    player keeps the frame on the GPU up to its Y'CbCr planes)."""
    return _run_rung(net, sdr, rung, device, precision, gain, offset_nits, encode_pq=True)


def time_rungs(
    run: Callable[[str], object],
    rungs=RUNG_NAMES,
    *,
    repeats: int = 3,
    give_up_s: float | None = None,
) -> dict[str, float]:
    """Median seconds of ``run(rung_name)`` for each rung, in the order given (one untimed
    warm-up call each: it also compiles and allocates). With ``give_up_s``, timing stops
    after the first rung slower than that (pass the rungs cheapest first: the ones after
    it are slower still)."""
    timings = {}
    for name in rungs:
        run(name)
        runs = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            run(name)
            runs.append(time.perf_counter() - t)
        timings[get_rung(name).name] = statistics.median(runs)
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


def choose_rung(frame_budget_s: float, timings: dict[str, float], headroom: float = 0.75) -> str:
    """The best rung whose measured time fits ``headroom`` of the frame period.

    ``frame_budget_s``: seconds per frame available to the filter (1 / fps, less any
    fixed per-frame cost the caller knows of). ``timings``: seconds per frame by rung name
    (from :func:`time_rungs`). When none fits, the fastest measured rung is returned.
    """
    if not timings:
        raise ValueError("choose_rung needs at least one measured rung")
    limit = frame_budget_s * headroom
    for rung in RUNGS:
        if rung.name in timings and timings[rung.name] <= limit:
            return rung.name
    return min(timings, key=timings.get)


class RungController:
    """Keeps the rung honest while playing: steps down a rung when frames drop.

    Call :meth:`frame_done` for every frame (``dropped`` True when it was skipped or
    shown late). When more than ``max_drop_share`` of the last ``window`` frames dropped,
    the controller moves to the next faster rung and starts a new window.
    """

    def __init__(self, rung: str, window: int = 24, max_drop_share: float = 0.1) -> None:
        self.rung = get_rung(rung).name
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
            index = RUNG_NAMES.index(self.rung)
            if share > self.max_drop_share and index + 1 < len(RUNGS):
                self.rung = RUNG_NAMES[index + 1]
                self.changes.append((self._seen, self.rung))
        return self.rung


__all__ = [
    "GAIN_MODES",
    "GAIN_OFFSET_NITS",
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
