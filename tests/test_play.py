"""Playback through real mpv (headless) of tiny clips encoded here with PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from itmfilter.errors import ItmError
from itmfilter.model.net import CONFIGS, ITMNet
from itmfilter.player.mpv import play
from itmfilter.render.frame import pq_to_yuv420p10, sdr_frame_to_rgb, yuv420p10_frame
from itmfilter.render.ladder import apply_rung

pytest.importorskip("mpv")

W, H, N, FPS = 128, 72, 12, 24


def _make_clip(path: Path, audio: bool = True) -> Path:
    """12 frames of 128x72 moving gradients, libx264 yuv420p tagged BT.709, AAC tone."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=FPS)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    cc = v.codec_context
    cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
    v.options = {"crf": "18"}
    a = out.add_stream("aac", rate=48000) if audio else None
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(N):
        img = np.stack([(xx * 2 + i * 5) % 256, (yy * 3) % 256, (xx + yy + i * 10) % 256], -1)
        frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    if a is not None:
        t = np.arange(int(48000 * N / FPS)) / 48000
        tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, tone.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]),
                                            format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _make_clip(tmp_path_factory.mktemp("play") / "clip.mp4")


def _adapted_like_net() -> ITMNet:
    torch.manual_seed(1)
    net = ITMNet(CONFIGS["paper"])
    with torch.no_grad():
        net.fusion[-1].weight.normal_(0.0, 0.02)
        net.fusion[-1].bias.fill_(0.03)
    return net.eval()


def _planes(frame) -> list[np.ndarray]:
    """The Y, Cb, Cr planes of a yuv420p10le frame, exactly as stored."""
    return [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, :p.width]
            for p in frame.planes]


