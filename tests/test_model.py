import numpy as np
import pytest
import torch

from itmfilter.model import CONFIGS, ITMNet, ModelConfig, param_count, pixel_grid, pq_decode, pq_encode, prior_bt2408


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
