"""One frame, SDR -> HDR10: the decoded SDR frame's exact R'G'B', the network at a ladder
rung, and the HDR10 Y'CbCr 4:2:0 10-bit frame (BT.2020 NCL, PQ, narrow range).

The player, the GPU benchmark and the ladder timing all call :func:`hdr10_frame`; four
paths give the same codes up to 1 (tested): ``triton`` (the full network as one fused GPU
kernel, :mod:`itmfilter.render.triton_kernel`), ``torch`` (the frame stays on the device from
planes to planes), ``fused`` (:mod:`itmfilter.render.fastpath`, one multi-threaded CPU pass)
and ``exact`` (the float64 numpy conversions around :func:`itmfilter.render.ladder.apply_rung`).
A grid shot's frame (:class:`itmfilter.model.grid.PlacedGrid`) takes
:mod:`itmfilter.render.gridtensor` on CUDA (or with ``path="torch"``),
:mod:`itmfilter.render.gridpath` on a CPU, or the normative decoder.
"""

from __future__ import annotations

import av
import numpy as np
import torch

from itmfilter.colour.tensor import planes420_to_rgb, rgb_to_planes420
from itmfilter.colour.ycbcr import (
    rgb_to_ycbcr,
    subsample_chroma,
    upsample_chroma,
    ycbcr_to_rgb,
)
from itmfilter.media.frames import Planes, code_planes, is_planar_yuv
from itmfilter.model.grid import PlacedGrid
from itmfilter.model.net import pixel_grid
from itmfilter.render import fastpath
from itmfilter.render.ladder import (
    GRID_LADDER,
    GRID_RUNG_HEADROOM,
    LADDER,
    RUNG_HEADROOM,
    apply_rung,
    apply_rung_tensor,
    choose_rung,
    get_rung,
    time_rungs,
)
from itmfilter.render.threads import one_blas_thread


