"""The GPU path of transcode, checked on a CPU: the per-frame path it takes on CUDA (the
fused kernel in Triton's interpreter, and the exact path) against the reference path the CPU
keeps, the CPU output unchanged, HDR10 static metadata inserted as SEI for encoders without
an option for it (hevc_nvenc), read back by ffprobe, and the NVENC / NVDEC fallbacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.errors import ItmError
from itmfilter.media.frames import code_planes
from itmfilter.media.video import (
    Hdr10Writer,
    SdrWriter,
    read_sdr_frames,
    read_sdr_video_frames,
    resolve_hevc_encoder,
)
from itmfilter.model.inference import predict_pq
from itmfilter.render.frame import pq_to_yuv420p10
from itmfilter.track.provider import FrameNetworks
from itmfilter.track.sei import HEVC, add_hdr10_sei, hdr10_sei_messages, hdr10_sei_nal, split_annexb
from itmfilter.transcode.video import TranscodeJob, filtered_planes, transcode_one

needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")

W, H, N = 64, 48, 5


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An SDR clip without weights (blind mode: the shipped initialisation, a real network)."""
    path = tmp_path_factory.mktemp("gpu") / "sdr.mp4"
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    with SdrWriter(path, W, H, 24, preset="ultrafast") as writer:
        for i in range(N):
            writer.write(np.stack([(xx + 3 * i) / W, yy / H, 0.5 + 0.4 * np.sin((xx + yy + i) / 9)], -1).clip(0, 1))
    return path


def _decoded_planes(path) -> list[list[np.ndarray]]:
    with av.open(str(path)) as c:
        return [[p.copy() for p in (code_planes(f).y, code_planes(f).cb, code_planes(f).cr)]
                for f in c.decode(video=0)]


def _ffprobe_side_data(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-read_intervals",
                          "%+#1", "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    sides = json.loads(out)["frames"][0].get("side_data_list", [])
    return {s["side_data_type"]: s for s in sides if s["side_data_type"] in HDR10_SIDE_DATA}


HDR10_SIDE_DATA = ("Mastering display metadata", "Content light level metadata")


def test_cpu_transcode_keeps_the_reference_path(clip, tmp_path):
    """On a CPU, ``auto`` is the reference path: the output's pixels are those of
    predict_pq + the writer's conversion, as before the per-frame path existed."""
    out = tmp_path / "auto.mkv"
    result = transcode_one(TranscodeJob(str(clip), str(out), device="cpu", preset="ultrafast"))
    assert result.status == "done", result.error
    assert not any("nvenc" in n for n in result.notes)  # no GPU asked for: nothing to say about NVENC
    nets = FrameNetworks(clip)
    ref = tmp_path / "ref.mkv"
    with Hdr10Writer(ref, W, H, 24, crf=16, preset="ultrafast") as writer:
        for index, sdr in read_sdr_frames(clip):
            writer.write(predict_pq(nets(index), sdr, device="cpu", precision="auto").clamp(0, 1).numpy())
    got, want = _decoded_planes(out), _decoded_planes(ref)
    assert len(got) == len(want) == N
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["exact", "triton"])
def test_per_frame_path_matches_the_reference_codes(clip, path, monkeypatch):
    """The path transcode takes on CUDA (triton: the fused kernel, run here by Triton's
    interpreter) gives the reference path's 10-bit codes within 1."""
    if path == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    nets, notes = FrameNetworks(clip), []
    got = list(filtered_planes(clip, nets, torch.device("cpu"), "fp32", path, "none", notes))
    assert [i for i, _ in got] == list(range(N)) and notes == []
    for (index, planes), (_, sdr) in zip(got, read_sdr_frames(clip)):
        ref = pq_to_yuv420p10(predict_pq(nets(index), sdr, precision="fp32").clamp(0, 1).numpy())
        for a, b in zip(planes, ref):
            assert a.shape == b.shape
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1


