"""The full network as one fused GPU pass (Triton): SDR Y'CbCr 4:2:0 planes -> HDR10 planes.

The unfused torch path (:func:`itmfilter.render.frame.hdr10_frame`, ``path="torch"``)
runs each layer, activation and colour step as its own kernel, so every pixel moves a few
kB through GPU memory. Here one program takes a tile of ``block`` pixels (row-major over
the frame) and does everything in registers and on-chip memory:

    SDR Y'CbCr codes (BT.709, 8/10-bit, narrow/full; chroma upsampled as
        :func:`itmfilter.colour.ycbcr.upsample_chroma`, chroma_loc_type 0)
    -> R'G'B' clipped to [0, 1]                                         (BT.709-6 table 4)
    -> pixel centre (x, y) in [-1, 1] (:func:`itmfilter.model.net.pixel_grid`)
    -> coordinate branch: sin(x f_x + y f_y + phase) per feature column: the Fourier
       bands (cos as sin with a pi/2 phase) then Linear+ReLU, or SIREN's sine layer
    -> SDR branch Linear(3)+ReLU, the trunk (tl.dot over the tile, its weights read from
       on-chip L1; fp16/bf16 operands, fp32 accumulation), the 3-wide head
    -> + the prior in fp32: the picture's MMR3 polynomial or the BT.2408 placement
    -> PQ BT.2020 R'G'B' clipped to [0, 1] (the ``full`` rung, as
       :func:`itmfilter.render.ladder.apply_rung`)
    -> Y'CbCr BT.2020 NCL 10-bit narrow range (BT.2100-2 table 9), codes rounded half up;
       Y stored, Cb and Cr codes stored at full resolution (int16 scratch)
    then a second, small kernel: 4:2:0 chroma, row pairs summed and [1, 2, 1] / 8 on even
    columns, rounded half up (:func:`itmfilter.colour.ycbcr.subsample_chroma`).

Memory traffic per pixel: ~1.5 B of SDR in, 2 B of Y out, 4 B of chroma scratch written
and ~4 B read back, 1 B of chroma out: ~12 B, against ~3.5 kB unfused
(docs/gpu-benchmark.md).

Layer widths are padded with zeros to powers of two >= 16 (tl.dot's smallest tile);
zero weights and biases keep the padded units at zero through the ReLUs. Up to four
hidden layers (every configuration in :data:`itmfilter.model.net.CONFIGS` has three).

Triton kernels are compiled for the GPU when first launched; :func:`compile_for_gpu`
compiles them ahead of time without a GPU. With ``TRITON_INTERPRET=1`` in the environment
when :func:`kernels` first builds them, Triton's interpreter runs them on CPU tensors
instead (numpy; fp32 or fp16 operands; its bf16 products are wrong, so bf16 is checked by
compiling only): that is how the tests check the codes against the exact path on
machines without a GPU.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from itmfilter.colour.primaries import MATRIX_BT709_TO_BT2020
from itmfilter.colour.transfer import (
    PQ_C1,
    PQ_C2,
    PQ_C3,
    PQ_M1,
    PQ_M2,
    SDR_WHITE_NITS_BT2408,
)
from itmfilter.colour.ycbcr import code_scale, ycbcr_code_range, ycbcr_weights
from itmfilter.model.net import MMR_TERMS, ITMNet

try:  # optional: the `gpu` extra (CUDA builds of torch bring it)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = tl = None

__all__ = [
    "PRECISIONS",
    "KernelConfig",
    "available",
    "hdr10_planes",
    "compile_for_gpu",
    "interpreting",
    "kernels",
    "pack_weights",
    "supports",
]

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
"""Operand precision of the trunk's matrix products (accumulation is always fp32).
``auto``: fp16 on CUDA (10 mantissa bits against bf16's 7; the network's activations are
O(1), far from fp16's 65504 limit), fp32 in the interpreter."""

MAX_HIDDEN = 4
_COORD = {"none": 0, "siren": 1, "fourier": 2}
_PRIOR = {"none": 0, "bt2408": 1, "mmr3": 2}


DEFAULT_GPU_BLOCK = 128  # pixels per tile on a GPU (see KernelConfig)


@dataclass(frozen=True)
class KernelConfig:
    """Launch shape: ``block`` pixels per tile (a power of two >= 16; the M of the tile's
    matrix products; None: 128 on a GPU, 512 in the interpreter, whose cost is per op),
    ``num_warps`` per program, and ``programs_per_sm`` persistent programs per streaming
    multiprocessor (each loops over tiles). The default, 128 pixels with 4 warps, was the
    steadiest of the shapes timed in two H200 runs (``benchmarks/gpu.py``, docs/gpu-benchmark.md):
    0.546-0.560 ms a 1080p frame and 1.840-1.882 ms at 2160p, where 256 with 8 warps gave
    0.574-0.764 and 1.852-1.941, and 64 with 4 warps (which compiles without spills) 0.93-1.05
    and 3.42: the larger tiles' spilled registers cost less than the smallest tiles' extra
    loop trips, and 128 pixels sit between the two. ``fast_sin``: the coordinate sines by the GPU's ``sin.approx`` after a range
    reduction (CUDA only; the interpreter always uses ``tl.sin``)."""

    block: int | None = None
    num_warps: int = 4
    programs_per_sm: int = 4
    fast_sin: bool = True


def interpreting() -> bool:
    """Whether Triton would build interpreted kernels now (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available(device: torch.device | str = "cuda") -> bool:
    """True when triton imports and can run on ``device``: a CUDA device, or any device
    under the interpreter."""
    if triton is None:
        return False
    device = torch.device(device)
    return interpreting() or (device.type == "cuda" and torch.cuda.is_available())


def supports(net: ITMNet) -> bool:
    """Whether the fused kernel covers ``net``'s configuration."""
    return 1 <= len(net.config.hidden) <= MAX_HIDDEN


def _pad(n: int) -> int:
    return max(16, 1 << max(0, int(n) - 1).bit_length())


# ------------------------------------------------------------------------------- kernels
# Plain functions, made Triton kernels by :func:`kernels` (so the interpreter can be
# chosen when they are first used, not at import). They call no helpers (a helper would
# have to be a Triton function of the same kind): everything is inline. The parameter
# annotations stay strings (``from __future__ import annotations``); Triton reads
# "constexpr" in them.


def _itm_kernel(
    y_ptr, cb_ptr, cr_ptr, y_stride, c_stride,
    yo_ptr, yo_stride, cbs_ptr, crs_ptr,
    h, w, ch, cw, n_pixels, n_tiles,
    in_gy_inv, in_oy, in_gc_inv, in_oc, r_cr, g_cb, g_cr, b_cb,
    fx_ptr, fy_ptr, ph_ptr, bc_ptr, br_ptr, b1_ptr, bh_ptr, wo_ptr, bo_ptr, wr_ptr, mmr_ptr,
    wc_ptr, w1c_ptr, w1r_ptr, wh_ptr,
    COORD: tl.constexpr, PRIOR: tl.constexpr,
    F: tl.constexpr, C: tl.constexpr, R: tl.constexpr, HID: tl.constexpr,
    NUM_HIDDEN: tl.constexpr, BM: tl.constexpr, DOT: tl.constexpr,
    PRECISION: tl.constexpr, FAST_SIN: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    fcol = tl.arange(0, F)
    ccol = tl.arange(0, C)
    rcol = tl.arange(0, R)
    hcol = tl.arange(0, HID)
    ch4 = tl.arange(0, 4)
    wf = w.to(tl.float32)
    hf = h.to(tl.float32)
    for t in range(pid, n_tiles, nprog):
        # ---- weights: 8-40 KB, re-read per tile from L1 (loading them once per program
        # and holding them across the loop spilled registers on sm_90; the compiler may
        # still hoist what fits)
        if COORD != 0:
            fx = tl.load(fx_ptr + fcol)
            fy = tl.load(fy_ptr + fcol)
            ph = tl.load(ph_ptr + fcol)
            w1c = tl.load(w1c_ptr + ccol[:, None] * HID + hcol[None, :])
        if COORD == 2:
            wc = tl.load(wc_ptr + fcol[:, None] * C + ccol[None, :])
            bc = tl.load(bc_ptr + ccol)
        wr0 = tl.load(wr_ptr + rcol)
        wr1 = tl.load(wr_ptr + R + rcol)
        wr2 = tl.load(wr_ptr + 2 * R + rcol)
        br = tl.load(br_ptr + rcol)
        w1r = tl.load(w1r_ptr + rcol[:, None] * HID + hcol[None, :])
        b1 = tl.load(b1_ptr + hcol)
        if NUM_HIDDEN >= 2:
            wh2 = tl.load(wh_ptr + hcol[:, None] * HID + hcol[None, :])
            bh2 = tl.load(bh_ptr + hcol)
        if NUM_HIDDEN >= 3:
            wh3 = tl.load(wh_ptr + HID * HID + hcol[:, None] * HID + hcol[None, :])
            bh3 = tl.load(bh_ptr + HID + hcol)
        if NUM_HIDDEN >= 4:
            wh4 = tl.load(wh_ptr + 2 * HID * HID + hcol[:, None] * HID + hcol[None, :])
            bh4 = tl.load(bh_ptr + 2 * HID + hcol)
        wo0 = tl.load(wo_ptr + hcol)
        wo1 = tl.load(wo_ptr + HID + hcol)
        wo2 = tl.load(wo_ptr + 2 * HID + hcol)
        bo = tl.load(bo_ptr + ch4)  # (3 biases, 0)
        p = t * BM + tl.arange(0, BM)
        pm = p < n_pixels
        pc = tl.minimum(p, n_pixels - 1)
        row = pc // w
        xc = pc - row * w
        j0 = xc // 2
        j1 = tl.minimum(j0 + 1, cw - 1)
        odd_col = (xc % 2) == 1
        px = ((xc.to(tl.float32) + 0.5) / wf) * 2.0 - 1.0
        # ---- chroma at this luma row: rows at 2i + 0.5 (3/4, 1/4), co-sited columns
        ci = row // 2
        ca = tl.minimum(tl.maximum(ci + 2 * (row % 2) - 1, 0), ch - 1)
        cb_a0 = tl.load(cb_ptr + ci * c_stride + j0).to(tl.float32)
        cb_b0 = tl.load(cb_ptr + ca * c_stride + j0).to(tl.float32)
        cb_a1 = tl.load(cb_ptr + ci * c_stride + j1).to(tl.float32)
        cb_b1 = tl.load(cb_ptr + ca * c_stride + j1).to(tl.float32)
        cr_a0 = tl.load(cr_ptr + ci * c_stride + j0).to(tl.float32)
        cr_b0 = tl.load(cr_ptr + ca * c_stride + j0).to(tl.float32)
        cr_a1 = tl.load(cr_ptr + ci * c_stride + j1).to(tl.float32)
        cr_b1 = tl.load(cr_ptr + ca * c_stride + j1).to(tl.float32)
        cb_v0 = cb_a0 * 0.75 + cb_b0 * 0.25
        cr_v0 = cr_a0 * 0.75 + cr_b0 * 0.25
        cbu = tl.where(odd_col, (cb_v0 + (cb_a1 * 0.75 + cb_b1 * 0.25)) * 0.5, cb_v0)
        cru = tl.where(odd_col, (cr_v0 + (cr_a1 * 0.75 + cr_b1 * 0.25)) * 0.5, cr_v0)
        # ---- SDR R'G'B' (BT.709), clipped
        yv = (tl.load(y_ptr + row * y_stride + xc).to(tl.float32) - in_oy) * in_gy_inv
        cbn = (cbu - in_oc) * in_gc_inv
        crn = (cru - in_oc) * in_gc_inv
        r = tl.minimum(tl.maximum(yv + r_cr * crn, 0.0), 1.0)
        g = tl.minimum(tl.maximum(yv + g_cb * cbn + g_cr * crn, 0.0), 1.0)
        b = tl.minimum(tl.maximum(yv + b_cb * cbn, 0.0), 1.0)
        # ---- the network
        rf = r[:, None] * wr0[None, :] + g[:, None] * wr1[None, :] + b[:, None] * wr2[None, :]
        rf = tl.maximum(rf + br[None, :], 0.0)
        acc = tl.dot(rf.to(DOT), w1r, input_precision=PRECISION)
        if COORD != 0:
            py = ((row.to(tl.float32) + 0.5) / hf) * 2.0 - 1.0
            ang = px[:, None] * fx[None, :] + py[:, None] * fy[None, :] + ph[None, :]
            if FAST_SIN:
                # on the GPU: reduce to [-pi, pi] (2 pi in two parts, Cody-Waite; |angle|
                # stays below ~200 rad, so k * 6.28125 is exact), then the hardware's
                # sin.approx (abs. error 2^-20.9 there) instead of libdevice's sinf with its
                # slow-path code for huge arguments
                k = tl.floor(ang * 0.15915494309189535 + 0.5)
                red = (ang - k * 6.28125) - k * 0.001935307179586232
                cf = tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [red],
                                               dtype=tl.float32, is_pure=True, pack=1)
            else:
                cf = tl.sin(ang)
            if COORD == 2:
                cf = tl.dot(cf.to(DOT), wc, input_precision=PRECISION)
                cf = tl.maximum(cf + bc[None, :], 0.0)
            acc = tl.dot(cf.to(DOT), w1c, acc, input_precision=PRECISION)
        hid = tl.maximum(acc + b1[None, :], 0.0)
        if NUM_HIDDEN >= 2:
            hid = tl.dot(hid.to(DOT), wh2, input_precision=PRECISION)
            hid = tl.maximum(hid + bh2[None, :], 0.0)
        if NUM_HIDDEN >= 3:
            hid = tl.dot(hid.to(DOT), wh3, input_precision=PRECISION)
            hid = tl.maximum(hid + bh3[None, :], 0.0)
        if NUM_HIDDEN >= 4:
            hid = tl.dot(hid.to(DOT), wh4, input_precision=PRECISION)
            hid = tl.maximum(hid + bh4[None, :], 0.0)
        # sums as tl.reduce with Triton's own sum combiner, not tl.sum: tl.sum is itself a
        # Triton function, built compiled or interpreted when triton is imported, and the
        # interpreter recognises this combiner (numpy sum) whichever way triton was imported
        o0 = tl.reduce(hid * wo0[None, :], 1, tl.standard._sum_combine)
        o1 = tl.reduce(hid * wo1[None, :], 1, tl.standard._sum_combine)
        o2 = tl.reduce(hid * wo2[None, :], 1, tl.standard._sum_combine)
        out = tl.where(ch4[None, :] == 0, o0[:, None],
                       tl.where(ch4[None, :] == 1, o1[:, None], o2[:, None])) + bo[None, :]
        # ---- the prior, fp32
        if PRIOR == 2:
            # third-order MMR, terms in model.mmr_features order, Horner per term
            out += tl.load(mmr_ptr + ch4, mask=ch4 < 3, other=0.0)[None, :]
            for k in tl.static_range(7):
                if k == 0:
                    tk = r
                elif k == 1:
                    tk = g
                elif k == 2:
                    tk = b
                elif k == 3:
                    tk = r * g
                elif k == 4:
                    tk = r * b
                elif k == 5:
                    tk = g * b
                else:
                    tk = r * g * b
                c1 = tl.load(mmr_ptr + 3 * (1 + k) + ch4, mask=ch4 < 3, other=0.0)
                c2 = tl.load(mmr_ptr + 3 * (8 + k) + ch4, mask=ch4 < 3, other=0.0)
                c3 = tl.load(mmr_ptr + 3 * (15 + k) + ch4, mask=ch4 < 3, other=0.0)
                t2 = tk[:, None]
                out += t2 * (c1[None, :] + t2 * (c2[None, :] + t2 * c3[None, :]))
        if PRIOR == 1:
            # BT.2408: BT.1886 (2.4 power), 203 cd/m2 white, BT.709 -> BT.2020, PQ
            lr = tl.exp2(2.4 * tl.log2(tl.maximum(r, 1e-30)))
            lg = tl.exp2(2.4 * tl.log2(tl.maximum(g, 1e-30)))
            lb = tl.exp2(2.4 * tl.log2(tl.maximum(b, 1e-30)))
            m0 = tl.load(mmr_ptr + 3 * ch4, mask=ch4 < 3, other=0.0)  # matrix columns
            m1 = tl.load(mmr_ptr + 3 * ch4 + 1, mask=ch4 < 3, other=0.0)
            m2 = tl.load(mmr_ptr + 3 * ch4 + 2, mask=ch4 < 3, other=0.0)
            lin = lr[:, None] * m0[None, :] + lg[:, None] * m1[None, :] + lb[:, None] * m2[None, :]
            yp = tl.exp2(0.1593017578125 * tl.log2(tl.maximum(lin * 1e-4, 1e-30)))
            pq = (0.8359375 + 18.8515625 * yp) / (1.0 + 18.6875 * yp)
            out += tl.exp2(78.84375 * tl.log2(pq))
        out = tl.minimum(tl.maximum(out, 0.0), 1.0)
        p0 = tl.reduce(tl.where(ch4[None, :] == 0, out, 0.0), 1, tl.standard._sum_combine)
        p1 = tl.reduce(tl.where(ch4[None, :] == 1, out, 0.0), 1, tl.standard._sum_combine)
        p2 = tl.reduce(tl.where(ch4[None, :] == 2, out, 0.0), 1, tl.standard._sum_combine)
        # ---- HDR10 Y'CbCr: BT.2020 NCL, 10-bit narrow range, rounded half up
        ey = 0.2627 * p0 + 0.678 * p1 + 0.0593 * p2
        ecb = (p2 - ey) * (1.0 / 1.8814)
        ecr = (p0 - ey) * (1.0 / 1.4746)
        yc = (tl.minimum(tl.maximum(ey * 876.0 + 64.0, 4.0), 1019.0) + 0.5).to(tl.int32)
        cbc = (tl.minimum(tl.maximum(ecb * 896.0 + 512.0, 4.0), 1019.0) + 0.5).to(tl.int32)
        crc = (tl.minimum(tl.maximum(ecr * 896.0 + 512.0, 4.0), 1019.0) + 0.5).to(tl.int32)
        tl.store(yo_ptr + row * yo_stride + xc, yc.to(tl.int16), mask=pm)
        tl.store(cbs_ptr + pc, cbc.to(tl.int16), mask=pm)
        tl.store(crs_ptr + pc, crc.to(tl.int16), mask=pm)


def _chroma420_kernel(cbs_ptr, crs_ptr, cbo_ptr, cro_ptr, h, w, n_out, cw_out,
                      BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n_out
    row = idx // cw_out
    j = idx - row * cw_out
    x = 2 * j
    left = tl.maximum(x - 1, 0)
    right = tl.minimum(x + 1, w - 1)
    top = 2 * row * w
    bottom = tl.minimum(2 * row + 1, h - 1) * w  # odd height: the last row repeats
    cb = (tl.load(cbs_ptr + top + left, mask=m, other=0).to(tl.int32)
          + tl.load(cbs_ptr + bottom + left, mask=m, other=0).to(tl.int32)
          + 2 * (tl.load(cbs_ptr + top + x, mask=m, other=0).to(tl.int32)
                 + tl.load(cbs_ptr + bottom + x, mask=m, other=0).to(tl.int32))
          + tl.load(cbs_ptr + top + right, mask=m, other=0).to(tl.int32)
          + tl.load(cbs_ptr + bottom + right, mask=m, other=0).to(tl.int32) + 4) // 8
    cr = (tl.load(crs_ptr + top + left, mask=m, other=0).to(tl.int32)
          + tl.load(crs_ptr + bottom + left, mask=m, other=0).to(tl.int32)
          + 2 * (tl.load(crs_ptr + top + x, mask=m, other=0).to(tl.int32)
                 + tl.load(crs_ptr + bottom + x, mask=m, other=0).to(tl.int32))
          + tl.load(crs_ptr + top + right, mask=m, other=0).to(tl.int32)
          + tl.load(crs_ptr + bottom + right, mask=m, other=0).to(tl.int32) + 4) // 8
    tl.store(cbo_ptr + idx, cb.to(tl.int16), mask=m)
    tl.store(cro_ptr + idx, cr.to(tl.int16), mask=m)


@functools.lru_cache(maxsize=2)
def _build(interpret: bool):
    if triton is None:
        raise RuntimeError("the fused GPU kernel needs triton: pip install 'itmfilter[gpu]'")
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        itm = triton.jit(_copy(_itm_kernel))
        chroma = triton.jit(_copy(_chroma420_kernel))
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return itm, chroma


def _copy(fn):
    """A fresh function object over the same code (the interpreted and compiled builds must
    not share one: Triton keeps state on it)."""
    import types

    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__annotations__ = dict(fn.__annotations__)
    new.__doc__ = fn.__doc__
    new.__module__ = fn.__module__
    new.__qualname__ = fn.__qualname__
    return new


def kernels(interpret: bool | None = None):
    """``(fused kernel, 4:2:0 chroma kernel)`` as Triton kernels, interpreted or compiled
    (default: as ``TRITON_INTERPRET`` says now)."""
    return _build(interpreting() if interpret is None else bool(interpret))


# ------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class Packed:
    """A network's weights laid out for the kernel, on one device: ``f32`` (angles,
    biases, the SDR branch, the head, the prior's coefficients) and ``dot`` (the matrices
    of the tl.dot products, in the operand dtype), each one buffer; ``views`` maps names to
    slices of them; ``meta`` holds the constexpr sizes."""

    f32: torch.Tensor
    dot: torch.Tensor
    views: dict
    meta: dict


_PACKED: "weakref.WeakKeyDictionary[ITMNet, tuple]" = weakref.WeakKeyDictionary()


def _dot_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" and not interpreting() else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def pack_weights(net: ITMNet, device, dtype: torch.dtype = torch.float16) -> Packed:
    """``net``'s weights padded and packed for the kernel (cached per network while its
    parameters are unchanged: torch's version counters tell)."""
    device = torch.device(device)
    params = [p for p in net.parameters()] + [b for b in net.buffers()]
    key = (device, dtype, tuple(p._version for p in params), tuple(p.data_ptr() for p in params))
    cached = _PACKED.get(net)
    if cached is not None and cached[0] == key:
        return cached[1]
    packed = _pack(net, device, dtype)
    _PACKED[net] = (key, packed)
    return packed


@torch.no_grad()
def _pack(net: ITMNet, device: torch.device, dtype: torch.dtype) -> Packed:
    cfg = net.config
    if not supports(net):
        raise ValueError(f"the fused kernel takes 1..{MAX_HIDDEN} hidden layers, got {cfg.hidden}")
    coord = _COORD[cfg.coord_encoding]
    prior = _PRIOR[cfg.prior]
    hidden = list(cfg.hidden)
    hid = _pad(max(hidden))
    r_pad = _pad(cfg.rgb_features)
    f32: dict[str, np.ndarray] = {}
    mats: dict[str, np.ndarray] = {}

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().double().numpy()

    # coordinate branch: feature column j is sin(x fx[j] + y fy[j] + ph[j])
    if coord == 2:
        bands = cfg.fourier_bands
        f_pad = _pad(4 * bands)
        c_pad = _pad(cfg.coord_features)
        freqs = (2.0 ** np.arange(bands)) * math.pi
        fx, fy, ph = np.zeros(f_pad), np.zeros(f_pad), np.zeros(f_pad)
        # ITMNet.fourier_features order: [sin(x f), cos(x f), sin(y f), cos(y f)]
        for axis, target in ((0, fx), (1, fy)):
            base = axis * 2 * bands
            target[base:base + bands] = freqs
            target[base + bands:base + 2 * bands] = freqs
            ph[base + bands:base + 2 * bands] = math.pi / 2
        lin = net.coord[0]
        wc = np.zeros((f_pad, c_pad))
        wc[: 4 * bands, : cfg.coord_features] = arr(lin.weight).T
        bc = np.zeros(c_pad)
        bc[: cfg.coord_features] = arr(lin.bias)
        mats["wc"], f32["bc"] = wc, bc
        coord_width = cfg.coord_features
    elif coord == 1:
        c_pad = f_pad = _pad(cfg.coord_features)
        lin, w0 = net.coord[0], net.coord[1].w0
        fx, fy, ph = np.zeros(f_pad), np.zeros(f_pad), np.zeros(f_pad)
        fx[: cfg.coord_features] = w0 * arr(lin.weight)[:, 0]
        fy[: cfg.coord_features] = w0 * arr(lin.weight)[:, 1]
        ph[: cfg.coord_features] = w0 * arr(lin.bias)
        coord_width = cfg.coord_features
    else:
        c_pad = f_pad = 16
        fx = fy = ph = np.zeros(f_pad)
        coord_width = 0
    f32.update(fx=fx, fy=fy, ph=ph)
    if "bc" not in f32:
        f32["bc"] = np.zeros(c_pad)
    # SDR branch
    wr = np.zeros((3, r_pad))
    wr[:, : cfg.rgb_features] = arr(net.rgb[0].weight).T
    br = np.zeros(r_pad)
    br[: cfg.rgb_features] = arr(net.rgb[0].bias)
    f32.update(wr=wr, br=br)
    # trunk: the first layer split into its coordinate and SDR inputs (ITMNet concatenates
    # [coord, rgb])
    linears = [m for m in net.fusion if isinstance(m, torch.nn.Linear)]
    first = arr(linears[0].weight).T  # (coord + rgb, hidden[0])
    w1c = np.zeros((c_pad, hid))
    w1c[:coord_width, : hidden[0]] = first[:coord_width]
    w1r = np.zeros((r_pad, hid))
    w1r[: cfg.rgb_features, : hidden[0]] = first[coord_width:]
    b1 = np.zeros(hid)
    b1[: hidden[0]] = arr(linears[0].bias)
    mats.update(w1c=w1c, w1r=w1r)
    f32["b1"] = b1
    wh = np.zeros((max(1, len(hidden) - 1), hid, hid))
    bh = np.zeros((max(1, len(hidden) - 1), hid))
    for i, layer in enumerate(linears[1:-1]):
        wt = arr(layer.weight).T
        wh[i, : wt.shape[0], : wt.shape[1]] = wt
        bh[i, : wt.shape[1]] = arr(layer.bias)
    mats["wh"] = wh
    f32["bh"] = bh
    head = linears[-1]
    wo = np.zeros((3, hid))
    wo[:, : hidden[-1]] = arr(head.weight)
    bo = np.zeros(4)
    bo[:3] = arr(head.bias)
    f32.update(wo=wo, bo=bo)
    # prior: MMR coefficients (22, 3), or for BT.2408 the BT.709 -> BT.2020 matrix scaled
    # to 203 cd/m2 white, row-major (the kernel reads its columns with stride 3)
    if prior == 2:
        f32["mmr"] = arr(net.prior_mmr).reshape(-1)
    elif prior == 1:
        f32["mmr"] = (np.asarray(MATRIX_BT709_TO_BT2020, np.float64) * SDR_WHITE_NITS_BT2408).reshape(-1)
    else:
        f32["mmr"] = np.zeros(3 * MMR_TERMS)
    f32_buf, f32_views = _one_buffer(f32, torch.float32)
    dot_buf, dot_views = _one_buffer(mats, dtype)
    f32_buf = f32_buf.to(device)
    dot_buf = dot_buf.to(device)
    views = {k: f32_buf[a:b] for k, (a, b) in f32_views.items()}
    views.update({k: dot_buf[a:b] for k, (a, b) in dot_views.items()})
    meta = dict(COORD=coord, PRIOR=prior, F=f_pad, C=c_pad, R=r_pad, HID=hid, NUM_HIDDEN=len(hidden))
    return Packed(f32_buf, dot_buf, views, meta)


def _one_buffer(parts: dict[str, np.ndarray], dtype: torch.dtype):
    """Concatenate flattened arrays into one ``dtype`` tensor, each part starting on a
    64-byte boundary (Triton specialises aligned pointers); returns it and the offsets."""
    align = 32
    offsets, chunks, at = {}, [], 0
    for name, a in parts.items():
        flat = np.asarray(a, np.float64).reshape(-1)
        offsets[name] = (at, at + flat.size)
        padded = -(-flat.size // align) * align
        chunks.append(np.concatenate([flat, np.zeros(padded - flat.size)]))
        at += padded
    buf = torch.from_numpy(np.concatenate(chunks)).to(dtype)
    return buf, offsets


# ------------------------------------------------------------------------------- launch


def _sdr_conversion(bits: int, full_range: bool) -> tuple[float, ...]:
    """The BT.709 Y'CbCr -> R'G'B' constants (1 / luma gain, luma offset, 1 / chroma gain,
    chroma offset, R'-from-Cr, G'-from-Cb, G'-from-Cr, B'-from-Cb) of
    :func:`itmfilter.colour.tensor.planes420_to_rgb`."""
    gy, oy, gc, oc = (float(v) for v in code_scale(bits, full_range))
    k_r, k_b = ycbcr_weights("bt709")
    k_g = 1 - k_r - k_b
    r_cr, b_cb = 2 * (1 - k_r), 2 * (1 - k_b)
    return 1.0 / gy, oy, 1.0 / gc, oc, r_cr, -k_b * b_cb / k_g, -k_r * r_cr / k_g, b_cb


def _check_output_constants() -> None:
    """The kernel writes the HDR10 constants as literals (Triton folds them); they must be
    the colour module's."""
    k_r, k_b = ycbcr_weights("bt2020nc")
    assert (k_r, k_b) == (0.2627, 0.0593)
    assert abs((1 - k_r - k_b) - 0.678) < 1e-12
    assert tuple(code_scale(10, False)) == (876, 64, 896, 512)
    assert tuple(ycbcr_code_range(10, False)) == (4, 1019)
    assert (PQ_M1, PQ_M2, PQ_C1, PQ_C2, PQ_C3) == (0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875)


_check_output_constants()


def hdr10_planes(net: ITMNet, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, *, bits: int = 8,
                 full_range: bool = False, precision: str = "auto",
                 config: KernelConfig = KernelConfig()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The full network over one SDR frame, fused: 4:2:0 planes in, HDR10 planes out.

    ``y``: ``(H, W)`` BT.709 luma codes (uint8 for 8-bit, int16 holding 10-bit codes);
    ``cb``, ``cr``: ``(ceil(H/2), ceil(W/2))``; ``bits`` 8 or 10, narrow or ``full_range``;
    all on one device (CUDA, or the CPU under ``TRITON_INTERPRET=1``). ``precision``:
    :data:`PRECISIONS`. Returns int16 Y ``(H, W)`` and Cb, Cr ``(ceil(H/2), ceil(W/2))``:
    10-bit BT.2020 NCL PQ narrow-range codes, on the same device.
    """
    if bits not in (8, 10):
        raise ValueError(f"the fused kernel takes 8- or 10-bit SDR, got {bits}")
    if y.dim() != 2 or cb.shape != cr.shape or cb.shape != ((y.shape[0] + 1) // 2, (y.shape[1] + 1) // 2):
        raise ValueError(f"expected 4:2:0 planes, got Y {tuple(y.shape)}, Cb {tuple(cb.shape)}, Cr {tuple(cr.shape)}")
    block = int(config.block or (512 if interpreting() else DEFAULT_GPU_BLOCK))
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    device = y.device
    dtype = _dot_dtype(precision, device)
    packed = pack_weights(net, device, dtype)
    v = packed.views
    y, cb, cr = (p.contiguous() for p in (y, cb, cr))
    h, w = y.shape
    ch, cw = cb.shape
    y_out = torch.empty((h, w), dtype=torch.int16, device=device)
    chroma444 = torch.empty((2, h, w), dtype=torch.int16, device=device)
    cb_out = torch.empty((ch, cw), dtype=torch.int16, device=device)
    cr_out = torch.empty((ch, cw), dtype=torch.int16, device=device)
    n_pixels = h * w
    n_tiles = -(-n_pixels // block)
    itm, chroma = kernels()
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        programs = min(n_tiles, sms * config.programs_per_sm)
    else:
        programs = min(n_tiles, 2)  # the interpreter: a program is a Python loop anyway
    itm[(programs,)](
        y, cb, cr, y.stride(0), cb.stride(0),
        y_out, y_out.stride(0), chroma444[0], chroma444[1],
        h, w, ch, cw, n_pixels, n_tiles,
        *_sdr_conversion(bits, full_range),
        v["fx"], v["fy"], v["ph"], v["bc"], v["br"], v["b1"], v["bh"], v["wo"], v["bo"], v["wr"], v["mmr"],
        v["wc"] if "wc" in v else v["w1c"], v["w1c"], v["w1r"], v["wh"],
        BM=block, DOT=_tl_dtype(dtype), PRECISION="ieee" if dtype == torch.float32 else None,
        FAST_SIN=config.fast_sin and device.type == "cuda" and not interpreting(),
        num_warps=config.num_warps, enable_fp_fusion=True, **packed.meta,
    )
    cblock = 1024
    chroma[(-(-ch * cw // cblock),)](chroma444[0], chroma444[1], cb_out, cr_out, h, w, ch * cw, cw,
                                     BLOCK=cblock, enable_fp_fusion=True)
    return y_out, cb_out, cr_out


def _tl_dtype(dtype: torch.dtype):
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[dtype]


def compile_for_gpu(net: ITMNet, *, arch: int = 90, bits: int = 8, precision: str = "fp16",
                    config: KernelConfig = KernelConfig()):
    """Compile the fused kernel for ``net`` ahead of time for CUDA compute capability
    ``arch`` (90: H100/H200, 80: A100), without a GPU: Triton's own LLVM and ptxas. Returns
    Triton's compiled kernel (``.asm["ptx"]``, ``.asm["cubin"]``, ``.metadata``): a check
    that the kernel builds for the device, and its PTX to inspect."""
    if triton is None:
        raise RuntimeError("compiling the fused GPU kernel needs triton: pip install 'itmfilter[gpu]'")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    itm, _ = kernels(interpret=False)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    meta = _pack(net, torch.device("cpu"), dtype).meta
    dot = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]
    sdr = "*u8" if bits == 8 else "*i16"
    names = list(inspect.signature(_itm_kernel).parameters)
    kinds = ([sdr] * 3 + ["i32"] * 2 + ["*i16", "i32", "*i16", "*i16"] + ["i32"] * 6 + ["fp32"] * 8
             + ["*fp32"] * 11 + [dot] * 4)
    constants = dict(meta, BM=config.block or DEFAULT_GPU_BLOCK, DOT=_tl_dtype(dtype),
                     PRECISION="ieee" if dtype == torch.float32 else None, FAST_SIN=config.fast_sin)
    signature = dict(zip(names, kinds + ["constexpr"] * (len(names) - len(kinds))))
    source = ASTSource(fn=itm, signature=signature, constexprs=constants)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": config.num_warps, "enable_fp_fusion": True})
