"""SEI carriage (itmfilter.track.sei): the byte-level pieces, then real encodes through
real tools (libx264 / libx265 via PyAV with B-frames, the ffmpeg CLI for remuxing, HLS,
cutting and concatenation). No mocks."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from itmfilter.errors import ItmError
from itmfilter.track import sei

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg CLI not on PATH")

W, H, FPS, N, GOP = 64, 64, 24, 48, 12
BIG_FRAME = 5  # carries a > 64 KB payload
EMPTY_FRAME = 7  # carries no payload
EP_PATTERNS = b"\x00\x00\x00\x00\x00\x01\x00\x00\x02\x00\x00\x03\x00\x00\x03\x03\x00\x00"


def payload(i: int) -> bytes | None:
    """Frame i's packet: its index, every pattern that needs emulation prevention, and
    random bytes (70 KB on BIG_FRAME, ~40 KB on frame 0, a few hundred elsewhere)."""
    if i == EMPTY_FRAME:
        return None
    rng = random.Random(i)
    size = 70_000 if i == BIG_FRAME else 40_000 if i == 0 else 20 + 37 * i
    body = bytearray(rng.randbytes(size))
    for pos in range(0, size, 997):  # sprinkle start-code look-alikes through the body
        body[pos:pos + len(EP_PATTERNS)] = EP_PATTERNS
    return i.to_bytes(4, "big") + EP_PATTERNS + bytes(body) + b"\x00\x00"  # ends in zeros too


def expected(first: int = 0, last: int = N) -> dict[int, bytes]:
    return {i - first: payload(i) for i in range(first, last) if payload(i) is not None}


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-y", "-v", "error", *args], check=True, timeout=60)


def encode(path: Path, codec: str) -> Path:
    """A 2 s 64x64 clip with B-frames, a keyframe every 0.5 s, scene cuts off."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "x264-params":
                         f"bframes=2:keyint={GOP}:min-keyint={GOP}:scenecut=0:threads=1"}
        else:  # x265's default open GOP: CRA keyframes with RASL pictures
            s.options = {"preset": "ultrafast", "x265-params":
                         f"bframes=2:keyint={GOP}:min-keyint={GOP}:scenecut=0:"
                         "log-level=error:frame-threads=1:pools=none"}
        yy, xx = np.mgrid[0:H, 0:W]
        for i in range(N):
            rgb = np.stack([(xx * 4 + i * 5) % 256, (yy * 4 + i * 3) % 256,
                            ((xx + yy + i * 2) * 3) % 256], -1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray() for f in c.decode(video=0)]


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return sorted(float(p.pts * p.time_base) for p in c.demux(video=0) if p.size and p.is_keyframe)


def indexes_in(found: dict[int, bytes]) -> list[int]:
    """The frame number each payload carries, in presentation order of the file read."""
    return [int.from_bytes(found[k][:4], "big") for k in sorted(found)]


def assert_payloads_intact(found: dict[int, bytes]) -> None:
    for k, data in found.items():
        assert data == payload(int.from_bytes(data[:4], "big")), f"frame {k}: payload altered"


# --------------------------------------------------------------------------- bytes


