"""The look-ahead (format 1.8, KEY and DELTA coding 6): a shot's tail carries the first bytes of
the next shot's refinement stream. The plan, the driver's move of the bytes into the lane, the
decoder (random access and sequential alike, a lost lane breaking only the receiving shot's
stream), and a real encode under a cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gridfast import FAST

from itmfilter.encode.rate import AHEAD_MIN_BYTES, lane_bytes, plan_ahead, plan_rate, run_frames_bytes
from itmfilter.encode.segments import place_ahead
from itmfilter.track.codec import (
    AHEAD_GRID_KEY_CODING,
    AHEAD_RUN_DELTA_CODING,
    PROGRESSIVE_GRID_KEY_CODING,
    SHIFT_RUN_DELTA_CODING,
    decode_shift_run,
    encode_ahead_grid_key,
    encode_shift_run,
    gather_ahead,
    split_ahead_grid_key,
)
from itmfilter.track.format import Packet, TrackFormatError, decode_packet, encode_packet

LANE_BUFFER = 1.0
"""The rate buffer (s) these tests encode and plan with: a lane carries a shot's stream only where
its KEY cannot hold it within the buffer, and on this small clip the default 2 s buffer lets the
KEYs hold it all, so the lanes are exercised at 1 s (the bound the look-ahead was built for)."""


def test_the_plan_gives_each_shot_what_the_tail_before_it_can_spare():
    """2 s shots at 32 kbit/s: no ahead bytes for the first shot, half the spare for the second
    (its sender received none), up to the buffer for the later ones; none for a segment that
    does not open a shot; the lane a sender reserves covers what its receiver may use."""
    fps, cap = 24.0, 32.0
    frames = [48, 48, 48, 48, 24]
    nonkey = lambda n: run_frames_bytes(n, 9, 24, 0, shifts=True)  # noqa: E731
    plan = plan_rate(cap, fps, frames, head_bytes=9, key_head_bytes=9, nonkey_bytes=nonkey, buffer_seconds=LANE_BUFFER)
    aheads = plan_ahead(plan, frames, [True, True, True, False, True], nonkey, 15, 4)
    r, buffer = plan.per_frame, plan.buffer
    assert aheads[0] == 0 and aheads[3] == 0
    spare = 48 * r - (r + buffer) - nonkey(47) - 12 * 15
    assert aheads[1] == pytest.approx(spare / 2 / 1.02 - 17, abs=1)
    assert aheads[2] == pytest.approx(min(buffer, spare) / 1.02 - 17, abs=1)
    assert aheads[4] == aheads[1]  # the segment before it received nothing (it opens no shot): half its spare
    assert all(a == 0 or a >= AHEAD_MIN_BYTES for a in aheads)
    assert all(lane_bytes(a) >= a * 1.02 + 16 for a in aheads if a)
    assert lane_bytes(0) == 0


def _run(frame: int, shot: int, coding: int, rest: bytes = b"") -> bytes:
    return encode_packet(Packet(frame, "delta", shot, encode_shift_run([(0.5, 0.0)] * 2, rest), coding), compact=True)


def _key(frame: int, shot: int, body: bytes, ahead: bytes = b"") -> bytes:
    if not ahead:
        return encode_packet(Packet(frame, "key", shot, body, PROGRESSIVE_GRID_KEY_CODING), compact=True)
    payload = encode_ahead_grid_key(len(ahead), body) + ahead
    return encode_packet(Packet(frame, "key", shot, payload, AHEAD_GRID_KEY_CODING), compact=True)


def test_the_driver_moves_a_receivers_ahead_bytes_into_the_senders_lane():
    """The receiver's KEY ends in its ahead bytes until the driver moves them, in order, into the
    lane's stand-ins (filled from the first, the rest emptied); the decoder then gathers exactly
    them. A lane too short for what the KEY announces is refused."""
    ahead = bytes(range(1, 201))
    packets = {0: _key(0, 0, b"model-0"), 1: _run(1, 0, SHIFT_RUN_DELTA_CODING, b"own"),
               3: _run(3, 0, AHEAD_RUN_DELTA_CODING, b"\xaa" * 150), 5: _run(5, 0, AHEAD_RUN_DELTA_CODING, b"\xbb" * 150),
               7: _run(7, 0, AHEAD_RUN_DELTA_CODING, b"\xcc" * 40), 9: _key(9, 1, b"model-1", ahead)}
    out = place_ahead(packets)
    assert out[0] == packets[0] and out[1] == packets[1]
    rests = [decode_shift_run(decode_packet(out[f]))[1] for f in (3, 5, 7)]
    assert rests == [ahead[:150], ahead[150:], b""]
    key = decode_packet(out[9])
    assert split_ahead_grid_key(key.payload) == (200, b"model-1")
    frames = sorted(out)
    assert gather_ahead(key, out, frames) == ahead
    lost = {f: b for f, b in out.items() if f != 3}
    assert gather_ahead(key, lost, sorted(lost)) is None  # a lane packet lost: not the count announced
    damaged = dict(out)
    damaged[5] = damaged[5][:-1] + bytes([damaged[5][-1] ^ 1])
    assert gather_ahead(key, damaged, sorted(damaged)) is None
    # a lane with no receiver (the next shot's stream was short) is emptied
    alone = place_ahead({f: b for f, b in packets.items() if f != 9})
    assert all(decode_shift_run(decode_packet(alone[f]))[1] == b"" for f in (3, 5, 7))
    short = dict(packets)
    short[7] = _run(7, 0, SHIFT_RUN_DELTA_CODING)
    short[5] = _run(5, 0, AHEAD_RUN_DELTA_CODING, b"\xbb" * 10)
    with pytest.raises(ValueError, match="lane holds"):
        place_ahead(short)
    orphan = {f: b for f, b in packets.items() if f not in (3, 5, 7)}  # the sender coded without a lane
    with pytest.raises(ValueError, match="has no lane"):
        place_ahead(orphan)


def test_a_key_coding_6_is_refused_as_the_spec_says():
    with pytest.raises(TrackFormatError, match="ahead count"):
        split_ahead_grid_key(b"\x01\x00")
    for count in (0, (1 << 22) + 1):
        with pytest.raises(TrackFormatError, match="announces"):
            split_ahead_grid_key(count.to_bytes(4, "little") + b"model")
    with pytest.raises(ValueError):
        encode_ahead_grid_key(0, b"model")


@pytest.fixture(scope="module")
def ahead_encode(two_shot_encode):
    """16 kbit/s in SEI (what ``--sidecar auto`` gives an .mp4): the encode tests/test_shift_run.py reads too."""
    return two_shot_encode(max_kbps=16.0, model="grid", sidecar="sei", buffer_seconds=LANE_BUFFER, **FAST)


def test_an_encode_under_a_cap_sends_the_second_shots_stream_ahead_and_keeps_the_cap(two_shot_master, ahead_encode):
    from itmfilter.encode.rate import check_rate
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.codec import COMPACT_MODEL_MINOR

    out, report = ahead_encode
    track = load_track(out)
    # the look-ahead (1.8) with 1.10's header and 1.11's binary16 model fields
    assert track.header.version == (1, COMPACT_MODEL_MINOR)
    packets = {f: decode_packet(b) for f, b in track.packets.items()}
    keys = [p for p in packets.values() if p.kind == "key"]
    assert [p.coding == AHEAD_GRID_KEY_CODING for p in keys] == [False, True]
    assert report.packets.get("run+ahead", 0) >= 1
    count, _ = split_ahead_grid_key(keys[1].payload)
    assert gather_ahead(keys[1], track.packets, sorted(track.packets)) is not None and count > 0
    sizes = carried_bytes(out, track)
    assert sum(sizes) <= 16.0 * 1000 / 8 * len(sizes) / 24 and check_rate(sizes, 16.0, 24, LANE_BUFFER) == []
    assert report.worst_window_kbps <= (1 + LANE_BUFFER) * 16.0 + 1e-9 and not report.notes


def test_random_access_and_sequential_decoding_agree_and_a_lost_lane_breaks_only_the_next_shot(ahead_encode):
    from itmfilter.media.video import read_sdr_frames
    from itmfilter.track.carriage import load_track
    from itmfilter.track.codec import TrackDecoder

    out, _ = ahead_encode
    track = load_track(out)
    sdr = dict(read_sdr_frames(out))
    n = len(sdr)
    runs = {f: decode_packet(b) for f, b in track.packets.items() if decode_packet(b).kind == "delta"}
    lane = sorted(f for f, p in runs.items() if p.coding == AHEAD_RUN_DELTA_CODING and decode_shift_run(p)[1])
    second = next(f for f, b in track.packets.items() if decode_packet(b).kind == "key" and f > 0)
    assert lane and max(lane) < second

    def frames(packets, order):
        dec = TrackDecoder(track.header)
        got = {}
        for i in order:
            params, status = dec.params_at(i, packets)
            got[i] = (params.predict_pq(sdr[i][::4, ::4]), status)
        return got

    seq = frames(track.packets, range(n))
    rnd = frames(track.packets, np.random.default_rng(0).permutation(n).tolist())
    for i in range(n):
        assert seq[i][1] == rnd[i][1] == "ok"
        np.testing.assert_array_equal(seq[i][0], rnd[i][0])
    lost = {f: b for f, b in track.packets.items() if f != lane[0]}
    seq_lost = frames(lost, range(n))
    rnd_lost = frames(lost, np.random.default_rng(1).permutation(n).tolist())
    for i in range(n):
        np.testing.assert_array_equal(seq_lost[i][0], rnd_lost[i][0])
        assert seq_lost[i][1] == rnd_lost[i][1]
    # the second shot keeps its KEY's model, concealed, and differs from the whole stream's
    assert all(seq_lost[i][1] == "concealed" for i in range(second, n))
    assert any(not np.array_equal(seq_lost[i][0], seq[i][0]) for i in range(second, n))


@pytest.mark.parametrize("name", ["track_grid_ahead.bin", "track_grid_ahead_lost.bin"])
def test_ahead_vectors_decode_to_expected_pixels_cells_and_placements(name):
    """sidecar/vectors/track_grid_ahead*.bin (SPEC section 10): the ahead bytes gathered from the
    previous shot's lane (the grid refined at 9), or, with a lane packet lost, the stream broken
    at the KEY; random access agrees with the frame-by-frame walk."""
    from gridvectors import check_grid_vector

    from itmfilter.track.codec import AHEAD_MINOR, TrackDecoder

    dec, packets, placed = check_grid_vector("grid_ahead_manifest.json", name, AHEAD_MINOR)
    fresh = TrackDecoder(dec.header)
    for f in (9, 8, 5, 9):
        again, _ = fresh.params_at(f, packets)
        assert again.model.config == placed[f].model.config and again.origin == placed[f].origin


@pytest.fixture(scope="module")
def long_first_master(tmp_path_factory):
    """The two-shot clip with its shots swapped: a 2 s shot then a 1 s one, so the first shot's
    tail has room for a lane the second shot, whose stream fits its own KEY at 128 kbit/s, does
    not need."""
    from conftest import _two_shot_frames

    from itmfilter.data.testmedia import make_master_from_arrays

    frames = list(_two_shot_frames())
    path = tmp_path_factory.mktemp("long-first") / "master.mkv"
    make_master_from_arrays(path, frames[24:] + frames[:24], fps=24, codec="hevc", peak_nits=1000)
    return path


def test_a_lane_its_receiver_leaves_unused_goes_back_to_the_sender(long_first_master, tmp_path, monkeypatch):
    """The look-ahead's second pass (``release_unused_lanes``): the plan gives the second shot a
    lane it does not take, so the first shot is encoded again with the lane cut to what the
    second shot's KEY announces; the file keeps the cap and every window and decodes every frame.
    (What it gains: the 1080p rate benchmark, docs/video-rate-1080p.md.)"""
    from itmfilter.encode import video
    from itmfilter.encode.rate import check_rate
    from itmfilter.track.carriage import carried_bytes, load_track
    from itmfilter.track.provider import FrameNetworks

    torch.set_num_threads(1)
    real, seen = video.release_unused_lanes, []

    def observed(job, segments, packets, quiet=False):  # the real pass; its input and result kept
        out, aheads = real(job, segments, packets, quiet=quiet)
        seen.append((job.aheads, aheads, packets, out))
        return out, aheads

    monkeypatch.setattr(video, "release_unused_lanes", observed)
    kbps, out = 128.0, tmp_path / "sdr.mp4"
    report = video.encode_video(long_first_master, out, options=video.VideoEncodeOptions(
        max_kbps=kbps, model="grid", buffer_seconds=LANE_BUFFER, **FAST), quiet=True)
    (planned, final, first, second), = seen
    track = load_track(out)
    keys = [p for p in (decode_packet(b) for b in track.packets.values()) if p.kind == "key"]
    announced = split_ahead_grid_key(keys[1].payload)[0] if keys[1].coding == AHEAD_GRID_KEY_CODING else 0
    assert lane_bytes(planned[1]) - lane_bytes(final[1]) >= 256 and final[1] == announced
    first_shot = [f for f in set(first) | set(second) if f < keys[1].frame]
    assert any(first.get(f) != second.get(f) for f in first_shot)  # the sender was encoded again
    assert all(first[f] == second[f] for f in first if f >= keys[1].frame)  # the receiver as it was
    sizes = carried_bytes(out, track)
    assert sum(sizes) <= kbps * 1000 / 8 * len(sizes) / 24 and check_rate(sizes, kbps, 24, LANE_BUFFER) == []
    assert not report.notes and report.worst_window_kbps <= (1 + LANE_BUFFER) * kbps + 1e-9
    nets = FrameNetworks(out)
    assert all(nets(i) is not None for i in range(len(sizes))) and nets.damaged == 0


def test_a_key_may_leave_its_whole_stream_to_the_ahead_bytes(ahead_encode):
    """The encoder may put a receiver's first stream bytes in the ahead bytes instead of its KEY
    (where the KEY's bytes would keep the lane it owes the next shot from getting through): a KEY
    coding 6 that carries only its model, its stream's first bytes moved to the front of the
    lane, decodes to the same frames."""
    from itmfilter.media.video import read_sdr_frames
    from itmfilter.model.grid import grid_model_length
    from itmfilter.track.carriage import load_track
    from itmfilter.track.codec import _GRID_PLACEMENT, TrackDecoder

    out, _ = ahead_encode
    track = load_track(out)
    second = next(f for f, b in track.packets.items() if decode_packet(b).kind == "key" and f > 0)
    key = decode_packet(track.packets[second])
    count, body = split_ahead_grid_key(key.payload)
    end = _GRID_PLACEMENT.size + grid_model_length(body[_GRID_PLACEMENT.size:])
    own = body[end:]
    assert own, "the KEY carries stream bytes of its own"
    lane = sorted(f for f, b in track.packets.items()
                  if (p := decode_packet(b)).coding == AHEAD_RUN_DELTA_CODING and decode_shift_run(p)[1])
    moved = dict(track.packets)
    moved[second] = encode_packet(Packet(key.frame, "key", key.shot, encode_ahead_grid_key(count + len(own), body[:end]),
                                         AHEAD_GRID_KEY_CODING), compact=True)
    first = decode_packet(track.packets[lane[0]])
    shifts, rest = decode_shift_run(first)
    moved[lane[0]] = encode_packet(Packet(first.frame, "delta", first.shot, encode_shift_run(shifts, own + rest),
                                          AHEAD_RUN_DELTA_CODING), compact=True)
    sdr = dict(read_sdr_frames(out))

    def frames(packets):
        dec = TrackDecoder(track.header)
        return [dec.params_at(i, packets) for i in range(second, len(sdr))]

    for (a, sa), (b, sb) in zip(frames(track.packets), frames(moved)):
        assert sa == sb == "ok"
        np.testing.assert_array_equal(a.predict_pq(sdr[second][::4, ::4]), b.predict_pq(sdr[second][::4, ::4]))
