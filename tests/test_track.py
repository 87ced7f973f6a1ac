"""The weight track (itmfilter.track): packets, closed-loop coding, random access,
damage, versioning, the sidecar schema and the conformance vectors."""

import importlib.util
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.model.net import CONFIGS, ITMNet, ModelConfig
from itmfilter.track import (
    Packet,
    TrackDecoder,
    TrackEncoder,
    TrackFormatError,
    TrackHeader,
    decode_packet,
    encode_packet,
    flatten_state,
    param_count,
    read_track_blob,
    track_from_json,
    track_to_json,
    unflatten,
    write_track_blob,
)
from itmfilter.track.format import tensor_sizes

ROOT = Path(__file__).resolve().parents[1]
SIDECAR = ROOT / "sidecar"
PAPER = CONFIGS["paper"]
SMALL = ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8))


def _header(config=PAPER, **kw):
    kw.setdefault("hdr10", HDR10Metadata.p3_d65(1000.0, 0.0001, 1000.0, 400.0))
    return TrackHeader(config, (24, 1), 500, 1920, 1080, **kw)


def _base_params(config=PAPER, seed=0):
    torch.manual_seed(seed)
    net = ITMNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return flatten_state(net.state_dict())


def _walk(n, std, seed=1, config=PAPER, hold=()):
    rng = np.random.default_rng(seed)
    w = _base_params(config)
    out = []
    for f in range(n):
        if f and f not in hold:
            w = (w + rng.normal(0, std, w.shape)).astype(np.float32)
        out.append(w)
    return out


def _encode(seq, shots=(), **kw):
    enc = TrackEncoder(_header(), **kw)
    for f, w in enumerate(seq):
        enc.add(f, w, shot_start=f in shots)
    return enc


def _by_frame(packets):
    return {p.frame: encode_packet(p) for p in packets}


# --------------------------------------------------------------------------- layout


def test_flatten_unflatten_round_trip():
    net = ITMNet(PAPER)
    vec = flatten_state(net.state_dict())
    assert vec.dtype == np.float32 and vec.shape == (param_count(PAPER),) == (8771,)
    back = ITMNet(PAPER)
    back.load_state_dict(unflatten(PAPER, vec))
    for a, b in zip(net.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="8771"):
        unflatten(PAPER, vec[:-1])


def test_header_round_trips():
    h = _header(binding={"first_keyframe_sha256": "ab" * 32, "width": 1920, "height": 1080, "frame_count": 500},
                encoder={"tool": "test"})
    assert TrackHeader.from_bytes(h.to_bytes()) == h
    assert TrackHeader.from_json_dict(json.loads(json.dumps(h.to_json_dict()))) == h
    assert h.hdr10_metadata().max_cll == 1000.0
    assert h.sdr["white_nits"] == 100.0 and h.sdr["transfer"] == "bt1886" and h.sdr["range"] == "limited"


def test_header_ignores_unknown_keys_of_a_later_minor():
    d = _header().to_json_dict()
    d["version"] = [1, 7]
    d["some_future_field"] = {"x": 1}
    assert TrackHeader.from_json_dict(d).config == PAPER


def test_binding_detects_another_video():
    h = _header(binding={"first_keyframe_sha256": "ab" * 32, "width": 1920, "height": 1080})
    assert h.binding_matches({"first_keyframe_sha256": "ab" * 32, "width": 1920, "height": 1080})
    assert not h.binding_matches({"first_keyframe_sha256": "cd" * 32, "width": 1920, "height": 1080})
    assert not h.binding_matches({"width": 1280})
    assert not _header().binding_matches(h)  # unbound: nothing to compare
    assert h.binding_matches(_header(binding={"width": 1920}))


def test_packet_round_trip_and_size():
    p = Packet(frame=1234, kind="delta", shot=7, payload=b"\x01\x02\x03", coding=1)
    raw = encode_packet(p)
    assert raw[:4] == b"ITMP" and len(raw) == 24 + 3
    assert decode_packet(raw) == p
    assert len(encode_packet(Packet(5, "repeat", 0, b""))) == 24