def test_hdr_output_matches_reconstruction_exactly(clip, tmp_path):
    net = _adapted_like_net()
    statuses = ["ok"] * N
    statuses[3], statuses[7] = "damaged", "blind"
    out = tmp_path / "hdr.mkv"
    stats = play(clip, hdr=True, vo="null", output=out, rung="full", precision="fp32",
                 weights_provider=lambda i: (net, statuses[i]), quiet=True)
    assert stats.frames_sent == N and stats.frames_skipped == 0 and stats.rung == "full"
    assert stats.damaged_frames == 1 and stats.blind_frames == 1
    assert stats.video_out_params["gamma"] == "pq"
    assert stats.video_out_params["primaries"] == "bt.2020"
    assert stats.video_out_params["colormatrix"] == "bt.2020-ncl"
    with av.open(str(clip)) as src:
        expected = [pq_to_yuv420p10(apply_rung(net, sdr_frame_to_rgb(f), "full", "cpu", "fp32"))
                    for f in src.decode(video=0)]
    with av.open(str(out)) as rec:
        stream = rec.streams.video[0]
        assert stream.codec_context.name == "ffv1"
        assert rec.streams.audio, "the source's audio travels with the video"
        got = [_planes(f) for f in rec.decode(stream)]
    assert stream.codec_context.color_trc == 16 and stream.codec_context.color_primaries == 9
    assert len(got) == N
    for g, e in zip(got, expected):
        assert [p.shape for p in g] == [(H, W), (H // 2, W // 2), (H // 2, W // 2)]
        # FFV1 is lossless: mpv recorded exactly the codes the producer wrote.
        for gp, ep in zip(g, e):
            np.testing.assert_array_equal(gp, ep)


def test_hdr_null_realtime_tags_pq_bt2020(clip):
    stats = play(clip, hdr=True, vo="null", rung="auto", quiet=True)
    assert stats.video_out_params["gamma"] == "pq"
    assert stats.video_out_params["primaries"] == "bt.2020"
    assert stats.blind_frames == stats.frames_sent  # default provider: blind mode
    assert stats.frames_sent + stats.frames_skipped == N
    from itmfilter.render.ladder import LADDER

    assert stats.rung in LADDER and stats.rung in stats.rung_timings
    # rungs are timed cheapest first until one is too slow: a non-empty prefix of that order
    # (which prefix depends on the machine's speed and load, so the test does not fix it)
    cheapest_first = list(reversed(LADDER))
    assert list(stats.rung_timings) == cheapest_first[: len(stats.rung_timings)]
    assert all(t > 0 for t in stats.rung_timings.values())


def test_sdr_plays_with_its_bt709_params(clip):
    stats = play(clip, hdr=False, vo="null", quiet=True)
    assert stats.video_params["primaries"] == "bt.709"
    assert stats.video_params["gamma"] == "bt.1886"
    assert stats.video_params["colormatrix"] == "bt.709"
    assert stats.frames_sent == 0
    assert stats.frames_shown + stats.frames_dropped == N  # played to the end: every frame counted


def test_vo_image_writes_pngs(clip, tmp_path):
    stats = play(clip, hdr=True, vo="image", image_dir=tmp_path, rung="quarter", quiet=True)
    assert stats.frames_sent == N
    assert len(list(tmp_path.glob("*.png"))) >= 1


def test_missing_input_is_an_itm_error(tmp_path):
    with pytest.raises(ItmError, match="no such video file"):
        play(tmp_path / "nope.mp4", hdr=True, vo="null")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ItmError, match="cannot be opened"):
        play(bad, hdr=False, vo="null")


def _long_clip(path: Path, seconds: int) -> Path:
    """``seconds`` of 64x36 flat grey levels at 24 fps, no audio."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=FPS)
    v.width, v.height, v.pix_fmt = 64, 36, "yuv420p"
    for i in range(seconds * FPS):
        frame = av.VideoFrame.from_ndarray(np.full((36, 64, 3), (i * 3) % 256, np.uint8),
                                           format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    out.close()
    return path


def test_seek_key_restarts_the_producer(tmp_path):
    # 6 s at 24 fps, tiny; RIGHT (+5 s) restarts the producer near 5 s, so about a
    # second of frames is never decoded into the pipe.
    path = _long_clip(tmp_path / "long.mp4", 6)

    positions = []

    def press_right(player):
        player.wait_until_playing(timeout=30)
        positions.append(player.time_pos or 0.0)
        player.command("keypress", "RIGHT")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (player.time_pos or 0.0) < positions[0] + 4:
            time.sleep(0.02)
        positions.append(player.time_pos)

    stats = play(path, hdr=True, vo="null", rung="eighth", on_player=press_right, quiet=True)
    assert stats.restarts == 1
    # mpv's position is the source's: the new stream keeps its timestamps (not rebased to 0)
    assert positions[0] + 4.9 <= positions[1] <= positions[0] + 5.5, positions
    assert stats.frames_sent + stats.frames_skipped < 6 * FPS - FPS // 2
    assert stats.video_out_params["gamma"] == "pq"


def test_yuv_frame_round_trip_odd_size():
    pq = np.random.default_rng(0).random((38, 70, 3)).astype(np.float32)
    planes = pq_to_yuv420p10(pq)
    frame = yuv420p10_frame(planes)
    assert (frame.width, frame.height) == (70, 38)
    for got, want in zip(_planes(frame), planes):
        np.testing.assert_array_equal(got, want)


def _both_paths(img, fmt, rung, path):
    """(exact path planes, ``path`` planes) of the RGB picture ``img`` coded as ``fmt``."""
    from itmfilter.render.frame import hdr10_frame

    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    net = _adapted_like_net()
    return (_planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="exact")),
            _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path=path)))


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "yuvj420p"])
@pytest.mark.parametrize("rung", ["full", "quarter"])
def test_torch_frame_path_matches_the_exact_numpy_path(fmt, rung):
    """The CUDA player's path (planes -> R'G'B' -> rung -> planes, all torch), run here on
    the CPU, gives the exact numpy path's codes, up to rare half-code ties."""

    img = np.random.default_rng(3).integers(0, 256, (38, 70, 3), dtype=np.uint8)
    want, got = _both_paths(img, fmt, rung, "torch")
    for g, w in zip(got, want):
        assert g.shape == w.shape
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert want[0].max() > 300  # the net lifted highlights: not a trivially equal picture


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "yuvj420p"])
@pytest.mark.parametrize("rung", ["half", "quarter", "eighth"])
@pytest.mark.parametrize("size", [(38, 70), (37, 69)])
def test_fused_cpu_path_matches_the_exact_path(fmt, rung, size):
    """The CPU player's fused numba pass against the exact numpy/torch path: the same
    picture to within codec noise (codes within 2, mostly equal), odd sizes included."""
    pytest.importorskip("numba")
    from itmfilter.colour.tensor import eotf_st2084 as pq_decode
    from itmfilter.quality.metrics import psnr_pu21

    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx * yy) % 256], -1).astype(np.uint8)
    want, got = _both_paths(img, fmt, rung, "fused")
    for g, wnt in zip(got, want):
        assert g.shape == wnt.shape
    diff = np.abs(got[0].astype(int) - want[0].astype(int))
    assert diff.max() <= 8 and (diff > 1).mean() < 0.05
    # as pictures: decode both to cd/m2 and compare in PU21
    from itmfilter.colour.ycbcr import upsample_chroma, ycbcr_to_rgb

    def nits(planes):
        rgb = ycbcr_to_rgb(upsample_chroma(*[p.astype(np.float64) for p in planes], "420"), "bt2020nc", 10, False)
        return pq_decode(torch.from_numpy(np.clip(rgb, 0, 1))).numpy()

    assert psnr_pu21(nits(want), nits(got)) > 45
    assert want[0].max() > 300


