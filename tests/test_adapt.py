from dataclasses import replace

import numpy as np
import pytest
import torch

from itmfilter.model.adapt import AdaptOptions, _draw, adapt
from itmfilter.model.inference import predict_pq
from itmfilter.model.net import CONFIGS, ITMNet


def _pair(h=48, w=64):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    sdr = np.stack([xx / w, yy / h, rng.random((h, w))], -1).astype(np.float32)
    # A target the BT.2408 prior misses: brighter, and brighter on the right half.
    target = np.clip(0.15 + 0.5 * sdr**0.9 + 0.1 * (xx > w // 2)[..., None], 0, 1).astype(np.float32)
    return sdr, target


def _mse(net, sdr, target):
    return float(((predict_pq(net, sdr) - torch.from_numpy(target)) ** 2).mean())


@pytest.mark.parametrize("sampling", ["ohem", "uniform"])
def test_adaptation_reduces_error(sampling):
    sdr, target = _pair()
    init = ITMNet(CONFIGS["paper"])
    before = _mse(init, sdr, target)
    res = adapt(init, sdr, target, AdaptOptions(steps=120, sampling=sampling, sample_fraction=0.2, batch_size=256))
    assert _mse(res.net, sdr, target) < 0.2 * before
    assert len(res.losses) == 120
    # The initialisation is not modified in place.
    assert _mse(init, sdr, target) == pytest.approx(before)


def test_same_seed_same_weights_other_seed_differs():
    sdr, target = _pair()
    opts = AdaptOptions(steps=30, sample_fraction=0.2, batch_size=128, seed=5)
    init = ITMNet()
    a = adapt(init, sdr, target, opts).net.state_dict()
    b = adapt(init, sdr, target, opts).net.state_dict()
    c = adapt(init, sdr, target, AdaptOptions(steps=30, sample_fraction=0.2, batch_size=128, seed=6)).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ohem_draw_follows_error_map():
    gen = torch.Generator().manual_seed(0)
    error = torch.zeros(10, 10)
    error[2, 7] = 1.0  # only one hard cell
    idx = _draw(40 * 40, 1000, error, (40, 40), 4, 1.0, gen)
    ys, xs = idx // 40, idx % 40
    assert ((ys >= 8) & (ys < 12) & (xs >= 28) & (xs < 32)).all()
    assert len(set((idx).tolist())) > 8  # jittered inside the 4x4 cell


def test_shape_mismatch_rejected():
    sdr, target = _pair()
    with pytest.raises(ValueError):
        adapt(ITMNet(), sdr, target[:-1])


def test_trainable_prefixes_leave_the_rest_untouched():
    sdr, target = _pair()
    # an adapted net (an untrained one has a zero head, so no gradient reaches the coordinates)
    init = adapt(ITMNet(), sdr, target, AdaptOptions(steps=20, sample_fraction=0.2, batch_size=256)).net
    res = adapt(init, sdr, target, AdaptOptions(steps=20, sample_fraction=0.2, batch_size=256, trainable=("coord.",)))
    before, after = init.state_dict(), res.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"coord.0.weight", "coord.0.bias"} <= changed
    # everything else is the init, except the per-picture prior (refitted, not trained)
    assert changed - {"coord.0.weight", "coord.0.bias"} <= {"prior_mmr"}
    with pytest.raises(ValueError, match="no parameter"):
        adapt(init, sdr, target, AdaptOptions(steps=1, trainable=("nope.",)))


def test_bf16_steps_reach_the_fp32_quality():
    sdr, target = _pair()
    init = ITMNet()
    opts = dict(steps=120, sample_fraction=0.2, batch_size=256)
    fp32 = _mse(adapt(init, sdr, target, AdaptOptions(**opts)).net, sdr, target)
    bf16 = _mse(adapt(init, sdr, target, AdaptOptions(**opts, precision="bf16")).net, sdr, target)
    assert np.isfinite(bf16) and bf16 < 2.0 * fp32 + 1e-5


@pytest.mark.parametrize("flat", [False, True])
def test_adam_is_bit_identical_to_torch_adam_on_cpu(flat):
    import torch

    from itmfilter.model.net import ITMNet
    from itmfilter.model.optim import Adam

    torch.manual_seed(0)
    a = ITMNet()
    b = ITMNet()
    b.load_state_dict(a.state_dict())
    trainable_a = [p for n, p in a.named_parameters() if not n.startswith("rgb.")]  # one tensor group left out
    trainable_b = [p for n, p in b.named_parameters() if not n.startswith("rgb.")]
    ours, theirs = Adam(trainable_a, lr=3e-3, flat=flat), torch.optim.Adam(trainable_b, lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(25):
        sdr, xy = torch.rand(512, 3, generator=gen), torch.rand(512, 2, generator=gen) * 2 - 1
        target = torch.rand(512, 3, generator=gen) * 0.6
        for net, opt in ((a, ours), (b, theirs)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(net(sdr, xy), target).backward()
            opt.step()
    if flat:
        ours.release()
        assert all(p.grad is None for p in trainable_a)
        assert len({p.untyped_storage().data_ptr() for p in trainable_a}) == len(trainable_a)  # own storage again
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.state_dict()["fusion.6.weight"], ITMNet().state_dict()["fusion.6.weight"])  # it moved


def test_schedule_scales_with_steps_and_decays_late():
    from itmfilter.model.adapt import RECIPE_200x8192

    assert RECIPE_200x8192.resample_steps() == (50, 101, 152)  # the paper's schedule
    assert AdaptOptions(steps=1000, redraws=3).resample_steps() == (250, 505, 760)
    assert AdaptOptions(steps=1600).resample_steps() == tuple(range(100, 1600, 100))
    assert AdaptOptions().stride_for(1920 * 1080) == 8 and AdaptOptions().stride_for(512 * 256) == 2
    assert AdaptOptions(error_stride=4).stride_for(1920 * 1080) == 4 == RECIPE_200x8192.stride_for(10**6)
    assert AdaptOptions(resample_at=(0,)).resample_steps() == (0,)
    opts = AdaptOptions(steps=1000, lr=1e-3, lr_final=1e-4, decay_from=0.75)
    assert opts.lr_at(0) == opts.lr_at(750) == 1e-3
    assert opts.lr_at(875) == pytest.approx(5.5e-4)
    assert opts.lr_at(999) == pytest.approx(1e-4, abs=1e-7)
    assert all(opts.lr_at(s) >= opts.lr_at(s + 1) for s in range(999))
    assert all(RECIPE_200x8192.lr_at(s) == 1e-3 for s in range(200))
    with pytest.raises(ValueError):
        AdaptOptions(decay_from=1.5)


@pytest.mark.parametrize("prior", ["mmr3", "none"])
def test_hand_written_backward_gives_autograds_bits(prior):
    """The default engine's hand-written step and autograd adapt to the same weights, bit for bit."""
    import hashlib

    import torch

    from itmfilter.model.net import CONFIGS, ITMNet

    torch.manual_seed(3)
    net = ITMNet(replace(CONFIGS["default"], prior=prior))
    for p in net.parameters():  # a non-zero head, so every layer gets a gradient from step 1
        torch.nn.init.normal_(p, std=0.2)
    rng = np.random.default_rng(1)
    sdr = rng.random((40, 56, 3), dtype=np.float32)
    target = (0.6 * sdr**2 + 0.05 * rng.random((40, 56, 3), dtype=np.float32)).astype(np.float32)
    opts = dict(steps=60, batch_size=256, sample_fraction=0.5, min_samples=0)
    digests, losses = [], []
    for engine in ("auto", "autograd"):
        res = adapt(net, sdr, target, AdaptOptions(**opts, engine=engine))
        digests.append(hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in res.net.parameters())).hexdigest())
        losses.append(res.losses)
    assert digests[0] == digests[1] and losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0]


