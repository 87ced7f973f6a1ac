"""Scene residuals (format 1.7, refinement record kind 2; itmfilter.model.scene): the record's
bytes and damage, the decoder's reading (normative and fused), the encoder's image, and a real
encode under a cap that carries them."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
import torch

from itmfilter.model.grid import GRID_SIZES, GridFormatError, GridModel, PlacedGrid, apply_grid_refinement, predict_pq
from itmfilter.model.scene import (
    SCENE_KIND,
    SceneFormatError,
    ScenePlan,
    SceneResidual,
    build_scene_residual,
    scene_cells,
    unpack_scene_residual,
)


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([max(h - 1, 1), max(w - 1, 1)])[:, None, None]
    return np.stack([0.1 * np.sin(3 * xx) * yy, 0.05 * xx - 0.02, 0.08 * yy * yy], -1)


def _model(seed: int = 3) -> GridModel:
    cfg = GRID_SIZES["XS"]
    rng = np.random.default_rng(seed)
    mmr = np.zeros((22, 3), np.float32)
    mmr[0] = 0.05
    mmr[1:4] = np.eye(3, dtype=np.float32) * 0.45
    grid = rng.normal(0, 0.3, cfg.grid_shape).astype(np.float32)
    mlp = [rng.normal(0, 0.3, s).astype(np.float32) for s in cfg.mlp_shapes()]
    return GridModel(cfg, mmr, grid, mlp)


def test_record_round_trip_and_layout():
    img = _smooth(9, 14)
    data = ScenePlan(img).code(95)
    assert data[0] == SCENE_KIND and struct.unpack_from("<HH", data, 1) == (14, 9)
    scene = unpack_scene_residual(data)
    assert scene.values.shape == (9, 14, 3) and scene.values.dtype == np.float32
    assert np.abs(scene.values - img).max() < 0.01  # 8 bits over a ~0.2 range, AVIF near-lossless
    # the same bytes decode to the same values (AV1 decoding is exact)
    assert np.array_equal(unpack_scene_residual(data).values, scene.values)


@pytest.mark.parametrize("damage,says", [
    (lambda d: d[:5], "truncated"),
    (lambda d: bytes([1]) + d[1:], "kind 2"),
    (lambda d: d[:1] + struct.pack("<HH", 1, 9) + d[5:], "cells"),
    (lambda d: d[:1] + struct.pack("<HH", 4097, 2) + d[5:], "cells"),
    (lambda d: d[:1] + struct.pack("<HH", 15, 9) + d[5:], "head says"),
    (lambda d: d[:5] + struct.pack("<ee", 1.0, -1.0) + d[9:], "inverted"),
    (lambda d: d[:5] + struct.pack("<ee", float("nan"), 1.0) + d[9:], "non-finite"),
    (lambda d: d[:17] + b"\x00" * 40, "without a size"),
    (lambda d: d[:17] + bytes([0x7A, 0]), "no AV1 sequence header"),  # a padding OBU alone
    (lambda d: d[:-12], "does not decode"),
    # the sequence header (after the temporal delimiter at 17) without its reduced still-picture flag
    (lambda d: d[:21] + bytes([d[21] & ~0x08]) + d[22:], "not an AV1 still"),
])
def test_damaged_records_are_refused(damage, says):
    data = ScenePlan(_smooth(9, 14)).code(50)
    with pytest.raises(SceneFormatError, match=says):
        unpack_scene_residual(damage(data))
    with pytest.raises(GridFormatError):  # through the refinement stream's dispatch
        apply_grid_refinement(_model(), damage(data)) if damage(data)[:1] == bytes([SCENE_KIND]) else \
            apply_grid_refinement(_model(), bytes([9]))


def test_sampling_is_bilinear_with_corners_on_the_square_and_both_forms_agree():
    values = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    scene = SceneResidual(values)
    corners = scene.sample(np.array([[-1, -1], [1, -1], [-1, 1], [1, 1], [0, 0], [5, -5]], np.float32))
    assert np.array_equal(corners[:4], values[[0, 0, 1, 1], [0, 2, 0, 2]])
    np.testing.assert_allclose(corners[4], (values[0, 1] + values[1, 1]) / 2)
    assert np.array_equal(corners[5], values[0, 2])  # clipped to the square, as the grid
    rng = np.random.default_rng(1)
    scene = SceneResidual(rng.normal(0, 0.1, (7, 11, 3)).astype(np.float32))
    xs, ys = rng.uniform(-1.2, 1.2, 23).astype(np.float32), rng.uniform(-1.2, 1.2, 17).astype(np.float32)
    grid = scene.sample_axes(xs, ys)
    pts = scene.sample(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)).reshape(17, 23, 3)
    assert np.array_equal(grid, pts)


def test_the_decoder_adds_the_residual_before_the_clip_and_a_refinement_keeps_it():
    model = _model()
    rng = np.random.default_rng(0)
    sdr = rng.random((12, 20, 3)).astype(np.float32)
    scene = SceneResidual(np.full((3, 4, 3), 0.03, np.float32))
    with_scene = dataclasses.replace(model, scene=scene)
    a, b = predict_pq(model, sdr), predict_pq(with_scene, sdr)
    inside = (a > 0) & (a < 0.97)
    np.testing.assert_allclose(b[inside], a[inside] + 0.03, atol=1e-6)
    assert b.max() <= 1 and b.min() >= 0
    # a kind-1 refinement after it keeps the scene; a second kind-2 record replaces it
    from itmfilter.model.grid import pack_grid_refinement, quantise_refinement, refined_config

    fine = np.zeros((model.config.channels,) + refined_config(model.config).grid_shape[1:], np.float32)
    refined = apply_grid_refinement(with_scene, pack_grid_refinement(*quantise_refinement(fine, 1.0)))
    assert refined.scene is scene
    other = apply_grid_refinement(refined, ScenePlan(_smooth(5, 6)).code(60))
    assert other.scene.values.shape == (5, 6, 3)


def test_the_fused_grid_paths_read_the_residual_as_the_normative_decoder():
    pytest.importorskip("numba")
    import av

    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb

    h, w = 45, 78
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) * 255 // (w + 2 * h)], -1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    scene = unpack_scene_residual(ScenePlan(_smooth(6, 9) * 2).code(90))
    placed = PlacedGrid(dataclasses.replace(_model(), scene=scene), origin=(0.37, -0.21), half=(1.6, 1.3))
    plain = PlacedGrid(_model(), origin=(0.37, -0.21), half=(1.6, 1.3))
    want = pq_to_yuv420p10(placed.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    without = pq_to_yuv420p10(plain.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    assert np.abs(want[0].astype(int) - without[0].astype(int)).mean() > 5  # the residual matters here
    got = hdr10_planes(frame, placed, "full", "cpu")
    for g, e in zip(got, want):
        d = np.abs(g.astype(int) - e.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.05
    # a guided rung: far closer to the model with its residual than to the model without
    guided = hdr10_planes(frame, placed, "guided-quarter", "cpu")[0].astype(int)
    assert np.abs(guided - want[0]).mean() < 0.3 * np.abs(guided - without[0]).mean()


def test_the_encoders_image_recovers_a_smooth_field_over_a_pan():
    """Differences that are a smooth function of scene position, seen by three frames of a
    pan, come back from the image at every frame's pixels, unseen cells filled."""
    from itmfilter.encode.gridkeys import frame_xy, grid_geometry

    h, w = 36, 64
    offsets = np.array([[0.0, 0.0], [0.2, 0.0], [0.4, 0.05]])
    _, centre, half = grid_geometry(GRID_SIZES["XS"], offsets)

    def field(xy):
        return np.stack([0.1 * xy[..., 0], 0.05 * np.sin(2 * xy[..., 1]), 0.02 + 0.0 * xy[..., 0]], -1)

    xys = [frame_xy(h, w, o, centre, half) for o in offsets]
    cells = scene_cells(w, h, half, 4)
    img = build_scene_residual([field(xy).reshape(-1, 3) for xy in xys], [xy.reshape(-1, 2) for xy in xys], cells)
    scene = unpack_scene_residual(ScenePlan(img).code(95))
    for xy in xys:
        err = np.abs(scene.sample(xy.reshape(-1, 2)) - field(xy).reshape(-1, 3))
        assert err.mean() < 0.004 and err.max() < 0.03


