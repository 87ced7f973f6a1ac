"""Shift runs (format 1.6, DELTA coding 5; sidecar/SPEC.md section 4): one packet carries the
binary16 shifts of a grid shot's next frames, which carry no packet. The payload's bytes, the
conformance vectors (``sidecar/vectors/grid_runs_manifest.json``), a run decoding exactly as
per-frame shifts alone, a lost run, seeking, old tracks, and real encodes under the cap."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from gridfast import FAST

from itmfilter.model.grid import GridConfig, PlacedGrid
from itmfilter.track.codec import (
    AHEAD_RUN_DELTA_CODING,
    COMPACT_MODEL_MINOR,
    GRID_KEY_CODING,
    GRID_REFINE_DELTA_CODING,
    HALF_MOTION_DELTA_CODING,
    PROGRESSIVE_GRID_KEY_CODING,
    RUN_CODINGS,
    SHIFT_RUN_DELTA_CODING,
    SHIFT_RUN_MINOR,
    TrackDecoder,
    carries_update,
    covered_frames,
    decode_shift_run,
    encode_grid_key,
    encode_motion_payload,
    encode_progressive_grid_key,
    encode_shift_run,
)
from itmfilter.track.format import (
    Packet,
    TrackFormatError,
    TrackHeader,
    decode_packet,
    encode_packet,
    read_track_blob,
    write_track_blob,
)

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "sidecar" / "vectors"


def _entries() -> dict[str, dict]:
    return {e["file"]: e for e in json.loads((VECTORS / "grid_runs_manifest.json").read_text())["vectors"]}


# --------------------------------------------------------------------------- the payload


def test_shift_run_payload_layout_and_round_trip():
    shifts = [(0.0421875, -0.0185185), (0.05, 0.0), (-0.125, 0.03125)]
    body = encode_shift_run(shifts, b"\x01\x02")
    assert body[:2] == bytes([3, 1]) and len(body) == 2 + 12 + 2  # count, flags, 3 binary16 pairs, the stream bytes
    pairs = [struct.unpack_from("<ee", body, 2 + 4 * k) for k in range(3)]
    assert pairs == [tuple(float(np.float16(v)) for v in s) for s in shifts]
    got, rest = decode_shift_run(Packet(1, "delta", 0, body, SHIFT_RUN_DELTA_CODING))
    assert got == tuple(tuple(float(np.float32(np.float16(v))) for v in s) for s in shifts) and rest == b"\x01\x02"
    zero = encode_shift_run([(0.0, 0.0)] * 24)  # a still camera: no pairs at all (and no emulation prevention)
    assert zero == bytes([24, 0])
    assert decode_shift_run(Packet(1, "delta", 0, zero, SHIFT_RUN_DELTA_CODING)) == (((0.0, 0.0),) * 24, b"")
    # only the stream bytes make it an update
    assert not carries_update(Packet(1, "delta", 0, zero, SHIFT_RUN_DELTA_CODING))
    assert carries_update(Packet(1, "delta", 0, zero + b"\x07", SHIFT_RUN_DELTA_CODING))
    with pytest.raises(ValueError):
        encode_shift_run([])


@pytest.mark.parametrize("body,says", [(b"", "shorter than its head"), (bytes([0, 0]), "covers 0"),
                                       (bytes([2, 2]), "flags"), (bytes([2, 1]) + b"\x00" * 7, "shorter than its 2"),
                                       (bytes([1, 1]) + struct.pack("<ee", np.inf, 0.0), "non-finite")])
def test_malformed_shift_runs_are_refused(body, says):
    with pytest.raises(TrackFormatError, match=says):
        decode_shift_run(Packet(1, "delta", 0, body, SHIFT_RUN_DELTA_CODING))


# --------------------------------------------------------------------------- vectors and decoder rules


@pytest.mark.parametrize("name", ["track_grid_runs.bin", "track_grid_runs_lost.bin"])
def test_shift_run_vectors_decode_to_expected_pixels_cells_and_placements(name):
    from gridvectors import check_grid_vector

    dec, packets, _ = check_grid_vector("grid_runs_manifest.json", name, SHIFT_RUN_MINOR)
    if name.endswith("_lost.bin"):  # the lost run's frames are missing and counted, the others not
        assert sorted(dec.problems) == [4, 5, 6, 7]
    else:
        assert dec.problems == {} and covered_frames(packets) == {2, 3, 5, 6, 7, 9}


def test_shift_run_vector_placements_from_the_bytes():
    """An independent reading of SPEC 4 (DELTA coding 5): frame ``f + k`` of a run at ``f`` moves
    the origin by the run's ``k``-th binary16 pair, summed in binary64 from the KEY's binary32 origin."""
    _, packets = read_track_blob((VECTORS / "track_grid_runs.bin").read_bytes())
    placements = np.load(VECTORS / "track_grid_runs_placements.npy")
    origin, shifts = None, {}
    for f in sorted(packets):
        p = decode_packet(packets[f])
        if p.kind == "delta":
            assert p.coding == SHIFT_RUN_DELTA_CODING
            n, flags = p.payload[0], p.payload[1]
            for k in range(n):
                shifts[f + k] = struct.unpack_from("<ee", p.payload, 2 + 4 * k) if flags & 1 else (0.0, 0.0)
    for f in range(12):
        p = decode_packet(packets[f]) if f in packets else None
        if p is not None and p.kind == "key":
            origin = np.array(struct.unpack_from("<ff", p.payload), np.float64)
        else:
            origin = origin + np.array(shifts[f], np.float64)
        assert np.array_equal(origin, placements[f, :2]), f


def _small_header(minor: int, frames: int) -> TrackHeader:
    from itmfilter.model.net import ModelConfig

    cfg = ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8))
    return TrackHeader(config=cfg, fps=(24, 1), frame_count=frames, width=8, height=6, hdr10=None,
                       binding={"width": 8, "height": 6}, encoder={"model": "grid"}, version=(1, minor))


def _model(seed: int = 3) -> bytes:
    from itmfilter.model.grid import pack_grid_model

    rng = np.random.default_rng(seed)
    cfg = GridConfig(width=4, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=6)
    mmr = rng.normal(0, 0.01, (22, 3)).astype(np.float32)
    mmr[1:4] += np.eye(3, dtype=np.float32) * 0.45
    q = rng.integers(0, 64, cfg.grid_shape).astype(np.uint8)
    mlp = [(0.01, rng.integers(-127, 128, s).astype(np.int8)) for s in cfg.mlp_shapes()]
    return pack_grid_model(cfg, mmr, q, np.full(4, -0.25, np.float32), np.full(4, 0.25, np.float32), mlp)


def _pan(frames: int, seed: int = 5) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(a), float(b)) for a, b in rng.normal(0.02, 0.01, (frames, 2))]


def _blob(header, packets) -> dict[int, bytes]:
    return read_track_blob(write_track_blob(header, [encode_packet(p, compact=True) for p in packets]))[1]


def test_a_run_decodes_as_per_frame_shifts_alone_in_any_order():
    """A run over frames 1-9 and one over 10-23 give every frame the placement the same shifts
    as DELTAs coding 3 give, frame by frame, sequentially, backwards and seeking at random."""
    frames, pan = 24, _pan(24)
    key = Packet(0, "key", 0, encode_grid_key(_model(), (-0.25, 0.0625), (1.5, 1.25)), GRID_KEY_CODING)
    single = [key] + [Packet(f, "delta", 0, encode_motion_payload(pan[f], None, HALF_MOTION_DELTA_CODING),
                             HALF_MOTION_DELTA_CODING) for f in range(1, frames)]
    runs = [key, Packet(1, "delta", 0, encode_shift_run(pan[1:10]), SHIFT_RUN_DELTA_CODING),
            Packet(10, "delta", 0, encode_shift_run(pan[10:]), SHIFT_RUN_DELTA_CODING)]
    a, b = _blob(_small_header(4, frames), single), _blob(_small_header(SHIFT_RUN_MINOR, frames), runs)
    assert len(b) == 3
    want = [TrackDecoder(_small_header(4, frames)).params_at(f, a)[0].origin for f in range(frames)]
    for order in (range(frames), range(frames - 1, -1, -1), np.random.default_rng(1).permutation(frames)):
        dec = TrackDecoder(_small_header(SHIFT_RUN_MINOR, frames))
        for f in order:
            placed, status = dec.params_at(int(f), b)
            assert status == "ok" and placed.origin == want[f], f
        assert dec.problems == {}


def test_seeking_into_a_shot_needs_only_the_runs_from_its_key():
    """A decoder given only the packets from a shot's KEY on (a stream cut there) decodes that
    shot's covered frames as the whole track does; the frames before the KEY await it."""
    frames, pan = 30, _pan(30, 7)
    packets = [Packet(0, "key", 0, encode_grid_key(_model(1), (0.0, 0.0), (1.5, 1.25)), GRID_KEY_CODING),
               Packet(1, "delta", 0, encode_shift_run(pan[1:12]), SHIFT_RUN_DELTA_CODING),
               Packet(12, "key", 1, encode_grid_key(_model(2), (0.125, 0.0), (1.5, 1.25)), GRID_KEY_CODING),
               Packet(13, "delta", 1, encode_shift_run(pan[13:30]), SHIFT_RUN_DELTA_CODING)]
    header = _small_header(SHIFT_RUN_MINOR, frames)
    whole = _blob(header, packets)
    cut = {f: raw for f, raw in whole.items() if f >= 5}  # cut inside shot 0's run
    full, part = TrackDecoder(header), TrackDecoder(header)
    for f in (27, 20, 12, 29, 5, 11):
        got, status = part.params_at(f, cut)
        if f < 12:
            assert status == "awaiting_key", f
        else:
            assert status == "ok" and got.origin == full.params_at(f, whole)[0].origin, f


