"""Video encode end to end on a tiny real master made by the test (real PyAV encodes)."""

import subprocess

import numpy as np
import pytest

from itmfilter.data.testmedia import make_master_from_arrays
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.errors import ItmError
from itmfilter.media.video import probe_video
from itmfilter.track.carriage import load_track
from itmfilter.track.codec import TrackDecoder
from itmfilter.track.format import decode_packet

W, H, N = 96, 64, 14


def _frames():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for i in range(N):
        scene = 1 if i >= 8 else 0  # a cut at frame 8
        base = (xx + 2 * i) / W if scene == 0 else 1 - yy / H
        nits = np.stack([base, base**2, 1 - base], -1) * (400 if scene == 0 else 120) + 1.0
        nits[10:20, 10 + i : 20 + i] = 900.0  # a moving highlight
        yield nits.astype(np.float32)


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "master.mkv"
    make_master_from_arrays(path, _frames(), fps=24, codec="hevc", peak_nits=1000)
    return path


FAST = VideoEncodeOptions(first_steps=40, warm_steps=5, preset="ultrafast", key_seconds=0.25, model="mlp")


@pytest.mark.parametrize("ext,sidecar,carriage", [
    (".mp4", "auto", "SEI"), (".mkv", "auto", "SEI"), (".mov", "auto", "SEI"), (".ts", "auto", "SEI"),
    (".mp4", "track", "data track"), (".mkv", "attachment", "attachment"), (".mov", "track", "data track"),
])
def test_encode_carries_a_track_per_frame(master, tmp_path, ext, sidecar, carriage):
    out = tmp_path / f"sdr{ext}"
    report = encode_video(master, out, options=VideoEncodeOptions(**{**FAST.__dict__, "sidecar": sidecar}), quiet=True)
    assert report.carriage == {"SEI": "sei", "data track": "track"}.get(carriage, carriage)
    assert report.frames == N and report.shots == 2
    info = probe_video(out)
    assert info.color_primaries == "bt709" and not info.is_hdr
    track = load_track(out)
    assert track.where == carriage
    assert sorted(track.packets) == list(range(N))
    assert all(decode_packet(track.packets[i]).frame == i for i in range(N))  # keyed by presentation time
    kinds = [decode_packet(track.packets[i]).kind for i in range(N)]
    assert kinds[0] == "key" and kinds[8] == "key"  # shot starts are keys
    dec = TrackDecoder(track.header)
    assert all(dec.params_at(i, track.packets)[1] == "ok" for i in range(N))
    assert track.header.hdr10 is not None and track.header.hdr10["max_cll"] > 800
    assert not list(tmp_path.glob(".*itm-work"))  # work folder removed


def test_json_sidecar_and_mismatch_refused(master, tmp_path):
    out = tmp_path / "sdr.mp4"
    encode_video(master, out, options=VideoEncodeOptions(**{**FAST.__dict__, "sidecar": "json"}), quiet=True)
    track = load_track(out)
    assert track.where.startswith("JSON sidecar")
    # The same sidecar beside a different video is refused.
    other = tmp_path / "other.mp4"
    encode_video(master, other, options=VideoEncodeOptions(**{**FAST.__dict__, "sidecar": "json", "crf": 30}), quiet=True)
    (tmp_path / "other.mp4.itm.json").write_bytes((tmp_path / "sdr.mp4.itm.json").read_bytes())
    with pytest.raises(ItmError, match="another video"):
        load_track(other)


def test_remux_keeps_the_track(master, tmp_path):
    out = tmp_path / "sdr.mp4"
    encode_video(master, out, options=FAST, quiet=True)
    mov = tmp_path / "copy.mov"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-map", "0", "-c", "copy", str(mov)], check=True)
    a, b = load_track(out), load_track(mov)
    assert a.packets == b.packets


def test_sdr_master_refused(tmp_path):
    from itmfilter.media.video import SdrWriter

    sdr = tmp_path / "sdr.mp4"
    with SdrWriter(sdr, 32, 32, 24, preset="ultrafast") as w:
        for _ in range(3):
            w.write(np.full((32, 32, 3), 0.5, np.float32))
    with pytest.raises(ItmError, match="assume-hdr"):
        encode_video(sdr, tmp_path / "out.mp4", options=FAST, quiet=True)
    assert not (tmp_path / "out.mp4").exists()