FAST = dict(tm="local", grid_steps=150, first_steps=30, warm_steps=5, preset="ultrafast", crf=12)


def test_an_encode_under_a_cap_carries_scene_residuals_and_keeps_the_cap(two_shot_master, tmp_path):
    """``--model grid`` under a cap (format 1.7): the shots whose stream ends in a scene residual
    decode it (the placed models hold it), the cap holds, and ``--no-scene-residual`` writes a
    1.6 track that scores no better."""
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.rate import check_rate
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.quality.metrics import psnr_pu21
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.codec import SCENE_MINOR, SHIFT_RUN_MINOR
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    ref = [n for _, n in read_hdr_frames(two_shot_master)]
    scores, scenes = {}, {}
    for on in (True, False):
        out = tmp_path / f"sdr-{on}.mp4"
        kbps = 32.0
        report = encode_video(two_shot_master, out, options=VideoEncodeOptions(max_kbps=kbps, model="grid",
                                                                               scene_residual=on, **FAST), quiet=True)
        track = load_track(out)
        assert track.header.version == (1, SCENE_MINOR if on else SHIFT_RUN_MINOR)
        sizes = carried_bytes(out, track)
        assert sum(sizes) <= kbps * 1000 / 8 * len(ref) / 24 and check_rate(sizes, kbps, 24, 1.0) == []
        assert report.worst_window_kbps <= 2 * kbps + 1e-9
        nets = FrameNetworks(out)
        placed = [nets(i) for i in range(len(ref))]
        assert nets.damaged == 0
        scenes[on] = sum(p.model.scene is not None for p in placed)
        sdrs = [s for _, s in read_sdr_frames(out)]
        scores[on] = float(np.mean([psnr_pu21(r, np.asarray(eotf_st2084(p.predict_pq(s)), np.float32))
                                    for r, p, s in zip(ref, placed, sdrs)]))
    assert scenes[True] > 0 and scenes[False] == 0
    assert scores[True] >= scores[False] - 0.05, scores


