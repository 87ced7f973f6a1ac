"""Motion-compensated weight prediction: the shift of a weight set is exact, the estimator
finds real pans, and DELTA coding 2 round-trips through the encoder and the decoder."""

import numpy as np
import pytest
import torch

from itmfilter.data.testmedia import pan_view
from itmfilter.media.phasecorr import MotionEstimator
from itmfilter.model.net import CONFIGS, ITMNet, ModelConfig, pixel_grid
from itmfilter.track import TrackDecoder, TrackEncoder, TrackHeader
from itmfilter.track.codec import MOTION_DELTA_CODING, carries_update
from itmfilter.track.format import decode_packet, encode_packet, flatten_state, unflatten
from itmfilter.track.motion import pixels_to_shift, warp_params


def _random_net(config, seed=0):
    torch.manual_seed(seed)
    net = ITMNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net.eval()


@pytest.mark.parametrize("name", ["default", "paper", "fourier"])
@pytest.mark.parametrize("shift", [(0.013, -0.021), (-0.4, 0.25), (1.7, 0.0)])
def test_warped_set_is_the_network_at_shifted_coordinates(name, shift):
    config = CONFIGS[name]
    net = _random_net(config)
    warped = ITMNet(config)
    warped.load_state_dict(unflatten(config, warp_params(config, flatten_state(net.state_dict()), shift)))
    warped.eval()
    rng = np.random.default_rng(1)
    sdr = torch.from_numpy(rng.random((4096, 3), dtype=np.float32))
    xy = torch.from_numpy(rng.uniform(-1, 1, (4096, 2)).astype(np.float32))
    with torch.no_grad():
        want = net(sdr, xy + torch.tensor(shift, dtype=torch.float32))
        got = warped(sdr, xy)
    # float32 features: sin(f (x + d)) vs rotated sin/cos pairs differ by rounding only
    assert float((want - got).abs().max()) < 2e-4
    # and the shift is not a no-op: the network does depend on position
    with torch.no_grad():
        assert float((net(sdr, xy) - got).abs().max()) > 1e-3


def test_warp_without_coordinates_and_zero_shift_is_identity():
    config = ModelConfig(coord_encoding="none")
    vec = flatten_state(_random_net(config).state_dict())
    assert np.array_equal(warp_params(config, vec, (0.3, 0.1)), vec)
    vec = flatten_state(_random_net(CONFIGS["default"]).state_dict())
    assert np.array_equal(warp_params(CONFIGS["default"], vec, (0.0, 0.0)), vec)
    with pytest.raises(ValueError, match="finite"):
        warp_params(CONFIGS["default"], vec, (float("nan"), 0.0))


def test_estimator_finds_subpixel_pans_of_a_real_panorama(tmp_path):
    from itmfilter.data import sample_path  # the packaged CC0 HDR picture
    from itmfilter.media.stills import read_hdr

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    est = MotionEstimator()
    x, steps = w * 0.5, [0.0, 2.37, -1.5, 0.41]
    scale = 270 / (h * 0.6)  # output pixels per panorama pixel
    for dx in steps:
        x += dx
        frame = pan_view(pano, (480, 270), (x, h * 0.5), h * 0.6)
        v = est(np.clip(frame / 200.0, 0, 1))
        if dx == 0.0:
            assert v is None  # first frame
            continue
        assert v is not None, est.confidence
        assert abs(v[0] - dx * scale) < 0.15 and abs(v[1]) < 0.15, (v, dx * scale)