def test_emulation_prevention_round_trip_and_no_start_code_emulation():
    rng = random.Random(1)
    cases = [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00", b"\x00\x00\x03", b"\x00" * 9,
             b"\x00\x00\x01\x00\x00\x02\x00\x00\x03\x00\x00\x04", EP_PATTERNS]
    cases += [bytes(rng.choice([0, 0, 0, 1, 2, 3, 4, 255]) for _ in range(rng.randrange(60)))
              for _ in range(300)]
    for rbsp in cases:
        ebsp = sei.add_emulation_prevention(rbsp)
        assert sei.remove_emulation_prevention(ebsp) == rbsp
        for bad in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
            assert bad not in ebsp
        assert not ebsp.endswith(b"\x00\x00")  # H.264 7.4.1: a final 00 00 gets its 03 too
    assert sei.add_emulation_prevention(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00\x03"
    assert sei.add_emulation_prevention(b"\x00\x00\x04") == b"\x00\x00\x04"
    assert sei.remove_emulation_prevention(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


def test_sei_nal_bytes_by_hand():
    uuid = bytes(range(16))
    nal = sei.build_sei_nal(b"ab", uuid, "h264")
    assert nal == b"\x06" + b"\x05" + bytes([18]) + uuid + b"ab" + b"\x80"
    nal = sei.build_sei_nal(b"ab", uuid, "hevc", temporal_id=2)
    assert nal[:2] == bytes([39 << 1, 3]) and nal[2:] == b"\x05" + bytes([18]) + uuid + b"ab\x80"
    # payloadSize coding: 0xFF bytes worth 255 each, then the rest
    for size, head in [(254 - 16, b"\xfe"), (255 - 16, b"\xff\x00"), (256 - 16, b"\xff\x01"),
                       (510 - 16, b"\xff\xff\x00"), (70_000, b"\xff" * (70_016 // 255) + bytes([70_016 % 255]))]:
        body = b"\x11" * size
        nal = sei.build_sei_nal(body, uuid, "h264")
        assert nal[2:2 + len(head)] == head
        assert sei.parse_sei_nal(nal, "h264") == [(5, uuid + body)]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_sei_nal_round_trip(codec):
    for i in [0, 1, 2, 3, BIG_FRAME, 9]:
        nal = sei.build_sei_nal(payload(i), sei.ITMFILTER_SEI_UUID, codec)
        assert sei.nal_unit_type(nal, codec) == (6 if codec == "h264" else 39)
        assert b"\x00\x00\x01" not in nal and b"\x00\x00\x00" not in nal
        assert sei.user_data_from_nal(nal, codec) == [payload(i)]
        assert sei.user_data_from_nal(nal, codec, bytes(16)) == []
    two = sei.build_sei_nal_from_messages([(5, bytes(16) + b"x"), (5, sei.ITMFILTER_SEI_UUID + b"y")], codec)
    assert sei.user_data_from_nal(two, codec) == [b"y"]
    stripped = sei.strip_user_data([two], codec)
    assert sei.parse_sei_nal(stripped[0], codec) == [(5, bytes(16) + b"x")]
    with pytest.raises(sei.SeiError):
        sei.parse_sei_nal(two[:-4], codec)


def test_split_and_join_both_framings():
    nals = [b"\x09\xf0", b"\x06\x05\x00\x80", b"\x65" + bytes(range(4, 256)) * 2]
    annexb = b"\x00\x00\x00\x01" + nals[0] + b"\x00\x00\x01" + nals[1] + b"\x00\x00\x00\x00\x01" + nals[2]
    assert sei.split_annexb(annexb) == nals
    assert sei.split_annexb(sei.join_nal_units(nals, sei.ANNEXB)) == nals
    for size in (1, 2, 4):
        short = nals[:2] if size == 1 else nals
        fmt = sei.NalFormat(False, size)
        assert sei.split_length_prefixed(sei.join_nal_units(short, fmt), size) == short
    with pytest.raises(sei.SeiError):
        sei.split_length_prefixed(b"\x00\x00\x01\x00\x65", 4)
    assert sei.detect_nal_format(b"", "h264", annexb).annexb
    assert sei.detect_nal_format(None, "h264", sei.join_nal_units(nals, sei.NalFormat(False, 4))) \
        == sei.NalFormat(False, 4)
    assert sei.nal_format_from_extradata(b"\x01\x4d\x40\x0a\xfd\xe1\x00", "h264") == sei.NalFormat(False, 2)
    assert sei.nal_format_from_extradata(b"\x00\x00\x00\x01\x67", "h264") == sei.ANNEXB


def test_insert_goes_before_first_vcl():
    s = b"\x06\x05\x01\x80"
    h264 = [b"\x09\xf0", b"\x67\x4d", b"\x68\xee", b"\x06\x05\x00\x80", b"\x65\x88", b"\x65\x99"]
    assert sei.insert_sei(h264, s, "h264") == h264[:4] + [s] + h264[4:]
    hevc = [b"\x46\x01", b"\x40\x01", b"\x42\x01", b"\x44\x01", b"\x4e\x01", b"\x28\x01", b"\x28\x01"]
    assert sei.insert_sei(hevc, s, "hevc") == hevc[:5] + [s] + hevc[5:]


# --------------------------------------------------------------------------- real files


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def clip(request, tmp_path_factory):
    """(source clip, the clip with SEI, remux report) per encoder."""
    folder = tmp_path_factory.mktemp(request.param)
    src = encode(folder / "src.mp4", request.param)
    dst = folder / "sei.mp4"
    report = sei.remux_with_sei(src, dst, payload)
    return src, dst, report


def test_remux_carries_every_payload_in_presentation_order(clip):
    src, dst, report = clip
    with av.open(str(src)) as c:  # the clip really has B-frames: decode order != display order
        tb = c.streams.video[0].time_base
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts)
    rank = {p: i for i, p in enumerate(sorted(pts))}  # constant rate: timestamp arithmetic agrees
    assert all(sei.fps_index(p, min(pts), tb, FPS) == rank[p] for p in pts)
    assert report.frames == N and report.frames_with_payload == N - 1
    assert report.payload_bytes == sum(len(payload(i)) for i in range(N) if i != EMPTY_FRAME)
    assert report.overhead_bytes > 0
    assert sei.read_sei(dst) == expected()
    assert sei.read_sei(src) == {}
    assert not [n for n in os.listdir(dst.parent) if ".partial-" in n]


def test_decoded_side_data_gives_the_same_bytes(clip):
    _, dst, _ = clip
    assert sei.read_sei_decoded(dst) == expected()


def test_pixels_unchanged(clip):
    src, dst, _ = clip
    before, after = decoded_planes(src), decoded_planes(dst)
    assert len(before) == len(after) == N
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_remux_again_replaces_rather_than_stacks(clip, tmp_path):
    _, dst, _ = clip
    again = tmp_path / "again.mkv"
    report = sei.remux_with_sei(dst, again, lambda i: b"new%d" % i)
    assert report.added_bytes < 0  # the big payloads were removed
    assert sei.read_sei(again) == {i: b"new%d" % i for i in range(N)}
    with pytest.raises(ItmError):
        sei.remux_with_sei(dst, dst, payload)


@needs_ffmpeg
@pytest.mark.parametrize("ext", ["mkv", "ts", "mov"])
def test_survives_ffmpeg_copy_and_back(clip, tmp_path, ext):
    _, dst, _ = clip
    other, back = tmp_path / f"x.{ext}", tmp_path / "back.mp4"
    ffmpeg("-i", str(dst), "-map", "0", "-c", "copy", str(other))
    ffmpeg("-i", str(other), "-map", "0", "-c", "copy", str(back))
    for path in (other, back):
        assert sei.read_sei(path) == expected(), path.name
    if ext == "ts":  # Annex B in the transport stream; the decoder agrees
        with av.open(str(other)) as c:
            v = c.streams.video[0]
            first = next(bytes(p) for p in c.demux(v) if p.size)
        assert sei.detect_nal_format(bytes(v.codec_context.extradata or b""), v.codec_context.name, first).annexb
        assert sei.read_sei_decoded(other) == expected()


@needs_ffmpeg
def test_remux_of_annexb_input(clip, tmp_path):
    """remux_with_sei on an MPEG-TS source (Annex B packets) writes a TS the reader reads."""
    src, _, _ = clip
    ts, out = tmp_path / "src.ts", tmp_path / "sei.ts"
    ffmpeg("-i", str(src), "-map", "0", "-c", "copy", str(ts))
    report = sei.remux_with_sei(ts, out, payload)
    assert report.nal_format.annexb
    assert sei.read_sei(out) == expected()
    assert sei.read_sei_decoded(out) == expected()


@needs_ffmpeg
def test_survives_hls_segmenting(clip, tmp_path):
    _, dst, _ = clip
    playlist = tmp_path / "out.m3u8"
    ffmpeg("-i", str(dst), "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
           str(playlist))
    assert len(list(tmp_path.glob("*.ts"))) >= 2
    assert sei.read_sei(playlist) == expected()
    assert sei.read_sei_decoded(playlist) == expected()
    # and a transcode of the playlist (the decoder path a player takes) still decodes
    assert len(decoded_planes(playlist)) == N


@needs_ffmpeg
def test_cut_at_keyframe_and_concat(clip, tmp_path):
    _, dst, _ = clip
    keys = keyframe_times(dst)
    assert len(keys) == N // GOP
    t = keys[2]
    start = round(t * FPS)
    head, tail = tmp_path / "head.mp4", tmp_path / "tail.mp4"
    ffmpeg("-ss", repr(t), "-i", str(dst), "-c", "copy", str(tail))
    found = sei.read_sei(tail)
    assert found == expected(start), indexes_in(found)
    assert sei.read_sei_decoded(tail) == found

    # the head: ffmpeg's segment muxer splits at that keyframe (`-t` with -c copy and
    # B-frames overshoots by a few packets); then the concat demuxer joins head and tail
    ffmpeg("-i", str(dst), "-map", "0", "-c", "copy", "-f", "segment", "-segment_times", repr(t),
           "-reset_timestamps", "1", str(tmp_path / "part%d.mp4"))
    head = tmp_path / "part0.mp4"
    in_head = sei.read_sei(head)  # HEVC: the CRA's RASL pictures travel with the tail
    assert_payloads_intact(in_head)
    assert indexes_in(in_head) == indexes_in(expected())[:len(in_head)]
    assert start - 3 <= indexes_in(in_head)[-1] < start
    listing = tmp_path / "list.txt"
    listing.write_text(f"file '{head}'\nfile '{tail}'\n")
    joined = tmp_path / "joined.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    found = sei.read_sei(joined)
    assert found == expected(), indexes_in(found)
    assert sei.read_sei_decoded(joined) == found
