"""The fused Triton kernel (itmfilter.render.triton_kernel) against the exact reference path.

No GPU here: the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set per test
by monkeypatch, so it does not leak into other tests; the interpreted kernels are built
and cached apart from the compiled ones) on CPU tensors, and is compiled ahead of time for
sm_90 to check that it builds for the device. Frames are tiny: the interpreter runs each
Triton op as numpy calls.
"""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
import torch

from itmfilter.model.initial import load_init
from itmfilter.model.net import CONFIGS, ITMNet

pytest.importorskip("triton")

from itmfilter.render import triton_kernel  # noqa: E402
from itmfilter.render.frame import hdr10_frame  # noqa: E402


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, :p.width]
            for p in frame.planes]


def _net(name: str) -> ITMNet:
    if name == "default":
        net, _ = load_init()  # the shipped initialisation: a real weight set
        assert net.config == CONFIGS["default"]
        with torch.no_grad():  # a per-picture polynomial other than the init's
            net.prior_mmr[1:8] *= 1.1
        return net.eval()
    torch.manual_seed(2)
    net = ITMNet(CONFIGS[name])
    with torch.no_grad():
        net.fusion[-1].weight.normal_(0.0, 0.05)
        net.fusion[-1].bias.fill_(0.5 if net.config.prior == "none" else 0.02)
    return net.eval()


def _frame(fmt: str, h: int, w: int):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx * yy) % 256], -1).astype(np.uint8)
    return av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)


CASES = [  # (config, format, (H, W)): the video default on every input kind, the others once
    ("default", "yuv420p", (32, 48)),
    ("default", "yuv420p10le", (37, 69)),
    ("default", "yuvj420p", (37, 69)),
    ("paper", "yuv420p", (37, 69)),  # SIREN coordinates, BT.2408 prior
    ("stills", "yuv420p10le", (32, 48)),  # 8 bands, 48 coordinate features: padded to 64
    ("paper-direct", "yuv420p", (33, 47)),  # no prior
]


@pytest.mark.parametrize("config,fmt,size", CASES)
def test_fused_kernel_matches_the_exact_path(interpreter, config, fmt, size):
    """Codes within 1 of the float64 reference on all three planes, nearly all equal, odd
    sizes included; a block smaller than the frame, so the programs loop over tiles."""
    net = _net(config)
    frame = _frame(fmt, *size)
    want = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32", path="exact"))
    got = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32", path="triton"))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    assert want[0].max() > 400  # the network lifted highlights: not a flat picture
    # the network, not just the prior, shapes the codes: without its head the codes move
    assert config == "default" or np.abs(want[0].astype(int) - _prior_only_codes(net, frame)).max() > 10


def _prior_only_codes(net: ITMNet, frame) -> np.ndarray:
    bare = ITMNet(net.config)
    bare.load_state_dict(net.state_dict())
    with torch.no_grad():
        bare.fusion[-1].weight.zero_()
        bare.fusion[-1].bias.zero_()
    return _planes(hdr10_frame(frame, bare.eval(), "full", "cpu", "fp32", path="exact"))[0].astype(int)


def test_fp16_operands_stay_within_a_code(interpreter):
    """The GPU's default operand precision (fp16, fp32 accumulation), as the interpreter
    computes it: still within 1 code of the reference, few codes off."""
    net = _net("default")
    frame = _frame("yuv420p", 37, 69)
    want = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32", path="exact"))
    got = _planes(hdr10_frame(frame, net, "full", "cpu", "fp16", path="triton"))
    for g, w in zip(got, want):
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())


def test_kernel_direct_call_and_tile_loop(interpreter):
    """:func:`hdr10_planes` on tensors: the same codes whatever the tile size and however
    many tiles each program loops over."""
    net = _net("default")
    frame = _frame("yuv420p", 21, 30)
    p = [torch.from_numpy(np.ascontiguousarray(a)) for a in _planes_u8(frame)]
    small = triton_kernel.hdr10_planes(net, *p, precision="fp32", config=triton_kernel.KernelConfig(block=128))
    large = triton_kernel.hdr10_planes(net, *p, precision="fp32", config=triton_kernel.KernelConfig(block=1024))
    for a, b in zip(small, large):
        assert a.dtype == torch.int16
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _planes_u8(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def test_bad_input_is_a_clear_error(interpreter):
    net = _net("paper")
    y = torch.zeros((4, 6), dtype=torch.uint8)
    with pytest.raises(ValueError, match="4:2:0"):
        triton_kernel.hdr10_planes(net, y, y, y)
    c = torch.zeros((2, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="8- or 10-bit"):
        triton_kernel.hdr10_planes(net, y, c, c, bits=12)
    with pytest.raises(ValueError, match="precision"):
        triton_kernel.hdr10_planes(net, y, c, c, precision="int8")


def test_triton_path_without_a_device_is_a_clear_error(monkeypatch):
    """On a CPU without the interpreter the kernel cannot run: asked for explicitly, the
    path says so; ``auto`` on a CPU never picks it."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_kernel.available("cpu")
    net = _net("paper")
    frame = _frame("yuv420p", 8, 8)
    with pytest.raises(ValueError, match="triton"):
        hdr10_frame(frame, net, "full", "cpu", "fp32", path="triton")
    assert hdr10_frame(frame, net, "full", "cpu", "fp32").width == 8


def test_interpreter_setting_does_not_leak():
    assert "TRITON_INTERPRET" not in os.environ or os.environ["TRITON_INTERPRET"] == "0"


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_kernel_compiles_for_sm90(precision):
    """The kernel builds for H100/H200 (sm_90) without a GPU (Triton's LLVM and ptxas):
    tensor-core MMAs in the PTX, the fast sine's inline asm, a cubin out."""
    compiled = triton_kernel.compile_for_gpu(_net("default"), arch=90, precision=precision)
    ptx = compiled.asm["ptx"]
    assert "mma" in ptx and "sin.approx.f32" in ptx
    assert len(compiled.asm["cubin"]) > 10_000
