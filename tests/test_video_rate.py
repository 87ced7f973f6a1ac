"""``--max-kbps`` is a promise: real encodes of small real-picture masters (pans across the
packaged HDR photograph, cut every 1 or 2 s) stay within the cap over the whole track and
within the buffer model (sidecar/SPEC.md section 4) over every window of frames."""

import pytest

from itmfilter.encode.rate import DEFAULT_BUFFER_SECONDS, RateBudget, check_rate, plan_rate, window_bytes
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.errors import ItmError
from itmfilter.track.carriage import carried_bytes, load_track
from itmfilter.track.codec import INIT_KEY_CODING, TrackDecoder
from itmfilter.track.format import COMPACT_PACKET_TAG, decode_packet
from itmfilter.track.sei import sei_nal_bytes

SIZE, FPS, FRAMES = (96, 54), 24, 72
SHOTS = (24, 48)  # a 1 s shot, then a 2 s shot
FAST = dict(first_steps=30, warm_steps=5, preset="ultrafast", refresh_ratio=1.0, model="mlp")


@pytest.fixture(scope="module")
def master(two_shot_master):
    """The shared two-shot master (tests/conftest.py): SIZE, FPS, SHOTS above describe it."""
    return two_shot_master


def _sizes(out, carriage):
    """The bytes each frame carries in the file itself (SEI samples, data-track samples)."""
    track = load_track(out)
    sizes = carried_bytes(out, track)
    assert len(sizes) == FRAMES
    raws = [track.packets[i] for i in range(FRAMES)]
    if carriage == "sei":  # the compressed header on the first KEY, an 8-byte reference on the
        # other, each sample counted as the SEI NAL unit (and length) it travels in
        keys = [i for i in range(FRAMES) if decode_packet(raws[i]).kind == "key"]
        assert sizes[0] == sei_nal_bytes(track.header.to_compressed_bytes() + raws[0])
        assert all(sizes[i] == sei_nal_bytes(track.header.reference().to_bytes() + raws[i]) for i in keys[1:])
        assert all(sizes[i] == sei_nal_bytes(raws[i]) for i in range(FRAMES) if i not in keys)
        assert all(sizes[i] >= len(raws[i]) + 24 for i in range(FRAMES))  # UUID and framing counted
    return track, sizes


@pytest.mark.parametrize("kbps,carriage,buffer", [(8.0, "track", DEFAULT_BUFFER_SECONDS), (12.0, "sei", DEFAULT_BUFFER_SECONDS),
                                                  (16.0, "sei", DEFAULT_BUFFER_SECONDS), (32.0, "sei", DEFAULT_BUFFER_SECONDS),
                                                  (16.0, "sei", 1.0)])
def test_every_cap_holds_over_the_file_and_every_window(master, tmp_path, kbps, carriage, buffer):
    """SEI (the default carriage) sends the compressed header with the first KEY and a
    reference with the one a second later (format 1.3), and the budget counts both and each
    sample's SEI NAL framing (about 5.4 kbit/s at 24 fps): 12 kbit/s with a 1 s shot holds.
    A smaller buffer than the default (``--buffer-seconds 1``) is kept as tightly."""
    out = tmp_path / "sdr.mp4"
    options = VideoEncodeOptions(max_kbps=kbps, sidecar=carriage, buffer_seconds=buffer, **FAST)
    report = encode_video(master, out, options=options, quiet=True)
    assert report.carriage == carriage
    assert report.shots == len(SHOTS)
    track, sizes = _sizes(out, report.carriage)
    assert sum(sizes) == report.metadata_bytes
    assert all(raw[0] == COMPACT_PACKET_TAG for raw in track.packets.values())  # format 1.3 packets
    assert not any("outgrew" in n for n in report.notes)
    assert sum(sizes) <= kbps * 1000 / 8 * FRAMES / FPS  # the whole track
    assert check_rate(sizes, kbps, FPS, buffer) == []  # every window: n*r + B
    # the worst 1 s window, as reported, is within cap x (1 s + the buffer)
    assert report.worst_window_kbps <= (1 + buffer) * kbps + 1e-9
    assert abs(report.worst_window_kbps - 8 * window_bytes(sizes, FPS) / 1000) < 1e-9
    packets = [decode_packet(track.packets[i]) for i in range(FRAMES)]
    keys = [p for p in packets if p.kind == "key"]
    assert len(keys) >= report.shots and all(p.coding == INIT_KEY_CODING for p in keys)
    dec = TrackDecoder(track.header)
    assert all(dec.params_at(i, track.packets)[1] == "ok" for i in range(FRAMES))


