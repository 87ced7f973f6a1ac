"""Video IO: exact colour round trips, HDR10 tags and side data, per-frame data, atomic writes.

Every test encodes its own tiny clip (64x48 / 128x72, a few frames) through PyAV.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
from itmfilter.colour.ycbcr import rgb_to_ycbcr, subsample_chroma, upsample_chroma, ycbcr_to_rgb
from itmfilter.errors import ItmError
from itmfilter.media.containers import read_attachments, read_data_track
from itmfilter.media.video import (
    Hdr10Writer,
    SdrWriter,
    probe_video,
    read_hdr_frames,
    read_sdr_frames,
)

H, W = 48, 64
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed")


def smooth_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """Random but smooth R'G'B' frames in [0, 1] (gradients plus a moving blob)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(n):
        a = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        base = a * (0.5 + 0.5 * np.sin((xx[..., None] / w + yy[..., None] / h) * np.pi + i * 0.3))
        blob = np.exp(-(((xx - (8 + 3 * i) % w) ** 2 + (yy - h / 2) ** 2) / 40.0))[..., None]
        frames.append(np.clip(base + 0.4 * blob, 0.0, 1.0).astype(np.float32))
    return frames


def through_420(rgb: np.ndarray, matrix: str, bits: int) -> np.ndarray:
    """What an exact, lossless 4:2:0 Y'CbCr path returns for ``rgb``."""
    y, cb, cr = subsample_chroma(rgb_to_ycbcr(rgb, matrix, bits), "420")
    return np.clip(ycbcr_to_rgb(upsample_chroma(y.astype(np.float32), cb, cr, "420"), matrix, bits), 0.0, 1.0)


def ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_frames", "-read_intervals", "%+#2",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def hdr10_clip(tmp_path_factory):
    """A lossless HDR10 HEVC clip and the PQ frames that went in."""
    path = tmp_path_factory.mktemp("hdr") / "master.mp4"
    frames = smooth_frames(5)
    meta = HDR10Metadata.p3_d65(1000.0, 0.005, max_cll=987.0, max_fall=321.0)
    with Hdr10Writer(path, W, H, 24, preset="ultrafast", metadata=meta, x265_params="lossless=1") as writer:
        for frame in frames:
            writer.write(frame)
    return path, frames, meta


def test_hdr10_exact_colour_round_trip(hdr10_clip):
    path, frames, _ = hdr10_clip
    got = list(read_hdr_frames(path))
    assert [i for i, _ in got] == list(range(len(frames)))
    for (i, nits), pq_in in zip(got, frames):
        assert nits.dtype == np.float32 and nits.shape == (H, W, 3)
        pq_out = eotf_inverse_st2084(nits.astype(np.float64))
        # lossless HEVC: only the exact 10-bit 4:2:0 quantisation remains
        assert np.abs(pq_out - through_420(pq_in, "bt2020nc", 10)).max() * 1023 < 0.05
        assert np.abs(pq_out - pq_in).max() * 1023 < 60  # chroma subsampling of a sharp blob
        assert np.median(np.abs(pq_out - pq_in)) * 1023 <= 1.0


def test_hdr10_probe_and_ffprobe_side_data(hdr10_clip):
    path, frames, meta = hdr10_clip
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frame_count, info.frame_count_exact) == (W, H, Fraction(24), 5, True)
    assert (info.codec, info.pix_fmt, info.bit_depth, info.chroma_subsampling) == ("hevc", "yuv420p10le", 10, "420")
    assert (info.color_primaries, info.color_trc, info.color_matrix, info.color_range) == (
        "bt2020", "smpte2084", "bt2020nc", "tv")
    assert info.is_hdr and info.transfer == "pq" and not info.has_audio
    assert info.hdr10 is not None
    assert info.hdr10.max_cll == 987 and info.hdr10.max_fall == 321
    assert info.hdr10.max_luminance == pytest.approx(1000) and info.hdr10.min_luminance == pytest.approx(0.005)
    np.testing.assert_allclose(info.hdr10.primaries, meta.primaries, atol=2e-5)
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    probe = ffprobe(path)
    stream = probe["streams"][0]
    assert (stream["color_transfer"], stream["color_primaries"], stream["color_space"]) == (
        "smpte2084", "bt2020", "bt2020nc")
    kinds = {side["side_data_type"] for side in probe["frames"][0].get("side_data_list", [])}
    assert {"Mastering display metadata", "Content light level metadata"} <= kinds


