"""Grid keys in the video weight track (format 1.4, KEY coding 4, ``--model grid``): the
conformance vector (sidecar/SPEC.md section 4, ``sidecar/vectors/grid_manifest.json``), the
decoder's rules in a grid shot, and a real encode -> transcode round trip under a cap."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from itmfilter.model.grid import PlacedGrid
from itmfilter.track.codec import GRID_KEY_CODING, TrackDecoder
from itmfilter.track.format import TrackFormatError, decode_packet, read_track_blob

VECTORS = Path(__file__).resolve().parents[1] / "sidecar" / "vectors"


def _grid_entry() -> dict:
    (entry,) = json.loads((VECTORS / "grid_manifest.json").read_text())["vectors"]
    return entry


def test_grid_vector_decodes_to_expected_pixels_and_placements():
    entry = _grid_entry()
    header, packets = read_track_blob((VECTORS / entry["file"]).read_bytes())
    assert header.version == (1, 4)
    sdr = np.load(VECTORS / entry["sdr"])
    expected = np.load(VECTORS / entry["expected"])
    placements = np.load(VECTORS / entry["placements"])
    dec = TrackDecoder(header)
    for f in range(len(expected)):
        placed, status = dec.params_at(f, packets)
        assert isinstance(placed, PlacedGrid) and status == entry["statuses"][f], f
        assert np.array_equal(np.array([*placed.origin, *placed.half]), placements[f]), f
        assert np.abs(placed.predict_pq(sdr) - expected[f]).max() <= 1e-6, f


def test_grid_vector_placements_from_the_bytes():
    """An independent reading of SPEC 4 (KEY coding 4): the origin is the KEY's binary32 origin
    plus every binary16 shift since, summed in binary64; a REPEAT and a damaged packet add 0."""
    entry = _grid_entry()
    _, packets = read_track_blob((VECTORS / entry["file"]).read_bytes())
    origin = half = None
    for f in sorted(packets):
        p = decode_packet(packets[f])
        if p.kind == "key":
            assert p.coding == GRID_KEY_CODING
            ox, oy, hx, hy = struct.unpack_from("<ffff", p.payload)
            origin, half = np.array([ox, oy], np.float64), (hx, hy)
        elif p.kind == "delta" and p.coding == 3 and len(p.payload) == 4:
            origin = origin + np.array(struct.unpack("<ee", p.payload), np.float64)
        assert np.array_equal(np.array([*origin, *half]), np.load(VECTORS / entry["placements"])[f]), f


def test_grid_track_in_every_carriage_form_keeps_its_minor_version():
    """The track file, the JSON sidecar (schema-valid) and the compressed SEI header of a grid
    track declare 1.4 and decode to the same placements; an MLP header still writes 1.3."""
    from itmfilter.track.format import (
        TrackHeader,
        track_from_json,
        track_to_json,
        write_track_blob,
    )

    entry = _grid_entry()
    raw = (VECTORS / entry["file"]).read_bytes()
    header, packets = read_track_blob(raw)
    assert raw[4:6] == bytes([1, 4]) and header.to_compressed_bytes()[4:6] == bytes([1, 4])
    doc = json.loads(json.dumps(track_to_json(header, [packets[f] for f in sorted(packets)])))
    assert doc["version"] == [1, 4] and doc["header"]["version"] == [1, 4]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads((VECTORS.parent / "schema.json").read_text()))
    header2, packets2 = track_from_json(doc)
    assert header2.version == (1, 4)
    assert write_track_blob(header2, [packets2[f] for f in sorted(packets2)]) == raw
    want = np.load(VECTORS / entry["placements"])
    dec = TrackDecoder(header2)
    assert all(np.array_equal(np.array([*dec.params_at(f, packets2)[0].origin]), want[f, :2]) for f in range(7))
    mlp = TrackHeader(config=header.config, fps=(24, 1), frame_count=1, width=8, height=8, hdr10=None)
    assert mlp.version == (1, 3) and mlp.to_bytes()[4:6] == bytes([1, 3])


def test_a_grid_shot_refuses_weight_deltas_and_an_mlp_reader_refuses_grid_keys():
    from itmfilter.track.codec import decode_key_payload, grid_step
    from itmfilter.track.format import Packet

    entry = _grid_entry()
    _, packets = read_track_blob((VECTORS / entry["file"]).read_bytes())
    placed, _ = TrackDecoder(read_track_blob((VECTORS / entry["file"]).read_bytes())[0]).params_at(0, packets)
    with pytest.raises(TrackFormatError, match="cannot follow a grid key"):
        grid_step(decode_packet(packets[5]), placed)
    with pytest.raises(TrackFormatError, match="grid key"):
        grid_step(Packet(1, "delta", 0, b"\x00" * 12, 3), placed)  # a shift with a residual
    key = decode_packet(packets[0])
    with pytest.raises(TrackFormatError, match="grid"):
        decode_key_payload(key.coding, key.payload, [10])
    bad = bytearray(key.payload)
    bad[20] ^= 0xFF  # inside the grid model's head: a bad config or magic
    from itmfilter.track.codec import decode_grid_key

    with pytest.raises(TrackFormatError):
        decode_grid_key(bytes(bad))


# --------------------------------------------------------------------------- encode -> transcode

SIZE, FPS, FRAMES = (96, 54), 24, 72
SHOTS = (24, 48)  # a 1 s shot, then a 2 s shot


@pytest.fixture(scope="module")
def master(two_shot_master):
    """The shared two-shot master (tests/conftest.py): SIZE, FPS, SHOTS above describe it."""
    return two_shot_master


FAST = dict(tm="local", grid_steps=150, first_steps=30, warm_steps=5, preset="ultrafast", crf=12)


def test_grid_encode_transcode_round_trip_under_the_cap(master, tmp_path):
    """``--model grid --max-kbps 24`` on a spatially varying grade: every KEY a grid key,
    the cap held over the file and every window, and the transcoded HDR above the per-frame
    polynomial (and above today's MLP track at the same cap on this clip)."""
    from itmfilter.encode.rate import check_rate
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.quality import baselines
    from itmfilter.quality.metrics import psnr_pu21
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.transcode.video import plan_jobs, transcode_many

    torch.set_num_threads(1)
    kbps, scores = 24.0, {}
    for model in ("grid", "mlp"):
        out = tmp_path / f"sdr-{model}.mp4"
        report = encode_video(master, out, options=VideoEncodeOptions(max_kbps=kbps, model=model, **FAST), quiet=True)
        track = load_track(out)
        sizes = carried_bytes(out, track)
        assert sum(sizes) == report.metadata_bytes
        assert sum(sizes) <= kbps * 1000 / 8 * FRAMES / FPS
        assert check_rate(sizes, kbps, FPS, 1.0) == []
        keys = [decode_packet(r) for r in track.packets.values() if decode_packet(r).kind == "key"]
        if model == "grid":
            assert track.header.version == (1, 4) and report.keys == {"grid": len(SHOTS)}
            assert all(k.coding == GRID_KEY_CODING for k in keys)
            assert report.packets.get("shift", 0) > 0  # the pan travels as DELTA coding 3 shifts
        else:
            assert track.header.version == (1, 3) and all(k.coding != GRID_KEY_CODING for k in keys)
        hdr = tmp_path / f"hdr-{model}.mkv"
        results = transcode_many(plan_jobs([out], hdr, crf=4, preset="ultrafast"), quiet=True)
        assert results[0].status == "done" and results[0].mode == "weights" and results[0].frames == FRAMES
        ref = [n for _, n in read_hdr_frames(master)]
        got = [n for _, n in read_hdr_frames(hdr)]
        scores[model] = float(np.mean([psnr_pu21(r, g) for r, g in zip(ref, got)]))
    sdrs = [s for _, s in read_sdr_frames(tmp_path / "sdr-grid.mp4")]
    poly = float(np.mean([psnr_pu21(r, baselines.apply_mmr(baselines.fit_mmr(s, r), s)) for r, s in zip(ref, sdrs)]))
    assert scores["grid"] > poly + 3, (scores, poly)  # measured: grid 30.4 dB, MLP 23.3, polynomial 21.4
    assert scores["grid"] > scores["mlp"], (scores, poly)


def test_grid_falls_back_to_mlp_keys_where_no_grid_fits(master, tmp_path):
    """At 10 kbit/s (5.4 of it reserved for the SEI framing) the 1 s shot cannot pay for the smallest grid the ladder estimates: that
    segment is coded with MLP keys, the 2 s shot with a grid key, and the cap holds."""
    from itmfilter.encode.rate import check_rate
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    out = tmp_path / "sdr.mp4"
    report = encode_video(master, out, options=VideoEncodeOptions(max_kbps=10.0, model="grid", **FAST), quiet=True)
    track = load_track(out)
    sizes = carried_bytes(out, track)
    assert sum(sizes) <= 10.0 * 1000 / 8 * FRAMES / FPS and check_rate(sizes, 10.0, FPS, 1.0) == []
    assert report.keys.get("grid", 0) >= 1 and sum(report.keys.values()) - report.keys.get("grid", 0) >= 1
    nets = FrameNetworks(out)
    kinds = {type(nets(i)).__name__ for i in range(FRAMES)}
    assert kinds == {"ITMNet", "PlacedGrid"} and nets.damaged == 0
    # the frame-filter API and the player's per-frame path on a grid frame: the exact path at
    # every rung (no ladder), the same codes as the placed model through section 12.6
    import av

    import itmfilter
    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb

    weights = itmfilter.open_weights(out, device="cpu")
    with av.open(str(out)) as src:
        frames = list(src.decode(video=0))
    grid_frame = next(i for i in range(FRAMES) if isinstance(nets(i), PlacedGrid))
    frame = frames[grid_frame]
    want = pq_to_yuv420p10(nets(grid_frame).predict_pq(sdr_frame_to_rgb(frame)))
    got = weights.planes(frame, index=grid_frame)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert all(np.array_equal(a, b) for a, b in zip(hdr10_planes(frame, nets(grid_frame), "eighth", "cpu"), want))
    assert np.array_equal(weights.pq(frame, index=grid_frame), nets(grid_frame).predict_pq(sdr_frame_to_rgb(frame)))
    assert weights.filter(frame, index=grid_frame).format.name == "yuv420p10le"
