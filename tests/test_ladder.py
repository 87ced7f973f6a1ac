"""The quality ladder: exactness of the full rung, the gain-map rungs' cost, the choice."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from itmfilter.render import ladder
from itmfilter.quality.metrics import psnr_pu21
from itmfilter.colour.tensor import eotf_st2084 as pq_decode
from itmfilter.model.net import CONFIGS, ITMNet
from itmfilter.model.inference import predict_pq


def _smooth_sdr(h: int = 96, w: int = 160) -> np.ndarray:
    """A smooth, colourful SDR picture (BT.709 R'G'B' [0, 1])."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = x / w, y / h
    rgb = np.stack([0.5 + 0.45 * np.sin(2 * np.pi * u), 0.2 + 0.75 * v,
                    0.5 + 0.4 * np.cos(2 * np.pi * (u + v))], -1)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _trained_like_net(seed: int = 0) -> ITMNet:
    """The paper net with a small non-zero residual head, standing in for adapted weights."""
    torch.manual_seed(seed)
    net = ITMNet()
    last = net.fusion[-1]
    with torch.no_grad():
        last.weight.normal_(0.0, 0.01)
        last.bias.fill_(0.02)
    return net.eval()


def _nits(pq: np.ndarray) -> np.ndarray:
    return pq_decode(torch.from_numpy(pq)).numpy()


def test_rungs_ordered_best_first():
    assert [r.name for r in ladder.RUNGS] == ["full", "half", "quarter", "eighth", "sixteenth"]
    assert [r.downscale for r in ladder.RUNGS] == [1, 2, 4, 8, 16]


def test_full_rung_equals_predict_pq():
    net, sdr = _trained_like_net(), _smooth_sdr()
    expected = predict_pq(net, sdr, precision="fp32").clamp(0, 1).numpy()
    got = ladder.apply_rung(net, sdr, "full", "cpu", "fp32")
    assert got.shape == sdr.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rung", ["half", "quarter", "eighth", "sixteenth"])
def test_prior_only_net_makes_every_rung_exact(rung):
    # The untrained network with the exact BT.2408 prior is placement alone: every gain
    # is 1 and nothing is lost.
    net = ITMNet(CONFIGS["paper"]).eval()
    sdr = _smooth_sdr(90, 150)  # sizes that are not multiples of 4 or 8
    full = ladder.apply_rung(net, sdr, "full", "cpu", "fp32")
    got = ladder.apply_rung(net, sdr, rung, "cpu", "fp32")
    assert np.abs(got - full).max() < 2e-5


@pytest.mark.parametrize("rung, min_db", [("half", 50.0), ("quarter", 45.0), ("eighth", 40.0), ("sixteenth", 35.0)])
def test_gain_map_rungs_close_to_full_on_smooth_picture(rung, min_db):
    net, sdr = _trained_like_net(), _smooth_sdr()
    full = _nits(ladder.apply_rung(net, sdr, "full", "cpu", "fp32"))
    got = _nits(ladder.apply_rung(net, sdr, rung, "cpu", "fp32"))
    assert np.isfinite(got).all()
    assert psnr_pu21(full, got) > min_db


def test_measure_rung_costs_reports_every_rung():
    net, sdr = _trained_like_net(), _smooth_sdr(48, 80)
    ref = _nits(ladder.apply_rung(net, sdr, "full", "cpu", "fp32"))
    costs = ladder.measure_rung_costs(net, sdr, ref, precision="fp32")
    assert list(costs) == list(ladder.RUNG_NAMES)
    assert costs["full"]["psnr_vs_full"] == float("inf")
    assert costs["half"]["psnr_vs_full"] >= costs["eighth"]["psnr_vs_full"]


def test_choose_rung_picks_faster_rungs_for_tighter_budgets():
    timings = {"full": 0.40, "half": 0.12, "quarter": 0.05, "eighth": 0.03}
    assert ladder.choose_rung(1.0, timings) == "full"
    assert ladder.choose_rung(1 / 5, timings) == "half"
    assert ladder.choose_rung(1 / 12, timings) == "quarter"
    assert ladder.choose_rung(1 / 24, timings) == "eighth"  # 41.7 ms * 0.75 fits none
    names = [ladder.choose_rung(b, timings) for b in (1.0, 0.3, 0.1, 0.05, 0.01)]
    order = [ladder.RUNG_NAMES.index(n) for n in names]
    assert order == sorted(order)


def test_time_rungs_measures_each_rung():
    net, sdr = ITMNet(), _smooth_sdr(32, 48)
    timings = ladder.time_rungs(lambda rung: ladder.apply_rung(net, sdr, rung), repeats=1)
    assert set(timings) == set(ladder.RUNG_NAMES) and all(t > 0 for t in timings.values())


def test_time_rungs_gives_up_after_a_slow_rung():
    slow = {"half": 0.02}
    timings = ladder.time_rungs(lambda rung: time.sleep(slow.get(rung, 0.0)), ("eighth", "half", "full"),
                                repeats=1, give_up_s=0.01)
    assert list(timings) == ["eighth", "half"]


def test_controller_steps_down_when_frames_drop():
    c = ladder.RungController("half", window=4, max_drop_share=0.25)
    for _ in range(4):
        c.frame_done(False)
    assert c.rung == "half"
    for dropped in (True, True, False, False):
        c.frame_done(dropped)
    assert c.rung == "quarter" and c.changes == [(8, "quarter")]


def test_unknown_rung_and_bad_shape():
    with pytest.raises(ValueError, match="unknown rung"):
        ladder.apply_rung(ITMNet(), _smooth_sdr(8, 8), "tenth")
    with pytest.raises(ValueError, match="H, W, 3"):
        ladder.apply_rung(ITMNet(), np.zeros((8, 8), np.float32), "half")
    with pytest.raises(ValueError):
        ladder.choose_rung(0.04, {})