def test_sdr_exact_round_trip_8_and_10_bit(tmp_path):
    frames = smooth_frames(3, seed=1)
    for codec, bits in (("libx264", 8), ("libx264", 10), ("libx265", 8)):
        path = tmp_path / f"sdr{codec}{bits}.mp4"
        lossless = {"qp": 0} if codec == "libx264" else None
        with SdrWriter(path, W, H, 25, codec=codec, bits=bits, preset="ultrafast", crf=0,
                       codec_options=lossless) as writer:
            for f in frames:
                writer.write(f)
        info = probe_video(path)
        assert (info.color_primaries, info.color_trc, info.color_matrix, info.color_range) == (
            "bt709", "bt709", "bt709", "tv")
        assert info.bit_depth == bits and not info.is_hdr and info.pix_fmt.startswith("yuv420p")
        for (i, sdr), f in zip(read_sdr_frames(path), frames):
            assert sdr.dtype == np.float32 and 0.0 <= sdr.min() and sdr.max() <= 1.0
            err = np.abs(sdr - through_420(f, "bt709", bits)) * (2**bits - 1)
            if codec == "libx264":  # x264 qp 0 is lossless: only float rounding remains
                assert err.max() < 0.01
            else:  # x265 crf 0 is merely near-lossless
                assert np.median(err) <= 2.0


def test_data_track_with_b_frames_survives_remux(tmp_path):
    frames = smooth_frames(20, seed=2)
    payloads = {i: bytes([i]) * (1000 + 37 * i) for i in range(len(frames))}
    path = tmp_path / "carrier.mp4"
    with SdrWriter(path, W, H, 24, preset="medium", data_track=True) as writer:  # x264 medium: 3 B-frames
        for i, f in enumerate(frames):
            writer.write(f, payloads[i])
    assert read_data_track(path) == payloads
    assert [i for i, _ in read_sdr_frames(path)] == list(range(len(frames)))
    assert probe_video(path).has_data
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    for suffix in (".mov", ".nut"):
        remuxed = tmp_path / f"remuxed{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0", "-c", "copy", str(remuxed)], check=True)
        assert read_data_track(remuxed) == payloads, suffix
        assert [i for i, _ in read_sdr_frames(remuxed)] == list(range(len(frames)))


def test_data_track_in_mov_and_nut_written_directly(tmp_path):
    frames = smooth_frames(6, seed=3)
    for suffix in (".mov", ".nut"):
        path = tmp_path / f"direct{suffix}"
        with SdrWriter(path, W, H, 30, preset="ultrafast", data_track=True) as writer:
            for i, f in enumerate(frames):
                writer.write(f, None if i == 2 else f"frame {i}".encode())
        assert read_data_track(path) == {i: f"frame {i}".encode() for i in range(6) if i != 2}


def test_mkv_attachments_round_trip(tmp_path):
    path = tmp_path / "weights.mkv"
    with SdrWriter(path, W, H, 24, preset="ultrafast") as writer:
        writer.add_attachment("early.bin", "application/octet-stream", b"\x00\x01early")
        for f in smooth_frames(3):
            writer.write(f)
        writer.add_attachment("late.bin", "application/octet-stream", bytes(range(256)) * 40)
    assert read_attachments(path) == {"early.bin": b"\x00\x01early", "late.bin": bytes(range(256)) * 40}
    assert probe_video(path).attachments == ["early.bin", "late.bin"]
    with pytest.raises(ItmError, match="data track"):
        SdrWriter(tmp_path / "no.mkv", W, H, 24, data_track=True)
    with pytest.raises(ItmError, match="no data track"):
        read_data_track(path)


