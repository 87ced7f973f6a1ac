import numpy as np
import torch

from itmfilter.model.inference import predict_pq, reconstruct_nits, resolve_precision
from itmfilter.model.net import ITMNet, pixel_grid


def _net():
    torch.manual_seed(0)
    net = ITMNet()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_chunked_equals_one_call():
    net = _net()
    sdr = np.random.default_rng(1).random((37, 53, 3)).astype(np.float32)
    whole = net(torch.from_numpy(sdr).reshape(-1, 3), pixel_grid(37, 53).reshape(-1, 2)).reshape(37, 53, 3)
    chunked = predict_pq(net, sdr, chunk=100)
    torch.testing.assert_close(chunked, whole.detach(), rtol=1e-5, atol=2e-5)


def test_stride_picks_grid_pixels():
    net = _net()
    sdr = np.random.default_rng(2).random((20, 30, 3)).astype(np.float32)
    full = predict_pq(net, sdr)
    torch.testing.assert_close(predict_pq(net, sdr, stride=4), full[::4, ::4])


def test_bf16_close_to_fp32_and_nits_range():
    net = _net()
    sdr = np.random.default_rng(3).random((16, 16, 3)).astype(np.float32)
    a = predict_pq(net, sdr, precision="fp32")
    b = predict_pq(net, sdr, precision="bf16")
    assert float((a - b).abs().max()) < 0.02
    nits = reconstruct_nits(net, sdr)
    assert nits.dtype == np.float32 and (nits >= 0).all() and (nits <= 10000).all()
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
