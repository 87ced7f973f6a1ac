"""Generate the conformance vectors in ``sidecar/vectors/`` (see ``sidecar/SPEC.md``).

Run ``python sidecar/make_vectors.py`` from the repository root. The output is
deterministic for a given zstandard build: parameters come from a seeded NumPy generator
(not torch), JSON is key-sorted, ``.npy`` files are float32. ``tests/test_track.py``
regenerates everything in memory and requires identical bytes; the HDR pixel vectors
in ``vectors/pixels/`` (:func:`build_pixel_vectors`, SPEC section 12) are checked by
``tests/test_vectors.py``, outputs within the spec's tolerance.

A decoder conforms when, for every entry of ``manifest.json``, it reproduces ``expected``
(float32, bit-exact when it computes in binary32 without fused multiply-add), the
``statuses``, or refuses the input with an error mentioning ``error_contains``.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itmfilter.model.initial import load_init, shipped_init_path
from itmfilter.model.net import CONFIGS, ModelConfig
from itmfilter.track import (
    Packet,
    TrackDecoder,
    TrackEncoder,
    TrackHeader,
    encode_packet,
    read_track_blob,
    track_to_json,
    write_track_blob,
)
from itmfilter.track.codec import (
    DELTA_CODING,
    HALF_MOTION_DELTA_CODING,
    INIT_KEY_CODING,
    MOTION_DELTA_CODING,
    decode_payload,
    encode_delta_payload,
    encode_init_key_payload,
    encode_key_payload,
    encode_motion_payload,
    quantise_delta,
    wide_tensors,
)
from itmfilter.track.format import flatten_state, pack_sample, param_layout, tensor_sizes
from itmfilter.track.sei import H264, HEVC, build_sei_nal

VECTORS = Path(__file__).resolve().parent / "vectors"
SMALL = ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8))  # 491 parameters
SMALL_FOURIER = ModelConfig(coord_encoding="fourier", coord_features=8, rgb_features=8, hidden=(16, 8))
HDR10 = {
    "primaries": [[0.68, 0.32], [0.265, 0.69], [0.15, 0.06]],
    "white_point": [0.3127, 0.329],
    "max_luminance": 1000.0,
    "min_luminance": 0.0001,
    "max_cll": 1000.0,
    "max_fall": 400.0,
}
BINDING = {
    "first_keyframe_sha256": "0" * 64,
    "width": 64,
    "height": 36,
    "frame_count": 12,
}


def _params(config: ModelConfig, rng: np.random.Generator) -> np.ndarray:
    """Plausible weights: each tensor N(0, 1/sqrt(fan_in))-ish, biases smaller."""
    parts = []
    for name, shape in param_layout(config):
        fan_in = shape[1] if len(shape) == 2 else 16
        scale = (1.0 if name.endswith("weight") else 0.1) / np.sqrt(fan_in)
        parts.append(rng.normal(0.0, scale, int(np.prod(shape))))
    return np.concatenate(parts).astype(np.float32)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype="<f4"), allow_pickle=False)
    return buf.getvalue()


def _recrc(raw: bytes) -> bytes:
    return raw[:-4] + struct.pack("<I", zlib.crc32(raw[:-4]))


VECTOR_AVIF_SPEED = 6
"""libaom's speed for the vectors' scene images: the speed they were made at, so that a change
of the encoder's speed (a choice of the encoder, not of the format) leaves them byte for byte."""


@contextlib.contextmanager
def _vector_avif_speed():
    from itmfilter.model import scene

    kept, scene.AVIF_SPEED = scene.AVIF_SPEED, VECTOR_AVIF_SPEED
    try:
        yield
    finally:
        scene.AVIF_SPEED = kept


