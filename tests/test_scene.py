"""Scene residuals (format 1.7, refinement record kind 2; itmfilter.model.scene): the record's
bytes and damage, the decoder's reading (normative and fused), the encoder's image, and a real
encode under a cap that carries them."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
import torch
from gridfast import FAST

from itmfilter.model.grid import GRID_SIZES, GridFormatError, GridModel, PlacedGrid, apply_grid_refinement, predict_pq
from itmfilter.model.scene import (
    SCENE_KIND,
    WINDOW_KIND,
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


def test_a_windowed_record_kind_4_spans_its_window_and_replaces_an_earlier_residual():
    img = _smooth(9, 14)
    window = (0.25, -0.5, 0.5, 0.375)  # centre x, y; half-size x, y (exact in binary32)
    data = ScenePlan(img).code(95, window=window)
    assert data[0] == WINDOW_KIND and struct.unpack_from("<4f", data, 1) == window
    assert data[17:] == ScenePlan(img).code(95)[1:]  # then a kind-2 record's body
    scene = unpack_scene_residual(data)
    assert scene.window == window and np.array_equal(scene.values, unpack_scene_residual(ScenePlan(img).code(95)).values)
    # the image's corners on the window's corners; outside it, the edge (clipped as the grid)
    pts = np.array([[-0.25, -0.875], [0.75, -0.125], [0.25, -0.5], [2.0, 0.9]], np.float32)
    got = scene.sample(pts)
    v = scene.values
    assert np.array_equal(got[0], v[0, 0]) and np.array_equal(got[1], v[-1, -1]) and np.array_equal(got[3], v[-1, -1])
    np.testing.assert_allclose(got[2], SceneResidual(v).sample(np.zeros((1, 2), np.float32))[0])
    rng = np.random.default_rng(2)
    xs, ys = rng.uniform(-1, 1, 19).astype(np.float32), rng.uniform(-1, 1, 13).astype(np.float32)
    assert np.array_equal(scene.sample_axes(xs, ys), scene.sample(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)).reshape(13, 19, 3))
    # through the refinement stream: it replaces a kind-2 residual, and a kind-2 replaces it
    whole = apply_grid_refinement(_model(), ScenePlan(_smooth(5, 6)).code(60))
    piece = apply_grid_refinement(whole, data)
    assert piece.scene.window == window and piece.scene.values.shape == (9, 14, 3)
    assert apply_grid_refinement(piece, ScenePlan(_smooth(5, 6)).code(60)).scene.window is None


@pytest.mark.parametrize("window,says", [
    ((0.0, 0.0, 0.0, 1.0), "half-size"),
    ((0.0, 0.0, 1.0, -1.0), "half-size"),
    ((float("nan"), 0.0, 1.0, 1.0), "not finite"),
    ((5.0, 0.0, 1.0, 1.0), "exceeds"),
    ((0.0, 0.0, 1.0, float("inf")), "not finite"),
])
def test_damaged_windows_are_refused(window, says):
    data = ScenePlan(_smooth(9, 14)).code(50, window=(0.0, 0.0, 1.0, 1.0))
    bad = data[:1] + struct.pack("<4f", *window) + data[17:]
    with pytest.raises(SceneFormatError, match=says):
        unpack_scene_residual(bad)
    with pytest.raises(GridFormatError):
        apply_grid_refinement(_model(), bad)
    with pytest.raises(SceneFormatError, match="truncated"):
        unpack_scene_residual(data[:25])


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


def test_the_encoders_scores_of_many_residuals_over_one_model_are_the_decoders_bits():
    """``model_score`` computes a model's part before the scene residual once and reuses it
    for every residual scored over the same model and pixels: each score must equal the one
    from ``predict_pq`` itself, bit for bit, also when another model was scored in between, and
    ``predict_pq`` gives the same bits however its pixels are split into chunks."""
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.gridkeys import model_score
    from itmfilter.quality.metrics import psnr_pu21

    rng = np.random.default_rng(5)
    n = 3000
    sdr = rng.random((n, 1, 3)).astype(np.float32)
    nits = rng.random((n, 1, 3)).astype(np.float32) * 400
    xy = rng.uniform(-1, 1, (n, 1, 2)).astype(np.float32)
    pixels = (sdr, nits, xy)
    models = [_model(3), _model(4)]
    scenes = [None] + [unpack_scene_residual(ScenePlan(_smooth(5, 6) * k).code(q)) for k, q in ((1, 30), (3, 60), (5, 90))]

    def direct(model):
        return float(psnr_pu21(nits, np.asarray(eotf_st2084(predict_pq(model, sdr, xy=xy)), dtype=np.float32)))

    for scene in scenes + scenes[::-1]:
        for model in models:
            with_scene = dataclasses.replace(model, scene=scene)
            assert model_score(with_scene, pixels) == direct(with_scene)
    with_scene = dataclasses.replace(models[0], scene=scenes[2])
    np.testing.assert_array_equal(predict_pq(with_scene, sdr, xy=xy, chunk=7), predict_pq(with_scene, sdr, xy=xy))


@pytest.mark.parametrize("window", [None, (0.3, -0.2, 0.6, 0.7)])
def test_the_fused_grid_paths_read_the_residual_as_the_normative_decoder(window):
    pytest.importorskip("numba")
    import av

    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb

    h, w = 45, 78
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) * 255 // (w + 2 * h)], -1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    scene = unpack_scene_residual(ScenePlan(_smooth(6, 9) * 2).code(90, window=window))
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




def _capped_encodes(master, tmp_path, kbps: float, variants: dict) -> dict:
    """Encode ``master`` under ``kbps`` once per ``variants`` entry (name -> VideoEncodeOptions
    fields beside FAST); each checked for the cap over the file and every 1 s window and for a
    clean decode. Returns name -> (track header version, placed models per frame, mean PU21-PSNR)."""
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.rate import DEFAULT_BUFFER_SECONDS, check_rate
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.quality.metrics import psnr_pu21
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    ref = [n for _, n in read_hdr_frames(master)]
    results = {}
    for name, fields in variants.items():
        out = tmp_path / f"sdr-{name}.mp4"
        report = encode_video(master, out, options=VideoEncodeOptions(max_kbps=kbps, model="grid", **fields, **FAST),
                              quiet=True)
        track = load_track(out)
        sizes = carried_bytes(out, track)
        assert sum(sizes) <= kbps * 1000 / 8 * len(ref) / 24 and check_rate(sizes, kbps, 24) == []
        assert report.worst_window_kbps <= (1 + DEFAULT_BUFFER_SECONDS) * kbps + 1e-9
        nets = FrameNetworks(out)
        placed = [nets(i) for i in range(len(ref))]
        assert nets.damaged == 0
        sdrs = [s for _, s in read_sdr_frames(out)]
        score = float(np.mean([psnr_pu21(r, np.asarray(eotf_st2084(p.predict_pq(s)), np.float32))
                               for r, p, s in zip(ref, placed, sdrs)]))
        results[name] = (track.header.version, placed, score)
    return results


def test_an_encode_under_a_cap_carries_scene_residuals_and_keeps_the_cap(two_shot_master, tmp_path):
    """``--model grid`` under a cap (format 1.7): the shots whose stream ends in a scene residual
    decode it (the placed models hold it), the cap holds, and ``--no-scene-residual`` writes a
    1.6 track that scores no better."""
    from itmfilter.track.codec import SCENE_MINOR, SHIFT_RUN_MINOR

    got = _capped_encodes(two_shot_master, tmp_path, 32.0, {"on": dict(scene_residual=True, look_ahead=False),
                                                            "off": dict(scene_residual=False, look_ahead=False)})
    assert got["on"][0] == (1, SCENE_MINOR) and got["off"][0] == (1, SHIFT_RUN_MINOR)
    scenes = {k: sum(p.model.scene is not None for p in v[1]) for k, v in got.items()}
    assert scenes["on"] > 0 and scenes["off"] == 0
    assert got["on"][2] >= got["off"][2] - 0.05, got


def test_an_encode_with_scene_pieces_declares_1_11_keeps_the_cap_and_decodes(two_shot_master, tmp_path):
    """``--scene-pieces`` under a cap (format 1.9, declared as 1.11 with the header dictionary and the compact models): each shot's residual whole or in two
    windowed pieces (whichever its held-out frames score better), the cap kept, every packet
    decoded, within 0.1 dB of the default (1.8; the pieces' estimate is an estimate: on this
    96x54 clip they cost 0.05 dB)."""
    from itmfilter.track.codec import COMPACT_MODEL_MINOR

    got = _capped_encodes(two_shot_master, tmp_path, 32.0, {"on": dict(scene_pieces=True), "off": {}})
    assert got["on"][0] == got["off"][0] == (1, COMPACT_MODEL_MINOR)  # 1.9's windows, 1.10's header, 1.11's models
    windows = {k: {p.model.scene.window for p in v[1] if p.model.scene is not None and p.model.scene.window}
               for k, v in got.items()}
    # none, the 2 s shot's two pieces, or only the second where both complete on one frame (the
    # second then replaces the first before any frame reads it; with 1.11's smaller KEYs they can)
    assert windows["off"] == set() and len(windows["on"]) in (0, 1, 2)
    assert got["on"][2] >= got["off"][2] - 0.1, got


@pytest.mark.parametrize("name", ["track_grid_scene.bin", "track_grid_scene_damaged.bin"])
def test_scene_vectors_decode_to_expected_pixels_cells_and_placements(name):
    import json

    from gridvectors import VECTORS, check_grid_vector

    from itmfilter.track.codec import SCENE_MINOR

    dec, _, placed_all = check_grid_vector("grid_scene_manifest.json", name, SCENE_MINOR)
    entry = {e["file"]: e for e in json.loads((VECTORS / "grid_scene_manifest.json").read_text())["vectors"]}[name]
    for f, placed in enumerate(placed_all):
        assert placed.age == f and placed.model.zoom == np.float32(-0.015), f  # the zoom rides in the KEY
        # the residual applies from the frame whose packet completes it, and only in the good track
        assert (placed.model.scene is not None) == (f >= 3 and not name.endswith("_damaged.bin")), f
    if name.endswith("_damaged.bin"):
        assert entry["statuses"][3:6] == ["damaged", "missing", "missing"]
    else:
        assert dec.problems == {}


@pytest.mark.parametrize("name", ["track_grid_window.bin", "track_grid_window_damaged.bin"])
def test_window_vectors_decode_to_expected_pixels_cells_and_placements(name):
    from gridvectors import check_grid_vector

    from itmfilter.track.codec import WINDOW_MINOR

    dec, _, placed_all = check_grid_vector("grid_window_manifest.json", name, WINDOW_MINOR)
    windows = [None if p.model.scene is None else p.model.scene.window for p in placed_all]
    second = (-0.5, 0.0, 0.5, 1.0) if name.endswith("_damaged.bin") else (0.375, 0.125, 0.625, 0.875)
    assert windows == [None] + [(-0.5, 0.0, 0.5, 1.0)] * 2 + [second] * 5
    if name.endswith("_damaged.bin"):
        assert [dec.params_at(f, _)[1] for f in range(3, 8)] == ["damaged", "missing", "missing", "concealed",
                                                                 "concealed"]
    else:
        assert dec.problems == {}


# --------------------------------------------------------------------------- zoom (record kind 3)


def _zoom_frames(n: int, size: tuple[int, int], zoom_total: float, pan_px: float = 0.8, x0: float = 0.3,
                 pan_widths: float | None = None):
    """``n`` views of the sample panorama panning right and zooming in by ``zoom_total``;
    ``pan_widths``: the pan over the shot in frame widths instead of ``pan_px`` a frame."""
    from itmfilter.data import sample_path
    from itmfilter.data.testmedia import pan_view
    from itmfilter.media.stills import read_hdr

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    if pan_widths is not None:
        pan_px = pan_widths * h * 0.4 * size[0] / size[1] / (n - 1)
    for j in range(n):
        height = h * 0.4 * (1 - zoom_total * j / (n - 1))
        yield pan_view(pano, size, (w * x0 + pan_px * j, h * 0.5), height)


@pytest.mark.parametrize("zoom_total,n,pan_widths", [(0.0, 24, None), (0.12, 24, None), (0.12, 48, 1.6),
                                                     (0.0, 48, 1.6)])
def test_the_zoom_search_finds_the_shots_zoom(zoom_total, n, pan_widths):
    """Also over a long pan whose last frame shares nothing with its first (1.6 frame widths):
    the frames are aligned link by link."""
    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.encode.segments import _luma_thumb
    from itmfilter.media.phasecorr import MotionEstimator
    from itmfilter.track.motion import pixels_to_shift

    size = (256, 144)
    motion, pos, offsets, thumbs = MotionEstimator(), np.zeros(2), [], []
    for k, nits in enumerate(_zoom_frames(n, size, zoom_total, pan_widths=pan_widths)):
        sdr = np.clip(nits / 203, 0, 1) ** (1 / 2.4)
        pan = motion(sdr.astype(np.float32))
        if pan is not None and k:
            pos = pos + np.asarray(pixels_to_shift(pan, *size))
        offsets.append(pos.copy())
        thumbs.append(_luma_thumb(sdr.astype(np.float32)))
    zoom, aligned = estimate_zoom(thumbs, np.asarray(offsets))
    want = -zoom_total / (n - 1)  # the window shrinks: each pixel covers less of the scene
    assert abs(zoom - want) <= 0.2 * abs(want) + 0.0003, (zoom, want)  # measured: -0.0059 for -0.0052
    # the pan is level: the aligned offsets keep y still where the phase correlation drifted
    if pan_widths is None:
        assert np.abs(aligned[:, 1]).max() < 0.02, aligned[:, 1]  # measured 0.013 (1 px); the phase correlation 0.074
    else:  # a fast pan on 64x36 thumbnails: some refits are refused and keep the correlation's offsets
        assert np.abs(aligned[:, 1]).max() <= np.abs(np.asarray(offsets)[:, 1]).max() + 0.005


def _pan_thumbs(n: int, size: tuple[int, int], pan_px: float):
    """Luma thumbnails of ``n`` 8-bit views of the sample panorama panning right by ``pan_px``
    panorama pixels a frame, and each frame's true offset from the first (pixel-grid units)."""
    from itmfilter.data import sample_path
    from itmfilter.data.testmedia import pan_view
    from itmfilter.encode.segments import _luma_thumb
    from itmfilter.media.stills import read_hdr

    pano = read_hdr(sample_path()).nits
    h, w = pano.shape[:2]
    height = h * 0.4
    thumbs, truth = [], []
    for j in range(n):
        nits = pan_view(pano, size, (w * 0.3 + pan_px * j, h * 0.5), height)
        sdr = np.round(np.clip(nits / 203, 0, 1) ** (1 / 2.4) * 255) / 255
        thumbs.append(_luma_thumb(sdr.astype(np.float32)))
        truth.append([pan_px * j / (height / size[1]) * 2 / size[0], 0.0])
    return thumbs, np.asarray(truth)