def test_transcode_through_the_per_frame_path_writes_planes(clip, tmp_path):
    out = tmp_path / "planes.mkv"
    result = transcode_one(TranscodeJob(str(clip), str(out), device="cpu", preset="ultrafast", path="exact"))
    assert result.status == "done" and result.frames == N, result.error
    decoded = _decoded_planes(out)
    assert len(decoded) == N and decoded[0][0].shape == (H, W) and decoded[0][1].shape == (H // 2, W // 2)


META = HDR10Metadata.p3_d65(1000.0, 0.005, max_cll=1234.0, max_fall=321.0)


def _write_hdr10(path, **kwargs) -> None:
    ramp = np.linspace(0.1, 0.7, W, dtype=np.float32)
    with Hdr10Writer(path, W, H, 24, preset="ultrafast", metadata=META, **kwargs) as writer:
        for i in range(4):
            writer.write(np.broadcast_to((ramp + 0.02 * i)[None, :, None], (H, W, 3)).copy())


@needs_ffprobe
@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_inserted_hdr10_sei_reads_back_as_libx265s_own(tmp_path, suffix):
    """The SEI inserted for hevc_nvenc (here into libx265's packets with its own HDR10 SEI
    off) is read by ffprobe as the same mastering display and light levels libx265 writes."""
    from itmfilter.track.sei import hdr10_sei_filter

    own, inserted, bare = (tmp_path / f"{n}{suffix}" for n in ("own", "inserted", "bare"))
    _write_hdr10(own)
    _write_hdr10(inserted, encoder_sei=False, packet_filter=hdr10_sei_filter(META))
    _write_hdr10(bare, encoder_sei=False)
    assert _ffprobe_side_data(bare) == {}  # so the check below can fail
    a, b = _ffprobe_side_data(own), _ffprobe_side_data(inserted)
    assert set(a) == set(HDR10_SIDE_DATA)
    assert a == b
    cll = b["Content light level metadata"]
    assert (cll["max_content"], cll["max_average"]) == (1234, 321)
    md = b["Mastering display metadata"]
    assert md["red_x"] == "34000/50000" and md["max_luminance"] == "10000000/10000"
    assert md["min_luminance"] == "50/10000"


def test_hdr10_sei_goes_into_irap_packets_once():
    mdcv, cll = hdr10_sei_messages(META)
    assert len(mdcv[1]) == 24 and len(cll[1]) == 4
    assert cll[1] == (1234).to_bytes(2, "big") + (321).to_bytes(2, "big")
    sei = hdr10_sei_nal(META)
    from itmfilter.track.sei import ANNEXB, join_nal_units, nal_unit_type

    idr = join_nal_units([bytes([32 << 1, 1, 0xAA]), bytes([19 << 1, 1, 0x80, 0x11])], ANNEXB)  # VPS, IDR slice
    trail = join_nal_units([bytes([1 << 1, 1, 0x80, 0x22])], ANNEXB)  # a TRAIL_R slice
    once = add_hdr10_sei(idr, sei, ANNEXB)
    assert [nal_unit_type(n, HEVC) for n in split_annexb(once)] == [32, 39, 19]
    assert add_hdr10_sei(once, sei, ANNEXB) == once  # never twice
    assert add_hdr10_sei(trail, sei, ANNEXB) == trail


def test_auto_encoder_falls_back_to_libx265_here(clip, tmp_path):
    codec, note = resolve_hevc_encoder("auto")
    if codec == "hevc_nvenc":
        pytest.skip("NVENC opens on this machine")
    assert codec == "libx265" and "hevc_nvenc" in note and "libx265" in note and "\n" not in note
    assert resolve_hevc_encoder("libx265") == ("libx265", None)
    with pytest.raises(ItmError, match="hevc_nvenc"):
        resolve_hevc_encoder("hevc_nvenc")
    with pytest.raises(ItmError, match="video-codec"):
        resolve_hevc_encoder("h265")
    asked = transcode_one(TranscodeJob(str(clip), str(tmp_path / "nv.mkv"), device="cpu", video_codec="hevc_nvenc"))
    assert asked.status == "failed" and asked.bad_input and "hevc_nvenc" in asked.error
    assert not (tmp_path / "nv.mkv").exists()


def test_nvdec_falls_back_to_the_cpu_decoder(clip, tmp_path):
    frames, note = read_sdr_video_frames(clip, hwaccel="cuda")
    hw = [(i, [p.copy() for p in (code_planes(f).y, code_planes(f).cb, code_planes(f).cr)]) for i, f in frames]
    if note is None:
        pytest.skip("NVDEC opens on this machine")
    assert "NVDEC" in note and "ms" in note and "\n" not in note
    sw, none_note = read_sdr_video_frames(clip)
    assert none_note is None
    for (i, a), (j, f) in zip(hw, sw):
        assert i == j
        np.testing.assert_array_equal(a[0], code_planes(f).y)
    assert len(hw) == N
    result = transcode_one(TranscodeJob(str(clip), str(tmp_path / "hw.mkv"), device="cpu", path="exact",
                                        hwaccel="cuda", preset="ultrafast"))
    assert result.status == "done" and any("NVDEC" in n for n in result.notes), (result.error, result.notes)
    with pytest.raises(ItmError, match="hwaccel"):
        read_sdr_video_frames(clip, hwaccel="vaapi")


def test_command_line_video_codec_and_hwaccel(clip, tmp_path):
    """``transcode --video-codec`` / ``--hwaccel`` reach the job: NVENC asked for by name is a
    one-line error (exit 2) here; NVDEC asked for falls back with its note; a CPU transcode
    with ``auto`` says nothing about NVENC."""
    from typer.testing import CliRunner

    from itmfilter.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["transcode", str(clip), "-o", str(tmp_path / "nv.mkv"), "--device", "cpu",
                              "--video-codec", "hevc_nvenc", "--quiet"])
    if resolve_hevc_encoder("auto")[0] == "libx265":
        assert res.exit_code == 2 and "hevc_nvenc" in res.output, res.output
    res = runner.invoke(app, ["transcode", str(clip), "-o", str(tmp_path / "hw.mkv"), "--device", "cpu",
                              "--hwaccel", "cuda", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "nvenc" not in res.output
    res = runner.invoke(app, ["transcode", str(clip), "-o", str(tmp_path / "x.mkv"), "--hwaccel", "vaapi", "--quiet"])
    assert res.exit_code == 2 and "hwaccel" in res.output, res.output


def test_the_gpu_benchmark_runs_every_step_on_a_cpu(tmp_path):
    """``benchmarks/gpu.py --dry-run``: every step of the GPU benchmark at tiny sizes on the CPU
    (Triton's interpreter), so the one command a lent GPU runs does not first fail there. The
    encode rows pass the short fit to the grid track as well: a dry run that took the encoder's
    default grid steps ran for over ten minutes."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.md"
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu.py"), "--dry-run",
                          "--encode-fits-on-device", "--work", str(tmp_path / "work"), "--out", str(out)],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    assert set(results["results"]) == {"64x36", "48x34"}
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| warm", "| frame"))]
    assert len(rows) == 4 and not any("Error" in r for r in rows), rows
    assert "grid fits on the device" in text