def build_vectors() -> dict[str, bytes]:
    """Every vector file, by name, as bytes."""
    rng = np.random.default_rng(20240601)
    out: dict[str, bytes] = {}
    manifest: list[dict] = []
    header = TrackHeader(
        SMALL, (24000, 1001), 12, 64, 36, hdr10=HDR10, binding=BINDING,
        encoder={"name": "sidecar/make_vectors.py"},
    )

    # A 12-frame track: keys at 0 (shot 0), 4 (interval), 7 (shot 1), 11 (interval);
    # frame 2 repeats frame 1; the others are deltas.
    enc = TrackEncoder(header, key_interval=4, key_dtype="fp16")
    w = _params(SMALL, rng)
    for frame in range(12):
        if frame == 7:
            w = _params(SMALL, rng)
        elif frame not in (0, 2):
            w = (w + rng.normal(0.0, 2e-3, w.shape)).astype(np.float32)
        enc.add(frame, w, shot_start=frame == 7)
    packets = enc.packets
    expected = np.stack([_decode_all(enc.header, packets)[f] for f in range(12)])
    out["track.bin"] = write_track_blob(enc.header, packets)
    out["track.itm.json"] = (
        json.dumps(track_to_json(enc.header, packets), sort_keys=True, indent=1) + "\n"
    ).encode()
    out["track_expected.npy"] = _npy(expected)
    kinds = [p.kind for p in packets]
    manifest += [
        {"file": "track.bin", "what": "whole-track blob (MKV attachment form)", "expected": "track_expected.npy",
         "kinds": kinds, "statuses": ["ok"] * 12},
        {"file": "track.itm.json", "what": "JSON sidecar of the same track", "expected": "track_expected.npy",
         "kinds": kinds, "statuses": ["ok"] * 12},
    ]

    # The same track with frame 5's packet damaged (one payload bit flipped).
    damaged = [encode_packet(p) for p in packets]
    bad = bytearray(damaged[5])
    bad[24] ^= 0x10
    damaged[5] = bytes(bad)
    blob = write_track_blob(enc.header, damaged)
    dec = TrackDecoder(enc.header)
    _, by_frame = read_track_blob(blob)
    results = [dec.params_at(f, by_frame) for f in range(12)]
    out["track_damaged.bin"] = blob
    out["track_damaged_expected.npy"] = _npy(np.stack([r[0] for r in results]))
    manifest.append(
        {"file": "track_damaged.bin", "what": "the track with frame 5's packet damaged (bit flip)",
         "expected": "track_damaged_expected.npy", "kinds": kinds, "statuses": [r[1] for r in results]}
    )

    # Single packets of the small config.
    sizes = tensor_sizes(SMALL)
    by_kind = {p.kind: p for p in reversed(packets)}
    key = packets[0]
    out["packet_key_fp16.bin"] = encode_packet(key)
    out["packet_key_fp16_expected.npy"] = _npy(expected[0])
    coding, payload = encode_key_payload(expected[3], sizes, "int8")
    int8_key = Packet(3, "key", 0, payload, coding)
    out["packet_key_int8.bin"] = encode_packet(int8_key)
    out["packet_key_int8_expected.npy"] = _npy(decode_payload(int8_key, None, sizes))
    delta = next(p for p in packets if p.kind == "delta")
    out["packet_delta.bin"] = encode_packet(delta)
    out["packet_delta_reference.npy"] = _npy(expected[delta.frame - 1])
    out["packet_delta_expected.npy"] = _npy(expected[delta.frame])
    repeat = by_kind["repeat"]
    out["packet_repeat.bin"] = encode_packet(repeat)
    out["packet_repeat_reference.npy"] = _npy(expected[repeat.frame - 1])
    bad = bytearray(out["packet_delta.bin"])
    bad[30] ^= 0x01
    out["packet_damaged.bin"] = bytes(bad)
    v9 = bytearray(out["packet_delta.bin"])
    v9[4] = 9
    out["packet_version9.bin"] = _recrc(bytes(v9))
    manifest += [
        {"file": "packet_key_fp16.bin", "what": "KEY, coding 1 (fp16 byte planes)", "frame": 0,
         "expected": "packet_key_fp16_expected.npy"},
        {"file": "packet_key_int8.bin", "what": "KEY, coding 2 (int8, per-tensor scales)", "frame": 3,
         "expected": "packet_key_int8_expected.npy"},
        {"file": "packet_delta.bin", "what": "DELTA, coding 1", "frame": delta.frame,
         "reference": "packet_delta_reference.npy", "expected": "packet_delta_expected.npy"},
        {"file": "packet_repeat.bin", "what": "REPEAT (empty payload)", "frame": repeat.frame,
         "reference": "packet_repeat_reference.npy", "expected": "packet_repeat_reference.npy"},
        {"file": "packet_damaged.bin", "what": "packet_delta.bin with one payload bit flipped",
         "error_contains": "CRC-32"},
        {"file": "packet_version9.bin", "what": "packet_delta.bin claiming version 9 (CRC valid)",
         "error_contains": "version 9"},
    ]

    # Motion-compensated DELTAs (coding 2, since 1.1): a Fourier config with a residual, and
    # the shift alone on the SIREN config.
    fsizes = tensor_sizes(SMALL_FOURIER)
    mrng = np.random.default_rng(11)  # its own generator: the vectors before it keep their values
    ref = _params(SMALL_FOURIER, mrng)
    shift = (np.float32(0.0421875), np.float32(-0.0185185))
    steps, codes = quantise_delta(ref + mrng.normal(0, 0.01, ref.shape).astype(np.float32), ref, fsizes, 1 / 64)
    motion = Packet(6, "delta", 0, encode_motion_payload(shift, encode_delta_payload(steps, codes)), MOTION_DELTA_CODING)
    out["packet_motion.bin"] = encode_packet(motion)
    out["packet_motion_reference.npy"] = _npy(ref)
    out["packet_motion_expected.npy"] = _npy(decode_payload(motion, ref, fsizes, config=SMALL_FOURIER))
    only = Packet(5, "delta", 0, encode_motion_payload((np.float32(-0.125), np.float32(0.0625)), None), MOTION_DELTA_CODING)
    out["packet_motion_only.bin"] = encode_packet(only)
    out["packet_motion_only_reference.npy"] = _npy(expected[4])
    out["packet_motion_only_expected.npy"] = _npy(decode_payload(only, expected[4], sizes, config=SMALL))
    manifest += [
        {"file": "packet_motion.bin", "what": "DELTA, coding 2 (shift, then a coding-1 residual), fourier config",
         "frame": 6, "config": "small-fourier", "reference": "packet_motion_reference.npy",
         "expected": "packet_motion_expected.npy"},
        {"file": "packet_motion_only.bin", "what": "DELTA, coding 2, the shift alone (siren config: a bias change)",
         "frame": 5, "reference": "packet_motion_only_reference.npy", "expected": "packet_motion_only_expected.npy"},
    ]

    # One KEY of the full "paper" network (8771 parameters), the size carried in practice.
    paper = _params(CONFIGS["paper"], rng)
    coding, payload = encode_key_payload(paper, tensor_sizes(CONFIGS["paper"]), "fp16")
    paper_key = Packet(0, "key", 0, payload, coding)
    out["paper_key_fp16.bin"] = encode_packet(paper_key)
    out["paper_key_fp16_expected.npy"] = _npy(decode_payload(paper_key, None, tensor_sizes(CONFIGS["paper"])))
    manifest.append(
        {"file": "paper_key_fp16.bin", "what": "KEY of the paper config", "frame": 0, "config": "paper",
         "expected": "paper_key_fp16_expected.npy"}
    )

    # The SEI form (section 7.1): NAL units (no start code, no length prefix) carrying the
    # track's frame-0 KEY with the header in front, and the DELTA alone, for H.264 and HEVC.
    for codec in (H264, HEVC):
        for name, frame, sample in (("key", 0, pack_sample(packets[0], enc.header)),
                                    ("delta", delta.frame, pack_sample(delta))):
            file = f"sei_{codec}_{name}.nal"
            out[file] = build_sei_nal(sample, codec=codec)
            manifest.append(
                {"file": file, "what": f"{codec} SEI NAL unit (user_data_unregistered) carrying frame {frame}'s "
                 + ("KEY with the track header" if name == "key" else "DELTA"),
                 "codec": codec, "frame": frame, "sample": "header+packet" if name == "key" else "packet",
                 "packet": "packet_key_fp16.bin" if name == "key" else "packet_delta.bin",
                 "expected": "track_expected.npy"}
            )

    # Format 1.3: the same track in the compact packet form; single compact packets (a KEY, a
    # DELTA, a REPEAT, a damaged DELTA, one claiming major version 9); the header's compressed
    # form and reference, alone and in SEI in front of the compact frame-0 KEY.
    compact = [encode_packet(p, compact=True) for p in packets]
    out["track_compact.bin"] = write_track_blob(enc.header, compact)
    out["packet_key_compact.bin"] = compact[0]
    out["packet_delta_compact.bin"] = encode_packet(delta, compact=True)
    out["packet_repeat_compact.bin"] = encode_packet(repeat, compact=True)
    bad = bytearray(out["packet_delta_compact.bin"])
    bad[8] ^= 0x01
    out["packet_compact_damaged.bin"] = bytes(bad)
    v9 = bytearray(out["packet_delta_compact.bin"][:-2])
    v9[0] = 0xC9
    out["packet_compact_version9.bin"] = bytes(v9) + struct.pack("<H", binascii.crc_hqx(bytes(v9), 0))
    out["header_compressed.bin"] = enc.header.to_compressed_bytes()
    out["header_ref.bin"] = enc.header.reference().to_bytes()
    out["sei_h264_key_compact.nal"] = build_sei_nal(pack_sample(compact[0], enc.header, compressed=True), codec=H264)
    out["sei_h264_key_ref.nal"] = build_sei_nal(pack_sample(compact[0], enc.header.reference()), codec=H264)
    # DELTA coding 3 (1.3): a shift alone as two binary16 (dy is rounded to binary16), compact form,
    # on packet_motion_only's reference.
    half = Packet(5, "delta", 0, encode_motion_payload((0.0421875, -0.0185185), None, HALF_MOTION_DELTA_CODING),
                  HALF_MOTION_DELTA_CODING)
    out["packet_motion_half.bin"] = encode_packet(half, compact=True)
    out["packet_motion_half_expected.npy"] = _npy(decode_payload(half, expected[4], sizes, config=SMALL))
    manifest += [
        {"file": "packet_motion_half.bin", "what": "DELTA coding 3 (1.3): the shift alone as two binary16, "
         "compact form (10 bytes)", "frame": 5, "reference": "packet_motion_only_reference.npy",
         "expected": "packet_motion_half_expected.npy"},
        {"file": "track_compact.bin", "what": "track.bin with every packet in the compact form (1.3)",
         "expected": "track_expected.npy", "kinds": kinds, "statuses": ["ok"] * 12},
        {"file": "packet_key_compact.bin", "what": "packet_key_fp16.bin in the compact form (1.3)", "frame": 0,
         "expected": "packet_key_fp16_expected.npy"},
        {"file": "packet_delta_compact.bin", "what": "packet_delta.bin in the compact form (1.3)",
         "frame": delta.frame, "reference": "packet_delta_reference.npy", "expected": "packet_delta_expected.npy"},
        {"file": "packet_repeat_compact.bin", "what": "packet_repeat.bin in the compact form (1.3): 6 bytes",
         "frame": repeat.frame, "reference": "packet_repeat_reference.npy",
         "expected": "packet_repeat_reference.npy"},
        {"file": "packet_compact_damaged.bin", "what": "packet_delta_compact.bin with one payload bit flipped",
         "error_contains": "CRC-16"},
        {"file": "packet_compact_version9.bin", "what": "packet_delta_compact.bin with tag 0xC9 (CRC valid)",
         "error_contains": "version 9"},
    ]
    for name, form in (("key_compact", "compressed header"), ("key_ref", "header reference")):
        manifest.append(
            {"file": f"sei_h264_{name}.nal", "what": f"H.264 SEI NAL unit carrying frame 0's compact KEY after the "
             f"{form} (1.3)", "codec": H264, "frame": 0,
             "sample": "header+packet" if name == "key_compact" else "ref+packet",
             "packet": "packet_key_compact.bin", "expected": "track_expected.npy"}
        )

    # A cut: the 12-frame track from frame 5 on (DELTAs at 5 and 6, then the shot-1 KEY at 7).
    cut = {p.frame: encode_packet(p) for p in packets if p.frame >= 5}
    out["track_cut.bin"] = write_track_blob(enc.header, list(cut.values()))
    dec = TrackDecoder(enc.header)
    results = [dec.params_at(f, cut) for f in range(5, 12)]
    out["track_cut_expected.npy"] = _npy(np.stack([r[0] for r in results]))
    manifest.append(
        {"file": "track_cut.bin", "what": "the track cut at frame 5 (no KEY before frame 7): awaiting_key, then ok",
         "frames": list(range(5, 12)), "expected": "track_cut_expected.npy", "kinds": kinds[5:],
         "statuses": [r[1] for r in results]}
    )

    manifest += _concealment_vectors(enc.header, packets, out)
    headers, bindings = _header_vectors(enc.header, out)
    out.update(build_still_vectors())
    out.update(build_grid_track_vectors())
    out.update(build_progressive_grid_vectors())
    out.update(build_shift_run_vectors())
    out.update(build_scene_vectors())
    out.update(build_ahead_vectors())
    out.update(build_window_vectors())
    out.update(build_compact_grid_vectors())

    # KEY coding 3 (since 1.2): predicted from an initialisation. On the small config with
    # a given reference set; then the initialisation alone (every width 0).
    irng = np.random.default_rng(12)  # its own generator: the vectors before it keep their values
    init_ref = _params(SMALL, irng)
    adapted = (init_ref + irng.normal(0, 0.02, init_ref.shape)).astype(np.float32)
    ikey = Packet(0, "key", 0, encode_init_key_payload(adapted, init_ref, sizes, 1 / 64), INIT_KEY_CODING)
    out["packet_key_init.bin"] = encode_packet(ikey)
    out["packet_key_init_reference.npy"] = _npy(init_ref)
    out["packet_key_init_expected.npy"] = _npy(decode_payload(ikey, None, sizes, init=init_ref))
    empty = Packet(0, "key", 0, encode_init_key_payload(init_ref, init_ref, sizes, 1 / 64), INIT_KEY_CODING)
    out["packet_key_init_empty.bin"] = encode_packet(empty)
    manifest += [
        {"file": "packet_key_init.bin", "what": "KEY, coding 3 (a coding-1 delta payload against the initialisation)",
         "frame": 0, "init": "packet_key_init_reference.npy", "expected": "packet_key_init_expected.npy"},
        {"file": "packet_key_init_empty.bin", "what": "KEY, coding 3, the initialisation alone (all widths 0)",
         "frame": 0, "init": "packet_key_init_reference.npy", "expected": "packet_key_init_reference.npy"},
    ]

    # A 3-frame track of the default config whose keys are predicted from the shipped "naive"
    # initialisation, named in the header by the SHA-256 of its parameters. A decoder that
    # does not hold that initialisation reports every frame "unavailable".
    if shipped_init_path("naive").exists():
        net, _ = load_init(shipped_init_path("naive"))
        ivec = flatten_state(net.state_dict())
        dheader = TrackHeader(net.config, (24, 1), 3, 64, 36, hdr10=HDR10, binding=BINDING,
                              encoder={"name": "sidecar/make_vectors.py"})
        denc = TrackEncoder(dheader, key_interval=2, key_dtype="init", init=("naive", ivec), delta_step=1 / 64)
        drng = np.random.default_rng(13)
        w = (ivec + drng.normal(0, 1e-3, ivec.shape)).astype(np.float32)
        for frame in range(3):
            if frame:
                w = (w + drng.normal(0, 1e-3, w.shape)).astype(np.float32)
            denc.add(frame, w, key_max_bytes=600 if frame == 2 else None)
        out["track_init.bin"] = write_track_blob(denc.header, denc.packets)
        out["track_init_expected.npy"] = _npy(np.stack([_decode_all(denc.header, denc.packets)[f] for f in range(3)]))
        manifest.append(
            {"file": "track_init.bin", "what": "default config; KEY coding 3 against the shipped 'naive' "
             "initialisation at 0 and 2 (frame 2 coarsened to fit 600 bytes), a DELTA between",
             "config": "default", "expected": "track_init_expected.npy",
             "kinds": [p.kind for p in denc.packets], "key_choices": dict(sorted(denc.key_choices.items())),
             "statuses": ["ok"] * 3}
        )

    for entry in manifest:
        entry.setdefault("config", "small" if entry["file"] != "paper_key_fp16.bin" else "paper")
    out["manifest.json"] = (
        json.dumps(
            {
                "configs": {"small": json.loads(SMALL.to_json()), "paper": json.loads(CONFIGS["paper"].to_json()),
                            "default": json.loads(CONFIGS["default"].to_json()),
                            "small-fourier": json.loads(SMALL_FOURIER.to_json())},
                "vectors": manifest,
                "headers": headers,
                "bindings": bindings,
            },
            sort_keys=True,
            indent=1,
        )
        + "\n"
    ).encode()
    return out