def _default_net_adapted(img: np.ndarray) -> ITMNet:
    """The default config (per-picture polynomial prior) adapted to a global curve of ``img``."""
    from itmfilter.model.adapt import AdaptOptions, adapt

    sdr = img.astype(np.float32) / 255
    target = np.clip(0.1 + 0.6 * sdr**1.3, 0, 1).astype(np.float32)
    return adapt(ITMNet(), sdr, target, AdaptOptions(steps=30, sample_fraction=0.2, batch_size=512)).net.eval()


def _smooth_img(h=96, w=160):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)


def _edged_img(h: int, w: int) -> np.ndarray:
    """:func:`_smooth_img` with sharp edges inside the guided rungs' cells."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = _smooth_img(h, w)
    img[(yy // 7 + xx // 5) % 3 == 0] //= 2
    return img


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
@pytest.mark.parametrize("rung", ["half", "eighth", "sixteenth"])
def test_fused_prior_mode_matches_the_exact_path(fmt, rung):
    """Prior + upsampled residual (the default config's rungs): fused numba pass against
    the torch reference, codes within 2 on a smooth picture."""
    pytest.importorskip("numba")
    from itmfilter.render.frame import hdr10_frame

    img = _smooth_img()
    net = _default_net_adapted(img)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    want = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="exact", gain="prior"))
    got = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="fused", gain="prior"))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 2 and (diff > 1).mean() < 0.01


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "yuvj420p"])
@pytest.mark.parametrize("rung", ["guided-half", "guided-sixth", "guided-eighth"])
@pytest.mark.parametrize("size", [(96, 160), (37, 69)])
def test_fused_guided_rung_matches_the_exact_path(fmt, rung, size):
    """The guided rungs' fused numba pass (sampling, numba fit, per-pixel transform)
    against the torch reference: codes within 1, odd sizes included."""
    pytest.importorskip("numba")
    from itmfilter.render.frame import hdr10_frame

    img = _edged_img(*size)
    net = _default_net_adapted(img)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    want = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="exact"))
    got = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="fused"))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "yuvj420p"])
@pytest.mark.parametrize("size", [(96, 160), (37, 69)])
def test_fused_full_rung_matches_the_exact_path(fmt, size):
    """The full network through the fused CPU pass (per-pixel R'G'B' by numba, the network
    with its coordinate layer split by axis, prior and HDR10 coding by numba) against the
    exact path: codes within 1, odd sizes included; auto takes it on a CPU."""
    pytest.importorskip("numba")
    from itmfilter.render import fastpath
    from itmfilter.render.frame import hdr10_frame

    img = _edged_img(*size)
    net = _default_net_adapted(img)
    for p in net.fusion[-1].parameters():  # a head that varies with position too
        torch.nn.init.normal_(p, std=0.02)
    assert fastpath.supports_full(net)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    want = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32", path="exact"))
    got = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32", path="fused"))
    auto = _planes(hdr10_frame(frame, net, "full", "cpu", "fp32"))
    for g, w, a in zip(got, want, auto):
        assert g.shape == w.shape
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05
        assert np.array_equal(a, g)
    assert want[0].max() - want[0].min() > 100


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
@pytest.mark.parametrize("rung", ["guided-half", "guided-sixth"])
def test_fused_guided_refinement_matches_the_exact_path(fmt, rung, monkeypatch):
    """Refined blocks (the full network where the transforms fit worst) through the fused
    pass against the exact path: codes within 1, with blocks actually refined."""
    pytest.importorskip("numba")
    from itmfilter.render import fastpath
    from itmfilter.render.frame import hdr10_frame

    chosen = []
    real = fastpath.refine_blocks
    monkeypatch.setattr(fastpath, "refine_blocks", lambda *a, **k: chosen.append(real(*a, **k)) or chosen[-1])
    size = (61, 90)
    img = _edged_img(*size)
    net = _default_net_adapted(img)
    for p in net.fusion[-1].parameters():  # a residual the affine transforms cannot follow
        torch.nn.init.normal_(p, std=0.05)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    want = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="exact"))
    got = _planes(hdr10_frame(frame, net, rung, "cpu", "fp32", path="fused"))
    assert chosen and chosen[-1].sum() >= 1
    for g, w in zip(got, want):
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05


def _guided_case(seed: int, h: int = 61, w: int = 90, step: int = 6):
    """Random sample colours and residuals of a guided rung on an ``h x w`` picture."""
    from itmfilter.render import ladder

    rng = np.random.default_rng(seed)
    rgb = rng.random((len(ladder.guided_samples(h, step)), len(ladder.guided_samples(w, step)), 3))
    return rgb, rng.normal(0, 0.05, rgb.shape), h, w, step


def test_guided_numba_fit_matches_the_torch_fit():
    pytest.importorskip("numba")
    from itmfilter.render import fastpath, ladder

    rgb, resid, h, w, step = _guided_case(4)
    want = ladder.guided_fit(torch.from_numpy(rgb), torch.from_numpy(resid), h, w, step).numpy()
    got = fastpath.guided_fit_fast(rgb, resid, h, w, step)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_guided_numba_sample_error_matches_the_torch_one():
    pytest.importorskip("numba")
    from itmfilter.render import fastpath, ladder

    rgb, resid, h, w, step = _guided_case(5)
    coef = ladder.guided_fit(torch.from_numpy(rgb), torch.from_numpy(resid), h, w, step).numpy()
    want = ladder.guided_sample_error(torch.from_numpy(rgb), torch.from_numpy(resid), coef, h, w, step).numpy()
    got = fastpath.guided_sample_error_fast(rgb, resid, coef, h, w, step)
    assert want.max() > 0.05
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_probe_pixels_fast_matches_the_torch_ones():
    pytest.importorskip("numba")
    from itmfilter.render import fastpath, ladder

    rng = np.random.default_rng(6)
    for dtype, hi in ((np.uint8, 256), (np.uint16, 1024)):
        y = rng.integers(0, hi, (61, 90)).astype(dtype)
        y[8:10, 12:14] = hi - 1  # ties: the first in raster order
        for step in (2, 6, 8):
            for share in (1.0, ladder.PROBE_SHARE):
                want = ladder.probe_pixels(y, 61, 90, step, share)
                got = fastpath.probe_pixels_fast(y, step, share)
                assert all(np.array_equal(g, wv) for g, wv in zip(got, want))


def test_gain_mode_choice():
    from itmfilter.render.frame import choose_gain_mode

    img = _smooth_img()
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    # a global curve: the polynomial carries it per pixel, the residual is smooth
    assert choose_gain_mode(_default_net_adapted(img), frame) == "prior"
    assert choose_gain_mode(_adapted_like_net(), frame) == "rgb"  # no polynomial prior


def test_unknown_gain_mode_is_a_clear_error(clip):
    with pytest.raises(ItmError, match="unknown gain mode"):
        play(clip, hdr=True, vo="null", gain="nope", quiet=True)


def test_mpv_options_are_parsed_as_mpv_reads_them():
    from itmfilter.player.mpv import parse_mpv_options

    assert parse_mpv_options(["gpu-sw=yes", "--geometry=50%", "--no-osc", "--fs", "vf=format=gamma=pq",
                              "hwdec_codecs=all"]) == {
        "gpu-sw": "yes", "geometry": "50%", "osc": "no", "fs": "yes", "vf": "format=gamma=pq", "hwdec-codecs": "all"}
    with pytest.raises(ItmError, match="has no name"):
        parse_mpv_options(["=1"])


@pytest.mark.parametrize("options, message", [
    ({"no-such-option": "1"}, "mpv has no option 'no-such-option'"),
    ({"gpu-sw": "maybe"}, "mpv rejected the value 'maybe' of its option 'gpu-sw'"),
])
def test_rejected_mpv_option_is_one_clear_error(clip, options, message):
    import threading

    with pytest.raises(ItmError, match=message):
        play(clip, hdr=False, vo="null", mpv_options=options, quiet=True)
    assert not [t for t in threading.enumerate() if t.name == "MPVEventHandlerThread"]


def test_pass_through_options_win(clip):
    """mpv_options are set last: over itmfilter's own (quiet's msg-level) too."""
    seen = {}

    def look(player):
        seen.update(speed=player.speed, vf=player.vf, msg_level=player["msg-level"])

    play(clip, hdr=True, vo="null", rung="eighth", quiet=True, on_player=look,
         mpv_options={"speed": "2", "msg-level": "all=warn"})
    assert seen["speed"] == 2.0 and seen["msg_level"] == {"all": "warn"}
    # hdr_vf: the PQ ceiling as the signal peak, 10000 / 203 SDR white
    assert seen["vf"][0]["params"]["sig-peak"].startswith("49.26")


@pytest.mark.parametrize("hdr, command", [(True, "quit"), (False, "quit"), (True, "stop")])
def test_quit_or_stop_mid_file_ends_cleanly(tmp_path, hdr, command):
    """``quit`` (what q and closing the window do) or ``stop`` (mpv ends the file and
    closes the pipe before play() knows) in the middle of the file: play() returns, and
    neither a producer, a decoder nor mpv's event thread is left running."""
    import threading

    path = _long_clip(tmp_path / "clip.mp4", 4)  # the real-time producer writes for 4 s
    before = set(threading.enumerate())

    def end_soon(player):
        player.wait_until_playing(timeout=30)
        player.command(command)

    stats = play(path, hdr=hdr, vo="null", rung="eighth", realtime=True, on_player=end_soon, quiet=True)
    assert stats.user_quit == (command == "quit")
    assert stats.video_output == "null"
    if hdr:
        assert stats.frames_sent + stats.frames_skipped < 4 * FPS  # ended mid-file
    assert set(threading.enumerate()) - before == set()