def test_estimator_follows_the_camera_not_a_subject_moving_on_its_own():
    """A sharp, bright figure crossing a panned scene correlates more strongly than the
    background it covers a fifth of; the camera's motion is the one most of the picture agrees
    with, and the one the estimator reports."""
    from itmfilter.data import sample_path  # the packaged CC0 HDR picture
    from itmfilter.media.stills import read_hdr

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    rng = np.random.default_rng(3)
    sprite = np.kron(rng.random((8, 10)) > 0.5, np.ones((12, 12)))[..., None] * 0.9 + 0.05  # 96x120, hard edges
    est = MotionEstimator()
    scale = 270 / (h * 0.6)  # output pixels per panorama pixel
    x = w * 0.5
    for j in range(8):
        frame = np.clip(pan_view(pano, (480, 270), (x, h * 0.5), h * 0.6) / 200.0, 0, 1)
        sx, sy = 150 - 9 * j, 80 + 5 * j  # the figure moves left and down; the camera right
        frame[sy:sy + sprite.shape[0], sx:sx + sprite.shape[1]] = sprite
        v = est(frame)
        if j:
            assert v is not None, est.confidence
            assert abs(v[0] - 3.0 * scale) < 0.3 and abs(v[1]) < 0.3, (j, v, 3.0 * scale)
        x += 3.0


def test_estimator_reports_no_motion_across_a_cut():
    rng = np.random.default_rng(0)
    est = MotionEstimator()
    est(rng.random((270, 480), dtype=np.float32))
    assert est(rng.random((270, 480), dtype=np.float32)) is None
    assert est.confidence < 0.15


def _header(config):
    return TrackHeader(config=config, fps=(24, 1), frame_count=10, width=64, height=36)


def test_motion_delta_round_trips_and_shift_alone_is_eight_bytes():
    config = CONFIGS["default"]
    base = flatten_state(_random_net(config).state_dict())
    shift = pixels_to_shift((3.25, -1.0), 64, 36)
    enc = TrackEncoder(_header(config))
    p0 = enc.add(0, base)
    # frame 1: exactly the shifted set -> the shift alone
    p1 = enc.add(1, warp_params(config, base, shift), motion=shift)
    assert p1.kind == "delta" and p1.coding == MOTION_DELTA_CODING and len(p1.payload) == 8
    assert not carries_update(p1) and carries_update(p0)
    # frame 2: shifted again plus a change -> shift and residual
    changed = warp_params(config, enc.decoded, shift) + np.float32(0.01)
    p2 = enc.add(2, changed, motion=shift)
    assert p2.coding == MOTION_DELTA_CODING and len(p2.payload) > 8 and carries_update(p2)
    # frame 3: no motion, nothing changed -> a repeat
    assert enc.add(3, enc.decoded).kind == "repeat"
    packets = {p.frame: encode_packet(p) for p in (p0, p1, p2, enc.packets[-1])}
    dec = TrackDecoder(enc.header)
    for f in range(4):
        vec, status = dec.params_at(f, packets)
        assert status == "ok"
    # the decoder holds what the encoder's closed loop held, bit for bit
    assert np.array_equal(vec, enc.decoded)
    fresh = TrackDecoder(enc.header)
    v0, _ = fresh.params_at(0, packets)  # the key as decoded (quantised)
    v1, _ = fresh.params_at(1, packets)
    assert np.array_equal(v1, warp_params(config, v0, tuple(float(np.float32(s)) for s in shift)))


def test_truncated_motion_delta_is_reported_and_held():
    config = CONFIGS["default"]
    base = flatten_state(_random_net(config).state_dict())
    enc = TrackEncoder(_header(config))
    p0 = enc.add(0, base)
    p1 = enc.add(1, base, motion=(0.01, 0.0))
    p1.payload = p1.payload[:5]
    packets = {0: encode_packet(p0), 1: encode_packet(p1)}
    dec = TrackDecoder(enc.header)
    vec, status = dec.params_at(1, packets)
    key, _ = TrackDecoder(enc.header).params_at(0, packets)
    assert status == "damaged" and np.array_equal(vec, key)
    assert "shorter than its shift" in dec.problems[1]
    assert decode_packet(packets[1]).coding == MOTION_DELTA_CODING


def test_pixel_grid_units():
    g = pixel_grid(36, 64)
    dx, dy = pixels_to_shift((1.0, 1.0), 64, 36)
    assert np.isclose(float(g[0, 1, 0] - g[0, 0, 0]), dx) and np.isclose(float(g[1, 0, 1] - g[0, 0, 1]), dy)
