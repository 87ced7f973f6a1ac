"""Test-media maker: panning shots with cuts, encoded as real HDR10 HEVC / ProRes masters."""

from __future__ import annotations

import os

import numpy as np
import pytest

from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.data.testmedia import camera_frames, make_master, make_master_from_arrays, pan_view, subject_shots
from itmfilter.errors import ItmError
from itmfilter.media.video import probe_video, read_hdr_frames

SIZE = (128, 72)


def synthetic_panorama(seed: int, shape=(64, 128)) -> np.ndarray:
    """A smooth 2:1 'panorama' in cd/m2 with a bright sun above the peak."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = rng.uniform(20, 200, 3).astype(np.float32)
    pano = colour * (1.2 + np.sin(2 * np.pi * xx / w + seed)[..., None]) * (0.5 + yy / h)[..., None]
    sun = 4000.0 * np.exp(-(((xx - w * 0.3) ** 2 + (yy - h * 0.45) ** 2) / 6.0))
    return (pano + sun[..., None]).astype(np.float32)


def test_pan_view_is_exact_at_integer_scale_and_wraps():
    pano = np.random.default_rng(0).uniform(0, 100, (16, 32, 3)).astype(np.float32)
    # window height 8 px over 8 output rows: one panorama pixel per output pixel, centred on pixel centres
    view = pan_view(pano, (8, 8), (16.0, 8.0), 8.0)
    np.testing.assert_allclose(view, pano[4:12, 12:20], rtol=1e-6)
    wrapped = pan_view(pano, (8, 8), (32.0, 8.0), 8.0)  # straddles the 360 degree seam
    np.testing.assert_allclose(wrapped, np.concatenate([pano[4:12, 28:], pano[4:12, :4]], axis=1), rtol=1e-6)
    half = pan_view(pano, (8, 8), (16.5, 8.0), 8.0)  # half-pixel pan: mean of neighbours
    np.testing.assert_allclose(half, (pano[4:12, 12:20] + pano[4:12, 13:21]) / 2, rtol=1e-5)


def test_camera_frames_pan_smoothly_and_cut():
    panos = [synthetic_panorama(1), synthetic_panorama(2)]
    frames = list(camera_frames(panos, 12, 24, SIZE, shot_seconds=0.25, seed=3, peak_nits=1000))
    assert len(frames) == 12 and all(f.shape == (72, 128, 3) and f.dtype == np.float32 for f in frames)
    assert max(f.max() for f in frames) <= 1000.0
    steps = [np.abs(np.log1p(b) - np.log1p(a)).mean() for a, b in zip(frames, frames[1:])]
    cut = int(np.argmax(steps))
    assert cut == 5  # frames 0-5 film scene 1, 6-11 scene 2
    assert steps[cut] > 4 * max(s for i, s in enumerate(steps) if i != cut)
    again = list(camera_frames(panos, 12, 24, SIZE, shot_seconds=0.25, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_subject_moves_on_its_own_over_the_same_camera():
    """A subject changes the frames only where its sprite lies, its own highlights included,
    and that place moves across the frame: the camera's frames are those filmed without it."""
    panos = [synthetic_panorama(1), synthetic_panorama(2)]
    plain = list(camera_frames(panos, 12, 24, SIZE, shot_seconds=0.25, seed=3, peak_nits=1000))
    shot = list(camera_frames(panos, 12, 24, SIZE, shot_seconds=0.25, seed=3, peak_nits=1000, subject=True))
    subject = subject_shots(panos, 2, SIZE, seed=3)[0]
    sh, sw = subject["sprite"].shape[:2]
    assert (sw, sh) == (51, 22)  # 0.4 x 0.3 of 128x72
    where = []
    for a, b in zip(plain, shot):
        changed = np.abs(a - b).max(axis=2) > 1e-3
        ys, xs = np.nonzero(changed)
        assert xs.size and xs.max() - xs.min() < sw and ys.max() - ys.min() < sh
        where.append(xs.mean())
    assert max(f.max() for f in shot) <= 1000.0
    assert subject["sprite"].max() > 2000  # cut around the other scene's sun: highlights of its own
    moved = np.abs(np.diff(where[:6]))
    assert moved.min() > 0.5  # it crosses the frame at 0.25-0.5 widths a second: 1.3-2.7 px a frame
    again = list(camera_frames(panos, 12, 24, SIZE, shot_seconds=0.25, seed=3, peak_nits=1000, subject=True))
    assert all(np.array_equal(a, b) for a, b in zip(shot, again))