@pytest.mark.parametrize(
    "damage, message",
    [("magic", "bad magic"), ("flip", "CRC-32"), ("truncate", "truncated"), ("version", "version 9"),
     ("kind", "unknown kind")],
)
def test_packet_damage_is_detected(damage, message):
    raw = bytearray(encode_packet(Packet(3, "delta", 0, bytes(range(50)), 1)))
    if damage == "magic":
        raw[0:4] = b"XXXX"
    elif damage == "flip":
        raw[30] ^= 0x04
    elif damage == "truncate":
        raw = raw[:-10]
    elif damage in ("version", "kind"):
        raw[4 if damage == "version" else 5] = 9
        raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
    with pytest.raises(TrackFormatError, match=message):
        decode_packet(bytes(raw))


def test_unknown_major_version_refused_everywhere():
    h = _header()
    raw = bytearray(h.to_bytes())
    raw[4] = 2
    raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
    with pytest.raises(TrackFormatError, match="version 2") as err:
        TrackHeader.from_bytes(bytes(raw))
    assert "upgrade itmfilter" in str(err.value)
    d = track_to_json(h, [])
    d["version"] = [3, 0]
    with pytest.raises(TrackFormatError, match="version 3"):
        track_from_json(d)
    blob = bytearray(write_track_blob(h, []))
    blob[4] = 4
    with pytest.raises(TrackFormatError, match="version 4"):
        read_track_blob(bytes(blob))


# --------------------------------------------------------------------------- encoder


def test_keys_at_shot_starts_and_every_interval():
    seq = _walk(300, 1e-3)
    enc = _encode(seq, shots={50, 130}, key_interval=96)
    keys = [p.frame for p in enc.packets if p.kind == "key"]
    assert keys == [0, 50, 130, 226]
    shots = [p.shot for p in enc.packets]
    assert (shots[49], shots[50], shots[129], shots[130], shots[299]) == (0, 1, 1, 2, 2)
    assert enc.header.quantiser["key_interval"] == 96


def test_repeat_when_nothing_changes():
    seq = _walk(10, 1e-3, hold={3, 4, 5})
    kinds = [p.kind for p in _encode(seq).packets]
    assert kinds == ["key", "delta", "delta", "repeat", "repeat", "repeat", "delta", "delta", "delta", "delta"]


def test_frames_must_be_consecutive():
    enc = TrackEncoder(_header())
    w = _base_params()
    enc.add(10, w)
    with pytest.raises(ValueError, match="expected 11"):
        enc.add(12, w)
    with pytest.raises(ValueError, match="NaN"):
        enc.add(11, np.full_like(w, np.nan))


@pytest.mark.parametrize("key_dtype", ["fp16", "int8"])
def test_closed_loop_drift_bounded_over_500_frames(key_dtype):
    seq = _walk(500, 3e-3)
    step = 1 / 256
    enc = TrackEncoder(_header(), key_interval=96, key_dtype=key_dtype, delta_step=step)
    worst, late = 0.0, 0.0
    for f, w in enumerate(seq):
        p = enc.add(f, w)
        if p.kind != "key":
            err = float(np.abs(enc.decoded - w).max())
            worst = max(worst, err)
            late = max(late, err) if f >= 400 else late
    # Every tensor's rms stays < 0.6, so each delta leaves an error < 0.6 * step / 2, and
    # the error of frame 499 is no larger than that of frame 1: nothing accumulates.
    assert worst < 0.6 * step / 2 * 1.001
    assert late <= worst
    # The decoder holds exactly what the encoder says it holds.
    dec = TrackDecoder(enc.header)
    packets = _by_frame(enc.packets)
    final, status = dec.params_at(499, packets)
    assert status == "ok" and np.array_equal(final, enc.decoded)


