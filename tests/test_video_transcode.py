"""SDR + weight track -> HEVC Main10 HDR10, checked with ffprobe and against the master."""

import json
import subprocess

import numpy as np
import pytest

from itmfilter.data.testmedia import make_master_from_arrays
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.media.video import read_hdr_frames
from itmfilter.quality.metrics import psnr_pu21
from itmfilter.transcode.video import plan_jobs, summary_table, transcode_many

W, H, N = 96, 64, 8


def _frames():
    """A camera pan (3 px a frame) across a fixed synthetic HDR panorama, as real pans are."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0 : W + 3 * N].astype(np.float32)
    pano = np.stack([np.sin(xx / 17) ** 2, np.cos(yy / 11) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 23)], -1)
    pano = pano * 300 + 2.0 + rng.random(pano.shape).astype(np.float32) * 5
    pano[20:30, 40:70] = 950.0  # a highlight the SDR clips
    for i in range(N):
        yield np.ascontiguousarray(pano[:, 3 * i : 3 * i + W]).astype(np.float32)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("t")
    master = d / "master.mkv"
    make_master_from_arrays(master, _frames(), fps=24, codec="hevc", peak_nits=1000)
    sdr = d / "sdr.mp4"
    encode_video(master, sdr, options=VideoEncodeOptions(first_steps=120, warm_steps=10, preset="ultrafast", crf=12,
                                                         model="mlp"), quiet=True)
    return master, sdr


def test_hdr10_output_tags_pixels_and_quality(encoded, tmp_path):
    from itmfilter.media.video import read_sdr_frames
    from itmfilter.quality import baselines

    master, sdr = encoded
    out = tmp_path / "hdr10.mkv"
    results = transcode_many(plan_jobs([sdr], out, crf=4, preset="ultrafast"), quiet=True)
    assert results[0].status == "done" and results[0].mode == "weights" and results[0].frames == N
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-show_frames", "-read_intervals", "%+#1",
         "-of", "json", str(out)], capture_output=True, text=True, check=True).stdout)
    stream = probe["streams"][0]
    assert stream["codec_name"] == "hevc" and stream["pix_fmt"] == "yuv420p10le"
    assert stream["color_transfer"] == "smpte2084" and stream["color_primaries"] == "bt2020"
    sides = {s["side_data_type"] for s in probe["frames"][0].get("side_data_list", [])}
    assert "Mastering display metadata" in sides and "Content light level metadata" in sides
    ref = [n for _, n in read_hdr_frames(master)]
    got = [n for _, n in read_hdr_frames(out)]
    sdrs = [s for _, s in read_sdr_frames(sdr)]
    mlp = np.mean([psnr_pu21(r, g) for r, g in zip(ref, got)])
    poly = np.mean([psnr_pu21(r, baselines.apply_mmr(baselines.fit_mmr(s, r), s)) for r, s in zip(ref, sdrs)])
    assert mlp > poly, (mlp, poly)


def test_blind_mode_exr_sequence_and_skip(encoded, tmp_path):
    from itmfilter.media.video import SdrWriter

    plain = tmp_path / "plain.mp4"
    with SdrWriter(plain, 48, 32, 24, preset="ultrafast") as w:
        for i in range(3):
            w.write(np.full((32, 32 + 16, 3), 0.2 + 0.2 * i, np.float32))
    res = transcode_many(plan_jobs([plain], tmp_path / "f" / "%03d.exr"), quiet=True)[0]
    assert res.status == "done" and res.mode == "blind" and res.frames == 3
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["000.exr", "001.exr", "002.exr"]
    # A folder of outputs: the finished one is skipped, a broken input fails alone.
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    outdir = tmp_path / "out"
    first = transcode_many(plan_jobs([plain], outdir), quiet=True)
    again = transcode_many(plan_jobs([plain, broken], outdir), quiet=True)
    assert first[0].status == "done"
    assert [r.status for r in again] == ["skipped", "failed"]
    assert "broken.mp4" in again[1].error
    assert "1 failed" in summary_table(again)
    assert not list(outdir.glob("*broken*"))