def test_an_alignment_reads_no_padding_at_the_frames_edge():
    """Two thumbnails of a pan a known step apart are aligned to that step: pixels read past the
    outer pixel centres mix in grid_sample's zero padding, which pulled the shift against the
    overlap by 0.04-0.1 of a thumbnail pixel a link (1.5-3 px summed over a 48-frame pan at 384x216)."""
    from itmfilter.encode.gridkeys import _align

    thumbs, truth = _pan_thumbs(6, (384, 216), 0.9)
    first = torch.from_numpy(thumbs[0])[None, None]
    for k in (1, 3, 5):
        _, t, err = _align(first, torch.from_numpy(thumbs[k]), 1.0, truth[k] + [0.004, -0.003], False)
        assert np.isfinite(err)
        # full-frame pixels; measured 0.07 / 0.02 / 0.04 (reading the padding: 0.2 / 0.6 / 28, a run-away)
        assert np.abs(t - truth[k]).max() * 384 / 2 < 0.2, (k, (t - truth[k]) * 384 / 2)


def test_a_pans_drifting_offsets_are_refitted_to_the_camera():
    """A pan (no zoom) whose measured offsets drift, as the phase correlation's summed sub-pixel
    steps do (2-6 px over a 2 s shot of the 1080p benchmark clip): estimate_zoom finds no zoom
    and still places every frame within 0.6 px of the camera (measured 0.48; it returned the drift
    as given, 3 px)."""
    from itmfilter.encode.gridkeys import estimate_zoom

    n, size = 24, (384, 216)
    thumbs, truth = _pan_thumbs(n, size, 0.9)
    drift = np.outer(np.arange(n), [3.0 / (n - 1), -1.5 / (n - 1)]) * 2 / np.asarray(size)  # 3 px and -1.5 px by the end
    zoom, placed = estimate_zoom(thumbs, truth + drift)
    assert zoom == 0.0
    error_px = np.abs((placed - placed[0]) - truth) * np.asarray(size) / 2
    assert error_px.max() < 0.6, error_px.max(0)