def test_per_tensor_error_within_half_step():
    from itmfilter.track.codec import quantise_delta

    seq = _walk(40, 1e-2)
    enc = TrackEncoder(_header(), delta_step=1 / 128)
    sizes = tensor_sizes(PAPER)
    for f, w in enumerate(seq):
        ref = enc.decoded
        p = enc.add(f, w)
        if p.kind != "delta":
            continue
        steps, _ = quantise_delta(w, ref, sizes, enc.delta_step, enc.rms_floor)
        for e, s in zip(np.split(np.abs(enc.decoded - w), np.cumsum(sizes)[:-1]), steps):
            assert e.max() <= float(s) / 2 * (1 + 1e-4) + 1e-7


def test_large_jump_without_shot_flag_becomes_key():
    w = _base_params()
    enc = TrackEncoder(_header())
    enc.add(0, w)
    assert enc.add(1, w * 1000).kind == "key"  # deltas would overflow int16


# --------------------------------------------------------------------------- decoder


def test_random_access_equals_sequential():
    seq = _walk(250, 2e-3)
    enc = _encode(seq, shots={70}, key_interval=48)
    packets = _by_frame(enc.packets)
    seq_dec = TrackDecoder(enc.header)
    sequential = [seq_dec.params_at(f, packets)[0] for f in range(250)]
    rng = np.random.default_rng(5)
    rand_dec = TrackDecoder(enc.header)
    for f in rng.permutation(250)[:80]:
        got, status = rand_dec.params_at(int(f), packets)
        assert status == "ok" and np.array_equal(got, sequential[f]), f
    # and the decoder reproduces the encoder's closed loop bit for bit
    assert np.array_equal(sequential[-1], enc.decoded)