@needs_ffmpeg
def test_copy_from_keeps_audio_and_subtitles(tmp_path):
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,500\nhello\n")
    source = tmp_path / "source.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=24:duration=0.5",
                    "-f", "lavfi", "-i", "sine=duration=0.5", "-i", str(srt), "-map", "0", "-map", "1", "-map", "2",
                    "-c:v", "libx264", "-c:a", "aac", "-c:s", "mov_text", str(source)], check=True)
    out = tmp_path / "out.mp4"
    with SdrWriter(out, W, H, 24, preset="ultrafast", copy_from=source) as writer:
        for f in smooth_frames(12):
            writer.write(f)
    info = probe_video(out)
    assert info.has_audio and info.has_subtitles and info.frame_count == 12
    with pytest.raises(ItmError, match="same file as an input"):
        SdrWriter(source, W, H, 24, copy_from=source)


def test_sdr_input_to_hdr_reader_names_assume_hdr(tmp_path, hdr10_clip):
    path = tmp_path / "sdr.mp4"
    with SdrWriter(path, W, H, 24, preset="ultrafast") as writer:
        writer.write(smooth_frames(1)[0])
    with pytest.raises(ItmError, match="--assume-hdr") as err:
        read_hdr_frames(path)
    assert "transfer=bt709" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ItmError, match="is HDR"):
        read_sdr_frames(hdr10_clip[0])


def _untagged_pq(tmp_path):
    """A 10-bit HEVC clip with no colour tags at all (what some tools leave)."""
    import av

    path = tmp_path / "untagged.mkv"
    frame_pq = smooth_frames(1, seed=5)[0]
    y, cb, cr = subsample_chroma(rgb_to_ycbcr(frame_pq, "bt2020nc", 10), "420")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p10le"
        stream.options = {"x265-params": "log-level=error:lossless=1", "preset": "ultrafast"}
        frame = av.VideoFrame(W, H, "yuv420p10le")
        for plane, values in zip(frame.planes, (y, cb, cr)):
            np.frombuffer(plane, np.uint16).reshape(plane.height, -1)[:, : plane.width] = values
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path, frame_pq


def test_assume_hdr_reads_untagged_as_pq(tmp_path):
    path, frame_pq = _untagged_pq(tmp_path)
    with pytest.raises(ItmError, match="transfer=unknown"):
        read_hdr_frames(path)
    (index, nits), = list(read_hdr_frames(path, assume_hdr=True))
    assert index == 0
    assert np.abs(eotf_inverse_st2084(nits.astype(np.float64)) - through_420(frame_pq, "bt2020nc", 10)).max() * 1023 < 0.05


def test_prores_hdr_round_trip(tmp_path):
    path = tmp_path / "master.mov"
    frames = smooth_frames(3, seed=4)
    with Hdr10Writer(path, W, H, 24, codec="prores_ks") as writer:
        for f in frames:
            writer.write_nits(eotf_st2084(f))
    info = probe_video(path)
    assert (info.codec, info.pix_fmt, info.chroma_subsampling, info.color_trc, info.color_primaries) == (
        "prores", "yuv422p10le", "422", "smpte2084", "bt2020")
    for (i, nits), f in zip(read_hdr_frames(path), frames):
        err = np.abs(eotf_inverse_st2084(nits.astype(np.float64)) - f) * 1023
        assert np.median(err) < 1.5 and err.max() < 40