def _blob(header, raw_by_frame: dict[int, bytes]) -> bytes:
    """The whole-track file (SPEC 7) with the index frames given, whatever the packets say
    (``write_track_blob`` takes each packet's own frame, so it cannot write a mismatch)."""
    hbytes = header.to_bytes()
    head = b"ITMB" + struct.pack("<BBHI", 1, 1, 0, len(hbytes)) + hbytes
    items = sorted(raw_by_frame.items())
    offset = len(head) + 4 + 16 * len(items) + 4
    entries = []
    for frame, raw in items:
        entries.append(struct.pack("<IIIB3x", frame, offset, len(raw), raw[5]))
        offset += len(raw)
    front = head + struct.pack("<I", len(items)) + b"".join(entries)
    return front + struct.pack("<I", zlib.crc32(front)) + b"".join(raw for _, raw in items)


def _track_vector(name: str, what: str, header, raw_by_frame: dict[int, bytes], out: dict) -> dict:
    """A track file of ``raw_by_frame`` (index frame -> packet bytes, written as given) and
    its decoded sets and statuses."""
    blob = _blob(header, raw_by_frame)
    _, by_frame = read_track_blob(blob)
    dec = TrackDecoder(header)
    frames = list(range(min(by_frame), max(by_frame) + 1))
    results = [dec.params_at(f, by_frame) for f in frames]
    out[f"{name}.bin"] = blob
    out[f"{name}_expected.npy"] = _npy(np.stack([r[0] for r in results]))
    return {"file": f"{name}.bin", "what": what, "frames": frames, "expected": f"{name}_expected.npy",
            "statuses": [r[1] for r in results]}


def _concealment_vectors(header, packets, out: dict) -> list[dict]:
    """One track per decoding rule of SPEC section 5 (12-frame track: KEYs at 0, 4, 7
    (shot 1), 11 (shot 1); frame 2 a REPEAT; the others DELTAs)."""
    raw = {p.frame: encode_packet(p) for p in packets}

    def flipped(frame: int) -> bytes:
        bad = bytearray(raw[frame])
        bad[24] ^= 0x10
        return bytes(bad)

    def version(frame: int, major: int) -> bytes:
        b = bytearray(raw[frame])
        b[4] = major
        return _recrc(bytes(b))

    cases = [
        ("track_lost_shot_key", ("frame 7's KEY (opening shot 1) absent: frame 8's DELTA of shot 1 takes the "
         "next valid KEY of its shot (frame 11) now, and the DELTAs 9, 10 apply on top of it"),
         {f: r for f, r in raw.items() if f != 7}),
        ("track_lost_shot_keys", ("frame 7's KEY absent and frame 11's KEY damaged: no valid KEY of shot 1, "
         "so shot 1's DELTAs apply to the held set of shot 0"),
         {f: (flipped(f) if f == 11 else r) for f, r in raw.items() if f != 7}),
        ("track_lost_first_key", ("frame 0's KEY damaged: the first valid KEY (frame 4) is used as if it "
         "preceded frame 0; frames 1-3 apply to it, concealed"),
         {f: (flipped(f) if f == 0 else r) for f, r in raw.items()}),
        ("track_no_key", "every KEY damaged: unavailable everywhere (the zero vector)",
         {f: (flipped(f) if p.kind == "key" else raw[f]) for f, p in ((p.frame, p) for p in packets)}),
        ("track_frame_mismatch", ("the packets of frames 5 and 6 swapped in the index (each packet's frame "
         "disagrees with its entry): both damaged, the set is held"),
         {**raw, 5: raw[6], 6: raw[5]}),
        ("track_version9_packet", ("frame 5's packet claims major version 9 (CRC valid): inside a track it is "
         "damaged and concealed, not a refusal of the track"),
         {**raw, 5: version(5, 9)}),
    ]
    entries = [_track_vector(name, what, header, by_frame, out) for name, what, by_frame in cases]
    zero = dataclasses.replace(header, frame_count=0)
    entries.append(_track_vector("track_frame_count0", "track.bin with frame_count 0 (unknown): decodes "
                                 "identically; the span comes from the packets", zero, raw, out))
    return entries