def test_damaged_packet_detected_and_previous_set_held():
    seq = _walk(120, 2e-3)
    enc = _encode(seq, key_interval=96)
    packets = _by_frame(enc.packets)
    clean = [TrackDecoder(enc.header).params_at(f, packets)[0] for f in (39, 40, 41, 96)]
    bad = bytearray(packets[40])
    bad[len(bad) // 2] ^= 0x20
    packets[40] = bytes(bad)
    del packets[60]
    dec = TrackDecoder(enc.header)
    results = {f: dec.params_at(f, packets) for f in range(120)}
    assert results[39][1] == "ok"
    assert results[40][1] == "damaged" and np.array_equal(results[40][0], clean[0])
    assert results[41][1] == "concealed"
    # deltas still apply on top of the held set, so the error is one frame's change
    assert np.abs(results[41][0] - clean[2]).max() < 0.05
    assert results[60][1] == "missing"
    assert results[96][1] == "ok" and np.array_equal(results[96][0], clean[3])  # the next key heals
    assert dec.damage_count == 2 and "CRC-32" in dec.problems[40] and dec.problems[60] == "no packet"
    # random access into the damaged stretch equals the sequential result
    assert np.array_equal(TrackDecoder(enc.header).params_at(50, packets)[0], results[50][0])


def test_lost_shot_key_replaced_by_next_key_of_the_shot():
    seq = _walk(60, 1e-3)
    seq[20:] = [w + 0.5 for w in seq[20:]]  # a cut at 20
    enc = _encode(seq, shots={20}, key_interval=16)
    packets = _by_frame(enc.packets)
    assert enc.packets[20].kind == "key" and enc.packets[36].kind == "key"
    truth = TrackDecoder(enc.header).params_at(36, packets)[0]
    del packets[20]
    dec = TrackDecoder(enc.header)
    statuses = [dec.params_at(f, packets)[1] for f in range(40)]
    assert statuses[20] == "missing" and statuses[21] == "concealed" and statuses[36] == "ok"
    got21 = TrackDecoder(enc.header).params_at(21, packets)[0]
    assert np.array_equal(got21, truth)  # the shot's next key, not the previous shot's set


def test_first_key_damaged_uses_next_good_key_and_all_damaged_is_unavailable():
    seq = _walk(30, 1e-3)
    enc = _encode(seq, key_interval=10)
    packets = _by_frame(enc.packets)
    packets[0] = packets[0][:-1]
    dec = TrackDecoder(enc.header)
    params, status = dec.params_at(3, packets)
    assert status == "concealed" and np.isfinite(params).all()
    assert dec.params_at(0, packets)[1] == "damaged"
    assert dec.params_at(10, packets)[1] == "ok"
    dead = {f: b"garbage" for f in range(5)}
    params, status = TrackDecoder(enc.header).params_at(2, dead)
    assert status == "unavailable" and not params.any()


# --------------------------------------------------------------------------- whole track


def test_blob_and_json_round_trips():
    seq = _walk(40, 1e-3)
    enc = _encode(seq, shots={25}, key_interval=16)
    packets = _by_frame(enc.packets)
    blob = write_track_blob(enc.header, enc.packets)
    header, back = read_track_blob(blob)
    assert header == enc.header and back == packets
    header2, back2 = track_from_json(json.loads(json.dumps(track_to_json(enc.header, list(packets.values())))))
    assert header2 == enc.header and back2 == packets


def test_data_track_samples_carry_the_header():
    from itmfilter.track import pack_sample, split_sample

    enc = _encode(_walk(3, 1e-3))
    first = pack_sample(enc.packets[0], enc.header)
    header, raw = split_sample(first)
    assert header == enc.header and decode_packet(raw) == enc.packets[0]
    assert split_sample(pack_sample(enc.packets[1])) == (None, encode_packet(enc.packets[1]))


def test_blob_index_damage_is_an_error_packet_damage_is_not():
    enc = _encode(_walk(10, 1e-3))
    blob = bytearray(write_track_blob(enc.header, enc.packets))
    tail = bytearray(blob)
    tail[-10] ^= 1  # inside the last packet
    header, packets = read_track_blob(bytes(tail))
    assert TrackDecoder(header).params_at(9, packets)[1] == "damaged"
    blob[30] ^= 1  # inside the header JSON
    with pytest.raises(TrackFormatError, match="CRC-32"):
        read_track_blob(bytes(blob))


def test_json_sidecar_validates_against_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SIDECAR / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    enc = _encode(_walk(12, 1e-3), shots={6}, key_interval=4)
    doc = json.loads(json.dumps(track_to_json(enc.header, enc.packets)))
    jsonschema.validate(doc, schema)
    doc["header"]["sdr"]["primaries"] = "bt2020"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


# --------------------------------------------------------------------------- conformance vectors


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", SIDECAR / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vectors_regenerate_identically():
    built = _load_make_vectors().build_vectors()
    # vectors/pixels/ (the HDR output vectors) is checked by tests/test_vectors.py
    on_disk = {p.name: p.read_bytes() for p in (SIDECAR / "vectors").iterdir() if p.is_file()}
    assert sorted(built) == sorted(on_disk)
    for name, data in built.items():
        assert data == on_disk[name], f"{name} differs: rerun python sidecar/make_vectors.py"
    # track_init_expected.npy (3 default-config sets) is 115 KB; the 1.6 shift-run vectors 13 KB,
    # the 1.7 scene-residual vectors 15 KB, the 1.8 look-ahead vectors 7 KB, the 1.9 windowed-residual ones 15 KB
    assert sum(map(len, on_disk.values())) < 680_000


def test_vectors_decode_to_expected_weights():
    from itmfilter.track.codec import decode_payload

    vec = SIDECAR / "vectors"
    manifest = json.loads((vec / "manifest.json").read_text())
    configs = {k: ModelConfig.from_dict(v) for k, v in manifest["configs"].items()}
    for entry in manifest["vectors"]:
        raw = (vec / entry["file"]).read_bytes()
        config = configs[entry["config"]]
        if "error_contains" in entry:
            with pytest.raises(TrackFormatError, match=entry["error_contains"]):
                decode_packet(raw)
            continue
        expected = np.load(vec / entry["expected"])
        if "codec" in entry:  # the SEI form: the NAL unit holds (header +) the packet file's bytes
            from itmfilter.track.format import HeaderRef, split_sample
            from itmfilter.track.sei import user_data_from_nal

            (sample,) = user_data_from_nal(raw, entry["codec"])
            header, packet = split_sample(sample)
            assert packet == (vec / entry["packet"]).read_bytes()
            lead = {"header+packet": TrackHeader, "ref+packet": HeaderRef, "packet": type(None)}[entry["sample"]]
            assert isinstance(header, lead)
            p = decode_packet(packet)
            ref = expected[entry["frame"] - 1] if p.kind != "key" else None
            got = decode_payload(p, ref, tensor_sizes(config), config=config)
            assert np.array_equal(got, expected[entry["frame"]]), entry["file"]
            continue
        if entry["file"].endswith(".itm.json"):
            header, packets = track_from_json(json.loads(raw))
        elif entry["file"].startswith("track"):
            header, packets = read_track_blob(raw)
        else:
            p = decode_packet(raw)
            assert p.frame == entry["frame"]
            ref = np.load(vec / entry["reference"]) if "reference" in entry else None
            init = np.load(vec / entry["init"]) if "init" in entry else None
            got = decode_payload(p, ref, tensor_sizes(config), config=config, init=init)
            assert np.array_equal(got, expected), entry["file"]
            continue
        assert header.config == config
        dec = TrackDecoder(header)
        for row, f in enumerate(entry.get("frames", range(len(expected)))):
            got, status = dec.params_at(f, packets)
            assert status == entry["statuses"][row] and np.array_equal(got, expected[row]), (entry["file"], f)


def test_format_1_2_vectors_still_decode():
    """Tracks written by format 1.2 (long packets, binary header in every SEI KEY; kept in
    sidecar/vectors-1.2) decode to the same weights with this reader."""
    old = SIDECAR / "vectors-1.2"
    expected = np.load(old / "track_expected.npy")
    for header, packets in (read_track_blob((old / "track.bin").read_bytes()),
                            track_from_json(json.loads((old / "track.itm.json").read_text()))):
        assert header.version == (1, 2)
        dec = TrackDecoder(header)
        for f in range(len(expected)):
            got, status = dec.params_at(f, packets)
            assert status == "ok" and np.array_equal(got, expected[f])
    header, packets = read_track_blob((old / "track_init.bin").read_bytes())
    dec, init_expected = TrackDecoder(header), np.load(old / "track_init_expected.npy")
    assert all(np.array_equal(dec.params_at(f, packets)[0], init_expected[f]) for f in range(len(init_expected)))
    from itmfilter.track.format import split_sample
    from itmfilter.track.sei import user_data_from_nal

    (sample,) = user_data_from_nal((old / "sei_h264_key.nal").read_bytes(), "h264")
    lead, packet = split_sample(sample)
    assert isinstance(lead, TrackHeader) and lead.version == (1, 2) and packet == (old / "packet_key_fp16.bin").read_bytes()


def test_compact_packets_are_small_and_checked():
    """The compact form (1.3): a REPEAT of a 10 s clip's frame is 7 bytes (24 long), every
    field round-trips, and a flipped bit anywhere is caught by the check."""
    from itmfilter.track.format import compact_head_bytes, peek_packet

    for frame, shot, kind, payload, coding in ((0, 0, "repeat", b"", 0), (239, 4, "repeat", b"", 0),
                                               (200, 3, "delta", b"\x01" * 8, 2), (16384, 200, "key", b"xyz", 3),
                                               ((1 << 24) - 1, (1 << 24) - 1, "delta", b"", 1)):
        p = Packet(frame, kind, shot, payload, coding)
        raw = encode_packet(p, compact=True)
        assert len(raw) == compact_head_bytes(frame, shot, kind) + len(payload)
        assert decode_packet(raw) == p and peek_packet(raw) == (frame, {"key": 1, "delta": 2, "repeat": 3}[kind])
        for bit in range(8 * len(raw)):
            bad = bytearray(raw)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(TrackFormatError):
                decode_packet(bytes(bad))
    assert len(encode_packet(Packet(239, "repeat", 4, b""), compact=True)) == 7
    assert len(encode_packet(Packet(239, "delta", 4, b"\0" * 8, 2), compact=True)) == 15  # the shift alone
    with pytest.raises(TrackFormatError, match="truncated"):
        decode_packet(b"\xc1\xc0")
    with pytest.raises(ValueError, match="compact"):
        encode_packet(Packet(0, "delta", 0, b"", 64), compact=True)


def test_compressed_header_and_reference():
    """The compressed header (1.3) parses to the same header, is about half the binary one, and
    a header reference names it by the CRC-32 of its JSON; a sample may lead with either."""
    from itmfilter.track.format import HeaderRef, pack_sample, split_sample

    header = _header()
    whole = header.to_compressed_bytes()
    assert whole[:4] == b"ITMZ" and TrackHeader.from_bytes(whole) == header
    assert len(whole) < 0.8 * len(header.to_bytes())
    packet = Packet(0, "key", 0, b"payload", 1)
    lead, raw = split_sample(pack_sample(packet, header, compressed=True))
    assert lead == header and decode_packet(raw) == packet
    lead, raw = split_sample(pack_sample(encode_packet(packet, compact=True), header.reference()))
    assert lead == HeaderRef(header.header_id) and lead.matches(header) and decode_packet(raw) == packet
    assert not HeaderRef(header.header_id ^ 1).matches(header)
    bad = bytearray(whole)
    bad[20] ^= 0x01
    with pytest.raises(TrackFormatError, match="CRC-32"):
        TrackHeader.from_bytes(bytes(bad))
    with pytest.raises(TrackFormatError, match="truncated"):
        split_sample(b"ITMR\x00")


def test_format_1_1_vectors_still_decode():
    """Tracks written by format 1.1 (before init-predicted keys; kept in sidecar/vectors-1.1)
    decode to the same weights with this reader."""
    old = SIDECAR / "vectors-1.1"
    expected = np.load(old / "track_expected.npy")
    for header, packets in (read_track_blob((old / "track.bin").read_bytes()),
                            track_from_json(json.loads((old / "track.itm.json").read_text()))):
        assert header.version == (1, 1) and header.init == {}
        dec = TrackDecoder(header)
        assert not dec.missing_init
        for f in range(len(expected)):
            got, status = dec.params_at(f, packets)
            assert status == "ok" and np.array_equal(got, expected[f])
    from itmfilter.track.codec import decode_payload

    p = decode_packet((old / "packet_key_int8.bin").read_bytes())
    got = decode_payload(p, None, tensor_sizes(SMALL))
    assert np.array_equal(got, np.load(old / "packet_key_int8_expected.npy"))


def _shipped():
    from itmfilter.model.initial import load_init, shipped_init_path

    net, _ = load_init(shipped_init_path("naive"))
    return net.config, flatten_state(net.state_dict())


def test_init_key_round_trip_is_cheaper_than_int8_and_within_half_step():
    from itmfilter.track.codec import (
        DEFAULT_KEY_STEP,
        DEFAULT_RMS_FLOOR,
        INIT_KEY_CODING,
        WIDE_STEP_FACTOR,
        encode_key_payload,
        wide_tensors,
    )

    config, ivec = _shipped()
    sizes, wide = tensor_sizes(config), wide_tensors(config)
    rng = np.random.default_rng(5)
    # an adapted set: the initialisation moved by ~2 % of each tensor's RMS
    parts = [t + rng.normal(0, 0.02 * max(float(np.sqrt(np.mean(t**2))), 1e-3), t.shape)
             for t in np.split(ivec, np.cumsum(sizes)[:-1])]
    w = np.concatenate(parts).astype(np.float32)
    header = TrackHeader(config=config, fps=(24, 1), frame_count=2, width=64, height=36)
    enc = TrackEncoder(header, key_dtype="init", init=("naive", ivec))
    key = enc.add(0, w)
    assert key.kind == "key" and key.coding == INIT_KEY_CODING and enc.key_choices == {"full": 1}
    _, int8 = encode_key_payload(w, sizes, "int8", wide=wide)
    assert len(key.payload) < 0.6 * len(int8)
    for t, (got, want, ref) in enumerate(zip(*(np.split(v, np.cumsum(sizes)[:-1]) for v in (enc.decoded, w, ivec)))):
        step = DEFAULT_KEY_STEP * max(float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))), DEFAULT_RMS_FLOOR)
        step *= WIDE_STEP_FACTOR if wide[t] else 1.0
        assert np.abs(got - want).max() <= step / 2 * 1.001 + 1e-7, t
    # the header names the initialisation; a fresh decoder finds it and reproduces the set
    assert enc.header.init["name"] == "naive" and len(enc.header.init["sha256"]) == 64
    header2 = TrackHeader.from_bytes(enc.header.to_bytes())
    assert header2.init == enc.header.init and header2.version >= (1, 2)
    dec = TrackDecoder(header2)
    got, status = dec.params_at(0, {0: encode_packet(key)})
    assert status == "ok" and np.array_equal(got, enc.decoded)


