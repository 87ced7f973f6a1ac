"""The quality ladder: exactness of the full rung, the gain-map rungs' cost, the choice."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from itmfilter.colour.tensor import eotf_st2084 as pq_decode
from itmfilter.model.inference import predict_pq
from itmfilter.model.net import CONFIGS, ITMNet
from itmfilter.quality.metrics import psnr_pu21
from itmfilter.render import ladder


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
    assert [r.name for r in ladder.RUNGS] == ["full", "guided-half", "guided-quarter", "guided-sixth",
                                              "guided-eighth", "half", "quarter", "eighth", "sixteenth"]
    assert [r.downscale for r in ladder.RUNGS] == [1, 2, 4, 6, 8, 2, 4, 8, 16]
    # the ladder auto and the controller walk: each rung runs the network on fewer pixels
    steps = [ladder.get_rung(name).downscale for name in ladder.LADDER]
    assert ladder.LADDER[0] == "full" and ladder.LADDER[-1] == "sixteenth"
    assert steps == sorted(steps) and set(ladder.LADDER) <= set(ladder.RUNG_NAMES)


def test_full_rung_equals_predict_pq():
    net, sdr = _trained_like_net(), _smooth_sdr()
    expected = predict_pq(net, sdr, precision="fp32").clamp(0, 1).numpy()
    got = ladder.apply_rung(net, sdr, "full", "cpu", "fp32")
    assert got.shape == sdr.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rung", ["half", "quarter", "eighth", "sixteenth", "guided-half", "guided-sixth"])
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
    assert ladder.choose_rung(1 / 30, timings) == "eighth"  # 33.3 ms * 0.9 fits none
    names = [ladder.choose_rung(b, timings) for b in (1.0, 0.3, 0.1, 0.05, 0.01)]
    order = [ladder.RUNG_NAMES.index(n) for n in names]
    assert order == sorted(order)


def test_choose_rung_never_takes_sixteenth_where_a_better_rung_fits():
    # 1080p24-like costs: the frame period is 41.7 ms, 0.9 of it 37.5 ms
    timings = {"sixteenth": 0.012, "eighth": 0.018, "guided-eighth": 0.027, "guided-sixth": 0.036,
               "guided-quarter": 0.060}
    assert ladder.choose_rung(1 / 24, timings) == "guided-sixth"
    assert ladder.choose_rung(1 / 30, timings) == "guided-eighth"  # 30 ms
    # quarter timed as fitting: it is taken over sixteenth, whatever else was timed
    assert ladder.choose_rung(1 / 24, {"sixteenth": 0.012, "quarter": 0.030}) == "quarter"
    for fps in (12, 24, 25, 30, 50, 60):
        chosen = ladder.choose_rung(1 / fps, timings)
        fitting = [name for name, t in timings.items() if t <= ladder.RUNG_HEADROOM / fps]
        if fitting:
            assert chosen in fitting
            assert ladder.RUNG_NAMES.index(chosen) == min(ladder.RUNG_NAMES.index(n) for n in fitting)


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
    c = ladder.RungController("guided-sixth", window=4, max_drop_share=0.25)
    for _ in range(4):
        c.frame_done(False)
    assert c.rung == "guided-sixth"
    for dropped in (True, True, False, False):
        c.frame_done(dropped)
    assert c.rung == "guided-eighth" and c.changes == [(8, "guided-eighth")]
    # from a rung off the ladder, to the first ladder rung that runs the network on fewer pixels
    assert ladder.next_faster_rung("half") == "guided-quarter"
    assert ladder.next_faster_rung("quarter") == "guided-sixth"
    assert ladder.next_faster_rung("sixteenth") is None
    c = ladder.RungController("sixteenth", window=2, max_drop_share=0.1)
    for _ in range(4):
        c.frame_done(True)
    assert c.rung == "sixteenth" and c.changes == []


def _adapted_spatial_net(sdr: np.ndarray) -> ITMNet:
    """The default network (per-picture polynomial prior) adapted to a spatially varying
    mapping of ``sdr``: a global curve plus an exposure that changes across the picture
    and a lift of the near-white pixels, as a local grade's inverse."""
    from itmfilter.model.adapt import AdaptOptions, adapt

    h, w, _ = sdr.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    exposure = 0.08 * np.sin(2 * np.pi * xx / w) * np.cos(np.pi * yy / h)
    y = sdr @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    lift = 0.15 * np.clip((y - 0.85) / 0.15, 0, 1)
    target = np.clip(0.1 + 0.5 * sdr**1.3 + (exposure + lift)[..., None], 0, 1).astype(np.float32)
    torch.manual_seed(0)
    return adapt(ITMNet(), sdr, target, AdaptOptions(steps=300, sample_fraction=0.2, batch_size=512)).net.eval()