def test_check_rate_finds_a_burst_and_an_overrun():
    # 16 kbit/s at 24 fps: r = 83.3 B a frame, B = 2000 B; 48 frames may cost 4000 B
    assert check_rate([80] * 48, 16.0, 24, 1.0) == []
    burst = [2100] + [24] * 47  # a key beyond r + B
    assert any("frame 0" in p for p in check_rate(burst, 16.0, 24, 1.0))
    assert check_rate([1500] + [50] * 47, 16.0, 24, 1.0) == []  # borrowed within B, repaid (3850 B)
    assert any("whole track" in p for p in check_rate([1500] + [60] * 47, 16.0, 24, 1.0))  # 4320 B
    assert any("frame 30" in p for p in check_rate([24] * 30 + [2200] + [24] * 17, 16.0, 24, 1.0))  # a late burst


def test_plan_carries_a_segment_deficit_into_the_next_and_budgets_follow_it():
    # 16 kbit/s at 24 fps: r = 83.3 B a frame, B = 2000 B. Segments of 24, 6 and 30 frames; the
    # 1 KB header with the first key makes segment 0 short of its cheapest form (1000 + 280 +
    # 23 x 24 = 1832 B < 2000: it is not), so try the 6-frame one: 280 + 5 x 24 = 400 < 500.
    plan = plan_rate(16.0, 24.0, [24, 6, 30], min_key_bytes=256, header_bytes=1000)
    assert plan.levels == (0.0, 0.0, 0.0, 0.0) and plan.shortfall <= 0
    # at 8 kbit/s (41.7 B a frame) the first segment cannot pay header + key + heads: the
    # next one starts owing the rest and repays it (with its own surplus of 592 B, in part)
    plan = plan_rate(8.0, 24.0, [24, 48, 48], min_key_bytes=256, header_bytes=1000)
    owed = 1000 + 280 + 23 * 24 - 24 * plan.per_frame  # 832 B
    left = owed - (48 * plan.per_frame - 280 - 47 * 24)  # 240 B after segment 1
    assert abs(plan.levels[1] - owed) < 1e-9 and abs(plan.levels[2] - left) < 1e-9
    assert plan.levels[3] == 0.0 and plan.shortfall <= 0
    first = RateBudget.for_segment(plan, 0, 0, 24, 96)
    second = RateBudget.for_segment(plan, 1, 24, 72, 96)
    # segment 0 may spend its allowance plus what it leaves owed; segment 1 its allowance
    # less what it repays, and its key only what the bucket still holds
    assert first.key_budget(0, extra=1000) == int(min(24 * plan.per_frame + owed - 23 * 24,
                                                       plan.per_frame + plan.buffer) - 1000 - 24)
    assert second.key_budget(24) == int(min(48 * plan.per_frame + left - owed - 47 * 24,
                                            plan.per_frame + plan.buffer - owed) - 24)
    assert plan_rate(8.0, 24.0, [24, 24, 24], min_key_bytes=256, header_bytes=1000).shortfall > 0
    with pytest.raises(ItmError, match="buffer-seconds"):
        VideoEncodeOptions(buffer_seconds=-1)
    tiny = plan_rate(4.0, 24.0, [6] * 10, min_key_bytes=17)
    assert tiny.shortfall > 0  # 20.8 B a frame cannot pay 24-byte heads


