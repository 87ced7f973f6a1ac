"""The player's CPU fast path: SDR 4:2:0 planes + a low-resolution gain map -> HDR10 planes
in one fused, multi-threaded pass (numba).

The ladder's gain rungs (:mod:`itmfilter.render.ladder`) spend almost all of a 1080p frame's time
outside the network: Y'CbCr -> R'G'B', the BT.1886 2.4 power, BT.709 -> BT.2020, the
upsampled gain, the PQ encode, R'G'B' -> Y'CbCr and 4:2:0 subsampling are ~15 whole-frame
passes in numpy/torch, each a few ms on 2 cores, and the powers alone ~45 ms. Here every
pixel goes through all of it once, in registers, rows split over the cores:

    SDR Y'CbCr (BT.709, 8/10-bit, narrow/full; chroma upsampled as
        :func:`itmfilter.colour.ycbcr.upsample_chroma`: chroma_loc_type 0)
    -> R'G'B' clipped to [0, 1] -> linear by a 4097-entry table of x^2.4 (BT.1886,
       linear interpolation: error < 1e-7)
    -> BT.2020 cd/m2 placed per BT.2408 (203 cd/m2 white; ITU-R BT.2087 matrix)
    -> (P + k) * bilinear gain - k, clipped to [0, 10000]      (ladder module docstring)
    -> PQ (SMPTE ST 2084) by a 4097-entry table over (L / 10000)^(1/4), interpolated
       (error < 2e-6 of full scale, 0.002 of a 10-bit code)
    -> Y'CbCr BT.2020 NCL 10-bit narrow range (BT.2100 table 9), chroma [1, 2, 1] / 4
       on even columns and row pairs averaged (:func:`~itmfilter.colour.ycbcr.subsample_chroma`)

Against the exact torch/numpy path (:func:`itmfilter.render.frame.hdr10_frame` with
``path="exact"``) the codes agree within 1 (tables and float32 rounding at half-code ties);
tested. numba compiles the kernel on first use (a few seconds, then cached on disk).
"""

from __future__ import annotations

import functools

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
from itmfilter.colour.ycbcr import (
    code_scale,
    ycbcr_code_range,
    ycbcr_to_rgb,
    ycbcr_weights,
)
from itmfilter.model.inference import resolve_precision
from itmfilter.model.separable import evaluate_grid, pixel_centres, separable
from itmfilter.render.ladder import (
    GAIN_OFFSET_NITS,
    GUIDE_FEATURES,
    GUIDED_KNEE,
    GUIDED_RIDGE,
    GUIDED_SPLAT,
    brightest_blocks,
    gain_map,
    gain_mode,
    guided_coefficients,
    guided_nodes,
    guided_samples,
    node_lerp,
    probe_scores,
    probe_share,
    refine_block_list,
    refine_blocks,
    residual_map,
    residual_on_blocks,
)

GAMMA_LUT_SIZE = 4096
PQ_LUT_SIZE = 65536