def test_init_key_coarsens_then_sends_the_prior_then_the_initialisation():
    from itmfilter.track.codec import wide_tensors

    config, ivec = _shipped()
    sizes, mask = tensor_sizes(config), None
    wide = wide_tensors(config)
    mask = np.concatenate([np.full(n, w) for n, w in zip(sizes, wide)])
    rng = np.random.default_rng(6)
    w = (ivec + rng.normal(0, 0.02, ivec.shape)).astype(np.float32)
    header = TrackHeader(config=config, fps=(24, 1), frame_count=4, width=64, height=36)
    enc = TrackEncoder(header, key_dtype="init", init=("naive", ivec), key_interval=1)
    full = enc.add(0, w)
    coarse = enc.add(1, w, key_max_bytes=len(full.payload) * 2 // 3)
    assert len(coarse.payload) <= len(full.payload) * 2 // 3
    prior = enc.add(2, w, key_max_bytes=400)
    assert len(prior.payload) <= 400
    # the prior-only key: the initialisation everywhere but the prior tensors
    assert np.array_equal(enc.decoded[~mask], ivec[~mask]) and not np.array_equal(enc.decoded[mask], ivec[mask])
    alone = enc.add(3, w, key_max_bytes=1)  # nothing fits: the initialisation alone, still a key
    assert alone.kind == "key" and len(alone.payload) == enc.min_key_bytes() and np.array_equal(enc.decoded, ivec)
    assert enc.key_choices == {"full": 1, "coarse": 1, "prior": 1, "init": 1}


def test_track_with_an_initialisation_not_held_is_unavailable_with_a_clear_problem():
    config, ivec = _shipped()
    header = TrackHeader(config=config, fps=(24, 1), frame_count=2, width=64, height=36)
    enc = TrackEncoder(header, key_dtype="init", init=("naive", ivec))
    enc.add(0, ivec + np.float32(0.01))
    enc.add(1, ivec + np.float32(0.01))
    packets = {p.frame: encode_packet(p) for p in enc.packets}
    other = TrackHeader.from_json_dict(dict(enc.header.to_json_dict(), init={"name": "naive-v9", "sha256": "ab" * 32}))
    dec = TrackDecoder(other)
    assert dec.missing_init
    vec, status = dec.params_at(1, packets)
    assert status == "unavailable"
    assert "naive-v9" in dec.problems[0] and "does not hold" in dec.problems[0]


# --------------------------------------------------------------------------- size


def test_bitrate_report():
    """Bytes per frame and kbit/s at 24 fps, keys every 96 frames, ~4 s shots: bounds only
    (real tracks' bitrates are measured by benchmarks/video.py, docs/video-*.md)."""
    rows = []
    for std, every in ((0.0, 1), (1e-5, 1), (1e-3, 8), (1e-3, 1), (1e-2, 1)):
        rng = np.random.default_rng(3)
        w = _base_params()
        enc = TrackEncoder(_header(), key_interval=96)
        total = 0
        for f in range(480):
            if f and f % every == 0 and std:
                w = (w + rng.normal(0, std, w.shape)).astype(np.float32)
            total += len(encode_packet(enc.add(f, w, shot_start=f % 96 == 0)))
        rows.append((std, every, total / 480, total / 480 * 8 * 24 / 1000))
    static = rows[0]
    assert static[3] < 64  # keys every 4 s + repeats fit the audio-track budget
    assert rows[-1][3] < 3500 / 2  # still far below the naive 3.5 Mbit/s


def _default_header_and_sets(frames: int, seed: int, step: float):
    """A default-config header and two parameter sets ``step`` apart (random, seeded)."""
    from itmfilter.track.format import TrackHeader, param_count

    cfg = CONFIGS["default"]
    header = TrackHeader(config=cfg, fps=(24, 1), frame_count=frames, width=64, height=36)
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.1, param_count(cfg)).astype(np.float32)
    return header, a, a + rng.normal(0, step, a.shape).astype(np.float32)


