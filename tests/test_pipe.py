"""``itmfilter transcode IN -o -`` into real ``ffmpeg -i -`` pipes, and ``itmfilter info``
on videos: through the real command line in subprocesses, on clips encoded here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

import itmfilter

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "itmfilter.cli"]


def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width].copy()
            for p in frame.planes]


def _decoded(path) -> list:
    with av.open(str(path)) as src:
        return list(src.decode(video=0))


def _probe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def _api_planes(clip, frames):
    weights = itmfilter.open_weights(clip, device="cpu", precision="fp32")
    return [weights.planes(f) for f in frames]


def test_pipe_into_ffmpeg_carries_hdr10_tags_and_exact_codes(weighted_clip, tmp_path):
    hevc, lossless = tmp_path / "hdr10.mkv", tmp_path / "lossless.mkv"
    producer = subprocess.Popen(CLI + ["transcode", str(weighted_clip), "-o", "-", "--device", "cpu", "--precision", "fp32"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ffmpeg = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", "-c:v", "libx265", "-x265-params", "log-level=error",
                             str(hevc), "-c", "copy", str(lossless)], stdin=producer.stdout, capture_output=True, text=True)
    producer.stdout.close()
    err = producer.stderr.read().decode()
    assert producer.wait() == 0 and ffmpeg.returncode == 0, (err, ffmpeg.stderr)
    assert "streamed 12 frames (weights, rung full" in err and "frame" in err  # bar and summary: stderr
    assert "x265-params master-display=" in err  # the HDR10 metadata, for the downstream encoder
    for path in (hevc, lossless):
        stream = _probe(path)
        assert stream["pix_fmt"] == "yuv420p10le"
        assert (stream["color_transfer"], stream["color_primaries"], stream["color_space"], stream["color_range"]) == \
            ("smpte2084", "bt2020", "bt2020nc", "tv")
    got = [_planes(f) for f in _decoded(lossless)]
    want = _api_planes(weighted_clip, _decoded(weighted_clip))
    assert len(got) == 12
    assert all(np.array_equal(a, b) for g, w in zip(got, want) for a, b in zip(g, w))


def test_nut_from_a_start_position(weighted_clip, tmp_path):
    out = subprocess.run(CLI + ["transcode", str(weighted_clip), "-o", "-", "--format", "nut", "--start", "0.25",
                                "--device", "cpu", "--precision", "fp32", "--quiet"],
                         cwd=ROOT, capture_output=True, check=True)
    assert out.stderr == b""
    (tmp_path / "s.nut").write_bytes(out.stdout)
    frames = _decoded(tmp_path / "s.nut")
    assert len(frames) == 6 and frames[0].format.name == "yuv420p10le"
    assert abs(float(frames[0].pts * frames[0].time_base) - 0.25) < 1e-6  # the source's clock
    want = _api_planes(weighted_clip, _decoded(weighted_clip)[6:])
    assert all(np.array_equal(a, b) for f, w in zip(frames, want) for a, b in zip(_planes(f), w))
    assert "color_transfer" not in _probe(tmp_path / "s.nut")  # NUT has no field for it: the reader tags


def test_pipe_refusals(weighted_clip, plain_clip, tmp_path):
    two = subprocess.run(CLI + ["transcode", str(weighted_clip), str(plain_clip), "-o", "-"], cwd=ROOT, capture_output=True)
    assert two.returncode == 2 and two.stdout == b"" and b"a pipe output takes one video" in two.stderr
    rung = subprocess.run(CLI + ["transcode", str(weighted_clip), "-o", str(tmp_path / "x.mkv"), "--rung", "half"],
                          cwd=ROOT, capture_output=True)
    assert rung.returncode == 2 and b"apply to a pipe output only" in rung.stderr
    assert not (tmp_path / "x.mkv").exists()
    missing = subprocess.run(CLI + ["transcode", str(tmp_path / "nope.mp4"), "-o", "-"], cwd=ROOT, capture_output=True)
    assert missing.returncode == 2 and missing.stdout == b"" and b"nope.mp4" in missing.stderr


def test_info_on_videos(weighted_clip, plain_clip, tmp_path):
    res = subprocess.run(CLI + ["info", str(weighted_clip), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["carriage"] == "data track" and doc["video"]["frames"] == 12
    assert doc["header"]["model_config"]["prior"] == "mmr3" and doc["header"]["parameters"] > 1000
    assert doc["header"]["hdr10"]["max_cll"] > 0
    packets = doc["packets"]
    assert packets["count"] == 12 and sum(packets["by_kind"].values()) == 12 and packets["by_kind"]["key"] >= 1
    assert packets["damaged"] == 0 and packets["missing"] == 0
    assert abs(packets["kbit_per_s"] - packets["bytes"] * 8 / 0.5 / 1000) < 0.01  # 12 frames at 24 fps
    text = subprocess.run(CLI + ["info", str(weighted_clip)], cwd=ROOT, capture_output=True, text=True).stdout
    assert "weights: data track" in text and "kbit/s" in text and "damaged packets: 0" in text
    blind = subprocess.run(CLI + ["info", str(plain_clip), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert blind.returncode == 1 and json.loads(blind.stdout)["carriage"] is None
    # one packet's bytes damaged inside the MP4 (not frame 0's, which carries the header)
    from itmfilter.media.containers import read_data_track

    data = bytearray(weighted_clip.read_bytes())
    samples = read_data_track(weighted_clip)
    assert sorted(samples) == list(range(12))
    at = data.find(samples[5])  # frame 5's sample, found by its bytes in the file
    assert at > 0 and data.find(samples[5], at + 1) < 0
    data[at + len(samples[5]) // 2] ^= 0xFF  # inside the packet: its check fails
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    doc = json.loads(subprocess.run(CLI + ["info", str(damaged), "--json"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout)
    assert doc["packets"]["damaged"] == 1 and doc["packets"]["damaged_frames"] == [5]
    missing = subprocess.run(CLI + ["info", str(tmp_path / "none.mp4")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "none.mp4" in missing.stderr