def test_a_lost_run_conceals_its_frames_and_breaks_the_stream():
    """Without its run packet, the frames a run would have covered are missing (the placement
    holds, later frames are concealed); a progressive shot's stream breaks there, so a later
    run's stream bytes are ignored while its shifts apply; the next KEY decodes as sent."""
    from itmfilter.model.grid import pack_grid_refinement, refined_config, unpack_grid_model
    from itmfilter.track.codec import refinement_record

    model = _model(4)
    cfg = unpack_grid_model(model).config
    rng = np.random.default_rng(2)
    codes = (rng.integers(-9, 10, refined_config(cfg).grid_shape)).astype(np.int8)
    stream = refinement_record(pack_grid_refinement(np.full(4, 0.01, np.float16), codes))
    pan, frames = _pan(16, 9), 16
    packets = [Packet(0, "key", 0, encode_progressive_grid_key(model, (0.0, 0.0), (1.5, 1.25), stream[:10]),
                      PROGRESSIVE_GRID_KEY_CODING),
               Packet(1, "delta", 0, encode_shift_run(pan[1:5], stream[10:30]), SHIFT_RUN_DELTA_CODING),
               Packet(5, "delta", 0, encode_shift_run(pan[5:9], stream[30:]), SHIFT_RUN_DELTA_CODING),
               Packet(9, "delta", 0, encode_shift_run(pan[9:14]), SHIFT_RUN_DELTA_CODING),
               Packet(14, "key", 1, encode_grid_key(_model(6), (0.0, 0.0), (1.5, 1.25)), GRID_KEY_CODING),
               Packet(15, "delta", 1, encode_shift_run(pan[15:16]), SHIFT_RUN_DELTA_CODING)]
    header = _small_header(SHIFT_RUN_MINOR, frames)
    whole = _blob(header, packets)
    lost = {f: raw for f, raw in whole.items() if f != 1}
    full, dec = TrackDecoder(header), TrackDecoder(header)
    statuses = [dec.params_at(f, lost)[1] for f in range(frames)]
    assert statuses == ["ok"] + ["missing"] * 4 + ["concealed"] * 9 + ["ok"] * 2
    assert sorted(dec.problems) == [1, 2, 3, 4]
    assert full.params_at(5, whole)[0].model.config.width > cfg.width  # the record completes at 5 ...
    assert dec.params_at(5, lost)[0].model.config.width == cfg.width  # ... not once the stream broke
    kept = dec.params_at(13, lost)[0].origin  # the shifts of frames 5-13 still apply
    origin = np.array(full.params_at(13, whole)[0].origin) - np.array(full.params_at(4, whole)[0].origin)
    assert np.allclose(np.array(kept), origin, atol=1e-12)
    assert dec.params_at(15, lost)[0].origin == full.params_at(15, whole)[0].origin