def test_max_bytes_coarsens_the_delta_step_or_holds():
    from itmfilter.track.codec import TrackDecoder, TrackEncoder
    from itmfilter.track.format import decode_packet, encode_packet

    header, base, moved = _default_header_and_sets(4, seed=0, step=0.01)
    free, capped = TrackEncoder(header, delta_step=1 / 64), TrackEncoder(header, delta_step=1 / 64)
    for enc in (free, capped):
        enc.add(0, base)
    p_free = free.add(1, moved)
    budget = len(p_free.payload) * 2 // 3
    p_cap = capped.add(1, moved, max_bytes=budget)
    assert p_free.kind == p_cap.kind == "delta"
    assert len(p_cap.payload) <= budget
    err_free = np.abs(free.decoded - moved).max()
    err_cap = np.abs(capped.decoded - moved).max()
    assert err_free < err_cap < 8 * 2 * err_free  # coarser, within the coarsening limit
    held = capped.add(2, moved + 0.05, max_bytes=8)  # nothing fits in 8 bytes: hold
    assert held.kind == "repeat"
    # what a decoder rebuilds from the packets is what the encoder holds (closed loop)
    packets = {p.frame: encode_packet(p) for p in capped.packets}
    vec, status = TrackDecoder(capped.header).params_at(2, packets)
    assert status == "ok" and np.array_equal(vec, capped.decoded)
    assert decode_packet(packets[2]).kind == "repeat"