def _textured_sdr(h: int = 120, w: int = 200) -> np.ndarray:
    """Colourful detail at many scales (edges inside every cell), BT.709 R'G'B' [0, 1]."""
    rng = np.random.default_rng(1)
    base = _smooth_sdr(h, w)
    blocks = rng.random((h // 5 + 1, w // 5 + 1, 3)).repeat(5, 0).repeat(5, 1)[:h, :w]
    return np.clip(0.6 * base + 0.5 * blocks.astype(np.float32) - 0.05, 0, 1).astype(np.float32)


def test_guided_rung_close_to_full_on_a_spatially_varying_mapping():
    sdr = _textured_sdr()
    net = _adapted_spatial_net(sdr)
    costs = ladder.measure_rung_costs(net, sdr, None, ("guided-half", "guided-quarter", "half", "quarter"),
                                      precision="fp32")
    vs_full = {name: c["psnr_vs_full"] for name, c in costs.items()}
    # per-pixel colour detail inside each cell survives the guided rungs: well above the
    # plain residual rungs that evaluate the network on cell means (measured: 42.0 and
    # 37.4 dB against 35.0 and 31.4)
    assert vs_full["guided-half"] > 40 and vs_full["guided-quarter"] > 35
    assert vs_full["guided-half"] > vs_full["half"] + 4
    assert vs_full["guided-quarter"] > vs_full["quarter"] + 4


def test_refining_the_worst_blocks_brings_the_guided_rungs_closer_to_full(monkeypatch):
    """The full network on the worst-fitted blocks: those blocks equal the full rung, and the
    whole picture comes closer to it than the fitted transforms alone."""
    sdr = _textured_sdr()
    net = _adapted_spatial_net(sdr)
    full = ladder.apply_rung(net, sdr, "full", precision="fp32")
    with_refine = ladder.apply_rung(net, sdr, "guided-quarter", precision="fp32")
    monkeypatch.setattr(ladder, "GUIDED_REFINE_SHARE", 0.0)
    without = ladder.apply_rung(net, sdr, "guided-quarter", precision="fp32")
    changed = np.abs(with_refine - without).max(-1) > 0
    assert 0 < changed.mean() <= 0.04  # at most the share of 4 x 4 blocks (3 %, rounded up)
    np.testing.assert_allclose(with_refine[changed], full[changed], atol=1e-6)
    nits = lambda pq: pq_decode(torch.from_numpy(pq)).numpy()  # noqa: E731
    # measured +0.29 dB here: this texture's error is spread over every block, unlike a real
    # picture's, where it sits in a few (docs/ladder-timing.md)
    assert psnr_pu21(nits(full), nits(with_refine)) > psnr_pu21(nits(full), nits(without)) + 0.15


def test_refine_blocks_takes_the_worst_share_above_the_tolerance():
    h, w, step = 37, 50, 4
    a, b = len(ladder.guided_samples(h, step)), len(ladder.guided_samples(w, step))
    error = torch.zeros(a, b)
    error[3, 5] = 0.05  # one badly fitted sample: its block and the 8 around score it
    error[7, 1] = 0.5 / 1023  # below one code: never refined
    blocks = ladder.refine_blocks(error, h, w, step, share=0.5)
    assert blocks.shape == (-(-h // step), -(-w // step))
    assert blocks.sum() == 9 and blocks[2:5, 4:7].all()
    assert ladder.refine_blocks(error, h, w, step, share=0.02).sum() == round(0.02 * blocks.size)
    assert not ladder.refine_blocks(torch.zeros(a, b), h, w, step).any()
    index, rows, cols = ladder.refine_block_list(blocks, h, w, step)
    assert rows.shape == cols.shape == (9, step) and (index >= 0).sum() == 9
    for bi, bj in zip(*np.nonzero(blocks)):
        k = index[bi, bj]
        assert rows[k, 0] == bi * step and cols[k, 0] == bj * step
    corner = np.zeros_like(blocks)
    corner[-1, -1] = True  # the last, partial block: its rows and columns stop at the edge
    index, rows, cols = ladder.refine_block_list(corner, h, w, step)
    assert rows.tolist() == [[36, 36, 36, 36]] and cols.tolist() == [[48, 49, 49, 49]]


def test_refine_blocks_scores_a_block_by_its_probe_where_larger():
    h, w, step = 37, 50, 4
    a, b = len(ladder.guided_samples(h, step)), len(ladder.guided_samples(w, step))
    nbh, nbw = -(-h // step), -(-w // step)
    error = torch.zeros(a, b)
    probe = np.zeros(nbh * nbw, np.float32)
    probe[2 * nbw + 11] = 0.05  # a block whose samples fit and whose brightest pixel does not
    blocks = ladder.refine_blocks(error, h, w, step, share=0.01, probe=probe)
    assert blocks.sum() == 1 and blocks[2, 11]  # the probe is the block's own: not dilated
    assert not ladder.refine_blocks(error, h, w, step, share=0.01).any()


def test_probe_pixels_are_each_blocks_first_brightest_pixel():
    rng = np.random.default_rng(3)
    h, w, step = 37, 50, 4
    y = rng.integers(16, 236, (h, w)).astype(np.uint8)
    y[5:7, 9:11] = 250  # a tie inside one block: the first in raster order wins
    blocks, rows, cols = ladder.probe_pixels(y, h, w, step, share=1.0)
    nbh, nbw = -(-h // step), -(-w // step)
    assert rows.shape == cols.shape == (nbh * nbw,) and np.array_equal(blocks, np.arange(nbh * nbw))
    for k, (r, c) in enumerate(zip(rows, cols)):
        bi, bj = divmod(k, nbw)
        block = y[bi * step:(bi + 1) * step, bj * step:(bj + 1) * step]  # edge blocks: cropped
        assert bi * step <= r < min(h, (bi + 1) * step) and bj * step <= c < min(w, (bj + 1) * step)
        flat = int(np.argmax(block))
        assert (r, c) == (bi * step + flat // block.shape[1], bj * step + flat % block.shape[1])
    k = (5 // step) * nbw + 9 // step
    assert (rows[k], cols[k]) == (5, 9)
    # the torch luma of R'G'B' takes the same road
    lum = torch.from_numpy(y.astype(np.float32) / 255)
    assert all(np.array_equal(p, q) for p, q in zip(ladder.probe_pixels(lum, h, w, step, share=1.0),
                                                    (blocks, rows, cols)))
    # by default only the brightest blocks: here the one holding the 250s comes first
    few, frows, fcols = ladder.probe_pixels(y, h, w, step, share=0.2)
    assert len(few) == round(0.2 * nbh * nbw) and k in few
    assert np.array_equal(frows, rows[few]) and np.array_equal(fcols, cols[few])
    maxima = np.array([y[r, c] for r, c in zip(rows, cols)], np.float32)
    assert maxima[few].min() >= np.delete(maxima, few).max()


def test_brightest_blocks_takes_the_share_with_the_largest_maxima():
    maxima = np.array([5, 1, 9, 9, 3, 7, 0, 2, 8, 4], np.float32)
    assert ladder.brightest_blocks(maxima, 0.3).tolist() == [2, 3, 8]
    assert ladder.brightest_blocks(maxima, 0.01).tolist() in ([2], [3])  # at least one
    assert ladder.brightest_blocks(maxima, 1.0).tolist() == list(range(10))


def _probe_case(seed: int, h: int, w: int, step: int = 4):
    """A network whose residual the transforms cannot follow everywhere, a random picture, its
    guided transforms and a probe in every block: ``(net, rgb, coef, rows, cols)``."""
    torch.manual_seed(seed)
    net = ITMNet(CONFIGS["default"]).eval()
    for p in net.fusion[-1].parameters():
        torch.nn.init.normal_(p, std=0.05)
    rng = np.random.default_rng(seed + 4)
    rgb = torch.from_numpy(rng.random((h, w, 3)).astype(np.float32))
    ys, xs = ladder.guided_samples(h, step), ladder.guided_samples(w, step)
    coef = ladder.guided_coefficients(net, rgb[ys][:, xs], h, w, step, torch.device("cpu"), "fp32")
    _, rows, cols = ladder.probe_pixels(rgb @ torch.tensor([0.2126, 0.7152, 0.0722]), h, w, step, share=1.0)
    return net, rgb, coef, rows, cols


def test_probe_error_is_the_transforms_miss_of_the_network_at_the_probe():
    h, w, step = 24, 32, 4
    net, rgb, coef, rows, cols = _probe_case(0, h, w, step)
    got = ladder.guided_probe_error(net, rgb[rows, cols], rows, cols, coef, h, w, step, torch.float32)
    # the reference: the full rung's PQ less the guided transform's, at the probes
    full = torch.from_numpy(ladder.apply_rung(net, rgb.numpy(), "full", "cpu", "fp32"))[rows, cols]
    prior = net.prior(rgb[rows, cols]).clamp(0.0, 1.0)
    want = ladder.guided_point_error(rgb[rows, cols], full - prior, coef, rows, cols, h, w, step)
    assert got.shape == (len(rows),) and float(got.max()) > 1e-3
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)


def test_guided_numba_probe_error_matches_the_torch_one():
    pytest.importorskip("numba")
    from itmfilter.render import fastpath

    h, w, step = 30, 44, 4
    net, rgb, coef, rows, cols = _probe_case(1, h, w, step)
    pts = rgb[rows, cols]
    want = ladder.guided_probe_error(net, pts, rows, cols, coef, h, w, step, torch.float32).numpy()
    n = len(rows)
    raw = ladder.residual_on_blocks(net, pts.view(n, 1, 1, 3), torch.from_numpy(rows).view(n, 1),
                                    torch.from_numpy(cols).view(n, 1), h, w, torch.float32).reshape(n, 3).numpy()
    got = fastpath.guided_probe_error_fast(pts.numpy(), raw, net.prior_mmr.numpy(), coef.numpy(), rows, cols, h, w, step)
    assert want.max() > 1e-3
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_guided_fit_recovers_an_affine_residual_exactly():
    # a residual that is one affine function of the guide everywhere: every node finds it
    rng = np.random.default_rng(2)
    h, w, step = 50, 70, 4
    rgb = torch.from_numpy(rng.random((len(ladder.guided_samples(h, step)), len(ladder.guided_samples(w, step)), 3)))
    true = torch.from_numpy(rng.normal(0, 0.1, (ladder.GUIDE_FEATURES, 3)))
    resid = ladder.guided_features(rgb) @ true
    coef = ladder.guided_fit(rgb.float(), resid.float(), h, w, step, ridge=0.0)
    assert coef.shape == (ladder.guided_nodes(h, step)[2], ladder.guided_nodes(w, step)[2], 5, 3)
    assert torch.allclose(coef, true.float().expand_as(coef), atol=2e-4)


def test_guided_nodes_cover_the_picture():
    for n, step in ((1080, 8), (1080, 6), (360, 2), (37, 4), (5, 8)):
        i0, weight, nodes = ladder.guided_nodes(n, step)
        assert i0.min() >= 0 and i0.max() + 1 <= nodes - 1
        assert ((weight >= 0) & (weight < 1)).all()
        samples = ladder.guided_samples(n, step)
        assert samples[0] == step // 2 and samples[-1] < n


def test_unknown_rung_and_bad_shape():
    with pytest.raises(ValueError, match="unknown rung"):
        ladder.apply_rung(ITMNet(), _smooth_sdr(8, 8), "tenth")
    with pytest.raises(ValueError, match="H, W, 3"):
        ladder.apply_rung(ITMNet(), np.zeros((8, 8), np.float32), "half")
    with pytest.raises(ValueError):
        ladder.choose_rung(0.04, {})