def test_a_packet_on_a_covered_frame_ends_the_run_and_runs_are_grid_only():
    """The encoder never sends one, but a packet on a frame a run covers wins: the run ends there
    (a REPEAT holds the placement, the later frames without packets are missing). A run in an MLP
    shot, and one with stream bytes in a whole-model (coding 4) shot, are damaged."""
    pan = _pan(8, 3)
    header = _small_header(SHIFT_RUN_MINOR, 8)
    key = Packet(0, "key", 0, encode_grid_key(_model(), (0.0, 0.0), (1.5, 1.25)), GRID_KEY_CODING)
    packets = _blob(header, [key, Packet(1, "delta", 0, encode_shift_run(pan[1:8]), SHIFT_RUN_DELTA_CODING),
                             Packet(3, "repeat", 0, b"")])
    dec = TrackDecoder(header)
    statuses = [dec.params_at(f, packets)[1] for f in range(8)]
    assert statuses == ["ok"] * 4 + ["missing"] * 4
    assert dec.params_at(3, packets)[0].origin == dec.params_at(2, packets)[0].origin
    bad = _blob(header, [key, Packet(1, "delta", 0, encode_shift_run(pan[1:3], b"\x01"), SHIFT_RUN_DELTA_CODING)])
    assert TrackDecoder(header).params_at(1, bad)[1] == "damaged"
    assert TrackDecoder(header).params_at(2, bad)[1] == "missing"
    from itmfilter.track.codec import encode_key_payload
    from itmfilter.track.format import param_count, tensor_sizes

    sizes = tensor_sizes(header.config)
    coding, payload = encode_key_payload(np.zeros(param_count(header.config), np.float32), sizes)
    mlp = _blob(header, [Packet(0, "key", 0, payload, coding),
                         Packet(1, "delta", 0, encode_shift_run(pan[1:3]), SHIFT_RUN_DELTA_CODING)])
    dec = TrackDecoder(header)
    assert [dec.params_at(f, mlp)[1] for f in range(3)] == ["ok", "damaged", "missing"]


