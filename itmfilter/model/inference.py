"""Reconstruction: SDR picture + weights -> PQ BT.2020 picture, in chunks.

One whole-frame call is memory bound and about 7x slower than chunks of 8-16k pixels on
these CPUs (measured with torch 2.13 on 2 cores), so every full-picture evaluation goes through
:func:`predict_pq`. ``--device auto`` uses CUDA when present. On CPUs with native bf16
(AVX512-BF16 / AMX) ``precision="auto"`` runs the MLP in bf16; its PU21-PSNR cost is
measured by ``benchmarks/stills.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from itmfilter.colour.tensor import eotf_st2084
from itmfilter.model.net import ITMNet, pixel_grid

CHUNK_PIXELS = 16384
"""Pixels per network call on a CPU (cache-sized activations; FACTS.md)."""

CUDA_CHUNK_PIXELS = 1 << 22
"""Pixels per network call on CUDA: 4M pixels (a 2160p frame in two calls) keeps the
kernels large; 16k-pixel chunks would make a 4K frame ~500 calls of launch overhead."""


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU advertises native bf16 arithmetic (avx512_bf16 or amx_bf16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA and on bf16-capable CPUs, else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; expected auto, fp32 or bf16")
    if device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _as_tensor(sdr, device: torch.device) -> torch.Tensor:
    if isinstance(sdr, np.ndarray):
        sdr = torch.from_numpy(np.ascontiguousarray(sdr, dtype=np.float32))
    return sdr.to(device=device, dtype=torch.float32)


@torch.no_grad()
def predict_pq(
    net: ITMNet,
    sdr,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    chunk: int | None = None,
    stride: int = 1,
) -> torch.Tensor:
    """Evaluate ``net`` over a picture.

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' code values [0, 1] (numpy or torch).
    ``stride``: evaluate every ``stride``-th pixel in each direction (pixel centres of
    the full grid), giving ``(ceil(H/s), ceil(W/s), 3)``; 1 gives the full picture.
    ``chunk``: pixels per call (default :data:`CHUNK_PIXELS` on CPU,
    :data:`CUDA_CHUNK_PIXELS` on CUDA).
    Returns PQ BT.2020 R'G'B' code values as a float32 tensor on ``device``.
    """
    device = torch.device(device)
    x = _as_tensor(sdr, device)
    h, w, _ = x.shape
    xy = pixel_grid(h, w, device=device)
    if stride > 1:
        x = x[::stride, ::stride]
        xy = xy[::stride, ::stride]
    out_shape = x.shape
    flat_rgb = x.reshape(-1, 3)
    flat_xy = xy.reshape(-1, 2)
    dtype = resolve_precision(precision, device)
    if chunk is None:
        chunk = CUDA_CHUNK_PIXELS if device.type == "cuda" else CHUNK_PIXELS
    net = net.to(device).eval()
    out = torch.empty_like(flat_rgb)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        for start in range(0, flat_rgb.shape[0], chunk):
            stop = start + chunk
            out[start:stop] = net(flat_rgb[start:stop], flat_xy[start:stop]).float()
    return out.reshape(out_shape)


def reconstruct_nits(net: ITMNet, sdr, **kwargs) -> np.ndarray:
    """SDR -> linear BT.2020 cd/m2 ``(H, W, 3)`` float32 numpy (see :func:`predict_pq`)."""

    return eotf_st2084(predict_pq(net, sdr, **kwargs).clamp(0.0, 1.0)).cpu().numpy()
