"""The frame-filter API (itmfilter.open_weights) on real encoded clips: the README example
run verbatim, frames indexed by pts, planes against the pipe transcode, blind files, and
the import staying light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import itmfilter
from itmfilter.errors import ItmError
from itmfilter.render.frame import pq_to_yuv420p10

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Frame-filter API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width].copy()
            for p in frame.planes]


def _decoded(path) -> list:
    with av.open(str(path)) as src:
        return list(src.decode(video=0))


def test_readme_example_runs_verbatim_and_writes_hdr10(weighted_clip, tmp_path, monkeypatch):
    code = _readme_example()
    assert len(code.strip().splitlines()) < 15
    (tmp_path / "sdr.mp4").symlink_to(weighted_clip)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-show_frames",
         "-read_intervals", "%+#1", "-of", "json", "hdr10.mkv"], capture_output=True, text=True, check=True).stdout)
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("hevc", "yuv420p10le")
    assert (stream["color_transfer"], stream["color_primaries"], stream["color_space"]) == ("smpte2084", "bt2020", "bt2020nc")
    sides = {s["side_data_type"] for s in probe["frames"][0].get("side_data_list", [])}
    assert {"Mastering display metadata", "Content light level metadata"} <= sides
    # what x265 coded is the filter's output (up to its lossy coding, ~5 codes here), frame for frame
    weights = itmfilter.open_weights(weighted_clip, device="cpu")
    sdr, hdr = _decoded(weighted_clip), _decoded(tmp_path / "hdr10.mkv")
    assert len(hdr) == 12
    want = [weights.planes(f)[0].astype(np.float64) for f in sdr]
    for i in (2, 5, 8):
        errors = [np.abs(w - _planes(hdr[i])[0]).mean() for w in want]
        assert int(np.argmin(errors)) == i and errors[i] < 8.0, errors


def test_frames_are_indexed_by_pts_not_by_call_order(weighted_clip):
    weights = itmfilter.open_weights(weighted_clip, device="cpu", precision="fp32")
    assert (weights.mode, weights.carriage, weights.fps, weights.frame_count) == ("weights", "data track", 24, 12)
    assert weights.hdr10 is not None and weights.hdr10.max_cll > 0
    frames = _decoded(weighted_clip)
    assert [weights.index(f) for f in frames] == list(range(12))
    forward = [_planes(weights.filter(f)) for f in frames]
    backward = [_planes(weights.filter(f)) for f in reversed(frames)][::-1]
    for a, b in zip(forward, backward):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # the per-frame networks differ: frame 11 filtered as frame 0 gives other codes
    as_first = _planes(weights.filter(frames[11], index=0))
    assert not np.array_equal(as_first[0], forward[11][0])
    out = weights.filter(frames[7])
    assert (out.format.name, out.width, out.height) == ("yuv420p10le", 96, 64)
    assert (out.color_primaries, out.color_trc, out.colorspace, out.color_range) == (9, 16, 9, 1)
    assert (out.pts, out.time_base) == (frames[7].pts, frames[7].time_base)
    assert weights.last_status == "ok" and weights.damaged_frames == 0


def test_planes_tensors_and_pq_agree(weighted_clip):
    weights = itmfilter.open_weights(str(weighted_clip), device="cpu", precision="fp32")
    frame = _decoded(weighted_clip)[4]
    planes = weights.planes(frame)
    tensors = weights.planes(frame, tensors=True)
    assert [t.dtype for t in tensors] == [torch.int16] * 3
    assert all(np.array_equal(p, t.numpy().view(np.uint16)) for p, t in zip(planes, tensors))
    pq = weights.pq(frame)
    assert pq.shape == (64, 96, 3) and pq.dtype == np.float32 and 0.0 <= pq.min() and pq.max() <= 1.0
    # the fused per-frame path against the exact conversion of the network's output: within a code
    for a, b in zip(planes, pq_to_yuv420p10(pq)):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    assert torch.equal(weights.pq(frame, tensors=True).cpu(), torch.from_numpy(pq))
    cheap = weights.planes(frame, rung="eighth")
    assert np.abs(cheap[0].astype(float) - planes[0]).mean() < 8


def test_open_from_a_container_blind_files_and_bad_input(weighted_clip, plain_clip, tmp_path):
    with av.open(str(weighted_clip)) as container:
        assert itmfilter.open_weights(container, device="cpu").mode == "weights"
    blind = itmfilter.open_weights(plain_clip, device="cpu")
    assert (blind.mode, blind.carriage, blind.hdr10) == ("blind", None, None)
    frame = _decoded(plain_clip)[2]
    assert _planes(blind.filter(frame))[0].max() > 64 and blind.last_status == "blind"
    assert "master-display" not in blind.x265_params() and "transfer=smpte2084" in blind.x265_params()
    frame.pts = None
    with pytest.raises(ItmError, match="without a pts"):
        blind.filter(frame)
    assert blind.filter(frame, index=2).format.name == "yuv420p10le"
    with pytest.raises(ItmError, match="no such file"):
        itmfilter.open_weights(tmp_path / "missing.mp4")
    with pytest.raises(ItmError, match="unknown rung"):
        itmfilter.open_weights(plain_clip, rung="tenth")
    with pytest.raises(ItmError, match="unknown gain mode"):
        itmfilter.open_weights(plain_clip, gain="sideways")
    with pytest.raises(ItmError, match="needs a video file path"):
        itmfilter.open_weights(b"bytes")


def test_import_stays_light_until_the_api_is_used():
    code = ("import sys, itmfilter; light = 'torch' not in sys.modules and 'av' not in sys.modules; "
            "itmfilter.open_weights; print(light, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