def test_cli_rejects_stray_arguments_and_unknown_mpv_options(clip):
    from typer.testing import CliRunner

    from itmfilter.cli import app

    res = CliRunner().invoke(app, ["play", str(clip), "--vo", "null", "stray"])
    assert res.exit_code == 2 and "put mpv options after --" in res.output
    res = CliRunner().invoke(app, ["play", str(clip), "--vo", "null", "--mpv-opt", "no-such-option=1"])
    assert res.exit_code == 2
    assert [line for line in res.output.splitlines() if line.startswith("itmfilter: error:")] == [
        "itmfilter: error: mpv has no option 'no-such-option' (given as no-such-option=1). "
        "check the name in `mpv --list-options`"]


def test_producer_ends_quietly_when_mpv_closes_the_pipe(clip):
    """mpv closing its end (output failed, file stopped, player gone) before the producer
    was told to stop: PyAV reports the broken pipe from its I/O callback when the NUT
    trailer is written; that is the normal end, not an error."""
    import threading

    from itmfilter.player.producer import Producer, Session
    from itmfilter.track.provider import blind_provider

    session = Session(clip, blind_provider(), torch.device("cpu"), "fp32", "eighth", realtime=False,
                      with_audio=True)
    session.gain = "prior"
    read_fd, write_fd = os.pipe()

    def read_a_little_then_close():  # as mpv does: the stream has started, then it is gone
        got = 0
        while got < 20_000:
            got += len(os.read(read_fd, 4096))
        os.close(read_fd)

    reader = threading.Thread(target=read_a_little_then_close)
    reader.start()
    producer = Producer(session, write_fd, 0.0)
    producer.run()  # in this thread
    reader.join()
    assert producer.error is None and not producer.stop.is_set()
    assert producer.sink is not None and producer.sink.reader_gone