def sdr_frame_to_rgb(frame) -> np.ndarray:
    """A decoded SDR ``av.VideoFrame`` -> ``(H, W, 3)`` BT.709 R'G'B' [0, 1] float32.

    Exact: the Y'CbCr planes go through :func:`~itmfilter.colour.ycbcr.upsample_chroma` and
    :func:`~itmfilter.colour.ycbcr.ycbcr_to_rgb` (BT.709, the frame's range), not through
    swscale's matrix. Formats other than planar 8/10-bit Y'CbCr are first repacked to
    yuv420p10le (a layout change only).
    """
    if not is_planar_yuv(frame):
        frame = frame.reformat(format="yuv420p10le")
    p = code_planes(frame)
    codes = upsample_chroma(p.y.astype(np.float32), p.cb, p.cr, p.subsampling)
    rgb = ycbcr_to_rgb(codes, "bt709", p.bits, p.full_range, dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def pq_to_yuv420p10(pq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` PQ BT.2020 R'G'B' [0, 1] -> 10-bit Y, Cb, Cr planes (uint16).

    Exact BT.2100 formulas (:func:`~itmfilter.colour.ycbcr.rgb_to_ycbcr`, BT.2020 NCL,
    narrow range), then :func:`~itmfilter.colour.ycbcr.subsample_chroma` (4:2:0,
    chroma_loc_type 0). Y is ``(H, W)``, Cb and Cr ``(ceil(H/2), ceil(W/2))``.
    """
    return subsample_chroma(rgb_to_ycbcr(pq, "bt2020nc", 10, False), "420")


def yuv420p10_frame(planes) -> av.VideoFrame:
    """An ``av.VideoFrame`` (yuv420p10le) holding the planes of :func:`pq_to_yuv420p10`."""
    y = planes[0]
    frame = av.VideoFrame(y.shape[1], y.shape[0], "yuv420p10le")
    for plane, values in zip(frame.planes, planes):
        view = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        view[:, : plane.width] = values
    return frame


def _torch_planes(planes: Planes, device) -> list[torch.Tensor]:
    """``planes`` as tensors on ``device`` (10-bit codes as int16: torch has no uint16
    arithmetic)."""
    dtype = np.uint8 if planes.bits == 8 else np.int16
    return [torch.from_numpy(np.ascontiguousarray(p).view(dtype)).to(device, non_blocking=True)
            for p in (planes.y, planes.cb, planes.cr)]


HDR10_TAGS = {"color_primaries": 9, "color_trc": 16, "colorspace": 9, "color_range": 1}
"""The colour tags of an HDR10 frame, as FFmpeg's enum values (``AVCOL_PRI_BT2020``,
``AVCOL_TRC_SMPTE2084``, ``AVCOL_SPC_BT2020_NCL``, ``AVCOL_RANGE_MPEG``: narrow range)."""


def tag_hdr10(target):
    """Set :data:`HDR10_TAGS` on an ``av.VideoFrame`` or a stream's codec context (encoders
    such as libx265, ffv1 and the Matroska muxer read them there; prores_ks from the
    frame); returns ``target``."""
    for name, value in HDR10_TAGS.items():
        setattr(target, name, value)
    return target


def hdr10_planes(frame, net, rung: str, device, precision: str = "auto", *,
                 path: str = "auto", gain: str = "auto", tensors: bool = False):
    """One decoded SDR frame -> the HDR10 Y', Cb, Cr planes (10-bit codes, BT.2020 NCL, PQ,
    narrow range, 4:2:0), through ``net`` at ``rung``.

    Returns three arrays: ``Y (H, W)``, ``Cb``/``Cr (ceil(H/2), ceil(W/2))``, numpy uint16
    on the CPU, or with ``tensors`` torch int16 tensors (torch has no uint16 arithmetic;
    codes 0-1023 fit) on ``device`` when the ``torch`` path ran there, else on the CPU.

    ``path``:

    - ``triton`` (auto on CUDA for the ``full`` rung with 4:2:0 input, when triton imports):
      one fused kernel from the SDR planes to the HDR10 planes
      (:mod:`itmfilter.render.triton_kernel`; ``precision`` ``auto`` is fp16 there). Other
      rungs take the ``torch`` path. Needs CUDA, or ``TRITON_INTERPRET=1`` on a CPU;
    - ``torch`` (auto on CUDA otherwise, for 4:2:0 input): the frame stays on ``device``
      from its 4:2:0 planes to the output planes (:mod:`itmfilter.colour.tensor`);
    - ``fused`` (auto on a CPU for the gain rungs with 4:2:0 input, and for the guided rungs
      of an ``mmr3``-prior network, when numba is there): :mod:`itmfilter.render.fastpath`,
      one multi-threaded pass from planes to planes;
    - ``exact``: the float64 numpy conversions (:func:`sdr_frame_to_rgb`,
      :func:`pq_to_yuv420p10`) around :func:`itmfilter.render.ladder.apply_rung`.

    All give the same codes up to 1 (rare half-code ties; the fused path's low-resolution
    input averages Y'CbCr before the clip to [0, 1]); tested. ``gain``: how a rung below
    ``full`` carries the network to full resolution (:func:`itmfilter.render.ladder.gain_mode`).
    Every path runs with one BLAS thread (:mod:`itmfilter.render.threads`).
    """
    with one_blas_thread():
        return _hdr10_planes(frame, net, rung, device, precision, path=path, gain=gain, tensors=tensors)


def _hdr10_planes(frame, net, rung: str, device, precision: str, *, path: str, gain: str, tensors: bool):
    device = torch.device(device)
    planes = code_planes(frame)
    if planes is not None and planes.subsampling != "420":
        planes = None
    if isinstance(net, PlacedGrid):
        # a grid shot's frame (format 1.4+): on CUDA (or with path "torch") the whole model in
        # torch on the device, every rung (render.gridtensor); fused on a CPU (render.gridpath),
        # the whole model per pixel (within one code of the normative decoder) or a guided rung;
        # else the normative decoder, whatever the rung
        if planes is not None and (path == "torch" or (path == "auto" and device.type == "cuda")):
            from itmfilter.render.gridtensor import grid_planes_tensor

            y, cb, cr = _torch_planes(planes, device)
            out = [p.to(dtype=torch.int16) for p in grid_planes_tensor(net, y, cb, cr, bits=planes.bits,
                                                                       full_range=planes.full_range)]
            return out if tensors else [p.cpu().numpy().view(np.uint16) for p in out]
        if path in ("auto", "fused") and planes is not None and fastpath.available():
            from itmfilter.render.gridpath import grid_guided_planes, grid_hdr10_planes

            step = grid_step(rung)
            out = grid_hdr10_planes(net, planes) if step == 1 else grid_guided_planes(net, planes, step)
        else:
            out = pq_to_yuv420p10(net.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
        if tensors:
            return [torch.from_numpy(np.ascontiguousarray(p).view(np.int16)) for p in out]
        return list(out)
    rung = get_rung(rung)
    downscale = rung.downscale
    if path == "auto":
        if device.type == "cuda":
            path = "triton" if downscale == 1 and _triton_ready(net, device) else "torch"
        elif rung.guided and fastpath.available() and fastpath.supports_guided(net):
            path = "fused"
        elif downscale == 1 and fastpath.available() and fastpath.supports_full(net):
            path = "fused"
        elif not rung.guided and downscale > 1 and downscale % 2 == 0 and fastpath.available():
            path = "fused"
        else:
            path = "exact"
    if path == "triton" and downscale == 1 and planes is not None:
        from itmfilter.render import triton_kernel

        if not _triton_ready(net, device):
            raise ValueError(f"path='triton' needs triton and CUDA (or TRITON_INTERPRET=1) and a network of "
                             f"1..{triton_kernel.MAX_HIDDEN} hidden layers; use path='torch'")
        y, cb, cr = _torch_planes(planes, device)
        out = triton_kernel.hdr10_planes(net, y, cb, cr, bits=planes.bits, full_range=planes.full_range,
                                         precision=precision)
        out = [p.to(dtype=torch.int16) for p in out]
        return out if tensors else [p.cpu().numpy().view(np.uint16) for p in out]
    if path in ("torch", "triton") and planes is not None:
        y, cb, cr = _torch_planes(planes, device)
        sdr = planes420_to_rgb(y, cb, cr, bits=planes.bits, full_range=planes.full_range)
        pq = apply_rung_tensor(net, sdr, rung, device, precision, gain=gain, y_plane=y)
        out = [p.to(dtype=torch.int16) for p in rgb_to_planes420(pq, bits=10, full_range=False)]
        return out if tensors else [p.cpu().numpy().view(np.uint16) for p in out]
    if path == "fused" and device.type == "cpu" and planes is not None and (
            downscale > 1 or fastpath.supports_full(net)):
        out = fastpath.hdr10_planes(net, planes, downscale, precision=precision, gain=gain, guided=rung.guided)
    else:
        pq = apply_rung(net, sdr_frame_to_rgb(frame), rung, device, precision, gain=gain,
                        y_plane=None if planes is None else planes.y)  # the fused path's probes
        out = pq_to_yuv420p10(pq)
    if tensors:
        return [torch.from_numpy(np.ascontiguousarray(p).view(np.int16)) for p in out]
    return list(out)


def grid_step(rung: str) -> int:
    """The guided step a grid shot's frame takes at ``rung``: 1 (the model on every pixel) for
    ``full``, the rung's own for a guided one, and for a plain rung the guided rung of the
    same model cost (at most 8: a grid model has no low-resolution road of its own)."""
    r = get_rung(rung)
    return 1 if r.downscale == 1 else min(r.downscale, 8)


def hdr10_frame(frame, net, rung: str, device, precision: str = "auto", *,
                path: str = "auto", gain: str = "auto") -> av.VideoFrame:
    """One decoded SDR frame -> the HDR10 frame the player sends (yuv420p10le, BT.2020 NCL,
    PQ, narrow range), through ``net`` at ``rung``: the planes of :func:`hdr10_planes`
    (``path``, ``gain``: see there) in a new frame. Timestamps and colour tags are the
    caller's (:func:`tag_hdr10`)."""
    return yuv420p10_frame(hdr10_planes(frame, net, rung, device, precision, path=path, gain=gain))


def _triton_ready(net, device) -> bool:
    """Whether the fused Triton kernel can run ``net`` on ``device`` (imports triton lazily:
    a CPU-only player never pays for it)."""
    try:
        from itmfilter.render import triton_kernel
    except ImportError:
        return False
    return triton_kernel.available(device) and triton_kernel.supports(net)


def choose_gain_mode(net, frame, rung: str = "eighth", device="cpu", samples: int = 4096) -> str:
    """``prior`` or ``rgb`` for ``net`` on this content (:func:`itmfilter.render.ladder.gain_mode`):
    both rungs are run on ``frame`` and compared with the full network at ``samples``
    random pixels; the smaller mean PQ error wins. A global tone curve is carried almost
    exactly by ``prior`` (its polynomial is per pixel); a spatially varying grade is often
    better by ``rgb`` (a local exposure is a gain). Networks without an ``mmr3`` prior: ``rgb``."""
    if isinstance(net, PlacedGrid) or net.config.prior != "mmr3":
        return "rgb"  # a grid frame ignores the gain mode (hdr10_planes: exact path)
    sdr = sdr_frame_to_rgb(frame)
    h, w, _ = sdr.shape
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, h * w, (min(samples, h * w),), generator=gen)
    rgb = torch.from_numpy(sdr).reshape(-1, 3)[idx]
    xy = pixel_grid(h, w).reshape(-1, 2)[idx]
    with torch.no_grad():
        truth = net.to("cpu").eval()(rgb, xy).clamp(0.0, 1.0)
    errors = {}
    for mode in ("prior", "rgb"):
        pq = torch.from_numpy(apply_rung(net, sdr, rung, device, "fp32", gain=mode)).reshape(-1, 3)[idx]
        errors[mode] = float((pq - truth).abs().mean())
    return min(errors, key=errors.get)


def auto_rung(net, frame, fps: float, device, precision, gain: str = "auto") -> tuple[str, dict]:
    """Time the rungs of :data:`~itmfilter.render.ladder.LADDER` on the first frame, through
    the same per-frame path the producer uses (decode excluded: it runs ahead in its own
    thread), and pick the best whose time fits :func:`~itmfilter.render.ladder.choose_rung`'s
    share of the frame period (the rest is left to the decoder and mpv on the same cores;
    :data:`~itmfilter.render.ladder.GRID_RUNG_HEADROOM` for a grid shot's ladder).
    Rungs are timed cheapest first and the timing stops at the first rung that takes over
    twice the period (the better ones are slower still). Each rung's time is the fastest
    of three runs: a rung's cost is what it takes when it has the cores, and a moment of
    other load while timing must not push the choice down the ladder (sustained load is
    :class:`~itmfilter.render.ladder.RungController`'s job). The first call of each rung is
    untimed: it also warms the filter up (JIT cache, allocations)."""
    names, headroom = list(reversed(LADDER)), RUNG_HEADROOM
    if isinstance(net, PlacedGrid):
        # a grid frame's ladder: full and the guided rungs (grid_step), where they can run fused
        planes = code_planes(frame)
        if planes is None or planes.subsampling != "420" or not fastpath.available() or \
                torch.device(device).type != "cpu":
            return "full", {}
        names, headroom = list(reversed(GRID_LADDER)), GRID_RUNG_HEADROOM
    timings = time_rungs(lambda rung: hdr10_frame(frame, net, rung, device, precision, gain=gain),
                         names, repeats=3, give_up_s=2.0 / fps, statistic=min)
    return choose_rung(1.0 / fps, timings, headroom), timings


def warm_grid_rungs(net: PlacedGrid, frame, rungs, device, precision: str = "auto") -> None:
    """Render ``frame`` once at each of ``rungs`` through ``net`` with a scene residual (zeros,
    where the shot has none yet): the scene field's numba kernels compile, or load from numba's
    cache, before a player's clock starts. A shot's first frames usually come before its residual
    does, so the first frame alone does not reach them, and on a cold cache their compile (~2 s)
    stalled 1080p playback mid-clip (27-85 frames dropped in the first run after an install)."""
    from dataclasses import replace

    from itmfilter.model.scene import SceneResidual

    if net.model.scene is None:
        net = PlacedGrid(replace(net.model, scene=SceneResidual(np.zeros((4, 4, 3), np.float32))),
                         net.origin, net.half, net.age)
    for rung in dict.fromkeys(rungs):
        hdr10_planes(frame, net, rung, device, precision)


__all__ = ["HDR10_TAGS", "auto_rung", "warm_grid_rungs", "choose_gain_mode", "grid_step", "hdr10_frame", "hdr10_planes", "tag_hdr10", "pq_to_yuv420p10", "sdr_frame_to_rgb", "yuv420p10_frame"]