def test_a_shift_run_plan_lets_a_key_borrow_the_caps_own_buffer():
    """A 1080p24 grid track at 8 kbit/s in SEI: the packets are planned on the cap less the
    framing reserve (2.62 kbit/s, B 328 B), but the segments borrow from the cap's own B
    (1,000 B). A first KEY of 265 B with its 595-byte header does not fit the smaller bucket,
    and a plan that checked it there dropped the motion shifts of the whole track."""
    from functools import partial

    from itmfilter.encode.rate import run_frames_bytes

    shots = [48] * 5
    nonkey = partial(run_frames_bytes, head_bytes=7, run_frames=24, framing=28, shifts=True)
    args = dict(per_packet=4, min_key_bytes=256, segment_headers=(595, 8, 595, 8, 595), head_bytes=7,
                key_head_bytes=9, bare_key_bytes=17, nonkey_bytes=nonkey)
    assert plan_rate(2.624, 24.0, shots, **args).shortfall > 0
    plan = plan_rate(2.624, 24.0, shots, key_buffer=1000.0, **args)
    assert plan.shortfall <= 0 and plan.levels == (0.0,) * 6
    assert plan.buffer == plan_rate(2.624, 24.0, shots, **args).buffer  # the lanes' bucket is unchanged
    assert plan_rate(2.624, 24.0, shots, key_buffer=800.0, **args).shortfall > 0  # 595 + 265 - 13.7 > 800


def test_budget_keeps_the_bucket_within_the_buffer():
    b = RateBudget(16.0, 24.0, {48}, 96, 48, buffer_seconds=1.0)  # one 48-frame segment, B = 2000 B
    assert b.key_budget(0) == int(min(48 * b.per_frame - 47 * 24, b.per_frame + b.buffer)) - 24
    b.key_sent(0, 2000)
    for f in range(1, 48):
        b.next_frame()
        assert b.affordable() + 24 <= b.room()
        b.record(f, 24 + b.affordable())
        b.spend(b.affordable())
    assert b.level <= 1e-9  # repaid by the end


def test_saved_tokens_never_leave_the_bucket_full_at_a_segment_end():
    """Tokens saved over a stretch of shifts cannot be spent so late that the bucket is still
    above the level planned for the next segment's start (where its KEY borrows again)."""
    b = RateBudget(8.0, 24.0, {48}, 96, 48, per_packet=4, head_bytes=7, key_head_bytes=9, buffer_seconds=1.0)  # r = 41.7 B, B = 1000 B
    b.key_sent(0, 300)
    for f in range(1, 48):
        b.next_frame()
        if f < 40:  # shifts alone: the tokens pile up
            b.record(f, 11)
            continue
        spend = b.affordable()
        b.record(f, 11 + spend)
        b.spend(spend)
        sizes_left = 47 - f
        assert b.level <= b.end_level + sizes_left * (b.per_frame - 11) + 1e-9
    assert b.level <= 1e-9  # empty where the next segment is planned to start empty


def test_released_tokens_are_paced_by_the_bucket_and_keep_the_promise():
    """``release`` (progressive grid shots) offers the segment's spare at once: the frames after
    a KEY that filled the bucket may then send as much as it drains each frame, over twice
    the evenly spread share, and the segment still keeps the window bound, its total, and ends
    with the bucket empty."""
    b = RateBudget(16.0, 24.0, {48}, 96, 48, per_packet=4, head_bytes=7, key_head_bytes=9, buffer_seconds=1.0)  # r = 83.3 B, B = 2000 B
    even = RateBudget(16.0, 24.0, {48}, 96, 48, per_packet=4, head_bytes=7, key_head_bytes=9, buffer_seconds=1.0)
    key = b.key_budget(0) + 9
    sizes = [key]
    for budget in (b, even):
        budget.key_sent(0, key)
    b.release()
    even.next_frame()
    b.next_frame()
    assert b.affordable() > 2 * even.affordable() > 0  # 72 B against 29
    for f in range(1, 48):
        if f > 1:
            b.next_frame()
        spend = b.affordable()
        sizes.append(11 + spend)
        b.record(f, 11 + spend)
        b.spend(spend)
    assert check_rate(sizes, 16.0, 24.0, 1.0) == []
    assert sum(sizes) >= 48 * b.per_frame - 48  # the spare is spent (to a byte a frame of rounding)
    assert b.level <= 1e-9


@pytest.mark.parametrize("kbps,carriage,says", [(2.0, "track", "at least --max-kbps"), (2.0, "sei", "SEI framing"),
                                                (8.0, "sei", "at least --max-kbps")])