def test_old_grid_tracks_still_decode():
    """The 1.4 and 1.5 vectors decode as their manifests say with a 1.6 reader (as in
    tests/test_grid_track.py); their DELTAs (codings 1, 3, 4) cover no other frame."""
    for manifest in ("grid_manifest.json", "grid_progressive_manifest.json"):
        for entry in json.loads((VECTORS / manifest).read_text())["vectors"]:
            header, packets = read_track_blob((VECTORS / entry["file"]).read_bytes())
            assert header.version[1] in (4, 5)
            placements = np.load(VECTORS / entry["placements"])
            dec = TrackDecoder(header)
            for f in range(len(placements)):
                placed, status = dec.params_at(f, packets)
                assert status == entry["statuses"][f]
                assert np.array_equal(np.array([*placed.origin, *placed.half]), placements[f])
            assert covered_frames(packets) == set()
            deltas = [p for p in map(decode_packet, packets.values()) if p.kind == "delta"]
            assert deltas and all(p.coding != SHIFT_RUN_DELTA_CODING for p in deltas)
    assert GRID_REFINE_DELTA_CODING != SHIFT_RUN_DELTA_CODING


# --------------------------------------------------------------------------- the encoder under a cap


def test_run_frames_bytes_counts_the_framing_given_back():
    from itmfilter.encode.rate import run_frames_bytes

    # 47 frames after a KEY in runs of 24: two runs (7-byte head, 2-byte run head, 4 bytes a
    # frame), 45 frames without a sample giving back their 28-byte reserve
    assert run_frames_bytes(47, 7, 24, 28) == 2 * 9 + 4 * 47 - 28 * 45
    assert run_frames_bytes(47, 7, 24, 0, shifts=False) == 18
    assert run_frames_bytes(0, 7, 24, 28) == 0