def test_repeats_between_updates_are_interpolated_within_a_shot():
    from itmfilter.track.codec import TrackDecoder, TrackEncoder
    from itmfilter.track.format import encode_packet

    header, a, b = _default_header_and_sets(10, seed=1, step=0.02)
    enc = TrackEncoder(header, key_interval=100)
    for f, (params, cut) in enumerate([(a, True), (a, False), (a, False), (a, False), (b, False),
                                       (b, False), (b, False), (a * 0.5, True), (a * 0.5, False), (a * 0.5, False)]):
        enc.add(f, params, shot_start=cut)
    packets = {p.frame: encode_packet(p) for p in enc.packets}
    kinds = [p.kind for p in enc.packets]
    assert kinds[:5] == ["key", "repeat", "repeat", "repeat", "delta"] and kinds[7] == "key"
    dec = TrackDecoder(enc.header)
    held = {f: dec.params_at(f, packets)[0] for f in range(10)}
    dec2 = TrackDecoder(enc.header)
    got = {f: dec2.params_interpolated(f, packets) for f in range(10)}
    assert all(status == "ok" for _, status in got.values())
    for f in (1, 2, 3):  # between the key at 0 and the delta at 4: a quarter step each
        np.testing.assert_allclose(got[f][0], held[0] + f / 4 * (held[4] - held[0]), rtol=0, atol=1e-6)
    for f in (0, 4, 7):  # coded frames are what they code
        np.testing.assert_array_equal(got[f][0], held[f])
    for f in (5, 6):  # no update after them in the shot (the next is another shot's key): held
        np.testing.assert_array_equal(got[f][0], held[f])
    assert dec2.problems == {}