def test_truncated_and_garbage_files_raise(tmp_path, hdr10_clip):
    path = hdr10_clip[0]
    data = path.read_bytes()
    for cut in (len(data) // 2, 200):
        broken = tmp_path / f"cut{cut}.mp4"
        broken.write_bytes(data[:cut])
        with pytest.raises(ItmError) as err:
            list(read_hdr_frames(broken))
        assert str(broken) in str(err.value)
    garbage = tmp_path / "notes.mp4"
    garbage.write_text("not a video")
    with pytest.raises(ItmError, match="cannot be opened"):
        probe_video(garbage)
    with pytest.raises(ItmError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_interrupted_writer_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with SdrWriter(path, W, H, 24, preset="ultrafast", data_track=True) as writer:
            writer.write(smooth_frames(1)[0], b"payload")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ItmError, match="shape"):
        with Hdr10Writer(tmp_path / "hdr.mp4", W, H, 24, preset="ultrafast") as writer:
            writer.write(np.zeros((H, W + 2, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ItmError, match="even"):
        SdrWriter(tmp_path / "odd.mp4", 63, 48, 24)
    assert list(tmp_path.iterdir()) == []


def test_exr_sequence(tmp_path):
    from itmfilter.media.stills import write_exr

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [np.full((8, 10, 3), 100.0 * (i + 1), np.float32) for i in range(3)]
    for i, f in enumerate(frames):
        write_exr(folder / f"{i + 7:06d}.exr", f)
    for source in (folder, folder / "%06d.exr"):
        got = list(read_hdr_frames(source))
        assert [i for i, _ in got] == [0, 1, 2]
        for (_, nits), f in zip(got, frames):
            np.testing.assert_allclose(nits, f, rtol=1e-3)
    with pytest.raises(ItmError, match="matches no files"):
        read_hdr_frames(folder / "%04d.exr")


MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"

_NARROW_HEVC = """
import sys, numpy as np
from itmfilter.media.video import Hdr10Writer, SdrWriter, read_hdr_frames
out = sys.argv[1]
for width in (16, 48):
    with Hdr10Writer(f"{out}/hdr{width}.mkv", width, 32, 24, preset="ultrafast") as w:
        for i in range(3):
            w.write(np.full((32, width, 3), 0.3 + 0.1 * i, np.float32))
    with SdrWriter(f"{out}/sdr{width}.mkv", width, 32, 24, codec="libx265", preset="ultrafast") as w:
        for i in range(3):
            w.write(np.full((32, width, 3), 0.3 + 0.1 * i, np.float32))
    assert len(list(read_hdr_frames(f"{out}/hdr{width}.mkv"))) == 3
print("clean")
"""


@pytest.mark.skipif(not Path(MALLOC_DEBUG).exists(), reason="glibc's malloc checker is not installed")
def test_narrow_hevc_does_not_corrupt_the_heap(tmp_path):
    """libx265 frees an invalid pointer on frames narrower than 56 pixels unless cutree is
    off (this once killed a CI run with SIGABRT). glibc's malloc checker makes that fatal
    every time, so the writers' workaround is checked here, in a child process."""
    import os
    import sys

    env = {**os.environ, "LD_PRELOAD": MALLOC_DEBUG, "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}
    run = subprocess.run([sys.executable, "-c", _NARROW_HEVC, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "clean" in run.stdout, (run.returncode, run.stderr[-2000:])


def test_sdr_encode_is_reproducible(tmp_path):
    """The same frames make the same H.264 bitstream every time (libx264's AVX-512 path
    did not: the writers hold it to AVX2 on such CPUs)."""
    import av

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    frames = []
    for i in range(14):
        base = ((xx + 3 * i) / 96) ** 1.5
        frame = np.stack([base, base * (1 - yy / 64), 1 - base], -1) + 0.05 * rng.random((64, 96, 3), dtype=np.float32)
        frames.append(np.clip(frame, 0, 1).astype(np.float32))
    digests = set()
    for k in range(8):
        with SdrWriter(tmp_path / f"s{k}.mp4", 96, 64, 24) as writer:
            for frame in frames:
                writer.write(frame)
        with av.open(str(tmp_path / f"s{k}.mp4")) as container:
            digests.add(b"".join(bytes(p) for p in container.demux(video=0)))
    assert len(digests) == 1