SIZE, FPS, FRAMES = (96, 54), 24, 72


@pytest.mark.parametrize("kbps,carriage", [(10.0, "sei"), (16.0, "sei"), (16.0, "track")])
def test_grid_encode_with_runs_keeps_the_cap_and_decodes_every_frame(two_shot_encode, kbps, carriage):
    """``--model grid`` sends shift runs (format 1.6): far fewer packets than frames, every frame
    decoded (none missing), the cap held over the file and every window as the file carries it."""
    from itmfilter.encode.rate import DEFAULT_BUFFER_SECONDS, check_rate
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.provider import FrameNetworks

    out, report = two_shot_encode(max_kbps=kbps, model="grid", sidecar=carriage, **FAST)
    track = load_track(out)
    # runs, scene residuals, the look-ahead, 1.10's header, 1.11's compact models
    assert track.header.version == (1, COMPACT_MODEL_MINOR)
    sizes = carried_bytes(out, track)
    assert sum(sizes) == report.metadata_bytes
    assert sum(sizes) <= kbps * 1000 / 8 * FRAMES / FPS
    assert check_rate(sizes, kbps, FPS) == []
    assert report.worst_window_kbps <= (1 + DEFAULT_BUFFER_SECONDS) * kbps + 1e-9
    assert not any("not kept" in n for n in report.notes)  # the encoder's own check agrees
    packets = [decode_packet(r) for r in track.packets.values()]
    assert len(packets) < FRAMES // 3 and report.packets.get("covered", 0) == FRAMES - len(packets)
    assert report.frames == FRAMES  # every frame of the video, not only those with a packet
    assert {p.coding for p in packets if p.kind == "delta"} <= {SHIFT_RUN_DELTA_CODING, AHEAD_RUN_DELTA_CODING}
    nets = FrameNetworks(out)
    assert all(isinstance(nets(i), PlacedGrid) for i in range(FRAMES)) and nets.damaged == 0
    from itmfilter.track.summary import summarise_track

    assert summarise_track(out)["packets"]["missing"] == 0  # covered frames are not reported missing

    # benchmarks/track_overhead.py counts the run's covered frames and its shifts as motion.
    spec = importlib.util.spec_from_file_location("track_overhead", ROOT / "benchmarks" / "track_overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    parts = overhead.breakdown(out)
    assert parts["frames"] == FRAMES and parts["samples"] == len(packets)
    assert sum(parts["as_carried"].values()) == sum(sizes)
    runs = [p for p in packets if p.kind == "delta" and p.coding in RUN_CODINGS]
    assert parts["as_carried"]["shifts"] == sum(len(p.payload) - len(decode_shift_run(p)[1]) for p in runs) > 0


def test_runs_give_the_refinement_the_framing_at_16_kbps(two_shot_master, tmp_path):
    """At 16 kbit/s in SEI the same clip's refinement streams get more bytes with shift runs than
    with a packet per frame (format 1.5), and the decoded frames score no worse."""
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.quality.metrics import psnr_pu21
    from itmfilter.track.carriage import load_track
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    ref = [n for _, n in read_hdr_frames(two_shot_master)]
    cells, scores = {}, {}
    for runs in (True, False):
        out = tmp_path / f"sdr-{runs}.mp4"
        encode_video(two_shot_master, out, options=VideoEncodeOptions(max_kbps=16.0, model="grid", shift_runs=runs,
                                                                      scene_residual=False, look_ahead=False, **FAST),
                     quiet=True)
        assert load_track(out).header.version == (1, SHIFT_RUN_MINOR if runs else 5)
        nets = FrameNetworks(out)
        placed = [nets(i) for i in range(FRAMES)]
        cells[runs] = sum(p.model.config.width * p.model.config.height for p in placed)
        sdrs = [s for _, s in read_sdr_frames(out)]
        scores[runs] = float(np.mean([psnr_pu21(r, np.asarray(eotf_st2084(p.predict_pq(s)), np.float32))
                                      for r, p, s in zip(ref, placed, sdrs)]))
    assert cells[True] >= cells[False], cells
    assert scores[True] >= scores[False] - 0.1, scores