@functools.lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """float32 tables, one entry past the end for interpolation: x^2.4 on x = i / 4096
    (BT.1886), and the PQ code of 10000 v^2 cd/m2 on v = i / 65536 (indexing by the square
    root of luminance needs one sqrt per value and keeps the steep foot of PQ fine)."""
    x = np.arange(GAMMA_LUT_SIZE + 1, dtype=np.float64) / GAMMA_LUT_SIZE
    gamma = x**2.4
    v = np.arange(PQ_LUT_SIZE + 1, dtype=np.float64) / PQ_LUT_SIZE
    y = (v * v) ** PQ_M1  # (L / 10000)^m1 with L = 10000 v^2
    pq = ((PQ_C1 + PQ_C2 * y) / (1.0 + PQ_C3 * y)) ** PQ_M2
    return gamma.astype(np.float32), pq.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _helpers():
    """numba helpers shared by both kernels (inlined into them)."""
    import numba as nb

    # module globals, not closure cells: numba keys a cached kernel by its closure's pickled
    # contents, and a dispatcher pickles differently in every process, so a kernel holding
    # jitted helpers in its closure recompiled on every start (~35 s before the first frame)
    global columns, chroma_source_rows, chroma_at, chroma_row, map_row, chroma_out, sdr_rgb, hdr_codes, mmr3

    @nb.njit(inline="always", cache=True)
    def columns(w, gw, inv_d):
        """Bilinear (align_corners=False) source columns and weights of the low-res map."""
        gx0 = np.empty(w, dtype=np.int64)
        gx1 = np.empty(w, dtype=np.int64)
        gwx = np.empty(w, dtype=np.float32)
        for x in range(w):
            sx = max((x + 0.5) * inv_d - 0.5, 0.0)
            i = int(sx)
            gwx[x] = sx - i
            gx0[x] = min(i, gw - 1)
            gx1[x] = min(i + 1, gw - 1)
        return gx0, gx1, gwx

    @nb.njit(inline="always", cache=True)
    def chroma_source_rows(row, ch):
        """The two 4:2:0 chroma rows a luma row reads (rows at 2 i + 0.5: weights 3/4, 1/4)."""
        ci = row // 2
        return ci, (max(ci - 1, 0) if row % 2 == 0 else min(ci + 1, ch - 1))

    @nb.njit(inline="always", cache=True)
    def chroma_at(plane, ci, ca, j, in_off_c, inv_gc):
        """Chroma column ``j`` between rows ``ci`` (3/4) and ``ca`` (1/4), as [-0.5, 0.5]."""
        return np.float32(((0.75 * plane[ci, j] + 0.25 * plane[ca, j]) - in_off_c) * inv_gc)

    @nb.njit(inline="always", cache=True)
    def chroma_row(cb_in, cr_in, row, in_off_c, inv_gc, cb_row, cr_row, cb_full, cr_full):
        """This luma row's chroma: vertically (4:2:0 rows at 2 i + 0.5: 3/4, 1/4), then
        horizontally (co-sited: even columns copy, odd ones average), as [-0.5, 0.5]."""
        ch, cw = cb_in.shape
        w = cb_full.shape[0]
        ci, ca = chroma_source_rows(row, ch)
        for j in range(cw):
            cb_row[j] = chroma_at(cb_in, ci, ca, j, in_off_c, inv_gc)
            cr_row[j] = chroma_at(cr_in, ci, ca, j, in_off_c, inv_gc)
        for j in range(w // 2 + w % 2):
            cb_full[2 * j] = cb_row[j]
            cr_full[2 * j] = cr_row[j]
        for j in range(w // 2):
            j1 = min(j + 1, cw - 1)
            cb_full[2 * j + 1] = np.float32(0.5) * (cb_row[j] + cb_row[j1])
            cr_full[2 * j + 1] = np.float32(0.5) * (cr_row[j] + cr_row[j1])

    @nb.njit(inline="always", cache=True)
    def map_row(lowres, row, inv_d, gx0, gx1, gwx, g_row, g_full):
        """This row of the ``(3, lh, lw)`` low-res map, bilinearly upsampled (align_corners=False)."""
        gh, gw = lowres.shape[1], lowres.shape[2]
        sy = max((row + 0.5) * inv_d - 0.5, 0.0)
        gy0 = int(sy)
        wy = np.float32(sy - gy0)
        gy0 = min(gy0, gh - 1)
        gy1 = min(gy0 + 1, gh - 1)
        for c in range(3):
            for j in range(gw):
                g_row[c, j] = lowres[c, gy0, j] + wy * (lowres[c, gy1, j] - lowres[c, gy0, j])
            for x in range(g_full.shape[1]):
                a = g_row[c, gx0[x]]
                g_full[c, x] = a + gwx[x] * (g_row[c, gx1[x]] - a)

    @nb.njit(inline="always", cache=True)
    def chroma_out(cb_acc, cr_acc, pair, cb_out, cr_out):
        """4:2:0: [1, 2, 1] on even columns of the row-pair sums, round half up."""
        w = cb_acc.shape[0]
        for j in range(cb_out.shape[1]):
            x = 2 * j
            left = max(x - 1, 0)
            right = min(x + 1, w - 1)
            cb_out[pair, j] = (cb_acc[left] + 2 * cb_acc[x] + cb_acc[right] + 4) // 8
            cr_out[pair, j] = (cr_acc[left] + 2 * cr_acc[x] + cr_acc[right] + 4) // 8

    @nb.njit(inline="always", cache=True)
    def sdr_rgb(y_code, cbn, crn, conv):
        """SDR R'G'B' in [0, 1] of a luma code and normalised chroma (``conv``: :func:`_conversion`)."""
        yv = (np.float32(y_code) - conv[1]) * conv[0]
        zero, one = np.float32(0.0), np.float32(1.0)
        r = min(max(yv + conv[2] * crn, zero), one)
        g = min(max(yv + conv[3] * cbn + conv[4] * crn, zero), one)
        b = min(max(yv + conv[5] * cbn, zero), one)
        return r, g, b

    @nb.njit(inline="always", cache=True)
    def hdr_codes(p0, p1, p2, conv):
        """PQ R'G'B' -> Y, Cb, Cr codes (BT.2020 NCL, rounded half up, clipped)."""
        ey = conv[6] * p0 + conv[7] * p1 + conv[8] * p2
        lo, hi, half = conv[14], conv[15], np.float32(0.5)
        yc = int(min(max(ey * conv[9] + conv[10], lo), hi) + half)
        cbc = int(min(max((p2 - ey) * conv[11] + conv[13], lo), hi) + half)
        crc = int(min(max((p0 - ey) * conv[12] + conv[13], lo), hi) + half)
        return yc, cbc, crc

    @nb.njit(inline="always", cache=True)
    def mmr3(r, g, b, c):
        """The third-order MMR polynomial (``c``: ``(22, 3)`` float32) at one R'G'B' pixel,
        terms in :func:`itmfilter.model.net.mmr_features` order; PQ, unclipped."""
        rg, rb, gb = r * g, r * b, g * b
        rgb = rg * b
        t1, t2, t3, t4, t5, t6, t7 = r, g, b, rg, rb, gb, rgb
        q1, q2, q3, q4, q5, q6, q7 = t1 * t1, t2 * t2, t3 * t3, t4 * t4, t5 * t5, t6 * t6, t7 * t7
        p0 = (c[0, 0] + c[1, 0] * t1 + c[2, 0] * t2 + c[3, 0] * t3 + c[4, 0] * t4 + c[5, 0] * t5
              + c[6, 0] * t6 + c[7, 0] * t7 + c[8, 0] * q1 + c[9, 0] * q2 + c[10, 0] * q3
              + c[11, 0] * q4 + c[12, 0] * q5 + c[13, 0] * q6 + c[14, 0] * q7
              + c[15, 0] * q1 * t1 + c[16, 0] * q2 * t2 + c[17, 0] * q3 * t3 + c[18, 0] * q4 * t4
              + c[19, 0] * q5 * t5 + c[20, 0] * q6 * t6 + c[21, 0] * q7 * t7)
        p1 = (c[0, 1] + c[1, 1] * t1 + c[2, 1] * t2 + c[3, 1] * t3 + c[4, 1] * t4 + c[5, 1] * t5
              + c[6, 1] * t6 + c[7, 1] * t7 + c[8, 1] * q1 + c[9, 1] * q2 + c[10, 1] * q3
              + c[11, 1] * q4 + c[12, 1] * q5 + c[13, 1] * q6 + c[14, 1] * q7
              + c[15, 1] * q1 * t1 + c[16, 1] * q2 * t2 + c[17, 1] * q3 * t3 + c[18, 1] * q4 * t4
              + c[19, 1] * q5 * t5 + c[20, 1] * q6 * t6 + c[21, 1] * q7 * t7)
        p2 = (c[0, 2] + c[1, 2] * t1 + c[2, 2] * t2 + c[3, 2] * t3 + c[4, 2] * t4 + c[5, 2] * t5
              + c[6, 2] * t6 + c[7, 2] * t7 + c[8, 2] * q1 + c[9, 2] * q2 + c[10, 2] * q3
              + c[11, 2] * q4 + c[12, 2] * q5 + c[13, 2] * q6 + c[14, 2] * q7
              + c[15, 2] * q1 * t1 + c[16, 2] * q2 * t2 + c[17, 2] * q3 * t3 + c[18, 2] * q4 * t4
              + c[19, 2] * q5 * t5 + c[20, 2] * q6 * t6 + c[21, 2] * q7 * t7)
        return p0, p1, p2

    return columns, chroma_row, map_row, chroma_out, sdr_rgb, hdr_codes, mmr3, chroma_source_rows, chroma_at


@functools.lru_cache(maxsize=1)
def _kernel():
    import numba as nb

    _helpers()  # the helpers as module globals (see there)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def kernel(y_in, cb_in, cr_in, gain, d, k, conv, in_off_c, inv_gc, mat, gamma_lut, pq_lut,
               y_out, cb_out, cr_out):
        h, w = y_in.shape
        cw = cb_in.shape[1]
        gw = gain.shape[2]
        f32 = np.float32
        ng = f32(gamma_lut.shape[0] - 1)
        npq = f32(pq_lut.shape[0] - 1)
        ig_max, ipq_max = gamma_lut.shape[0] - 2, pq_lut.shape[0] - 2
        inv_d = 1.0 / d
        k32 = f32(k)
        m = mat.astype(np.float32)
        gx0, gx1, gwx = columns(w, gw, inv_d)  # the same on every row
        for pair in nb.prange((h + 1) // 2):
            cb_acc = np.zeros(w, dtype=np.int32)
            cr_acc = np.zeros(w, dtype=np.int32)
            cb_row = np.empty(cw, dtype=np.float32)
            cr_row = np.empty(cw, dtype=np.float32)
            cb_full = np.empty(w, dtype=np.float32)
            cr_full = np.empty(w, dtype=np.float32)
            g_row = np.empty((3, gw), dtype=np.float32)
            g_full = np.empty((3, w), dtype=np.float32)
            for dr in range(2):
                row = 2 * pair + dr
                if row >= h:
                    row = h - 1  # odd height: the last row repeats
                chroma_row(cb_in, cr_in, row, in_off_c, inv_gc, cb_row, cr_row, cb_full, cr_full)
                map_row(gain, row, inv_d, gx0, gx1, gwx, g_row, g_full)
                for x in range(w):
                    r, g, b = sdr_rgb(y_in[row, x], cb_full[x], cr_full[x], conv)
                    t0, t1, t2 = r * ng, g * ng, b * ng
                    i0 = min(int(t0), ig_max)
                    i1 = min(int(t1), ig_max)
                    i2 = min(int(t2), ig_max)
                    l0 = gamma_lut[i0] + (t0 - i0) * (gamma_lut[i0 + 1] - gamma_lut[i0])
                    l1 = gamma_lut[i1] + (t1 - i1) * (gamma_lut[i1 + 1] - gamma_lut[i1])
                    l2 = gamma_lut[i2] + (t2 - i2) * (gamma_lut[i2 + 1] - gamma_lut[i2])
                    n0 = (m[0, 0] * l0 + m[0, 1] * l1 + m[0, 2] * l2 + k32) * g_full[0, x] - k32
                    n1 = (m[1, 0] * l0 + m[1, 1] * l1 + m[1, 2] * l2 + k32) * g_full[1, x] - k32
                    n2 = (m[2, 0] * l0 + m[2, 1] * l1 + m[2, 2] * l2 + k32) * g_full[2, x] - k32
                    u0 = np.sqrt(min(max(n0, f32(0.0)), f32(10000.0)) * f32(1e-4)) * npq
                    u1 = np.sqrt(min(max(n1, f32(0.0)), f32(10000.0)) * f32(1e-4)) * npq
                    u2 = np.sqrt(min(max(n2, f32(0.0)), f32(10000.0)) * f32(1e-4)) * npq
                    j0 = min(int(u0), ipq_max)
                    j1 = min(int(u1), ipq_max)
                    j2 = min(int(u2), ipq_max)
                    p0 = pq_lut[j0] + (u0 - j0) * (pq_lut[j0 + 1] - pq_lut[j0])
                    p1 = pq_lut[j1] + (u1 - j1) * (pq_lut[j1 + 1] - pq_lut[j1])
                    p2 = pq_lut[j2] + (u2 - j2) * (pq_lut[j2 + 1] - pq_lut[j2])
                    yc, cbc, crc = hdr_codes(p0, p1, p2, conv)
                    if 2 * pair + dr < h:
                        y_out[row, x] = yc
                    cb_acc[x] += cbc
                    cr_acc[x] += crc
            chroma_out(cb_acc, cr_acc, pair, cb_out, cr_out)

    return kernel


@functools.lru_cache(maxsize=1)
def _prior_kernel():
    import numba as nb

    _helpers()  # the helpers as module globals (see there)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def kernel(y_in, cb_in, cr_in, resid, coef, d, clip_prior, conv, in_off_c, inv_gc, y_out, cb_out, cr_out):
        h, w = y_in.shape
        cw = cb_in.shape[1]
        gw = resid.shape[2]
        f32 = np.float32
        lo = f32(0.0) if clip_prior else f32(-1e30)
        hi = f32(1.0) if clip_prior else f32(1e30)
        inv_d = 1.0 / d
        c = coef.astype(np.float32)  # (22, 3)
        gx0, gx1, gwx = columns(w, gw, inv_d)  # the same on every row
        for pair in nb.prange((h + 1) // 2):
            cb_acc = np.zeros(w, dtype=np.int32)
            cr_acc = np.zeros(w, dtype=np.int32)
            cb_row = np.empty(cw, dtype=np.float32)
            cr_row = np.empty(cw, dtype=np.float32)
            cb_full = np.empty(w, dtype=np.float32)
            cr_full = np.empty(w, dtype=np.float32)
            g_row = np.empty((3, gw), dtype=np.float32)
            g_full = np.empty((3, w), dtype=np.float32)
            for dr in range(2):
                row = 2 * pair + dr
                if row >= h:
                    row = h - 1
                chroma_row(cb_in, cr_in, row, in_off_c, inv_gc, cb_row, cr_row, cb_full, cr_full)
                map_row(resid, row, inv_d, gx0, gx1, gwx, g_row, g_full)
                for x in range(w):
                    r, g, b = sdr_rgb(y_in[row, x], cb_full[x], cr_full[x], conv)
                    p0, p1, p2 = mmr3(r, g, b, c)
                    # a rung's prior is clipped to [0, 1] before the residual (as ladder's
                    # reference); the full network's is not (as ITMNet.forward)
                    p0 = min(max(min(max(p0, lo), hi) + g_full[0, x], f32(0.0)), f32(1.0))
                    p1 = min(max(min(max(p1, lo), hi) + g_full[1, x], f32(0.0)), f32(1.0))
                    p2 = min(max(min(max(p2, lo), hi) + g_full[2, x], f32(0.0)), f32(1.0))
                    yc, cbc, crc = hdr_codes(p0, p1, p2, conv)
                    if 2 * pair + dr < h:
                        y_out[row, x] = yc
                    cb_acc[x] += cbc
                    cr_acc[x] += crc
            chroma_out(cb_acc, cr_acc, pair, cb_out, cr_out)

    return kernel


def _conversion(bits: int, full_range: bool) -> tuple[np.ndarray, float, float]:
    """Both kernels' colour constants: ``(conv, chroma offset, 1 / chroma gain)``.

    ``conv`` (float32): the SDR input as BT.709 (1 / luma gain, luma offset, R'-from-Cr,
    G'-from-Cb, G'-from-Cr, B'-from-Cb), then the HDR10 output as BT.2020 NCL 10-bit narrow
    range (K_R, K_G, K_B, luma gain, luma offset, Cb and Cr gains over 2 (1 - K), chroma
    offset, lowest and highest valid code); the same numbers as
    :mod:`itmfilter.colour.ycbcr` (:func:`~itmfilter.colour.ycbcr.code_scale`,
    :func:`~itmfilter.colour.ycbcr.ycbcr_code_range`).
    """

    if bits not in (8, 10):
        raise ValueError(f"the fast path takes 8- or 10-bit SDR, got {bits}")
    gy, oy, gc, oc = code_scale(bits, full_range)
    k_r, k_b = ycbcr_weights("bt709")
    k_g = 1 - k_r - k_b
    r_cr, b_cb = 2 * (1 - k_r), 2 * (1 - k_b)
    wr, wb = ycbcr_weights("bt2020nc")
    gy_o, oy_o, gc_o, oc_o = code_scale(10, False)
    lo, hi = ycbcr_code_range(10, False)
    conv = np.array([1 / gy, oy, r_cr, -k_b * b_cb / k_g, -k_r * r_cr / k_g, b_cb,
                     wr, 1 - wr - wb, wb, gy_o, oy_o, gc_o / (2 * (1 - wb)), gc_o / (2 * (1 - wr)), oc_o,
                     lo, hi], dtype=np.float32)
    return conv, float(oc), 1.0 / gc


def _outputs(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty uint16 Y ``(H, W)`` and Cb, Cr ``(ceil(H/2), ceil(W/2))`` planes."""
    cb = np.empty(((h + 1) // 2, (w + 1) // 2), np.uint16)
    return np.empty((h, w), np.uint16), cb, np.empty_like(cb)


def prior_to_hdr10_planes(y, cb, cr, resid: np.ndarray, coef: np.ndarray, downscale: int, *,
                          bits: int = 8, full_range: bool = False, clip_prior: bool = True):
    """SDR 4:2:0 planes + the network's ``(3, lh, lw)`` PQ residual over its polynomial
    prior (``coef``: the ``(22, 3)`` MMR coefficients) -> (Y, Cb, Cr) uint16 HDR10 planes:
    PQ = clip(clip(prior(SDR)) + bilinear residual), per pixel (:func:`itmfilter.render.ladder.gain_mode`).
    ``clip_prior=False`` (the full network, ``downscale`` 1): PQ = clip(prior(SDR) + residual)."""
    conv, off_c, inv_gc = _conversion(bits, full_range)
    y_out, cb_out, cr_out = _outputs(*y.shape)
    _prior_kernel()(np.ascontiguousarray(y), np.ascontiguousarray(cb), np.ascontiguousarray(cr),
                    np.ascontiguousarray(resid, dtype=np.float32), np.ascontiguousarray(coef, dtype=np.float64),
                    float(downscale), bool(clip_prior), conv, off_c, inv_gc, y_out, cb_out, cr_out)
    return y_out, cb_out, cr_out


@functools.lru_cache(maxsize=1)
def _guided_kernels():
    import numba as nb

    global guided_codes  # a module global, not a closure cell (see _helpers)
    _helpers()  # the helpers as module globals (see there)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def sample(y_in, cb_in, cr_in, rows, cols, conv, in_off_c, inv_gc, out):
        """SDR R'G'B' ``(len(rows), len(cols), 3)`` of the sampled pixels, chroma upsampled
        as the main pass does."""
        w = y_in.shape[1]
        cw = cb_in.shape[1]
        for a in nb.prange(rows.shape[0]):
            row = rows[a]
            cb_row = np.empty(cw, dtype=np.float32)
            cr_row = np.empty(cw, dtype=np.float32)
            cb_full = np.empty(w, dtype=np.float32)
            cr_full = np.empty(w, dtype=np.float32)
            chroma_row(cb_in, cr_in, row, in_off_c, inv_gc, cb_row, cr_row, cb_full, cr_full)
            for b in range(cols.shape[0]):
                x = cols[b]
                r, g, bl = sdr_rgb(y_in[row, x], cb_full[x], cr_full[x], conv)
                out[a, b, 0] = r
                out[a, b, 1] = g
                out[a, b, 2] = bl

    @nb.njit(inline="always", cache=True)
    def guided_codes(r, g, b, p0, p1, p2, a, d, wy, x, k0, k1, k2, kn, inv_kn, conv, s):
        """One pixel's HDR10 codes through its lerped transform (rows ``a``, ``d`` of the
        column-interpolated node transforms, ``wy`` between them) over the prior ``p``, plus
        the offset ``s[:, x]`` (a grid shot's scene residual on this row; zeros without one)."""
        f32 = np.float32
        kv = max((k0 * r + k1 * g + k2 * b - kn) * inv_kn, f32(0.0))
        e0 = (r * (a[0, x] + wy * (d[0, x] - a[0, x])) + g * (a[3, x] + wy * (d[3, x] - a[3, x]))
              + b * (a[6, x] + wy * (d[6, x] - a[6, x])) + kv * (a[9, x] + wy * (d[9, x] - a[9, x]))
              + (a[12, x] + wy * (d[12, x] - a[12, x])) + s[0, x])
        e1 = (r * (a[1, x] + wy * (d[1, x] - a[1, x])) + g * (a[4, x] + wy * (d[4, x] - a[4, x]))
              + b * (a[7, x] + wy * (d[7, x] - a[7, x])) + kv * (a[10, x] + wy * (d[10, x] - a[10, x]))
              + (a[13, x] + wy * (d[13, x] - a[13, x])) + s[1, x])
        e2 = (r * (a[2, x] + wy * (d[2, x] - a[2, x])) + g * (a[5, x] + wy * (d[5, x] - a[5, x]))
              + b * (a[8, x] + wy * (d[8, x] - a[8, x])) + kv * (a[11, x] + wy * (d[11, x] - a[11, x]))
              + (a[14, x] + wy * (d[14, x] - a[14, x])) + s[2, x])
        # the prior clipped to [0, 1] before the transform's residual (as ladder's reference)
        q0 = min(max(min(max(p0, f32(0.0)), f32(1.0)) + e0, f32(0.0)), f32(1.0))
        q1 = min(max(min(max(p1, f32(0.0)), f32(1.0)) + e1, f32(0.0)), f32(1.0))
        q2 = min(max(min(max(p2, f32(0.0)), f32(1.0)) + e2, f32(0.0)), f32(1.0))
        return hdr_codes(q0, q1, q2, conv)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def pixels(y_in, cb_in, cr_in, rows, cols, conv, in_off_c, inv_gc, out):
        """SDR R'G'B' ``(N, 3)`` of scattered pixels, chroma upsampled as ``chroma_row`` does."""
        ch, cw = cb_in.shape
        for n in nb.prange(rows.shape[0]):
            row, x = rows[n], cols[n]
            ci, ca = chroma_source_rows(row, ch)
            j = x // 2
            cb = chroma_at(cb_in, ci, ca, j, in_off_c, inv_gc)
            cr = chroma_at(cr_in, ci, ca, j, in_off_c, inv_gc)
            if x % 2 == 1:
                j1 = min(j + 1, cw - 1)
                cb = np.float32(0.5) * (cb + chroma_at(cb_in, ci, ca, j1, in_off_c, inv_gc))
                cr = np.float32(0.5) * (cr + chroma_at(cr_in, ci, ca, j1, in_off_c, inv_gc))
            r, g, bl = sdr_rgb(y_in[row, x], cb, cr, conv)
            out[n, 0] = r
            out[n, 1] = g
            out[n, 2] = bl

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def kernel(y_in, cb_in, cr_in, coef, mmr, ry0, rwy, cx0, cwx, knee, index, step, ref, conv, in_off_c, inv_gc,
               shs, siy, sfy, y_out, cb_out, cr_out):
        h, w = y_in.shape
        cw = cb_in.shape[1]
        gh, gw = coef.shape[1], coef.shape[2]  # coef: (15, gh, gw), feature-major
        f32 = np.float32
        c = mmr.astype(np.float32)  # (22, 3)
        k0, k1, k2 = f32(0.2126), f32(0.7152), f32(0.0722)
        kn = f32(knee)
        inv_kn = f32(1.0 / (1.0 - knee))
        cx1 = np.minimum(cx0 + 1, gw - 1)
        has_offset = shs.shape[0] > 1
        # every node row's transforms interpolated to every column once (gh x 15 x w): the
        # per-pixel work is then two contiguous rows and a lerp, no gather
        hrows = np.empty((gh, 15, w), dtype=np.float32)
        for i in nb.prange(gh):
            for q in range(15):
                for x in range(w):
                    lo = coef[q, i, cx0[x]]
                    hrows[i, q, x] = lo + cwx[x] * (coef[q, i, cx1[x]] - lo)
        for pair in nb.prange((h + 1) // 2):
            cb_acc = np.zeros(w, dtype=np.int32)
            cr_acc = np.zeros(w, dtype=np.int32)
            cb_row = np.empty(cw, dtype=np.float32)
            cr_row = np.empty(cw, dtype=np.float32)
            cb_full = np.empty(w, dtype=np.float32)
            cr_full = np.empty(w, dtype=np.float32)
            srow = np.zeros((3, w), dtype=np.float32)
            for dr in range(2):
                row = 2 * pair + dr
                if row >= h:
                    row = h - 1
                chroma_row(cb_in, cr_in, row, in_off_c, inv_gc, cb_row, cr_row, cb_full, cr_full)
                if has_offset:  # this row of the offset field: its two field rows (already read
                    # along x at every column, ``shs``) lerped, contiguous
                    sj, sb = siy[row], sfy[row]
                    for ch in range(3):
                        for x in range(w):
                            srow[ch, x] = shs[sj, ch, x] * (f32(1.0) - sb) + shs[sj + 1, ch, x] * sb
                # this row's transforms: the two node rows around it (already interpolated
                # to every column), lerped
                g0 = min(ry0[row], gh - 1)
                g1 = min(ry0[row] + 1, gh - 1)
                wy = rwy[row]
                a = hrows[g0]
                d = hrows[g1]
                for x in range(w):
                    r, g, b = sdr_rgb(y_in[row, x], cb_full[x], cr_full[x], conv)
                    p0, p1, p2 = mmr3(r, g, b, c)
                    yc, cbc, crc = guided_codes(r, g, b, p0, p1, p2, a, d, wy, x, k0, k1, k2, kn, inv_kn, conv, srow)
                    if 2 * pair + dr < h:
                        y_out[row, x] = yc
                    cb_acc[x] += cbc
                    cr_acc[x] += crc
                # refined blocks on this row (a second loop, so that the one above stays
                # branch-free and vectorised): the full network's residual over the unclipped
                # prior replaces the transform; the chroma sums take the difference
                brow = min(row // step, index.shape[0] - 1)
                i = row - brow * step
                for bj in range(index.shape[1]):
                    blk = index[brow, bj]
                    if blk < 0:
                        continue
                    for x in range(bj * step, min(w, (bj + 1) * step)):
                        j = x - bj * step
                        r, g, b = sdr_rgb(y_in[row, x], cb_full[x], cr_full[x], conv)
                        p0, p1, p2 = mmr3(r, g, b, c)
                        _, cbo, cro = guided_codes(r, g, b, p0, p1, p2, a, d, wy, x, k0, k1, k2, kn, inv_kn, conv, srow)
                        yc, cbc, crc = hdr_codes(min(max(p0 + ref[blk, i, j, 0], f32(0.0)), f32(1.0)),
                                                 min(max(p1 + ref[blk, i, j, 1], f32(0.0)), f32(1.0)),
                                                 min(max(p2 + ref[blk, i, j, 2], f32(0.0)), f32(1.0)), conv)
                        if 2 * pair + dr < h:
                            y_out[row, x] = yc
                        cb_acc[x] += cbc - cbo
                        cr_acc[x] += crc - cro
            chroma_out(cb_acc, cr_acc, pair, cb_out, cr_out)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def field_rows(values, first, ix, fx, out):
        """Rows ``first, first + 1, ...`` of a field ``values`` ``(3, SH, SW)`` (channel-major)
        read along x at every column (cells ``ix``, weights ``fx``): ``out`` ``(R, 3, W)``."""
        f32 = np.float32
        for r in nb.prange(out.shape[0]):
            j = first + r
            for ch in range(3):
                src = values[ch, j]
                dst = out[r, ch]
                for x in range(ix.shape[0]):
                    i, a = ix[x], fx[x]
                    dst[x] = src[i] * (f32(1.0) - a) + src[i + 1] * a

    return sample, kernel, pixels, field_rows


@functools.lru_cache(maxsize=1)
def _fit_kernel():
    import numba as nb

    global _solve  # a module global, not a closure cell (see _helpers)

    @nb.njit(inline="always", cache=True)
    def _solve(gram, rhs, slope_ridge, anchor, prior, low, yv, x):
        """x = (gram + diag(slope_ridge on the slopes) + anchor I)^-1 (rhs + anchor prior), by
        Cholesky; ``low`` (k, k), ``yv`` (k,) are scratch."""
        k = gram.shape[0]
        for p in range(k):
            for q in range(p + 1):
                acc = gram[p, q]
                if p == q:
                    acc += anchor + (slope_ridge if p < k - 1 else 0.0)
                for t in range(q):
                    acc -= low[p, t] * low[q, t]
                if p == q:
                    low[p, p] = np.sqrt(max(acc, 1e-300))
                else:
                    low[p, q] = acc / low[q, q]
        for c in range(3):
            for p in range(k):
                acc = rhs[p, c] + anchor * prior[p, c]
                for t in range(p):
                    acc -= low[p, t] * yv[t]
                yv[p] = acc / low[p, p]
            for p in range(k - 1, -1, -1):
                acc = yv[p]
                for t in range(p + 1, k):
                    acc -= low[t, p] * x[t, c]
                x[p, c] = acc / low[p, p]

    @nb.njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def fit(rgb, resid, gh, gw, knee, ridge, splat, out):
        """Per-node weighted least squares of :func:`itmfilter.render.ladder.guided_fit`:
        node (i, j) gathers samples 2i-2 .. 2i+1 by 2j-2 .. 2j+1 with tent weights,
        then solves its 5 x 5 normal equations (Cholesky, float64)."""
        a_n, b_n = rgb.shape[0], rgb.shape[1]
        k = 5
        # the whole picture's fit first: the anchor for nodes with no samples
        gram_all = np.zeros((k, k))
        rhs_all = np.zeros((k, 3))
        f = np.empty(k)
        for a in range(a_n):
            for b in range(b_n):
                r, g, bl = rgb[a, b, 0], rgb[a, b, 1], rgb[a, b, 2]
                f[0], f[1], f[2] = r, g, bl
                f[3] = max((0.2126 * r + 0.7152 * g + 0.0722 * bl - knee) / (1.0 - knee), 0.0)
                f[4] = 1.0
                for p in range(k):
                    for q in range(k):
                        gram_all[p, q] += f[p] * f[q]
                    for c in range(3):
                        rhs_all[p, c] += f[p] * resid[a, b, c]
        total_w = gram_all[k - 1, k - 1]
        anchor = 1e-6 * total_w / (gh * gw) + 1e-12  # tiny: decides only where a node has no samples
        whole = np.empty((k, 3))
        _solve(gram_all, rhs_all, ridge * total_w, anchor, np.zeros((k, 3)), np.zeros((k, k)), np.empty(k), whole)
        for i in nb.prange(gh):
            gram = np.empty((k, k))
            rhs = np.empty((k, 3))
            fv = np.empty(k)
            low = np.zeros((k, k))
            yv = np.empty(k)
            sol = np.empty((k, 3))
            for j in range(gw):
                gram[:, :] = 0.0
                rhs[:, :] = 0.0
                for da in range(4):
                    a = 2 * i - 2 + da
                    if a < 0 or a >= a_n:
                        continue
                    for db in range(4):
                        b = 2 * j - 2 + db
                        if b < 0 or b >= b_n:
                            continue
                        wt = splat[da] * splat[db]
                        r, g, bl = rgb[a, b, 0], rgb[a, b, 1], rgb[a, b, 2]
                        fv[0], fv[1], fv[2] = r, g, bl
                        fv[3] = max((0.2126 * r + 0.7152 * g + 0.0722 * bl - knee) / (1.0 - knee), 0.0)
                        fv[4] = 1.0
                        for p in range(k):
                            wp = wt * fv[p]
                            for q in range(p, k):
                                gram[p, q] += wp * fv[q]
                            for c in range(3):
                                rhs[p, c] += wp * resid[a, b, c]
                for p in range(k):
                    for q in range(p):
                        gram[p, q] = gram[q, p]
                _solve(gram, rhs, ridge * gram[k - 1, k - 1], anchor, whole, low, yv, sol)
                for p in range(k):
                    for c in range(3):
                        out[i, j, p, c] = sol[p, c]

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def sample_error(rgb, resid, coef, y0, y1, wy, x0, x1, wx, knee, out):
        """:func:`itmfilter.render.ladder.guided_sample_error`: each sample's largest absolute
        miss of its bilinearly interpolated transform (``coef`` ``(gh, gw, 5, 3)``)."""
        a_n, b_n = rgb.shape[0], rgb.shape[1]
        for a in nb.prange(a_n):
            fv = np.empty(5, dtype=np.float32)
            for b in range(b_n):
                r, g, bl = rgb[a, b, 0], rgb[a, b, 1], rgb[a, b, 2]
                fv[0], fv[1], fv[2] = r, g, bl
                fv[3] = max((np.float32(0.2126) * r + np.float32(0.7152) * g + np.float32(0.0722) * bl
                             - np.float32(knee)) / np.float32(1.0 - knee), np.float32(0.0))
                fv[4] = 1.0
                worst = np.float32(0.0)
                for ch in range(3):
                    acc = np.float32(0.0)
                    for k in range(5):
                        top = coef[y0[a], x0[b], k, ch] + wx[b] * (coef[y0[a], x1[b], k, ch] - coef[y0[a], x0[b], k, ch])
                        bot = coef[y1[a], x0[b], k, ch] + wx[b] * (coef[y1[a], x1[b], k, ch] - coef[y1[a], x0[b], k, ch])
                        acc += fv[k] * (top + wy[a] * (bot - top))
                    worst = max(worst, abs(acc - resid[a, b, ch]))
                out[a, b] = worst

    return fit, sample_error


@functools.lru_cache(maxsize=1)
def _probe_kernel():
    import numba as nb

    _helpers()  # the helpers as module globals (see there)

    @nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def probe_error(rgb, raw, off, mmr, coef, y0, y1, wy, x0, x1, wx, knee, out):
        """Each probe's largest absolute miss (:func:`itmfilter.render.ladder.guided_probe_error`):
        ``raw`` ``(N, 3)`` what the network adds to its unclipped prior there; the miss is against
        ``clip(prior + raw) - clip(prior) - off``, the prior the MMR3 polynomial ``mmr`` of ``rgb``
        (``off`` ``(N, 3)``: the offset the rung adds after its transform, zeros without one)."""
        zero, one = np.float32(0.0), np.float32(1.0)
        for n in nb.prange(rgb.shape[0]):
            r, g, bl = rgb[n, 0], rgb[n, 1], rgb[n, 2]
            p = mmr3(r, g, bl, mmr)
            kv = max((np.float32(0.2126) * r + np.float32(0.7152) * g + np.float32(0.0722) * bl
                      - np.float32(knee)) / np.float32(1.0 - knee), zero)
            worst = zero
            for ch in range(3):
                pc = min(max(p[ch], zero), one)
                target = min(max(p[ch] + raw[n, ch], zero), one) - pc - off[n, ch]
                acc = zero
                for k in range(5):
                    f = r if k == 0 else (g if k == 1 else (bl if k == 2 else (kv if k == 3 else one)))
                    top = coef[y0[n], x0[n], k, ch] + wx[n] * (coef[y0[n], x1[n], k, ch] - coef[y0[n], x0[n], k, ch])
                    bot = coef[y1[n], x0[n], k, ch] + wx[n] * (coef[y1[n], x1[n], k, ch] - coef[y1[n], x0[n], k, ch])
                    acc += f * (top + wy[n] * (bot - top))
                worst = max(worst, abs(acc - target))
            out[n] = worst

    return probe_error


def guided_probe_error_fast(rgb: np.ndarray, raw: np.ndarray, mmr: np.ndarray, coef: np.ndarray, rows: np.ndarray,
                            cols: np.ndarray, h: int, w: int, step: int, offset: np.ndarray | None = None) -> np.ndarray:
    """The probes' fit error in one numba pass (``raw``: the network's output less its unclipped
    prior at the probes, ``mmr`` the prior's ``(22, 3)``): ``(N,)`` float32, the numbers of
    :func:`itmfilter.render.ladder.guided_probe_error` without its torch ops on the player's
    thread (tested). ``offset`` ``(N, 3)``: what the rung adds after its transform at the
    probes (:func:`guided_to_hdr10_planes`' ``offset``), taken off the target."""
    gh, gw = coef.shape[:2]
    out = np.empty(rows.shape[0], np.float32)
    off = np.zeros((rows.shape[0], 3), np.float32) if offset is None else np.ascontiguousarray(offset, np.float32)
    _probe_kernel()(np.ascontiguousarray(rgb, dtype=np.float32), np.ascontiguousarray(raw, dtype=np.float32), off,
                    np.ascontiguousarray(mmr, dtype=np.float32), np.ascontiguousarray(coef, dtype=np.float32),
                    *node_lerp(h, step, gh, rows), *node_lerp(w, step, gw, cols), float(GUIDED_KNEE), out)
    return out


def guided_sample_error_fast(rgb: np.ndarray, resid: np.ndarray, coef: np.ndarray, h: int, w: int,
                             step: int) -> np.ndarray:
    """:func:`itmfilter.render.ladder.guided_sample_error` in one numba pass: ``(A, B)`` float32."""
    rows, cols = guided_samples(h, step), guided_samples(w, step)
    gh, gw = coef.shape[:2]
    out = np.empty((rows.size, cols.size), np.float32)
    _fit_kernel()[1](np.ascontiguousarray(rgb, dtype=np.float32), np.ascontiguousarray(resid, dtype=np.float32),
                     np.ascontiguousarray(coef, dtype=np.float32), *node_lerp(h, step, gh, rows),
                     *node_lerp(w, step, gw, cols), float(GUIDED_KNEE), out)
    return out


def guided_fit_fast(rgb: np.ndarray, resid: np.ndarray, h: int, w: int, step: int,
                    ridge: float = GUIDED_RIDGE) -> np.ndarray:
    """:func:`itmfilter.render.ladder.guided_fit` in one numba pass: ``(A, B, 3)`` sample
    R'G'B' and residuals -> ``(gh, gw, 5, 3)`` float32 transforms (the same numbers to
    float rounding; tested)."""
    gh, gw = guided_nodes(h, step)[2], guided_nodes(w, step)[2]
    out = np.empty((gh, gw, GUIDE_FEATURES, 3), np.float32)
    _fit_kernel()[0](np.ascontiguousarray(rgb, dtype=np.float64), np.ascontiguousarray(resid, dtype=np.float64),
                  gh, gw, float(GUIDED_KNEE), float(ridge), np.asarray(GUIDED_SPLAT, np.float64), out)
    return out


def sample_sdr(y, cb, cr, step: int, *, bits: int = 8, full_range: bool = False) -> np.ndarray:
    """``(A, B, 3)`` BT.709 R'G'B' [0, 1] float32 of 4:2:0 planes at a guided rung's sampled
    pixels (rows and columns :func:`itmfilter.render.ladder.guided_samples`)."""
    conv, off_c, inv_gc = _conversion(bits, full_range)
    h, w = y.shape
    rows, cols = guided_samples(h, step), guided_samples(w, step)
    out = np.empty((rows.size, cols.size, 3), np.float32)
    _guided_kernels()[0](np.ascontiguousarray(y), np.ascontiguousarray(cb), np.ascontiguousarray(cr),
                         rows, cols, conv, off_c, inv_gc, out)
    return out


_CHANNEL_MAJOR: list = [None, None]  # the last field and its (3, SH, SW) copy


def _channel_major(values: np.ndarray) -> np.ndarray:
    """``(SH, SW, 3)`` -> ``(3, SH, SW)`` float32, once per field: a shot's frames share one
    (the last one is held, by identity, with its copy)."""
    if _CHANNEL_MAJOR[0] is not values:
        _CHANNEL_MAJOR[:] = [values, np.ascontiguousarray(np.moveaxis(values, -1, 0), dtype=np.float32)]
    return _CHANNEL_MAJOR[1]


def guided_to_hdr10_planes(y, cb, cr, coef: np.ndarray, mmr: np.ndarray, step: int, *, bits: int = 8,
                           full_range: bool = False, index: np.ndarray | None = None,
                           refined: np.ndarray | None = None, offset=None):
    """SDR 4:2:0 planes + a guided rung's ``(gh, gw, 5, 3)`` transforms
    (:func:`itmfilter.render.ladder.guided_coefficients`) over the MMR prior ``mmr``
    ``(22, 3)`` -> (Y, Cb, Cr) uint16 HDR10 planes: PQ = clip(clip(prior(SDR)) +
    guided_features(SDR) @ bilinear transform), per pixel. ``index`` and ``refined``
    (:func:`itmfilter.render.ladder.refine_block_list`, the full network's residual
    ``(K, step, step, 3)`` on the listed blocks): there PQ = clip(prior(SDR) + refined).
    ``offset``: ``(values, ix, fx, iy, fy)``, a field ``values`` ``(SH, SW, 3)`` read
    bilinearly at every pixel (cells and weights per column ``ix, fx`` ``(W,)`` and per row
    ``iy, fy`` ``(H,)``, :func:`itmfilter.model.grid.axis_weights`) and added to the
    transform's residual before the clip: a grid shot's scene residual, which a transform
    fitted at one pixel in ``step x step`` cannot carry (the refined blocks' ``refined``
    already holds it)."""
    conv, off_c, inv_gc = _conversion(bits, full_range)
    h, w = y.shape
    ry0, rwy, gh = guided_nodes(h, step)
    cx0, cwx, gw = guided_nodes(w, step)
    if coef.shape != (gh, gw, GUIDE_FEATURES, 3):
        raise ValueError(f"expected transforms of shape {(gh, gw, GUIDE_FEATURES, 3)}, got {coef.shape}")
    planes = np.ascontiguousarray(np.asarray(coef, dtype=np.float32).reshape(gh, gw, 15).transpose(2, 0, 1))
    nb_shape = (-(-h // step), -(-w // step))
    if index is None:
        index, refined = np.full(nb_shape, -1, np.int32), np.zeros((1, step, step, 3), np.float32)
    elif index.shape != nb_shape or refined is None or refined.shape[1:] != (step, step, 3) \
            or int(index.max(initial=-1)) >= refined.shape[0]:
        raise ValueError(f"expected a {nb_shape} block index and (K, {step}, {step}, 3) refined residuals")
    if offset is None:
        offset = (np.zeros((1, 3, 1), np.float32), np.zeros(h, np.int64), np.zeros(h, np.float32))
    else:
        values, ix, fx, iy, fy = offset
        if values.ndim != 3 or values.shape[2] != 3 or min(values.shape[:2]) < 2 or ix.shape != (w,) \
                or iy.shape != (h,) or fx.shape != (w,) or fy.shape != (h,) or int(min(ix.min(), iy.min())) < 0 \
                or int(ix.max()) >= values.shape[1] - 1 or int(iy.max()) >= values.shape[0] - 1:
            raise ValueError(f"expected an (SH >= 2, SW >= 2, 3) offset field with {w} column and {h} row cells")
        # the field rows the frame reads, along x at every column, once (they are fewer than
        # the frame's rows, and the per-pixel read is then a contiguous lerp of two of them)
        first, last = int(iy.min()), int(iy.max()) + 1
        rows = np.empty((last - first + 1, 3, w), np.float32)
        _guided_kernels()[3](_channel_major(values), first,
                             np.ascontiguousarray(ix, dtype=np.int64), np.ascontiguousarray(fx, dtype=np.float32), rows)
        offset = (rows, np.ascontiguousarray(iy - first, dtype=np.int64), np.ascontiguousarray(fy, dtype=np.float32))
    y_out, cb_out, cr_out = _outputs(h, w)
    _guided_kernels()[1](np.ascontiguousarray(y), np.ascontiguousarray(cb), np.ascontiguousarray(cr),
                         planes, np.ascontiguousarray(mmr, dtype=np.float64),
                         ry0, rwy, cx0, cwx, float(GUIDED_KNEE), np.ascontiguousarray(index, dtype=np.int32),
                         int(step), np.ascontiguousarray(refined, dtype=np.float32), conv, off_c, inv_gc,
                         *offset, y_out, cb_out, cr_out)
    return y_out, cb_out, cr_out


def set_threads(n: int | None) -> int | None:
    """Threads of the fused pass (None: leave as is); returns the previous count, or None
    without numba."""
    if not available():
        return None
    import numba

    previous = numba.get_num_threads()
    if n is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return previous


def available() -> bool:
    """True when numba imports (the fast path's only extra need)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def gain_to_hdr10_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, gain: np.ndarray, downscale: int,
                         offset_nits: float, *, bits: int = 8, full_range: bool = False):
    """SDR 4:2:0 planes + ``(3, lh, lw)`` gain map -> (Y, Cb, Cr) uint16 HDR10 planes.

    ``y``: ``(H, W)`` SDR luma codes; ``cb``, ``cr``: ``(ceil(H/2), ceil(W/2))``; BT.709,
    ``bits`` 8 or 10, narrow or ``full_range``. ``gain``: per-channel linear gain at
    ``1/downscale`` resolution (cell centres as in :mod:`itmfilter.render.ladder`), offset
    ``offset_nits``. Output: 10-bit BT.2020 NCL PQ narrow range, 4:2:0.
    """

    conv, off_c, inv_gc = _conversion(bits, full_range)
    gamma_lut, pq_lut = tables()
    mat = np.asarray(MATRIX_BT709_TO_BT2020, dtype=np.float64) * SDR_WHITE_NITS_BT2408
    y_out, cb_out, cr_out = _outputs(*y.shape)
    _kernel()(np.ascontiguousarray(y), np.ascontiguousarray(cb), np.ascontiguousarray(cr),
              np.ascontiguousarray(gain, dtype=np.float32), float(downscale), float(offset_nits),
              conv, off_c, inv_gc, mat, gamma_lut, pq_lut, y_out, cb_out, cr_out)
    return y_out, cb_out, cr_out


@functools.lru_cache(maxsize=1)
def _block_mean_kernel():
    import numba as nb

    @nb.njit(parallel=True, cache=True, nogil=True)
    def block_mean(plane, b, rows, cols, out):
        h, w = plane.shape
        inv = 1.0 / (b * b)
        for r in nb.prange(rows):
            for c in range(cols):
                acc = 0.0
                for i in range(b):
                    y = min(r * b + i, h - 1)  # edge replicated
                    for j in range(b):
                        acc += plane[y, min(c * b + j, w - 1)]
                out[r, c] = acc * inv

    return block_mean


@functools.lru_cache(maxsize=1)
def _block_argmax_kernel():
    import numba as nb

    @nb.njit(parallel=True, cache=True, nogil=True)
    def block_argmax(plane, b, rows, cols, out_v, out_r, out_c):
        """Per ``b x b`` block (``rows x cols`` of them, the edge ones cropped to the plane) its
        largest value and that pixel's row and column, the first in raster order among equals."""
        h, w = plane.shape
        span = b * b
        for bi in nb.prange(rows):
            for bj in range(cols):
                # one branch-free maximum of value * b^2 + (b^2 - 1 - position): the largest
                # value, and among equals the first in raster order
                best = -1
                for r in range(bi * b, min(h, bi * b + b)):
                    base = (r - bi * b) * b - bj * b
                    for c in range(bj * b, min(w, bj * b + b)):
                        best = max(best, np.int64(plane[r, c]) * span + (span - 1 - (base + c)))
                pos = span - 1 - best % span
                out_v[bi, bj] = best // span
                out_r[bi, bj] = bi * b + pos // b
                out_c[bi, bj] = bj * b + pos % b

    return block_argmax


def probe_pixels_fast(y: np.ndarray, step: int, share: float | None = None) -> tuple[np.ndarray, ...]:
    """:func:`itmfilter.render.ladder.probe_pixels` of the Y' plane, the blocks' maxima in one
    numba pass."""
    share = probe_share(step) if share is None else share
    if share <= 0:  # no probes at this step: no pass over the plane
        return (np.zeros(0, np.int64),) * 3
    h, w = y.shape
    nbh, nbw = -(-h // step), -(-w // step)
    best = np.empty((nbh, nbw), np.float32)
    rows, cols = np.empty((nbh, nbw), np.int64), np.empty((nbh, nbw), np.int64)
    _block_argmax_kernel()(np.ascontiguousarray(y), int(step), nbh, nbw, best, rows, cols)
    chosen = brightest_blocks(best.ravel(), share)
    return chosen, rows.ravel()[chosen], cols.ravel()[chosen]


def _block_mean(plane: np.ndarray, b: int, rows: int, cols: int) -> np.ndarray:
    """Mean over ``b x b`` blocks of ``plane`` padded (edge replicated) to ``rows*b x cols*b``."""
    out = np.empty((rows, cols), np.float32)
    _block_mean_kernel()(np.ascontiguousarray(plane), b, rows, cols, out)
    return out


def low_res_sdr(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, d: int, *, bits: int = 8,
                full_range: bool = False) -> np.ndarray:
    """``(3, ceil(H/d), ceil(W/d))`` BT.709 R'G'B' [0, 1] of 4:2:0 planes averaged over
    ``d x d`` cells (``d`` even): Y' over the cell, Cb/Cr over its ``d/2 x d/2`` chroma
    samples, then the matrix. Y'CbCr -> R'G'B' is affine, so this is the cell mean of
    R'G'B' except where the clip to [0, 1] bites; the network's input at low resolution."""

    if d < 2 or d % 2:
        raise ValueError(f"the fast path needs an even downscale, got {d}")
    h, w = y.shape
    lh, lw = -(-h // d), -(-w // d)
    codes = np.stack([_block_mean(y, d, lh, lw), _block_mean(cb, d // 2, lh, lw), _block_mean(cr, d // 2, lh, lw)], -1)
    rgb = ycbcr_to_rgb(codes, "bt709", bits, full_range, dtype=np.float32)
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1))


def hdr10_planes(net, planes, downscale: int, *, precision: str = "auto", gain: str = "auto",
                 offset_nits: float | None = None, guided: bool = False):
    """A gain rung on the CPU, fused: ``planes`` from :class:`itmfilter.media.frames.Planes` (4:2:0) -> the network at
    ``1/downscale`` -> (Y, Cb, Cr) uint16 HDR10 planes. With ``guided`` (a guided rung, which
    needs an ``mmr3``-prior network: :func:`supports_guided`), the network runs on every
    ``downscale``-th pixel each way and :func:`guided_to_hdr10_planes` applies the fitted
    transforms (``gain`` and ``offset_nits`` do not apply).

    torch's thread count is the caller's afterwards: numba's OpenMP layer shares the OpenMP
    runtime with torch, and its first parallel launch resets torch to every core (measured:
    1 -> 2 here), which undid the player's choice of ``cores - 1`` threads for the network.
    """
    threads = torch.get_num_threads()
    try:
        if downscale == 1:
            return _full_planes(net, planes, precision=precision)
        if guided:
            return _guided_planes(net, planes, downscale, precision=precision)
        return _hdr10_planes(net, planes, downscale, precision=precision, gain=gain, offset_nits=offset_nits)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _hdr10_planes(net, planes, downscale: int, *, precision: str, gain: str, offset_nits: float | None):
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    k = GAIN_OFFSET_NITS if offset_nits is None else offset_nits
    h, w = y.shape
    low = torch.from_numpy(low_res_sdr(y, cb, cr, downscale, bits=bits, full_range=full))
    gain = gain_mode(net, gain)
    if gain == "prior":
        r = residual_map(net, low, h, w, downscale, torch.device("cpu"), precision).numpy()
        return prior_to_hdr10_planes(y, cb, cr, r, net.prior_mmr.detach().numpy(), downscale,
                                     bits=bits, full_range=full)
    g = gain_map(net, low, h, w, downscale, torch.device("cpu"), precision, gain, k).numpy()
    if g.shape[0] == 1:
        g = np.repeat(g, 3, axis=0)
    return gain_to_hdr10_planes(y, cb, cr, g, downscale, k, bits=bits, full_range=full)


def _full_planes(net, planes, *, precision: str):
    """The full network on every pixel: R'G'B' per pixel (one numba pass), what the network
    adds to its prior on the whole pixel grid (:func:`itmfilter.model.separable.evaluate_grid`),
    then the prior and the HDR10 coding per pixel (:func:`prior_to_hdr10_planes`, unclipped
    prior as ``ITMNet.forward``)."""
    if not supports_full(net):
        raise ValueError("the fused full rung needs an mmr3-prior network with Fourier coordinates")
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    h, w = y.shape
    rgb = torch.from_numpy(sample_sdr(y, cb, cr, 1, bits=bits, full_range=full))
    dtype = resolve_precision(precision, torch.device("cpu"))
    resid = evaluate_grid(net, rgb, pixel_centres(h), pixel_centres(w), dtype=dtype)
    resid = resid.T.contiguous().reshape(3, h, w).numpy()
    return prior_to_hdr10_planes(y, cb, cr, resid, net.prior_mmr.detach().numpy(), 1, bits=bits,
                                 full_range=full, clip_prior=False)


def supports_full(net) -> bool:
    """Whether the fused pass can run ``net``'s full rung: an ``mmr3`` prior (computed per
    pixel by the kernel) and separable Fourier coordinates (:func:`itmfilter.model.separable.separable`)."""
    return supports_guided(net) and separable(net)


def supports_guided(net) -> bool:
    """Whether the fused pass can run ``net``'s guided rungs: it computes the per-picture
    MMR polynomial prior per pixel, so the network must have one (``prior="mmr3"``)."""
    return getattr(net.config, "prior", None) == "mmr3"


def _guided_planes(net, planes, step: int, *, precision: str):
    if not supports_guided(net):
        raise ValueError(f"the fused guided rungs need an mmr3-prior network, not prior={net.config.prior!r}")
    y, cb, cr, bits, full = planes.y, planes.cb, planes.cr, planes.bits, planes.full_range
    h, w = y.shape
    rgb = torch.from_numpy(sample_sdr(y, cb, cr, step, bits=bits, full_range=full))
    cpu = torch.device("cpu")
    coef, resid = guided_coefficients(net, rgb, h, w, step, cpu, precision, fit=guided_fit_fast, with_residual=True)
    dtype = resolve_precision(precision, cpu)
    # each block's brightest pixel: the network there against the fitted transform
    chosen, prows, pcols = probe_pixels_fast(y, step)
    probe = None
    if len(chosen):
        prgb = pixels_rgb(planes, prows, pcols)
        n = prows.shape[0]
        raw = residual_on_blocks(net, torch.from_numpy(prgb).view(n, 1, 1, 3), torch.from_numpy(prows).view(n, 1),
                                 torch.from_numpy(pcols).view(n, 1), h, w, dtype).reshape(n, 3).numpy()
        probe = probe_scores(chosen, guided_probe_error_fast(prgb, raw, net.prior_mmr.detach().numpy(), coef, prows,
                                                             pcols, h, w, step), h, w, step)
    blocks = refine_blocks(guided_sample_error_fast(rgb.numpy(), resid.numpy(), coef, h, w, step), h, w, step,
                           probe=probe)
    index = refined = None
    if blocks.any():
        index, rows, cols = refine_block_list(blocks, h, w, step)
        k = rows.shape[0]
        prgb = pixels_rgb(planes, np.broadcast_to(rows[:, :, None], (k, step, step)).ravel(),
                           np.broadcast_to(cols[:, None, :], (k, step, step)).ravel())
        refined = residual_on_blocks(net, torch.from_numpy(prgb).reshape(k, step, step, 3), torch.from_numpy(rows),
                                     torch.from_numpy(cols), h, w, dtype).numpy()
    return guided_to_hdr10_planes(y, cb, cr, coef, net.prior_mmr.detach().numpy(), step, bits=bits, full_range=full,
                                  index=index, refined=refined)


def pixels_rgb(planes, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(N, 3)`` SDR R'G'B' float32 of the 4:2:0 ``planes`` at pixels ``(rows, cols)``, chroma
    upsampled as the main pass does."""
    conv, off_c, inv_gc = _conversion(planes.bits, planes.full_range)
    out = np.empty((rows.size, 3), np.float32)
    _guided_kernels()[2](np.ascontiguousarray(planes.y), np.ascontiguousarray(planes.cb),
                         np.ascontiguousarray(planes.cr), np.ascontiguousarray(rows, dtype=np.int64),
                         np.ascontiguousarray(cols, dtype=np.int64), conv, off_c, inv_gc, out)
    return out