def test_too_low_cap_is_refused_with_the_minimum(master, tmp_path, kbps, carriage, says):
    out = tmp_path / "x.mp4"
    with pytest.raises(ItmError, match=says):
        encode_video(master, out, options=VideoEncodeOptions(max_kbps=kbps, sidecar=carriage, **FAST), quiet=True)
    assert not out.exists()


def test_rate_benchmark_merge_keeps_the_later_run_of_a_cap(tmp_path):
    """``benchmarks/video_rate.py --merge``: a cap re-run with a newer encoder replaces the
    older row (files are read in order), other caps and the gain maps are kept, and the best
    gain map is chosen for the new row's rate."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    gain = [{"codec": "libx265", "scale": 4, "channels": 3, "crf": c, "kbit_s": k, "pu21_psnr": q, "delta_e_itp": 2.0}
            for c, k, q in ((30, 20.0, 38.0), (25, 40.0, 40.0))]
    row = dict(worst_1s_kbit_s=1.0, delta_e_itp=2.0, keys={}, packets={}, notes=[])
    old = {"2s shots, local": {"mlp": [dict(row, cap=16.0, kbit_s=14.0, pu21_psnr=39.0),
                                        dict(row, cap=32.0, kbit_s=25.0, pu21_psnr=41.0)], "gain": gain, "refs": {}}}
    new = {"2s shots, local": {"mlp": [dict(row, cap=32.0, kbit_s=30.0, pu21_psnr=41.5)], "gain": [], "refs": {}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    subprocess.run([sys.executable, str(root / "benchmarks" / "video_rate.py"), "--merge", str(tmp_path / "old.json"),
                    str(tmp_path / "new.json"), "--out", str(tmp_path / "m.md")], check=True, capture_output=True)
    rows = json.loads((tmp_path / "m.json").read_text())["2s shots, local"]["mlp"]
    assert [(r["cap"], r["kbit_s"]) for r in rows] == [(16.0, 14.0), (32.0, 30.0)]
    assert rows[1]["best_gain"]["kbit_s"] == 20.0 and "+3.50" in (tmp_path / "m.md").read_text()


def test_rate_benchmark_finds_a_gain_map_tracks_costliest_second():
    """``benchmarks/video_rate.py``'s worst 1 s window of a gain-map track: the costliest 24
    packets in decode order, a key at a cut included, as the weight track's report counts its own."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from video_rate import worst_window_kbps

    sizes = [100] * 48 + [5000] + [100] * 47  # 4 s at 24 fps, a 5,000-byte key at the second cut
    assert worst_window_kbps(sizes) == pytest.approx(8 * (5000 + 23 * 100) / 1000)
    assert worst_window_kbps([100] * 12) == pytest.approx(8 * 100 * 24 / 1000)  # shorter than 1 s: its rate
    assert worst_window_kbps([]) == 0.0


def test_rate_benchmark_reads_the_gain_map_front_between_its_points():
    """``benchmarks/video_rate.py``'s interpolated margin: the front (each map better than every
    cheaper one) read in log rate between the points around a track's rate; a map off the front
    is not used, and a rate outside the front has no reading."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from video_rate import front_at

    gains = [{"kbit_s": k, "pu21_psnr": q} for k, q in ((20.0, 38.0), (30.0, 37.0), (40.0, 40.0))]
    assert front_at(gains, 800 ** 0.5) == pytest.approx(39.0)  # halfway in log rate from 20 to 40
    assert front_at(gains, 20.0) == pytest.approx(38.0)
    assert front_at(gains, 10.0) is None and front_at(gains, 50.0) is None


def test_the_cli_defaults_to_the_encoders_buffer():
    """``itmfilter encode`` states its default buffer in its own signature (typer reads it there):
    it must be the encoder's, which the SPEC's promise and the README quote."""
    import inspect

    from itmfilter import cli

    assert inspect.signature(cli.encode).parameters["buffer_seconds"].default == DEFAULT_BUFFER_SECONDS
    assert VideoEncodeOptions().buffer_seconds == DEFAULT_BUFFER_SECONDS == 2.0
