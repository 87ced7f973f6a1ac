import numpy as np
import pytest
import torch

from itmfilter.colour.tensor import eotf_inverse_st2084 as pq_encode
from itmfilter.colour.tensor import eotf_st2084 as pq_decode
from itmfilter.model.net import CONFIGS, ITMNet, ModelConfig, param_count, pixel_grid, prior_bt2408


def test_paper_sized_network():
    net = ITMNet(CONFIGS["paper"])
    # 2->32 coord, 3->32 rgb, then 64/32/64/3: ~8.8k parameters, ~17.5 KB in fp16.
    assert 8000 < param_count(net) < 10000


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_shapes_and_finite(name):
    net = ITMNet(CONFIGS[name])
    sdr = torch.rand(257, 3)
    xy = torch.rand(257, 2) * 2 - 1
    out = net(sdr, xy)
    assert out.shape == (257, 3)
    assert torch.isfinite(out).all()


def test_residual_net_starts_at_bt2408_prior():
    net = ITMNet(CONFIGS["paper"])
    sdr = torch.rand(100, 3)
    torch.testing.assert_close(net(sdr, torch.zeros(100, 2)), prior_bt2408(sdr))


def test_prior_places_sdr_white_at_203_nits():
    white = prior_bt2408(torch.ones(1, 3))
    torch.testing.assert_close(pq_decode(white), torch.full((1, 3), 203.0), rtol=1e-4, atol=1e-3)


def test_pq_matches_colour_module():
    from itmfilter.colour.transfer import eotf_inverse_st2084

    nits = torch.tensor([0.0, 0.1, 100.0, 1000.0, 10000.0], dtype=torch.float64)
    np.testing.assert_allclose(pq_encode(nits).numpy(), eotf_inverse_st2084(nits.numpy()), rtol=1e-9, atol=1e-12)
    assert abs(float(pq_encode(torch.tensor(100.0, dtype=torch.float64))) - 0.508078421517399) < 1e-12
    torch.testing.assert_close(pq_decode(pq_encode(nits)), nits, rtol=1e-9, atol=1e-9)


def test_config_json_round_trip_and_validation():
    cfg = ModelConfig(coord_encoding="fourier", hidden=(16, 8))
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError):
        ModelConfig(prior="magic")
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"unknown": 1})


def test_pixel_grid_centres():
    g = pixel_grid(2, 4)
    assert g.shape == (2, 4, 2)
    torch.testing.assert_close(g[0, 0], torch.tensor([-0.75, -0.5]))
    torch.testing.assert_close(g[1, 3], torch.tensor([0.75, 0.5]))


def test_mmr_prior_matches_baselines_and_starts_near_bt2408():
    from itmfilter.quality import baselines

    sdr = torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        __import__("itmfilter.model.net", fromlist=["mmr_features"]).mmr_features(sdr).numpy(), baselines.mmr_features(sdr.numpy())
    )
    net = ITMNet(CONFIGS["default"])
    # An untrained mmr3 net is the cubic fit of the BT.2408 placement: over a 21^3 grid of the
    # SDR cube within 0.065 PQ (0.062 at its worst, saturated red), within 0.02 on average.
    g = torch.linspace(0, 1, 21)
    cube = torch.cartesian_prod(g, g, g)
    with torch.no_grad():
        err = (net(cube, torch.zeros(len(cube), 2)) - prior_bt2408(cube)).abs()
    assert float(err.max()) < 0.065 and float(err.mean()) < 0.02


def test_adapt_fits_mmr_prior_exactly_for_a_cubic_mapping():
    from itmfilter.model.adapt import AdaptOptions, adapt
    from itmfilter.model.net import mmr_features

    rng = np.random.default_rng(0)
    sdr = rng.random((40, 50, 3)).astype(np.float32)
    coeffs = torch.from_numpy(rng.normal(0, 0.05, (22, 3))).float()
    coeffs[1:4] += torch.eye(3) * 0.5
    target = (mmr_features(torch.from_numpy(sdr).reshape(-1, 3)) @ coeffs).reshape(40, 50, 3).numpy()
    res = adapt(ITMNet(CONFIGS["default"]), sdr, target, AdaptOptions(steps=0))
    torch.testing.assert_close(res.net.prior_mmr, coeffs, rtol=1e-3, atol=1e-3)