def test_zoom_records_are_read_and_refused_as_the_spec_says():
    from itmfilter.model.grid import MAX_ZOOM, pack_zoom

    model = apply_grid_refinement(_model(), pack_zoom(-0.002))
    assert model.zoom == np.float32(-0.002)
    for bad in (pack_zoom(2 * MAX_ZOOM), pack_zoom(float("nan")), pack_zoom(0.001)[:4], pack_zoom(0.001) + b"\0"):
        with pytest.raises(GridFormatError):
            apply_grid_refinement(_model(), bad)
    placed = PlacedGrid(model, origin=(0.1, 0.0), half=(1.2, 1.1), age=10)
    assert placed.scale == 1.0 + float(np.float32(-0.002)) * 10
    xy = placed.xy(4, 6)
    from itmfilter.model.net import pixel_grid

    want = (pixel_grid(4, 6).numpy().astype(np.float64) * placed.scale + [0.1, 0.0]) / [1.2, 1.1]
    assert np.array_equal(xy, want.astype(np.float32))


def test_a_zooming_shots_frames_age_through_every_packet_kind_and_the_fused_path_follows():
    """KEY coding 5 whose stream opens with a zoom record: every later frame (a run, the frames
    it covers, a REPEAT, a lost packet) is one frame older, its scale ``1 + z t``; the fused
    path reads the zoomed coordinates as the normative decoder."""
    pytest.importorskip("numba")
    import av

    from itmfilter.model.grid import pack_grid_model, pack_zoom
    from itmfilter.model.net import ModelConfig
    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb
    from itmfilter.track.codec import (
        PROGRESSIVE_GRID_KEY_CODING,
        SCENE_MINOR,
        SHIFT_RUN_DELTA_CODING,
        TrackDecoder,
        encode_progressive_grid_key,
        encode_shift_run,
        refinement_record,
    )
    from itmfilter.track.format import Packet, TrackHeader, encode_packet

    cfg = GRID_SIZES["XS"]
    rng = np.random.default_rng(2)
    q = rng.integers(0, 1 << cfg.grid_bits, cfg.grid_shape).astype(np.uint8)
    mlp = [(0.01, rng.integers(-127, 128, s).astype(np.int8)) for s in cfg.mlp_shapes()]
    mmr = np.zeros((22, 3), np.float32)
    mmr[0], mmr[1:4] = 0.05, np.eye(3, dtype=np.float32) * 0.45
    model = pack_grid_model(cfg, mmr, q, np.full(cfg.channels, -0.3, np.float32), np.full(cfg.channels, 0.3, np.float32), mlp)
    zoom = -0.004
    key = encode_progressive_grid_key(model, (0.0, 0.0), (1.3, 1.2), refinement_record(pack_zoom(zoom)))
    header = TrackHeader(config=ModelConfig(), fps=(24, 1), frame_count=8, width=78, height=45,
                         version=(1, SCENE_MINOR), encoder={"model": "grid"})
    packets = {0: encode_packet(Packet(0, "key", 0, key, PROGRESSIVE_GRID_KEY_CODING)),
               1: encode_packet(Packet(1, "delta", 0, encode_shift_run([(0.01, 0.0), (0.01, 0.0)]), SHIFT_RUN_DELTA_CODING)),
               3: encode_packet(Packet(3, "repeat", 0, b"")),
               5: encode_packet(Packet(5, "delta", 0, encode_shift_run([(0.0, 0.01), (0.0, 0.0), (0.0, 0.0)]),
                                       SHIFT_RUN_DELTA_CODING))}  # frame 4: lost
    dec = TrackDecoder(header)
    placed = [dec.params_at(f, packets)[0] for f in range(8)]
    assert [p.age for p in placed] == list(range(8))
    assert placed[7].scale == 1 + float(np.float32(zoom)) * 7 and placed[7].model.zoom == np.float32(zoom)
    yy, xx = np.mgrid[0:45, 0:78]
    img = np.stack([xx * 255 // 78, yy * 255 // 45, (xx + 2 * yy) * 255 // 168], -1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    last = dataclasses.replace(placed[7], model=dataclasses.replace(
        placed[7].model, scene=unpack_scene_residual(ScenePlan(_smooth(6, 9)).code(90))))
    want = pq_to_yuv420p10(last.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    got = hdr10_planes(frame, last, "full", "cpu")
    for g, e in zip(got, want):
        d = np.abs(g.astype(int) - e.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.05
    unzoomed = pq_to_yuv420p10(dataclasses.replace(last, age=0).predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    assert np.abs(unzoomed[0].astype(int) - want[0].astype(int)).mean() > 1  # the zoom moved the reads


def test_an_encode_finds_a_shots_zoom_and_the_decoder_applies_it(tmp_path):
    """A master whose first shot zooms in by 12 % and whose second only pans: under a cap the
    first shot's KEY carries a zoom record of the right rate, the second none; every frame
    decodes with its age and the cap holds."""
    from itmfilter.data.testmedia import make_master_from_arrays
    from itmfilter.encode.rate import check_rate
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    n, size = 24, (192, 108)
    frames = list(_zoom_frames(n, size, 0.12)) + [f * 1.6 for f in _zoom_frames(n, size, 0.0, pan_px=-0.8, x0=0.7)]
    master = make_master_from_arrays(tmp_path / "zoom.mkv", frames, fps=24, codec="hevc", peak_nits=1000)
    out = tmp_path / "sdr.mp4"
    kbps = 32.0
    encode_video(master, out, options=VideoEncodeOptions(max_kbps=kbps, model="grid", **FAST), quiet=True)
    track = load_track(out)
    sizes = carried_bytes(out, track)
    assert check_rate(sizes, kbps, 24) == []
    nets = FrameNetworks(out)
    placed = [nets(i) for i in range(2 * n)]
    assert nets.damaged == 0
    want = -0.12 / (n - 1)
    assert abs(placed[0].model.zoom - want) <= 0.3 * abs(want), placed[0].model.zoom
    assert [p.age for p in placed[:n]] == list(range(n)) and placed[n - 1].scale < 0.93
    assert placed[n].model.zoom == 0 and placed[-1].scale == 1.0


@pytest.mark.parametrize("rung", ["guided-quarter", "guided-eighth"])
def test_guided_rungs_read_a_residual_finer_than_their_nodes_at_every_pixel(rung, monkeypatch):
    """A residual with detail between a guided rung's nodes: the rung adds it per pixel, so it
    misses the model with the residual by about what it misses the model without; and where
    every block is refined it is the model (within a code)."""
    pytest.importorskip("numba")
    import av

    from itmfilter.render import gridpath, ladder
    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb

    h, w = 61, 90
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) * 255 // (w + 2 * h)], -1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    rng = np.random.default_rng(11)
    fine = (rng.normal(0, 0.04, (18, 26, 3)) + _smooth(18, 26)).astype(np.float32)  # ~4 px a cell
    scene = unpack_scene_residual(ScenePlan(fine).code(100))
    model = _model()  # its output scaled to what a fitted model adds (this one clips 70 % of pixels to 0)
    model = dataclasses.replace(model, mlp=[*model.mlp[:-2], model.mlp[-2] * 0.1, model.mlp[-1] * 0.1 + 0.05])
    placed = PlacedGrid(dataclasses.replace(model, scene=scene), origin=(0.37, -0.21), half=(1.6, 1.3))
    plain = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3))
    rgb = sdr_frame_to_rgb(frame).astype(np.float32)
    want = pq_to_yuv420p10(placed.predict_pq(rgb))[0].astype(int)
    want_plain = pq_to_yuv420p10(plain.predict_pq(rgb))[0].astype(int)
    assert np.abs(want - want_plain).mean() > 5  # the residual matters, and it is not smooth
    miss = np.abs(hdr10_planes(frame, placed, rung, "cpu")[0].astype(int) - want).mean()
    miss_plain = np.abs(hdr10_planes(frame, plain, rung, "cpu")[0].astype(int) - want_plain).mean()
    assert miss < 1.5 * miss_plain + 0.5, (miss, miss_plain)
    monkeypatch.setattr(gridpath, "refine_blocks", lambda *a, **k: ladder.refine_blocks(*a, **{**k, "share": 1.0, "tol": -1.0}))
    every = hdr10_planes(frame, placed, rung, "cpu")
    for g, f in zip(every, pq_to_yuv420p10(placed.predict_pq(rgb))):
        d = np.abs(g.astype(int) - f.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.05


def test_a_pieces_window_holds_its_frames_and_no_more_of_the_pan():
    """:func:`frames_window`: the smallest rectangle of the grid square holding the frames'
    pixels (each frame spans ``(offset -+ scale - centre) / half``), in binary32 values."""
    from itmfilter.encode.gridkeys import frame_scales, frames_window, grid_geometry

    offsets = np.stack([np.linspace(0, 3.0, 48), np.linspace(0, -0.5, 48)], 1)  # a pan right and up
    _, centre, half = grid_geometry(GRID_SIZES["XS"], offsets)
    scales = frame_scales(48, 0.0)
    whole = frames_window(offsets, centre, half, scales, 0, 48)
    np.testing.assert_allclose(whole, (0, 0, 1, 1), atol=1e-6)  # every frame: the square
    cx, cy, hx, hy = first = frames_window(offsets, centre, half, scales, 0, 24)
    assert all(v == float(np.float32(v)) for v in first)
    lo_x, hi_x = (offsets[:24, 0].min() - 1 - centre[0]) / half[0], (offsets[:24, 0].max() + 1 - centre[0]) / half[0]
    assert cx - hx == pytest.approx(lo_x, abs=1e-6) and cx + hx == pytest.approx(hi_x, abs=1e-6)
    assert hx < 0.7 and hy == pytest.approx(1 - (0.5 * 24 / 47) / 2 / half[1], abs=0.05)
    # a zoom's frames: smaller scales, a smaller window
    zoomed = frames_window(offsets, centre, half, frame_scales(48, -0.005), 24, 48)
    assert zoomed[2] < frames_window(offsets, centre, half, scales, 24, 48)[2]


def test_a_subject_moving_on_its_own_does_not_pull_the_cameras_alignment(monkeypatch):
    """A bright, textured figure crossing a pan the other way covers a tenth of the frame and
    disagrees with the camera's alignment by far more than the background does: under Huber's
    loss (``gridkeys.ALIGN_HUBER``) it costs linearly and the frames still align to the camera;
    least squares is pulled off (checked too, so the figure is a real test of the loss)."""
    import itmfilter.encode.gridkeys as gridkeys

    size = (384, 216)
    thumbs, truth = _pan_thumbs(6, size, 0.9)
    rng = np.random.default_rng(5)
    figure = np.kron(rng.random((4, 5)) > 0.5, np.ones((4, 4))).astype(np.float32) * 0.8 + 0.2  # 16x20 of 96x54
    for k, t in enumerate(thumbs):
        x, y = 50 - 3 * k, 20 + k
        t[y:y + figure.shape[0], x:x + figure.shape[1]] = figure
    first = torch.from_numpy(thumbs[0])[None, None]

    def worst_px(huber):
        monkeypatch.setattr(gridkeys, "ALIGN_HUBER", huber)
        errors = []
        for k in (2, 4, 5):
            _, t, err = gridkeys._align(first, torch.from_numpy(thumbs[k]), 1.0, truth[k], False)
            assert np.isfinite(err)
            errors.append(np.abs(t - truth[k]).max() * size[0] / 2)  # full-frame pixels
        return max(errors)

    robust, squares = worst_px(gridkeys.ALIGN_HUBER), worst_px(None)
    assert robust < 0.5, robust
    assert squares > 2 * robust, (squares, robust)