def test_tiny_hevc_master_from_synthetic_scenes(tmp_path):
    path = make_master(tmp_path / "master.mp4", seconds=0.5, fps=24, size=SIZE, shot_seconds=0.25,
                       scenes=[synthetic_panorama(1), synthetic_panorama(2)], quiet=True, preset="ultrafast")
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count, info.codec, info.pix_fmt) == (128, 72, 12, "hevc", "yuv420p10le")
    assert (info.color_trc, info.color_primaries, info.color_matrix, info.bit_depth) == (
        "smpte2084", "bt2020", "bt2020nc", 10)
    assert info.hdr10 is not None and info.hdr10.max_luminance == pytest.approx(1000)
    frames = list(camera_frames([synthetic_panorama(1), synthetic_panorama(2)], 12, 24, SIZE, 0.25, 0, 1000))
    assert info.hdr10.max_cll == round(max(f.max() for f in frames))
    assert info.hdr10.max_fall == round(max(f.max(axis=-1).mean() for f in frames))
    decoded = list(read_hdr_frames(path))
    assert [i for i, _ in decoded] == list(range(12))
    err = [np.abs(eotf_inverse_st2084(n) - eotf_inverse_st2084(f)).mean() * 1023 for (_, n), f in zip(decoded, frames)]
    assert max(err) < 4  # lossy crf 12 HEVC, mean error in 10-bit PQ codes


def test_prores_master_from_arrays_decodes_exactly_enough(tmp_path):
    frames = list(camera_frames([synthetic_panorama(4)], 4, 24, SIZE, seed=1))
    path = make_master_from_arrays(tmp_path / "master.mov", iter(frames), 24, codec="prores")
    info = probe_video(path)
    assert (info.codec, info.pix_fmt, info.chroma_subsampling, info.color_trc, info.color_primaries) == (
        "prores", "yuv422p10le", "422", "smpte2084", "bt2020")
    for (i, nits), f in zip(read_hdr_frames(path), frames):
        err = np.abs(eotf_inverse_st2084(nits) - eotf_inverse_st2084(f)) * 1023
        assert np.median(err) < 1.0 and err.mean() < 2.0


def test_master_arguments_are_checked(tmp_path):
    with pytest.raises(ItmError, match="cannot be written as .mp4"):
        make_master_from_arrays(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.float32)], 24, codec="prores")
    with pytest.raises(ItmError, match="unknown master codec"):
        make_master(tmp_path / "x.mp4", codec="av1", scenes=[synthetic_panorama(0)])
    with pytest.raises(ItmError, match="no frames"):
        make_master_from_arrays(tmp_path / "x.mp4", [], 24)
    assert list(tmp_path.iterdir()) == []


def _data_available() -> bool:
    from itmfilter.data.fetch import cache_root

    return os.environ.get("ITMFILTER_NETWORK") == "1" or (cache_root() / "scenes").is_dir()


@pytest.mark.network
@pytest.mark.skipif(not _data_available(), reason="needs the registry scenes: set ITMFILTER_NETWORK=1 or fetch them")
def test_tiny_master_from_real_scenes(tmp_path):
    path = make_master(tmp_path / "real.mp4", seconds=0.5, fps=24, size=SIZE, shot_seconds=0.25,
                       quiet=True, preset="ultrafast")
    info = probe_video(path)
    assert info.frame_count == 12 and info.color_trc == "smpte2084" and info.hdr10 is not None
    assert 0 < info.hdr10.max_fall <= info.hdr10.max_cll <= 1000
    nits = [n for _, n in read_hdr_frames(path)]
    assert max(n.max() for n in nits) > 203  # real highlights above reference white