def _header_with_json(header, edit) -> bytes:
    """``header.to_bytes()`` with its JSON changed by ``edit`` (binary major/minor kept, CRC valid)."""
    doc = header.to_json_dict()
    edit(doc)
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    head = b"ITMT" + struct.pack("<BBHI", 1, 1, 0, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


def _header_vectors(header, out: dict) -> tuple[list[dict], list[dict]]:
    """Header version cases (SPEC 8) and binding cases (SPEC 6) against track.bin's header."""
    out["header_json_minor0.bin"] = _header_with_json(header, lambda d: d.update(version=[1, 0]))
    # 1.10: the same header declared 1.10, compressed against header dictionary 1 (flag bit 0);
    # and that form with flag bit 1 set (CRC valid), which no reader knows
    ten = dataclasses.replace(header, version=(1, 10))
    out["header_dictionary.bin"] = ten.to_compressed_bytes()
    odd = bytearray(out["header_dictionary.bin"][:-4])
    odd[6] |= 0x02
    out["header_dictionary_flags.bin"] = bytes(odd) + struct.pack("<I", zlib.crc32(bytes(odd)))
    out["header_json_major2.bin"] = _header_with_json(header, lambda d: d.update(version=[2, 0]))
    headers = [
        {"file": "header_compressed.bin", "what": "track.bin's header in the compressed form (1.3): the same "
         "header", "same_as": "track.bin", "header_id": header.header_id},
        {"file": "header_ref.bin", "what": "a header reference (1.3) naming track.bin's header",
         "header_id": header.header_id},
        {"file": "header_dictionary.bin", "what": "track.bin's header declared 1.10, compressed against header "
         "dictionary 1 (1.10, flags 0x0001)", "same_as": "track.bin", "version": [1, 10],
         "dictionary": "itmfilter/assets/header-dictionary-1.json", "header_id": ten.header_id},
        {"file": "header_dictionary_flags.bin", "what": "header_dictionary.bin with flag bit 1 set (CRC valid): "
         "refused", "error_contains": "unknown flags"},
        {"file": "header_json_minor0.bin", "what": "binary header 1.1 whose JSON says [1, 0]: accepted, "
         "the JSON's version is the header's", "version": [1, 0]},
        {"file": "header_json_major2.bin", "what": "binary header 1.1 whose JSON says [2, 0]: refused",
         "error_contains": "version 2"},
    ]
    b = header.binding
    bindings = [
        {"computed": dict(b), "matches": True, "what": "the same video"},
        {"computed": {"width": b["width"], "height": b["height"]}, "matches": True,
         "what": "only width and height known (the SEI form's binding): shared keys agree"},
        {"computed": {**b, "first_keyframe_sha256": "1" * 64}, "matches": False, "what": "a re-encode"},
        {"computed": {"width": b["width"], "height": b["height"] * 2}, "matches": False, "what": "a scaled stream"},
        {"computed": {"duration": 5}, "matches": False, "what": "no shared key"},
        {"computed": {}, "matches": False, "what": "nothing computed"},
    ]
    return headers, bindings


# --------------------------------------------------------------------------- pixels (SPEC 12)

PIXEL_CONFIGS = ("default", "stills", "paper", "paper-direct", "fourier", "siren-mmr")
"""Every named config of :data:`CONFIGS`: both coordinate encodings and all three priors."""
PIXEL_H, PIXEL_W = 4, 6


def _pixel_params(config: ModelConfig, rng: np.random.Generator) -> np.ndarray:
    """A weight set whose output is a plausible picture: :func:`_params`, with an ``mmr3``
    polynomial near a 2.2-power placement (every one of the 22 terms non-zero, so their
    order matters) and a residual head scaled to move PQ by a few hundredths."""
    vec = _params(config, rng)
    pos = 0
    for name, shape in param_layout(config):
        n = int(np.prod(shape))
        if name == "prior_mmr":
            mmr = rng.normal(0.0, 0.02, (22, 3))
            mmr[0] += 0.06
            mmr[1:4] += 0.45 * np.eye(3)
            vec[pos : pos + n] = mmr.ravel()
        elif name.startswith("fusion.") and shape[0] == 3 and config.prior != "none":
            vec[pos : pos + n] *= 0.1
        pos += n
    return vec.astype(np.float32)


def _fp16_exact(vec: np.ndarray, config: ModelConfig) -> np.ndarray:
    """``vec`` as an fp16 KEY carries it (prior_* tensors stay float32)."""
    sizes, wide = tensor_sizes(config), wide_tensors(config)
    coding, payload = encode_key_payload(vec, sizes, "fp16", wide=wide)
    return decode_payload(Packet(0, "key", 0, payload, coding), None, sizes, wide)


def _raw_planes(planes) -> bytes:
    """Planar Y, Cb, Cr, each row-major, as FFmpeg's yuv420p (uint8) / yuv420p10le (uint16 LE)."""
    return b"".join(np.ascontiguousarray(p).astype(p.dtype.newbyteorder("<")).tobytes() for p in planes)


def build_pixel_vectors() -> dict[str, bytes]:
    """The HDR-output vectors of ``sidecar/vectors/pixels/`` by name: per config a KEY
    packet, and the PQ R'G'B' (float32) and 10-bit Y'CbCr 4:2:0 codes it gives for the two
    shared SDR inputs; the still form (PNG chunk -> pixels). Outputs are computed by the
    reference code in fp32 on the CPU (``predict_pq``, ``pq_to_yuv420p10``)."""
    import torch

    from itmfilter.colour.ycbcr import (
        rgb_to_ycbcr,
        subsample_chroma,
        upsample_chroma,
        ycbcr_to_rgb,
    )
    from itmfilter.media.stills import write_sdr_png
    from itmfilter.model.inference import predict_pq
    from itmfilter.model.net import ITMNet
    from itmfilter.model.weightset import WeightSet, encode
    from itmfilter.render.frame import pq_to_yuv420p10
    from itmfilter.track.format import unflatten
    from itmfilter.track.stills import CHUNK_NAME, INFO_CHUNK_NAME, sdr_fingerprint

    rng = np.random.default_rng(20261130)
    out: dict[str, bytes] = {}
    entries: list[dict] = []

    # Input 1: R'G'B' float32, with the corners at black, white and out-of-range values.
    rgb = rng.uniform(0.0, 1.0, (PIXEL_H, PIXEL_W, 3)).astype(np.float32)
    rgb[0, 0], rgb[0, -1], rgb[-1, 0] = 0.0, 1.0, (1.0, 0.5, 0.0)
    out["input_rgb.npy"] = _npy(rgb)
    # Input 2: 8-bit Y'CbCr 4:2:0, BT.709 narrow range, with codes outside 16-235/240.
    ycc = rgb_to_ycbcr(rng.uniform(0.0, 1.0, (PIXEL_H, PIXEL_W, 3)), "bt709", 8, False).astype(np.uint8)
    y, cb, cr = (p.astype(np.uint8) for p in subsample_chroma(ycc, "420"))
    y[0, 0], y[0, 1], cb[0, 0], cr[0, 0] = 0, 255, 255, 1
    out["input_420.yuv"] = _raw_planes((y, cb, cr))
    sdr = upsample_chroma(y.astype(np.float32), cb, cr, "420")
    sdr = np.clip(ycbcr_to_rgb(sdr, "bt709", 8, False, dtype=np.float32), 0.0, 1.0)
    out["input_420_rgb.npy"] = _npy(sdr)
    inputs = {"rgb": rgb, "420": sdr}

    for name in PIXEL_CONFIGS:
        config = CONFIGS[name]
        params = _fp16_exact(_pixel_params(config, rng), config)
        sizes = tensor_sizes(config)
        coding, payload = encode_key_payload(params, sizes, "fp16", wide=wide_tensors(config))
        key = f"{name}_key.bin"
        out[key] = encode_packet(Packet(0, "key", 0, payload, coding))
        net = ITMNet(config)
        net.load_state_dict(unflatten(config, params))
        for src, picture in inputs.items():
            with torch.no_grad():
                pq = predict_pq(net, picture, precision="fp32").numpy()
            out[f"{name}_{src}_pq.npy"] = _npy(pq)
            out[f"{name}_{src}.yuv"] = _raw_planes(pq_to_yuv420p10(pq))
        entries.append({"config": name, "model_config": json.loads(config.to_json()), "key": key,
                        "outputs": {src: {"pq": f"{name}_{src}_pq.npy", "yuv420p10le": f"{name}_{src}.yuv"}
                                    for src in inputs}})

    # The still form: an 8-bit PNG with the weight set (ITMW, fp16) in itMf, its info in itMj.
    config = CONFIGS["stills"]
    params = _fp16_exact(_pixel_params(config, rng), config)
    codes = rng.integers(0, 256, (PIXEL_H, PIXEL_W, 3))
    still = (codes / 255.0).astype(np.float32)
    net = ITMNet(config)
    net.load_state_dict(unflatten(config, params))
    blob = encode(WeightSet.from_net(net), "fp16")
    info = {"binding": {"sdr_sha256": sdr_fingerprint(still, 8)}, "format": "itmfilter-still", "version": 1,
            "sdr": {"black_nits": 0.0, "primaries": "bt709", "transfer": "bt1886", "white_nits": 100.0}}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "still.png"
        write_sdr_png(path, still, bits=8, chunks={CHUNK_NAME: blob,
                                                   INFO_CHUNK_NAME: json.dumps(info, sort_keys=True).encode()})
        out["still.png"] = path.read_bytes()
    picture = codes.astype(np.float32) * np.float32(1.0 / 255)
    with torch.no_grad():
        out["still_pq.npy"] = _npy(predict_pq(net, picture, precision="fp32").numpy())
    still_entry = {"file": "still.png", "config": "stills", "expected": "still_pq.npy",
                   "sdr_sha256": info["binding"]["sdr_sha256"]}

    out["manifest.json"] = (json.dumps({"inputs": {"rgb": "input_rgb.npy", "420": "input_420.yuv",
                                                    "420_rgb": "input_420_rgb.npy",
                                                    "size": [PIXEL_H, PIXEL_W]},
                                        "networks": entries, "still": still_entry},
                                       sort_keys=True, indent=1) + "\n").encode()
    return out


def build_still_vectors() -> dict[str, bytes]:
    """Version-2 still payloads (SPEC section 11) over one small SDR picture, with the
    pixels a reader must produce (float32 cd/m2) and ``still_manifest.json``."""
    from itmfilter.model.grid import GridConfig, pack_grid_model
    from itmfilter.model.residual import BASE_MODEL, BASE_SDR_PLACED, ResidualPlan
    from itmfilter.model.weightset import decode_still, encode_grid_still

    rng = np.random.default_rng(7)
    h, w = 16, 24
    sdr = (rng.integers(0, 256, (h, w, 3)) / 255).astype(np.float32)
    sdr[2:6, 3:9] = (rng.integers(242, 256, (4, 6, 3)) / 255).astype(np.float32)  # a clipped patch
    hdr = (np.power(sdr, 2.4) * 600 + rng.uniform(0, 50, sdr.shape)).astype(np.float32)  # a plausible master

    def mmr() -> np.ndarray:
        m = rng.normal(0, 0.01, (22, 3)).astype(np.float32)
        m[0] += 0.1
        m[1:4] += np.eye(3, dtype=np.float32) * 0.45
        return m

    def model(cfg: GridConfig) -> bytes:
        q = rng.integers(0, 1 << cfg.grid_bits, cfg.grid_shape).astype(np.uint8)
        lo = np.full(cfg.channels, -0.25, np.float32)
        hi = np.full(cfg.channels, 0.25, np.float32)
        mlp = [(float(np.float32(0.01)), rng.integers(-127, 128, shape).astype(np.int8)) for shape in cfg.mlp_shapes()]
        return pack_grid_model(cfg, mmr(), q, lo, hi, mlp)

    bilateral = model(GridConfig(width=4, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=7))
    plane = model(GridConfig(width=2, height=2, depth=0, channels=3, hidden=0, layers=0, grid_bits=8))
    grid_only = encode_grid_still(bilateral)
    model_nits = decode_still(grid_only).reconstruct_nits(sdr)
    residual = ResidualPlan(sdr, model_nits, hdr, 242, 2, 3, base=BASE_MODEL).code(50)
    gain = ResidualPlan(sdr, None, hdr, 0, 1, 1, base=BASE_SDR_PLACED).code(60)
    gain_pq = ResidualPlan(sdr, None, hdr, 0, 2, 3, base=BASE_SDR_PLACED, domain="pq").code(60)
    payloads = {
        "still_grid.bin": (encode_grid_still(bilateral, residual),
                           "bilateral grid 4x3x4, C 4, MLP 8-8, + residual over the model (t242, 1/2, 3 ch)"),
        "still_plane.bin": (encode_grid_still(plane), "polynomial + 2D 2x2 plane, no MLP, no residual"),
        "still_gainmap.bin": (encode_grid_still(b"", gain), "no model: a 1-channel gain layer over the placed SDR"),
        "still_gainmap_pq.bin": (encode_grid_still(b"", gain_pq),
                                 "no model: a 3-channel PQ-difference layer at 1/2 over the placed SDR (base byte 0x11)"),
    }
    # A grid model in the compact layout (flag bit 1, SPEC 11.2), drawn from its own
    # generator so that the vectors above keep their bytes; its MLP scale is small enough that
    # most pixels decode inside (0, 1), where the binary16 fields' arithmetic shows.
    compact = _random_grid_model(GridConfig(width=4, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=7),
                                 np.random.default_rng(22), compact=True, mlp_scale=0.002)
    payloads["still_grid_compact.bin"] = (encode_grid_still(compact),
                                          "bilateral grid 4x3x4, C 4, MLP 8-8 in the compact layout (flag bit 1)")
    out = {"still_sdr.npy": _npy(sdr)}
    entries = []
    for name, (data, what) in payloads.items():
        out[name] = data
        expected = name.replace(".bin", "_expected.npy")
        out[expected] = _npy(decode_still(data).reconstruct_nits(sdr))
        entries.append({"file": name, "what": what, "sdr": "still_sdr.npy", "expected": expected})
    bad = bytearray(payloads["still_grid.bin"][0])
    bad[40] ^= 0x01
    out["still_damaged.bin"] = bytes(bad)
    entries.append({"file": "still_damaged.bin", "what": "still_grid.bin with one bit flipped", "error_contains": "CRC-32"})
    out["still_manifest.json"] = (json.dumps({"vectors": entries}, sort_keys=True, indent=1) + "\n").encode()
    return out


def _random_grid_model(cfg, rng: np.random.Generator, compact: bool = False, mlp_scale: float = 0.01) -> bytes:
    """A grid model of ``cfg`` drawn from ``rng`` (a plausible polynomial, a random grid and
    int8 MLP of scale ``mlp_scale``), packed (``compact``: in format 1.11's compact layout): the
    grid vectors' model."""
    from itmfilter.model.grid import pack_grid_model

    mmr = rng.normal(0, 0.01, (22, 3)).astype(np.float32)
    mmr[0] += 0.1
    mmr[1:4] += np.eye(3, dtype=np.float32) * 0.45
    q = rng.integers(0, 1 << cfg.grid_bits, cfg.grid_shape).astype(np.uint8)
    lo, hi = np.full(cfg.channels, -0.25, np.float32), np.full(cfg.channels, 0.25, np.float32)
    mlp = [(float(np.float32(mlp_scale)), rng.integers(-127, 128, shape).astype(np.int8)) for shape in cfg.mlp_shapes()]
    return pack_grid_model(cfg, mmr, q, lo, hi, mlp, compact=compact)


def build_grid_track_vectors() -> dict[str, bytes]:
    """Format 1.4: a 7-frame track whose shot opens with a grid KEY (coding 4), then shift-only
    DELTAs coding 3 (1, 2, 4, 6), a REPEAT (3) and a DELTA coding 1 (5: not allowed in a grid
    shot, damaged: the placement holds and later frames are concealed). Expected: each frame's
    placement and the PQ a decoder produces on ``track_grid_sdr.npy``; ``grid_manifest.json``."""
    from itmfilter.model.grid import GridConfig
    from itmfilter.track.codec import GRID_KEY_CODING, GRID_MINOR, encode_delta_payload, encode_grid_key

    rng = np.random.default_rng(11)
    h, w = 8, 12
    sdr = (rng.integers(0, 256, (h, w, 3)) / 255).astype(np.float32)
    cfg = GridConfig(width=6, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=7)
    model = _random_grid_model(cfg, rng)
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=7, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, GRID_MINOR))
    shift = lambda dx, dy: encode_motion_payload((dx, dy), None, HALF_MOTION_DELTA_CODING)  # noqa: E731
    packets = [
        Packet(0, "key", 0, encode_grid_key(model, (-0.3125, 0.0625), (1.375, 1.0625)), GRID_KEY_CODING),
        Packet(1, "delta", 0, shift(0.0421875, -0.0185185), HALF_MOTION_DELTA_CODING),
        Packet(2, "delta", 0, shift(0.05, 0.0), HALF_MOTION_DELTA_CODING),
        Packet(3, "repeat", 0, b""),
        Packet(4, "delta", 0, shift(-0.125, 0.03125), HALF_MOTION_DELTA_CODING),
        Packet(5, "delta", 0, encode_delta_payload([np.float32(0.01)], [np.ones(4, np.int8)]),
               DELTA_CODING),
        Packet(6, "delta", 0, shift(0.25, 0.0), HALF_MOTION_DELTA_CODING),
    ]
    blob = write_track_blob(header, [encode_packet(p, compact=True) for p in packets])
    _, by_frame = read_track_blob(blob)
    dec = TrackDecoder(header)
    results = [dec.params_at(f, by_frame) for f in range(7)]
    out = {"track_grid.bin": blob, "track_grid_sdr.npy": _npy(sdr),
           "track_grid_expected.npy": _npy(np.stack([r[0].predict_pq(sdr) for r in results])),
           "track_grid_placements.npy": _npy(np.array([[*r[0].origin, *r[0].half] for r in results], np.float64))}
    entry = {"file": "track_grid.bin", "what": "1.4: grid KEY (6x3x4, C 4, MLP 8-8) then shifts, a REPEAT and a "
             "DELTA coding 1 that a grid shot refuses (damaged, then concealed)", "sdr": "track_grid_sdr.npy",
             "expected": "track_grid_expected.npy", "placements": "track_grid_placements.npy",
             "statuses": [r[1] for r in results]}
    out["grid_manifest.json"] = (json.dumps({"vectors": [entry]}, sort_keys=True, indent=1) + "\n").encode()
    return out


