"""The network over a grid of pixels with the coordinate layer split by axis
(itmfilter.model.separable) against ITMNet.forward."""

import pytest
import torch

from itmfilter.model.net import CONFIGS, ITMNet, ModelConfig, pixel_grid
from itmfilter.model.separable import evaluate_blocks, evaluate_grid, pixel_centres, separable


def _net(config="default", seed=0) -> ITMNet:
    torch.manual_seed(seed)
    net = ITMNet(CONFIGS[config] if isinstance(config, str) else config).eval()
    # a trained-looking head: the untrained one is zero and would hide any error
    for p in net.fusion[-1].parameters():
        torch.nn.init.normal_(p, std=0.05)
    return net


def _reference(net, rgb, ys, xs):
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    x = rgb.reshape(-1, 3)
    with torch.no_grad():
        out = net(x, torch.stack([gx, gy], -1).reshape(-1, 2))
        prior = net.prior(x)
    return out if prior is None else out - prior


@pytest.mark.parametrize("config", ["default", "stills", "fourier"])
def test_whole_picture_matches_forward_in_fp32(config):
    net = _net(config)
    h, w = 23, 41
    rgb = torch.rand(h, w, 3)
    got = evaluate_grid(net, rgb, pixel_centres(h), pixel_centres(w), band_pixels=100)
    want = _reference(net, rgb, pixel_centres(h), pixel_centres(w))
    assert torch.allclose(got, want, atol=2e-6), float((got - want).abs().max())
    assert float(want.abs().max()) > 0.05  # the comparison is not of zeros
    # pixel_centres is pixel_grid's convention
    assert torch.equal(pixel_grid(h, w)[:, 0, 1], pixel_centres(h))
    assert torch.equal(pixel_grid(h, w)[0, :, 0], pixel_centres(w))


def test_subsampled_rows_and_columns_and_bf16():
    net = _net()
    h, w, step = 50, 70, 4
    rows, cols = torch.arange(step // 2, h, step), torch.arange(step // 2, w, step)
    ys, xs = pixel_centres(h, rows), pixel_centres(w, cols)
    rgb = torch.rand(len(rows), len(cols), 3)
    want = _reference(net, rgb, ys, xs)
    got = evaluate_grid(net, rgb, ys, xs)
    assert torch.allclose(got, want, atol=2e-6)
    # bf16 fusion layers against ITMNet.forward under bf16 autocast: the same rounding class
    got16 = evaluate_grid(net, rgb, ys, xs, dtype=torch.bfloat16)
    assert float((got16 - want).abs().max()) < 4e-3


def test_refuses_siren_and_bad_shapes():
    net = _net(ModelConfig(coord_encoding="siren"))
    assert not separable(net)
    with pytest.raises(ValueError, match="Fourier"):
        evaluate_grid(net, torch.rand(2, 2, 3), pixel_centres(2), pixel_centres(2))
    with pytest.raises(ValueError, match="rows"):
        evaluate_grid(_net(), torch.rand(2, 3, 3), pixel_centres(3), pixel_centres(3))


def test_network_without_coordinates():
    net = _net(ModelConfig(coord_encoding="none", prior="none"))
    rgb = torch.rand(5, 6, 3)
    got = evaluate_grid(net, rgb, pixel_centres(5), pixel_centres(6))
    with torch.no_grad():
        want = net(rgb.reshape(-1, 3), torch.zeros(30, 2))
    assert torch.allclose(got, want, atol=2e-6)


def test_blocks_match_the_grid():
    net = _net()
    h, w, s = 19, 33, 4
    rgb = torch.rand(h, w, 3)
    grid = evaluate_grid(net, rgb, pixel_centres(h), pixel_centres(w)).reshape(h, w, 3)
    rows = torch.tensor([[0, 1, 2, 3], [16, 17, 18, 18], [4, 5, 6, 7]])  # the second clipped at the edge
    cols = torch.tensor([[0, 1, 2, 3], [28, 29, 30, 31], [32, 32, 32, 32]])
    block_rgb = rgb[rows[:, :, None], cols[:, None, :]]
    got = evaluate_blocks(net, block_rgb, rows, cols, h, w, band_pixels=20)
    assert got.shape == (3, s, s, 3)
    assert torch.allclose(got, grid[rows[:, :, None], cols[:, None, :]], atol=2e-6)