def test_interrupted_encode_resumes_without_redoing_finished_segments(master, tmp_path, monkeypatch):
    out = tmp_path / "sdr.mp4"
    calls = {"n": 0}
    from itmfilter.encode import segments as encode_module

    original = encode_module.adapt

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:  # inside the third segment (frames 0-5, 6-7, then the shot at 8-13)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(encode_module, "adapt", interrupting)
    opts = VideoEncodeOptions(**{**FAST.__dict__, "strategy": "frame"})
    with pytest.raises(KeyboardInterrupt):
        encode_video(master, out, options=opts, quiet=True)
    assert not out.exists()  # nothing under the final name
    work = tmp_path / ".sdr.mp4.itm-work"
    assert sorted(p.name for p in work.glob("segment-*.bin")) == ["segment-00000.bin", "segment-00001.bin"]
    calls["n"] = -1000  # no more interruptions; count the second run's adaptations
    encode_video(master, out, options=opts, quiet=True)
    assert calls["n"] == -1000 + (N - 8)  # only the unfinished segment's frames were adapted
    track = load_track(out)
    assert sorted(track.packets) == list(range(N))
    dec = TrackDecoder(track.header)
    assert all(dec.params_at(i, track.packets)[1] == "ok" for i in range(N))


def test_exr_sequence_master(tmp_path):
    from itmfilter.media.stills import write_exr

    frames = list(_frames())[:4]
    (tmp_path / "seq").mkdir()
    for i, nits in enumerate(frames):
        write_exr(tmp_path / "seq" / f"{i:04d}.exr", nits)
    out = tmp_path / "sdr.mkv"
    report = encode_video(tmp_path / "seq" / "%04d.exr", out, options=FAST, quiet=True)
    assert report.frames == 4
    assert probe_video(out).fps == 24
    assert sorted(load_track(out).packets) == [0, 1, 2, 3]


def test_b_frames_keep_weights_on_their_presentation_time(master, tmp_path):
    import av

    out = tmp_path / "sdr.mp4"
    encode_video(master, out, options=VideoEncodeOptions(**{**FAST.__dict__, "preset": "medium"}), quiet=True)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        pts = [p.pts for p in c.demux(v) if p.pts is not None]
    assert pts != sorted(pts)  # the SDR stream really has B-frames (decode order != presentation order)
    track = load_track(out)
    assert all(decode_packet(track.packets[i]).frame == i for i in range(N))


def test_rate_cap_holds_and_lowers_the_bitrate(master, tmp_path):
    free = dict(FAST.__dict__, key_seconds=10.0, refresh_ratio=1.0, max_kbps=None)
    report_free = encode_video(master, tmp_path / "free.mp4", options=VideoEncodeOptions(**free), quiet=True)
    kbps = 300.0  # 1.56 kB a frame: a key (~3 kB) leaves room for a few deltas per shot
    out = tmp_path / "capped.mp4"
    report = encode_video(master, out, options=VideoEncodeOptions(**dict(free, max_kbps=kbps)), quiet=True)
    track = load_track(out)
    raws = [track.packets[i] for i in sorted(track.packets)]
    kinds = [decode_packet(r).kind for r in raws]
    from itmfilter.track.codec import carries_update

    updates = [carries_update(decode_packet(r)) for r in raws]
    assert report.metadata_bytes < report_free.metadata_bytes
    # it spent (deltas with codes), and it held (repeats, or the pan's shift alone)
    assert sum(u and k == "delta" for u, k in zip(updates, kinds)) >= 1 and not all(updates)
    # the whole track within the cap, and every window within the buffer model
    from itmfilter.encode.rate import check_rate
    from itmfilter.track.carriage import carried_bytes

    sizes = carried_bytes(out, track)
    assert sum(sizes) == report.metadata_bytes
    assert sum(sizes) <= kbps * 1000 / 8 / 24 * len(sizes)
    assert check_rate(sizes, kbps, 24) == []
    assert all(len(r) >= 6 for r in raws)  # the compact form (1.3): 6 bytes at least
    dec = TrackDecoder(track.header)
    assert all(dec.params_at(i, track.packets)[1] == "ok" for i in range(N))


def test_rate_budget_spreads_a_segment_evenly():
    from itmfilter.encode.rate import PACKET_OVERHEAD_BYTES, RateBudget

    b = RateBudget(48.0, 24.0, shot_starts={0, 30}, key_interval=96, frame_count=200)  # 250 B/frame
    assert b.segment_frames(0) == 30 and b.segment_frames(30) == 96 and b.segment_frames(150) == 50
    b.key_sent(0, 2000)
    spare = 250 * 30 - 2000 - PACKET_OVERHEAD_BYTES * 29
    b.next_frame()
    assert abs(b.tokens - spare / 29) < 1e-9
    b.record(1, PACKET_OVERHEAD_BYTES)
    for f in range(2, 30):
        b.next_frame()
        if f < 29:
            b.record(f, PACKET_OVERHEAD_BYTES)
    assert b.tokens >= spare - 1  # every token saved is still there...
    # ...but the segment's last frame may spend only what lets the bucket drain to the level
    # the next segment (the shot at 30) is planned to start at: one frame's allowance, less its head
    assert b.affordable() == int(b.per_frame - PACKET_OVERHEAD_BYTES)
    b.key_sent(30, 10**6)  # a key larger than its segment's budget: no deltas in it
    b.next_frame()
    assert b.affordable() == 0 and not b.can_afford(1)
    free = RateBudget(None, 24.0, set(), 96, 0)
    assert free.affordable() is None and free.can_afford(10**9)