@pytest.mark.parametrize("name", ["track_grid_scene.bin", "track_grid_scene_damaged.bin"])
def test_scene_vectors_decode_to_expected_pixels_cells_and_placements(name):
    import json
    from pathlib import Path

    from itmfilter.track.codec import SCENE_MINOR, TrackDecoder
    from itmfilter.track.format import read_track_blob

    vectors = Path(__file__).resolve().parents[1] / "sidecar" / "vectors"
    entry = {e["file"]: e for e in json.loads((vectors / "grid_scene_manifest.json").read_text())["vectors"]}[name]
    header, packets = read_track_blob((vectors / name).read_bytes())
    assert header.version == (1, SCENE_MINOR)
    sdr, expected = np.load(vectors / entry["sdr"]), np.load(vectors / entry["expected"])
    placements = np.load(vectors / entry["placements"])
    dec = TrackDecoder(header)
    for f in range(len(expected)):
        placed, status = dec.params_at(f, packets)
        assert isinstance(placed, PlacedGrid) and status == entry["statuses"][f], (f, status)
        assert [placed.model.config.width, placed.model.config.height] == entry["cells"][f], f
        assert np.array_equal(np.array([*placed.origin, *placed.half]), placements[f]), f
        assert np.abs(placed.predict_pq(sdr) - expected[f]).max() <= 1e-6, f
        # the residual applies from the frame whose packet completes it, and only in the good track
        assert (placed.model.scene is not None) == (f >= 3 and not name.endswith("_damaged.bin")), f
    if name.endswith("_damaged.bin"):
        assert entry["statuses"][3:6] == ["damaged", "missing", "missing"]
    else:
        assert dec.problems == {}