def build_compact_grid_vectors() -> dict[str, bytes]:
    """Format 1.11: a 5-frame track whose shot opens with a grid KEY (coding 4) whose model
    takes the compact layout (flag bit 1: its polynomial and MLP scales as binary16, the grid
    codes and the MLP in two zstd frames), then shifts (1, 2, 4) and a
    REPEAT (3). Expected: each frame's placement, cells and the PQ a decoder produces on
    ``track_grid_compact_sdr.npy``; ``grid_compact_manifest.json``."""
    from itmfilter.model.grid import GridConfig
    from itmfilter.track.codec import COMPACT_MODEL_MINOR, GRID_KEY_CODING, encode_grid_key

    rng = np.random.default_rng(17)
    h, w = 6, 8
    sdr = (rng.integers(0, 256, (h, w, 3)) / 255).astype(np.float32)
    model = _random_grid_model(GridConfig(width=5, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=6),
                               rng, compact=True, mlp_scale=0.0013)  # outputs inside (0, 1): no clip hides them
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=5, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, COMPACT_MODEL_MINOR))
    shift = lambda dx, dy: encode_motion_payload((dx, dy), None, HALF_MOTION_DELTA_CODING)  # noqa: E731
    packets = [
        Packet(0, "key", 0, encode_grid_key(model, (0.125, -0.0625), (1.25, 1.125)), GRID_KEY_CODING),
        Packet(1, "delta", 0, shift(0.0375, 0.0), HALF_MOTION_DELTA_CODING),
        Packet(2, "delta", 0, shift(0.0375, -0.015625), HALF_MOTION_DELTA_CODING),
        Packet(3, "repeat", 0, b""),
        Packet(4, "delta", 0, shift(-0.25, 0.0), HALF_MOTION_DELTA_CODING),
    ]
    what = ("1.11: a grid KEY (5x3x4, C 4, MLP 8-8, 6 bits) whose model takes the compact layout (flag bits "
            "0x03: binary16 polynomial and MLP scales, two zstd frames), then shifts and a REPEAT")
    return _grid_track_vectors(header, sdr, "track_grid_compact_sdr.npy", 5, "grid_compact_manifest.json",
                               [("track_grid_compact.bin", packets, what)])


