"""Generate the conformance vectors in ``sidecar/vectors/`` (see ``sidecar/SPEC.md``).

Run ``python sidecar/make_vectors.py`` from the repository root. The output is
deterministic for a given zstandard build: parameters come from a seeded NumPy generator
(not torch), JSON is key-sorted, ``.npy`` files are float32. ``tests/test_track.py``
regenerates everything in memory and requires identical bytes.

A decoder conforms when, for every entry of ``manifest.json``, it reproduces ``expected``
(float32, bit-exact when it computes in binary32 without fused multiply-add), the
``statuses``, or refuses the input with an error mentioning ``error_contains``.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itmfilter.model.net import CONFIGS, ModelConfig  # noqa: E402
from itmfilter.track import (  # noqa: E402
    Packet,
    TrackDecoder,
    TrackEncoder,
    TrackHeader,
    encode_packet,
    read_track_blob,
    track_to_json,
    write_track_blob,
)
from itmfilter.track.codec import (  # noqa: E402
    MOTION_DELTA_CODING,
    decode_payload,
    encode_delta_payload,
    encode_key_payload,
    encode_motion_payload,
    quantise_delta,
)
from itmfilter.track.format import pack_sample, param_layout, tensor_sizes  # noqa: E402
from itmfilter.track.sei import H264, HEVC, build_sei_nal  # noqa: E402

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

    out.update(build_still_vectors())

    for entry in manifest:
        entry.setdefault("config", "small" if entry["file"] != "paper_key_fp16.bin" else "paper")
    out["manifest.json"] = (
        json.dumps(
            {
                "configs": {"small": json.loads(SMALL.to_json()), "paper": json.loads(CONFIGS["paper"].to_json()),
                            "small-fourier": json.loads(SMALL_FOURIER.to_json())},
                "vectors": manifest,
            },
            sort_keys=True,
            indent=1,
        )
        + "\n"
    ).encode()
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
    payloads = {
        "still_grid.bin": (encode_grid_still(bilateral, residual),
                           "bilateral grid 4x3x4, C 4, MLP 8-8, + residual over the model (t242, 1/2, 3 ch)"),
        "still_plane.bin": (encode_grid_still(plane), "polynomial + 2D 2x2 plane, no MLP, no residual"),
        "still_gainmap.bin": (encode_grid_still(b"", gain), "no model: a 1-channel gain layer over the placed SDR"),
    }
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


def _decode_all(header, packets) -> dict[int, np.ndarray]:
    dec = TrackDecoder(header)
    by_frame = {p.frame: encode_packet(p) for p in packets}
    return {f: dec.params_at(f, by_frame)[0] for f in sorted(by_frame)}


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    for name, data in sorted(build_vectors().items()):
        (VECTORS / name).write_bytes(data)
        print(f"{len(data):8d}  {name}")


if __name__ == "__main__":
    main()