_THREADS_CHECK = """
import numpy as np, torch
torch.set_num_threads(1)
from itmfilter.media.frames import Planes
from itmfilter.model.net import CONFIGS, ITMNet
from itmfilter.render import fastpath
h, w = 64, 96
planes = Planes(np.full((h, w), 100, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
                np.full((h // 2, w // 2), 128, np.uint8), 8, "420", False)
fastpath.hdr10_planes(ITMNet(CONFIGS["default"]), planes, 8)
print(torch.get_num_threads())
"""


def test_network_threads_while_playing():
    from itmfilter.player.mpv import default_threads

    # passive OpenMP waiting: every core torch uses; spinning: one core left to decode and mpv
    assert default_threads(2, 2, {"OMP_WAIT_POLICY": "passive"}) == 2
    assert default_threads(2, 2, {}) == 1
    assert default_threads(8, 8, {"OMP_WAIT_POLICY": "ACTIVE"}) == 7
    assert default_threads(1, 1, {}) == 1


def test_play_command_sets_passive_openmp_waiting_before_torch_loads():
    """`itmfilter play` must set OMP_WAIT_POLICY before anything imports torch (OpenMP
    reads it once, when it loads): the CLI module itself imports neither torch nor numba."""
    code = ("import os, sys, itmfilter.cli as c\n"
            "print('torch' in sys.modules, 'numba' in sys.modules)\n"
            "try:\n    c.app(['play', 'missing.mp4', '--hdr', '--vo', 'null', '-q'], standalone_mode=False)\n"
            "except BaseException:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "False", "PASSIVE"]


def test_fused_path_leaves_torch_threads_as_the_caller_set_them():
    """In a fresh process: numba's first parallel launch is what reset torch's threads."""
    import subprocess
    import sys

    from itmfilter.render import fastpath

    if not fastpath.available():
        pytest.skip("numba not installed")
    run = subprocess.run([sys.executable, "-c", _THREADS_CHECK], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "1"


def test_a_failed_outputs_late_fatal_line_does_not_fail_the_next_attempt():
    """mpv logs a video output's failure as a vo/ error, then cplayer's fatal "video_out"
    line and "No video or audio streams selected". libmpv delivers log messages after the
    end-file queued with them, so the fallback can begin before the fatal lines arrive:
    they belong to the failed attempt and must not end the fallback."""
    from itmfilter.player.mpv import _MpvLog

    log = _MpvLog()
    log("error", "vo/gpu-next", "Failed initializing any suitable GPU context!")
    assert log.vo_reason and not log.vo_failed  # the end-file came here
    log.new_attempt()  # the fallback starts
    log("fatal", "cplayer", "Error opening/initializing the selected video_out (--vo) device.")
    log("fatal", "cplayer", "No video or audio streams selected.")
    assert not log.vo_failed and log.vo_reason is None
    # the fallback's own failure is still seen
    log("error", "vo/gpu-next", "Failed initializing any suitable GPU context!")
    log("fatal", "cplayer", "Error opening/initializing the selected video_out (--vo) device.")
    assert log.vo_failed
    # a failure seen whole before the next attempt leaves nothing stale
    log.new_attempt()
    log("fatal", "cplayer", "Error opening/initializing the selected video_out (--vo) device.")
    assert log.vo_failed