@pytest.fixture
def one_thread():
    """One torch thread: on the shared 2-core machine two spinning OpenMP threads made
    these small steps 10-50x slower under load."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _frames(n=3, h=40, w=56):
    """``n`` different pairs of one size: a pan across the picture of :func:`_pair`, each
    with its own grade, so the networks differ."""
    sdr, target = _pair(h, w + 2 * n)
    return ([np.ascontiguousarray(sdr[:, 2 * i:2 * i + w]) for i in range(n)],
            [np.ascontiguousarray(np.clip(target[:, 2 * i:2 * i + w] * (1 + 0.05 * i), 0, 1)) for i in range(n)])


@pytest.mark.parametrize("options", [
    AdaptOptions(steps=60, batch_size=256, redraws=3),  # batches of the drawn set, OHEM redraws
    AdaptOptions(steps=30, batch_size=0, resample_at=(0, 17)),  # the whole drawn set; a redraw at step 0
    AdaptOptions(steps=40, batch_size=256, sampling="uniform", lr_final=None),
])
def test_batched_adaptation_gives_each_frames_own_result(options, one_thread):
    """adapt_batch: B networks at once give what adapt gives each frame alone (the same
    draws, the same arithmetic up to the rounding of batched products), and differ from
    each other."""
    from itmfilter.model.adapt import adapt_batch

    init = ITMNet(CONFIGS["default"])
    sdrs, targets = _frames()
    batched = adapt_batch(init, sdrs, targets, options)
    alone = [adapt(init, s, t, options) for s, t in zip(sdrs, targets)]
    assert len(batched) == 3
    for b, a in zip(batched, alone):
        assert len(b.losses) == len(a.losses) == options.steps
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-4, atol=1e-9)
        for (name, p), q in zip(b.net.state_dict().items(), a.net.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
        assert not b.net.training
    w0 = [r.net.state_dict()["coord.0.weight"] for r in batched]
    assert not torch.equal(w0[0], w0[1])
    # each network owns its storage (no view into the batch's buffer is left behind)
    batched[0].net.state_dict()["coord.0.weight"].add_(1.0)
    assert not torch.equal(batched[0].net.state_dict()["coord.0.weight"] - 1.0, w0[1])
    torch.testing.assert_close(batched[1].net.state_dict()["coord.0.weight"], alone[1].net.state_dict()["coord.0.weight"],
                               rtol=1e-4, atol=1e-6)


def test_batched_adaptation_falls_back_and_checks_shapes(one_thread):
    from itmfilter.model.adapt import adapt_batch

    init = ITMNet(CONFIGS["default"])
    sdrs, targets = _frames(2)
    options = AdaptOptions(steps=10, batch_size=128, trainable=("coord.",))  # autograd: one at a time
    for b, a in zip(adapt_batch(init, sdrs, targets, options), [adapt(init, s, t, options) for s, t in zip(sdrs, targets)]):
        for p, q in zip(b.net.state_dict().values(), a.net.state_dict().values()):
            assert torch.equal(p, q)
    assert adapt_batch(init, [], []) == []
    with pytest.raises(ValueError, match="one size"):
        adapt_batch(init, [sdrs[0], sdrs[1][:, :-2]], [targets[0], targets[1][:, :-2]], options)
    with pytest.raises(ValueError, match="targets"):
        adapt_batch(init, sdrs, targets[:1], options)