def build_progressive_grid_vectors() -> dict[str, bytes]:
    """Format 1.5: an 8-frame progressive grid shot. A KEY coding 5 (grid 4x3x4, C 4, MLP 8-8,
    and the first 40 bytes of a refinement stream of two records: the grid to 7x5, then to
    13x9), DELTAs coding 4 at 1, 2 (record 1 completes at 2), 5, 6 (record 2 completes at 6),
    a shift alone (DELTA coding 3) at 3 and 7, a REPEAT at 4. ``track_grid_progressive.bin``
    decodes in full; ``track_grid_progressive_lost.bin`` lacks frame 5's packet, so the stream
    breaks there: frame 6's shift still applies, its bytes are ignored, the 7x5 model holds.
    Expected: placements, grid cells and the PQ of every frame on ``track_grid_progressive_sdr.npy``
    (6x8); ``grid_progressive_manifest.json``."""
    from itmfilter.model.grid import GridConfig, pack_grid_refinement, refined_config
    from itmfilter.track.codec import (
        GRID_REFINE_DELTA_CODING,
        PROGRESSIVE_GRID_KEY_CODING,
        PROGRESSIVE_GRID_MINOR,
        encode_progressive_grid_key,
        refinement_record,
    )

    rng = np.random.default_rng(13)
    h, w = 6, 8
    sdr = (rng.integers(0, 256, (h, w, 3)) / 255).astype(np.float32)
    cfg = GridConfig(width=4, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=6)
    model = _random_grid_model(cfg, rng)
    records, shape = [], cfg
    for _ in range(2):
        shape = refined_config(shape)
        steps = np.array([0.01, 0.02, 0.005, 0.015], np.float16)
        codes = rng.integers(-20, 21, shape.grid_shape) * (rng.random(shape.grid_shape) < 0.25)  # sparse, as fitted
        records.append(refinement_record(pack_grid_refinement(steps, codes.astype(np.int8))))
    stream, first = b"".join(records), len(records[0])
    assert 60 < first < len(stream) - 60, (first, len(stream))
    cuts = [40, 40 + (first - 40) // 2, first, first + (len(stream) - first) // 2, len(stream)]
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=8, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, PROGRESSIVE_GRID_MINOR))
    shift = lambda dx, dy, data=None: encode_motion_payload((dx, dy), data, HALF_MOTION_DELTA_CODING)  # noqa: E731
    part = lambda k: stream[cuts[k]:cuts[k + 1]]  # noqa: E731
    packets = [
        Packet(0, "key", 0, encode_progressive_grid_key(model, (-0.25, 0.0625), (1.25, 1.0625), stream[:cuts[0]]),
               PROGRESSIVE_GRID_KEY_CODING),
        Packet(1, "delta", 0, shift(0.0421875, -0.0185185, part(0)), GRID_REFINE_DELTA_CODING),
        Packet(2, "delta", 0, shift(0.05, 0.0, part(1)), GRID_REFINE_DELTA_CODING),
        Packet(3, "delta", 0, shift(-0.125, 0.03125), HALF_MOTION_DELTA_CODING),
        Packet(4, "repeat", 0, b""),
        Packet(5, "delta", 0, shift(0.0, 0.0, part(2)), GRID_REFINE_DELTA_CODING),
        Packet(6, "delta", 0, shift(0.0625, 0.0, part(3)), GRID_REFINE_DELTA_CODING),
        Packet(7, "delta", 0, shift(0.25, 0.0), HALF_MOTION_DELTA_CODING),
    ]
    return _grid_track_vectors(header, sdr, "track_grid_progressive_sdr.npy", 8, "grid_progressive_manifest.json", (
        ("track_grid_progressive.bin", packets, "1.5: KEY coding 5 (grid 4x3x4, C 4, MLP 8-8, 40 stream bytes), "
         "DELTAs coding 4 (1, 2, 5, 6), shifts alone (3, 7), a REPEAT (4); the grid 7x5 from frame 2, 13x9 from 6"),
        ("track_grid_progressive_lost.bin", [p for p in packets if p.frame != 5], "the same without frame 5: "
         "missing, the stream broken (frame 6's shift applies, its bytes are ignored), the 7x5 grid holds"),
    ))

def _grid_track_vectors(header, sdr, sdr_name: str, frames: int, manifest: str, variants) -> dict[str, bytes]:
    """Each of ``variants`` (file name, its packets, what it shows) as a compact track blob with
    the PQ of every frame on ``sdr``, the placements, the statuses and the grid sizes a decoder
    must reach over ``frames`` frames, and the manifest listing them."""
    out, entries = {sdr_name: _npy(sdr)}, []
    for name, kept, what in variants:
        blob = write_track_blob(header, [encode_packet(p, compact=True) for p in kept])
        _, by_frame = read_track_blob(blob)
        dec = TrackDecoder(header)
        results = [dec.params_at(f, by_frame) for f in range(frames)]
        stem = name[:-4]
        out[name] = blob
        out[f"{stem}_expected.npy"] = _npy(np.stack([r[0].predict_pq(sdr) for r in results]))
        out[f"{stem}_placements.npy"] = _npy(np.array([[*r[0].origin, *r[0].half] for r in results], np.float64))
        entries.append({"file": name, "what": what, "sdr": sdr_name, "expected": f"{stem}_expected.npy",
                        "placements": f"{stem}_placements.npy", "statuses": [r[1] for r in results],
                        "cells": [[r[0].model.config.width, r[0].model.config.height] for r in results]})
    out[manifest] = (json.dumps({"vectors": entries}, sort_keys=True, indent=1) + "\n").encode()
    return out