def test_negative_rate_cap_is_refused():
    with pytest.raises(ItmError, match="max-kbps"):
        VideoEncodeOptions(max_kbps=-5)


def test_motion_compensation_follows_a_real_pan(tmp_path):
    """A pan across the packaged real HDR picture: warm frames carry the camera's shift
    (DELTA coding 2) equal to the pan's speed, and decoding them gives every frame a set."""
    import struct

    from itmfilter.data import sample_path
    from itmfilter.data.testmedia import pan_view
    from itmfilter.media.stills import read_hdr
    from itmfilter.track.codec import HALF_MOTION_DELTA_CODING, MOTION_DELTA_CODING

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    size, window = (192, 108), h * 0.5
    speed = 1.5  # panorama pixels per frame
    px_per_frame = speed * size[1] / window  # output pixels per frame
    frames = [pan_view(pano, size, (w * 0.4 + speed * i, h * 0.5), window) for i in range(10)]
    master = tmp_path / "pan.mkv"
    make_master_from_arrays(master, iter(frames), fps=24, codec="hevc", peak_nits=1000)
    opts = dict(FAST.__dict__, key_seconds=4.0, max_kbps=None)
    out = tmp_path / "sdr.mp4"
    report = encode_video(master, out, options=VideoEncodeOptions(**opts), quiet=True)
    assert report.shots == 1
    track = load_track(out)
    packets = [decode_packet(track.packets[i]) for i in range(10)]
    assert packets[0].kind == "key"
    # the shift travels as two binary16 (DELTA coding 3, format 1.3)
    shifts = [struct.unpack_from("<ee", p.payload) for p in packets[1:] if p.coding == HALF_MOTION_DELTA_CODING]
    assert len(shifts) == 9  # every warm frame follows the pan
    for dx, dy in shifts:
        assert abs(dx * size[0] / 2 - px_per_frame) < 0.25 and abs(dy * size[1] / 2) < 0.25, (dx, dy)
    dec = TrackDecoder(track.header)
    assert all(dec.params_at(i, track.packets)[1] == "ok" for i in range(10))
    # --no-motion: no motion packet (coding 2 or 3)
    out2 = tmp_path / "sdr-nomotion.mp4"
    encode_video(master, out2, options=VideoEncodeOptions(**dict(opts, motion=False)), quiet=True)
    track2 = load_track(out2)
    assert not any(decode_packet(r).coding in (MOTION_DELTA_CODING, HALF_MOTION_DELTA_CODING)
                   and decode_packet(r).kind == "delta" for r in track2.packets.values())


@pytest.fixture
def one_thread():
    """One torch thread: two spinning OpenMP threads made these tiny steps ~10x slower on
    the shared 2-core machine under load."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("strategy", ["warm", "frame"])
def test_batched_adaptation_codes_the_same_track(master, tmp_path, monkeypatch, strategy, one_thread):
    """--adapt-batch: the keys of several segments (warm) or several frames (frame) adapted
    at once as a batch of networks give the track of one at a time (adapt_batch's results
    are the same bits as adapt's on this CPU; a machine whose batched products round
    otherwise could differ in a quantised value)."""
    from itmfilter.encode import segments as encode_module
    from itmfilter.track.sei import read_sei

    sizes = []
    original = encode_module.adapt_batch

    def spy(init, sdrs, targets, options, **kwargs):
        sizes.append(len(sdrs))
        return original(init, sdrs, targets, options, **kwargs)

    monkeypatch.setattr(encode_module, "adapt_batch", spy)
    opts = {**FAST.__dict__, "strategy": strategy}
    one = encode_video(master, tmp_path / "one.mp4", options=VideoEncodeOptions(**opts), quiet=True)
    assert sizes == []
    many = encode_video(master, tmp_path / "many.mp4", options=VideoEncodeOptions(**{**opts, "adapt_batch": 4}),
                        quiet=True)
    # warm: the 3 segments' keys at once (frames 0-5, 6-7, 8-13); frame: 4 frames at a time per segment
    assert sizes == ([3] if strategy == "warm" else [4, 2, 2, 4, 2])
    assert one.packets == many.packets
    assert read_sei(tmp_path / "one.mp4") == read_sei(tmp_path / "many.mp4")
    with pytest.raises(ItmError, match="adapt-batch"):
        VideoEncodeOptions(adapt_batch=0)
