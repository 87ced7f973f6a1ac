"""Clips shared by the interoperability tests (frame-filter API, pipes, the mpv script):
made once per session with the real encoder, so each test file does not pay for its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CLIP_W, CLIP_H, CLIP_N, CLIP_FPS = 96, 64, 12, 24

SHARED_FIXTURE_GROUPS = {
    "test_look_ahead": "two-shot-encode", "test_shift_run": "two-shot-encode",
    "test_api": "weighted-clip", "test_pipe": "weighted-clip", "test_mpv_script": "weighted-clip",
    "test_ray_cluster": "ray", "test_ray_engine": "ray",
}
"""Test files run on one pytest-xdist worker together (``scripts/test.sh`` runs the suite on one
worker a core, ``--dist loadgroup``). A worker builds every module- and session-scoped fixture
for itself, so each file's tests stay on one worker (its module fixtures are encodes, servers,
players), the files that read one costly session fixture share a worker (the capped encode of
:func:`two_shot_encode`; :func:`weighted_clip`), and the two files that start Ray run one after
the other instead of two Ray instances side by side on two cores."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        stem = item.path.stem
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(stem, stem)))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_per_worker():
    """Under pytest-xdist each worker has a core: torch's own thread pool would make two threads
    a worker and oversubscribe the cores. A test that sets threads itself still does."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    yield


def _pan():
    """A camera pan (3 px a frame) across a synthetic HDR panorama with a clipped highlight."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:CLIP_H, 0 : CLIP_W + 3 * CLIP_N].astype(np.float32)
    pano = np.stack([np.sin(xx / 17) ** 2, np.cos(yy / 11) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 23)], -1)
    pano = pano * 300 + 2.0 + rng.random(pano.shape).astype(np.float32) * 5
    pano[20:30, 40:70] = 950.0
    for i in range(CLIP_N):
        yield np.ascontiguousarray(pano[:, 3 * i : 3 * i + CLIP_W]).astype(np.float32)


@pytest.fixture(scope="session")
def weighted_clip(tmp_path_factory) -> Path:
    """12 frames of 96x64 H.264 at 24 fps carrying a weight track in an MP4 data track."""
    from itmfilter.data.testmedia import make_master_from_arrays
    from itmfilter.encode.video import VideoEncodeOptions, encode_video

    d = tmp_path_factory.mktemp("weighted")
    master = make_master_from_arrays(d / "master.mkv", _pan(), fps=CLIP_FPS, codec="hevc", peak_nits=1000)
    sdr = d / "sdr.mp4"
    encode_video(master, sdr, options=VideoEncodeOptions(first_steps=60, warm_steps=5, preset="ultrafast", crf=12,
                                                         sidecar="track", model="mlp"), quiet=True)
    return sdr


TWO_SHOT_SIZE, TWO_SHOT_SHOTS = (96, 54), (24, 48)


def _two_shot_frames():
    """A 1 s shot then a 2 s shot at 24 fps, each a slow pan across the sample panorama; the
    second elsewhere in it and 1.5 times brighter (a cut the shot detector finds)."""
    from itmfilter.data import sample_path
    from itmfilter.data.testmedia import pan_view
    from itmfilter.media.stills import read_hdr

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    for i in range(sum(TWO_SHOT_SHOTS)):
        shot, j = (0, i) if i < TWO_SHOT_SHOTS[0] else (1, i - TWO_SHOT_SHOTS[0])
        centre = (w * (0.15 + 0.4 * shot) + 1.5 * j, h * (0.45 + 0.05 * shot))
        yield pan_view(pano, TWO_SHOT_SIZE, centre, h * 0.4) * (1.0 + 0.5 * shot)


@pytest.fixture(scope="session")
def two_shot_master(tmp_path_factory) -> Path:
    """72 frames of 96x54 HEVC PQ at 24 fps in two shots (1 s, 2 s): the rate and grid-track tests' master."""
    from itmfilter.data.testmedia import make_master_from_arrays

    path = tmp_path_factory.mktemp("two-shot") / "master.mkv"
    make_master_from_arrays(path, list(_two_shot_frames()), fps=CLIP_FPS, codec="hevc", peak_nits=1000)
    return path


@pytest.fixture(scope="session")
def two_shot_encode(two_shot_master, tmp_path_factory):
    """``encode(**fields)``: the two-shot master encoded with ``VideoEncodeOptions(**fields)``
    at one torch thread, once per distinct fields in the session, as ``(path, report)``. For the
    tests that only read an encode: a capped grid encode of this clip is ~30-60 s on 2 cores, and
    several tests read the same one."""
    import torch

    from itmfilter.encode.video import VideoEncodeOptions, encode_video

    made: dict = {}

    def encode(**fields):
        key = tuple(sorted(fields.items()))
        if key not in made:
            torch.set_num_threads(1)
            out = tmp_path_factory.mktemp("two-shot-encode") / "sdr.mp4"
            made[key] = (out, encode_video(two_shot_master, out, options=VideoEncodeOptions(**fields), quiet=True))
        return made[key]

    return encode


@pytest.fixture(scope="session")
def plain_clip(tmp_path_factory) -> Path:
    """6 frames of 64x48 H.264 without weights."""
    from itmfilter.media.video import SdrWriter

    path = tmp_path_factory.mktemp("plain") / "plain.mp4"
    with SdrWriter(path, 64, 48, CLIP_FPS, preset="ultrafast") as writer:
        for i in range(6):
            writer.write(np.full((48, 64, 3), 0.2 + 0.1 * i, np.float32))
    return path