def _coarse_shot(seed: int, h: int, w: int):
    """A grid shot's parts for the 1.6 and 1.7 vectors, drawn in this order from
    ``default_rng(seed)``: an ``h x w`` SDR picture, a 4x3x4 grid model (C 4, MLP 8-8, 6 grid
    bits) and a kind-1 refinement of it with sparse codes. Returns ``(rng, sdr, model bytes,
    refinement bytes)``; the caller goes on drawing from ``rng``."""
    from itmfilter.model.grid import GridConfig, pack_grid_refinement, refined_config

    rng = np.random.default_rng(seed)
    sdr = (rng.integers(0, 256, (h, w, 3)) / 255).astype(np.float32)
    cfg = GridConfig(width=4, height=3, depth=4, channels=4, hidden=8, layers=2, grid_bits=6)
    model = _random_grid_model(cfg, rng)
    shape = refined_config(cfg)
    steps = np.array([0.01, 0.02, 0.005, 0.015], np.float16)
    codes = rng.integers(-20, 21, shape.grid_shape) * (rng.random(shape.grid_shape) < 0.25)
    return rng, sdr, model, pack_grid_refinement(steps, codes.astype(np.int8))


def build_shift_run_vectors() -> dict[str, bytes]:
    """Format 1.6: 12 frames, two grid shots with shift runs (DELTA coding 5). Shot 0: a KEY
    coding 5 (grid 4x3x4, C 4, MLP 8-8, the first 40 bytes of a one-record stream: the grid to
    7x5), a run at 1 over 1-3 with the stream's next bytes, a run at 4 over 4-7 with the rest
    (the record completes at 4), a run at 8 over 8-9 whose shifts are all zero (flags 0, no
    pairs). Shot 1: a KEY coding 4 at 10, a run of one frame at 11. ``track_grid_runs.bin``
    decodes in full; ``track_grid_runs_lost.bin`` lacks frame 4's packet: frames 4-7 are
    missing (no packet, no run), the stream breaks, the 4x3 grid holds, the run at 8 applies
    (concealed) and shot 1 decodes. Expected: placements, cells and the PQ of every frame on
    ``track_grid_runs_sdr.npy`` (4x6); ``grid_runs_manifest.json``."""
    from itmfilter.model.grid import GridConfig
    from itmfilter.track.codec import (
        GRID_KEY_CODING,
        PROGRESSIVE_GRID_KEY_CODING,
        SHIFT_RUN_DELTA_CODING,
        SHIFT_RUN_MINOR,
        encode_grid_key,
        encode_progressive_grid_key,
        encode_shift_run,
        refinement_record,
    )

    rng, sdr, model, refinement = _coarse_shot(17, 4, 6)
    h, w = sdr.shape[:2]
    stream = refinement_record(refinement)
    assert len(stream) > 120, len(stream)
    cut = 40 + (len(stream) - 40) // 2
    other = _random_grid_model(GridConfig(width=3, height=2, depth=4, channels=4, hidden=8, layers=2, grid_bits=6), rng)
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=12, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, SHIFT_RUN_MINOR))
    packets = [
        Packet(0, "key", 0, encode_progressive_grid_key(model, (-0.25, 0.0625), (1.25, 1.0625), stream[:40]),
               PROGRESSIVE_GRID_KEY_CODING),
        Packet(1, "delta", 0, encode_shift_run([(0.0421875, -0.0185185), (0.05, 0.0), (-0.125, 0.03125)],
                                               stream[40:cut]), SHIFT_RUN_DELTA_CODING),
        Packet(4, "delta", 0, encode_shift_run([(0.0625, 0.0), (0.0, 0.0), (0.03125, -0.0078125), (0.25, 0.0)],
                                               stream[cut:]), SHIFT_RUN_DELTA_CODING),
        Packet(8, "delta", 0, encode_shift_run([(0.0, 0.0), (0.0, 0.0)]), SHIFT_RUN_DELTA_CODING),
        Packet(10, "key", 1, encode_grid_key(other, (0.125, -0.0625), (1.125, 1.0)), GRID_KEY_CODING),
        Packet(11, "delta", 1, encode_shift_run([(-0.0390625, 0.015625)]), SHIFT_RUN_DELTA_CODING),
    ]
    return _grid_track_vectors(header, sdr, "track_grid_runs_sdr.npy", 12, "grid_runs_manifest.json", (
        ("track_grid_runs.bin", packets, "1.6: KEY coding 5 (grid 4x3x4, 40 stream bytes), shift runs at 1 (1-3, "
         "stream bytes), 4 (4-7, the rest: the grid 7x5 from 4), 8 (8-9, all shifts zero); KEY coding 4 at 10 "
         "(shot 1), a run of one at 11"),
        ("track_grid_runs_lost.bin", [p for p in packets if p.frame != 4], "the same without frame 4's run: frames "
         "4-7 missing, the stream broken (the 4x3 grid holds), the run at 8 concealed, shot 1 decodes"),
    ))


def build_scene_vectors() -> dict[str, bytes]:
    """Format 1.7: 8 frames of one progressive grid shot with shift runs whose stream holds a
    zoom rate (record kind 3, -0.015 a frame: frame t reads at scale 1 - 0.015 t), a kind-1
    refinement (the grid 4x3 to 7x5) and then a scene residual (record kind 2, a 5x4 image over
    the grid square). A KEY coding 5 with the first 40 stream bytes, a run at 1
    over 1-2 with the rest of the kind-1 record and part of the scene's, a run at 3 over 3-5
    with the rest (the residual applies from frame 3), a run at 6 over 6-7. ``track_grid_scene.bin``
    decodes in full; ``track_grid_scene_damaged.bin`` has the scene record's width changed (6, its picture is 5 wide): the run
    at 3 is damaged (4-5, which it would cover, missing; the 7x5 model held without a residual),
    the run at 6 applies (concealed). Expected: placements, cells and the PQ of every frame on
    ``track_grid_scene_sdr.npy`` (6x8); ``grid_scene_manifest.json``. The AV1 bytes depend on
    the encoder build; the expected pixels are what a reader must reach."""
    from itmfilter.model.grid import pack_zoom
    from itmfilter.model.scene import ScenePlan
    from itmfilter.track.codec import (
        PROGRESSIVE_GRID_KEY_CODING,
        SCENE_MINOR,
        SHIFT_RUN_DELTA_CODING,
        encode_progressive_grid_key,
        encode_shift_run,
        refinement_record,
    )

    rng, sdr, model, refinement = _coarse_shot(19, 6, 8)
    h, w = sdr.shape[:2]
    # the zoom record (kind 3) opens the stream, within the KEY; then the kind-1 refinement
    first = refinement_record(pack_zoom(-0.015)) + refinement_record(refinement)
    with _vector_avif_speed():
        scene = ScenePlan(rng.normal(0, 0.05, (4, 5, 3))).code(60)
    stream = first + refinement_record(scene)
    cut = len(first) + 2  # the scene record opens in the run at 1, its head arrives in the run at 3
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=8, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, SCENE_MINOR))

    def packets(tail: bytes) -> list:
        return [
            Packet(0, "key", 0, encode_progressive_grid_key(model, (-0.25, 0.0625), (1.25, 1.0625), stream[:40]),
                   PROGRESSIVE_GRID_KEY_CODING),
            Packet(1, "delta", 0, encode_shift_run([(0.0421875, -0.0185185), (0.05, 0.0)], stream[40:cut]),
                   SHIFT_RUN_DELTA_CODING),
            Packet(3, "delta", 0, encode_shift_run([(-0.125, 0.03125), (0.0625, 0.0), (0.0, 0.0)], tail),
                   SHIFT_RUN_DELTA_CODING),
            Packet(6, "delta", 0, encode_shift_run([(0.25, 0.0), (0.03125, -0.0078125)]), SHIFT_RUN_DELTA_CODING),
        ]

    # the record's head says 6 cells across, its picture has 5: damaged for every reader
    spoilt = (first + refinement_record(scene[:1] + (6).to_bytes(2, "little") + scene[3:]))[cut:]
    return _grid_track_vectors(header, sdr, "track_grid_scene_sdr.npy", 8, "grid_scene_manifest.json", (
        ("track_grid_scene.bin", packets(stream[cut:]), "1.7: KEY coding 5 (grid 4x3x4, 40 stream bytes: the zoom "
         "-0.015 a frame and the first bytes of the refinement), runs at 1 (1-2: the grid 7x5 from 1) and 3 (3-5: the scene residual, 5x4, from 3), a run at 6 (6-7)"),
        ("track_grid_scene_damaged.bin", packets(spoilt), "the same with the scene record's width changed to 6 (its picture is 5 wide): the run at 3 "
         "damaged, 4-5 missing, the 7x5 model held without a residual, the run at 6 applies (concealed)"),
    ))


def build_window_vectors() -> dict[str, bytes]:
    """Format 1.9: 8 frames of one progressive grid shot with shift runs whose stream holds a
    kind-1 refinement (the grid 4x3 to 7x5), then a scene residual in two windowed pieces
    (record kind 4): a 5x4 image over the window centred (-0.5, 0) of half-size (0.5, 1) (the
    left half of the square), then a 4x4 image over (0.375, 0.125), half-size (0.625, 0.875).
    A KEY coding 5 with the first 40 stream bytes, a run at 1 over 1-2 with the rest of the
    kind-1 record and all of the first piece (applies from 1), a run at 3 over 3-5 with the
    second piece (it replaces the first from 3), a run at 6 over 6-7.
    ``track_grid_window.bin`` decodes in full; ``track_grid_window_damaged.bin`` has the second
    piece's half-size x set to 0: the run at 3 is damaged (4-5 missing, the first piece held),
    the run at 6 applies (concealed). Expected: placements, cells and the PQ of every frame on
    ``track_grid_window_sdr.npy`` (6x8); ``grid_window_manifest.json``."""
    import struct

    from itmfilter.model.scene import ScenePlan
    from itmfilter.track.codec import (
        PROGRESSIVE_GRID_KEY_CODING,
        SHIFT_RUN_DELTA_CODING,
        WINDOW_MINOR,
        encode_progressive_grid_key,
        encode_shift_run,
        refinement_record,
    )

    rng, sdr, model, refinement = _coarse_shot(23, 6, 8)
    h, w = sdr.shape[:2]
    with _vector_avif_speed():
        left = ScenePlan(rng.normal(0, 0.05, (4, 5, 3))).code(60, window=(-0.5, 0.0, 0.5, 1.0))
        right = ScenePlan(rng.normal(0, 0.05, (4, 4, 3))).code(60, window=(0.375, 0.125, 0.625, 0.875))
    first = refinement_record(refinement) + refinement_record(left)
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=8, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, WINDOW_MINOR))

    def packets(second: bytes) -> list:
        stream = first + refinement_record(second)
        return [
            Packet(0, "key", 0, encode_progressive_grid_key(model, (-0.25, 0.0625), (1.25, 1.0625), stream[:40]),
                   PROGRESSIVE_GRID_KEY_CODING),
            Packet(1, "delta", 0, encode_shift_run([(0.0421875, -0.0185185), (0.05, 0.0)], stream[40:len(first)]),
                   SHIFT_RUN_DELTA_CODING),
            Packet(3, "delta", 0, encode_shift_run([(-0.125, 0.03125), (0.0625, 0.0), (0.0, 0.0)],
                                                   stream[len(first):]), SHIFT_RUN_DELTA_CODING),
            Packet(6, "delta", 0, encode_shift_run([(0.25, 0.0), (0.03125, -0.0078125)]), SHIFT_RUN_DELTA_CODING),
        ]

    spoilt = right[:9] + struct.pack("<f", 0.0) + right[13:]  # the half-size x (offset 9) of the second piece
    return _grid_track_vectors(header, sdr, "track_grid_window_sdr.npy", 8, "grid_window_manifest.json", (
        ("track_grid_window.bin", packets(right), "1.9: KEY coding 5 (grid 4x3x4, 40 stream bytes), a run at 1 (1-2: "
         "the grid 7x5 and the first piece, a 5x4 image over the square's left half, from 1), a run at 3 (3-5: the "
         "second piece, 4x4 over (0.375, 0.125) +- (0.625, 0.875), replacing the first from 3), a run at 6 (6-7)"),
        ("track_grid_window_damaged.bin", packets(spoilt), "the same with the second piece's half-size x 0: the run "
         "at 3 damaged, 4-5 missing, the first piece held, the run at 6 applies (concealed)"),
    ))


def build_ahead_vectors() -> dict[str, bytes]:
    """Format 1.8 (the look-ahead): 10 frames, two grid shots with shift runs. Shot 0: a KEY
    coding 5 (grid 4x3x4, no stream), a run at 1 over 1-3 (DELTA coding 5), then the lane: runs
    at 4 (4-5) and 6 (6-7) of DELTA coding 6 whose bytes after the shifts are the first 30 and
    the next bytes of shot 1's stream beyond its KEY's own. Shot 1: a KEY coding 6 at 8 (a 3x2x4
    grid, the first 20 bytes of a one-record stream, the grid refined to 5x3; ``A`` = the
    lane's bytes), a run at 9 (9, DELTA coding 5) with the rest: the record completes at 9.
    ``track_grid_ahead.bin`` decodes in full; ``track_grid_ahead_lost.bin`` lacks frame 6's
    lane packet: frames 6-7 missing, shot 1's ahead bytes incomplete, its stream broken at the
    KEY (the 3x2 grid, frames 8-9 concealed). Expected: placements, cells and the PQ of every
    frame on ``track_grid_ahead_sdr.npy`` (4x6); ``grid_ahead_manifest.json``."""
    from itmfilter.model.grid import GridConfig, pack_grid_refinement, refined_config
    from itmfilter.track.codec import (
        AHEAD_GRID_KEY_CODING,
        AHEAD_MINOR,
        AHEAD_RUN_DELTA_CODING,
        PROGRESSIVE_GRID_KEY_CODING,
        SHIFT_RUN_DELTA_CODING,
        encode_ahead_grid_key,
        encode_progressive_grid_key,
        encode_shift_run,
        refinement_record,
    )

    rng, sdr, model, _ = _coarse_shot(23, 4, 6)
    h, w = sdr.shape[:2]
    cfg = GridConfig(width=3, height=2, depth=4, channels=4, hidden=8, layers=2, grid_bits=6)
    other = _random_grid_model(cfg, rng)
    shape = refined_config(cfg).grid_shape
    codes = rng.integers(-20, 21, shape) * (rng.random(shape) < 0.3)
    stream = refinement_record(pack_grid_refinement(np.array([0.01, 0.02, 0.005, 0.015], np.float16),
                                                    codes.astype(np.int8)))
    assert len(stream) > 80, len(stream)
    ahead = stream[20:-10]
    header = TrackHeader(config=SMALL, fps=(24, 1), frame_count=10, width=w, height=h, hdr10=HDR10, binding=BINDING,
                         encoder={"tool": "make_vectors", "model": "grid"}, version=(1, AHEAD_MINOR))
    packets = [
        Packet(0, "key", 0, encode_progressive_grid_key(model, (-0.25, 0.0625), (1.25, 1.0625)),
               PROGRESSIVE_GRID_KEY_CODING),
        Packet(1, "delta", 0, encode_shift_run([(0.0421875, -0.0185185), (0.05, 0.0), (-0.125, 0.03125)]),
               SHIFT_RUN_DELTA_CODING),
        Packet(4, "delta", 0, encode_shift_run([(0.0625, 0.0), (0.0, 0.0)], ahead[:30]), AHEAD_RUN_DELTA_CODING),
        Packet(6, "delta", 0, encode_shift_run([(0.03125, -0.0078125), (0.25, 0.0)], ahead[30:]),
               AHEAD_RUN_DELTA_CODING),
        Packet(8, "key", 1, encode_ahead_grid_key(len(ahead), encode_progressive_grid_key(
            other, (0.125, -0.0625), (1.125, 1.0), stream[:20])), AHEAD_GRID_KEY_CODING),
        Packet(9, "delta", 1, encode_shift_run([(-0.0390625, 0.015625)], stream[-10:]), SHIFT_RUN_DELTA_CODING),
    ]
    return _grid_track_vectors(header, sdr, "track_grid_ahead_sdr.npy", 10, "grid_ahead_manifest.json", (
        ("track_grid_ahead.bin", packets, "1.8: shot 0 a KEY coding 5, a run at 1 (1-3), lane runs of DELTA coding 6 "
         "at 4 (4-5) and 6 (6-7) carrying shot 1's ahead bytes; shot 1 a KEY coding 6 at 8 (grid 3x2x4, 20 stream "
         "bytes, then the ahead bytes), a run at 9 with the rest: the grid 5x3 from 9"),
        ("track_grid_ahead_lost.bin", [p for p in packets if p.frame != 6], "the same without frame 6's lane packet: "
         "6-7 missing, shot 1's ahead bytes incomplete: its stream broken at the KEY (3x2 grid, 8-9 concealed)"),
    ))


def _decode_all(header, packets) -> dict[int, np.ndarray]:
    dec = TrackDecoder(header)
    by_frame = {p.frame: encode_packet(p) for p in packets}
    return {f: dec.params_at(f, by_frame)[0] for f in sorted(by_frame)}


def main() -> None:
    for folder, files in ((VECTORS, build_vectors()), (VECTORS / "pixels", build_pixel_vectors())):
        folder.mkdir(exist_ok=True)
        for name, data in sorted(files.items()):
            (folder / name).write_bytes(data)
            print(f"{len(data):8d}  {folder.name}/{name}")


if __name__ == "__main__":
    main()
