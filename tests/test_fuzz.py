"""Property-based fuzzing of every parser of untrusted bytes (hypothesis), seeded with the
conformance vectors in ``sidecar/vectors``: the weight-set blob (PNG chunk / still
sidecar), the track header, packets with their payload codings, the whole-track file
(MKV attachment), data-track samples and the JSON sidecar.

The property: whatever the bytes, the outcome is a decoded value or the format's own
clean error (:class:`TrackFormatError`, :class:`WeightFormatError`, an :class:`ItmError`)
-- never another exception -- within bounded memory (the address space is capped while
these tests run, so an allocation driven by a hostile size field fails them) and time.

Bounded for CI: ``ITMFILTER_FUZZ_EXAMPLES`` examples per target (default 150),
derandomised so a run is reproducible; raise it for a longer local campaign.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from itmfilter.errors import ItmError  # noqa: E402
from itmfilter.model.net import ITMNet, ModelConfig  # noqa: E402
from itmfilter.model.weightset import WeightFormatError, WeightSet  # noqa: E402
from itmfilter.model.weightset import decode as decode_weights  # noqa: E402
from itmfilter.model.weightset import encode as encode_weights  # noqa: E402
from itmfilter.track import TrackDecoder, TrackFormatError, TrackHeader  # noqa: E402
from itmfilter.track.codec import decode_payload, wide_tensors  # noqa: E402
from itmfilter.track.format import (  # noqa: E402
    decode_packet,
    read_track_blob,
    split_sample,
    tensor_sizes,
    track_from_json,
)

VECTORS = Path(__file__).resolve().parents[1] / "sidecar" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
CONFIGS = {name: ModelConfig.from_dict(c) for name, c in MANIFEST["configs"].items()}
EXAMPLES = int(os.environ.get("ITMFILTER_FUZZ_EXAMPLES", "150"))
CLEAN = (TrackFormatError, WeightFormatError, ItmError)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MEMORY_HEADROOM = 3 << 30
"""Address space the fuzzed parsers may add to the process's (bytes): a KEY of the largest
accepted network is 4 MiB, so anything near this is a size field obeyed without a check."""


@pytest.fixture(autouse=True, scope="module")
def bounded_memory():
    """Cap the address space while the fuzzers run; the soft limit is restored after."""
    vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize:")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- mutations

U32_EDGES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 24, 1 << 30]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("set"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.floats(0, 1), st.sampled_from(U32_EDGES) | st.integers(0, 2**32 - 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
)


def mutate(data: bytes, edits, fix_crc: bool = False) -> bytes:
    """Apply ``edits`` (from :data:`mutation`); ``fix_crc`` rewrites the trailing CRC-32 so
    that the damage reaches the checks behind it."""
    out = bytearray(data)
    for op, where, arg in edits:
        pos = min(int(where * len(out)), max(len(out) - 1, 0))
        if op == "flip" and out:
            out[pos] ^= 1 << arg
        elif op == "set" and out:
            out[pos] = arg
        elif op == "u32" and len(out) >= 4:
            struct.pack_into("<I", out, min(pos, len(out) - 4), arg)
        elif op == "insert":
            out[pos:pos] = arg
        elif op == "delete":
            del out[pos : pos + arg]
        elif op == "truncate":
            del out[pos:]
    if fix_crc and len(out) > 4:
        struct.pack_into("<I", out, len(out) - 4, zlib.crc32(bytes(out[:-4])))
    return bytes(out)


edits = st.lists(mutation, min_size=1, max_size=4)


# --------------------------------------------------------------------------- seeds

def _vector(name: str) -> dict:
    return next(v for v in MANIFEST["vectors"] if v["file"] == name)


PACKET_SEEDS = [v["file"] for v in MANIFEST["vectors"] if v["file"].startswith("packet_")]
TRACK_SEEDS = ["track.bin", "track_damaged.bin"]


def _weight_seed() -> bytes:
    import torch

    torch.manual_seed(0)
    return encode_weights(WeightSet.from_net(ITMNet(CONFIGS["small"])), "fp16")


WEIGHT_SEED = _weight_seed()


def _decode_track(header: TrackHeader, packets: dict[int, bytes]) -> None:
    """Decode every frame that has a packet (and one past each), as a player would."""
    dec = TrackDecoder(header)
    frames = sorted(set(packets) | {f + 1 for f in packets})[:64]
    for f in frames:
        vec, status = dec.params_interpolated(f, packets)
        assert vec.dtype == np.float32 and vec.size == sum(tensor_sizes(header.config))
        assert np.isfinite(vec).all(), (f, status)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(edits=edits, fix_crc=st.booleans())
def test_weight_set_blob(edits, fix_crc):
    data = mutate(WEIGHT_SEED, edits, fix_crc)
    try:
        ws = decode_weights(data)
    except CLEAN:
        return
    assert sum(v.numel() for v in ws.state.values()) == ws.config.parameter_count()


@FUZZ
@given(seed=st.sampled_from(PACKET_SEEDS), edits=edits, fix_crc=st.booleans())
def test_packet_and_payload(seed, edits, fix_crc):
    vector = _vector(seed)
    config = CONFIGS[vector["config"]]
    sizes = tensor_sizes(config)
    reference = np.load(VECTORS / vector["reference"]) if "reference" in vector else None
    data = mutate((VECTORS / seed).read_bytes(), edits, fix_crc)
    try:
        packet = decode_packet(data)
        out = decode_payload(packet, reference, sizes, wide_tensors(config), config)
    except CLEAN:
        return
    assert out.shape == (sum(sizes),) and out.dtype == np.float32


def fix_index_crc(blob: bytes) -> bytes:
    """Recompute a track file's head-and-index CRC-32 where its length fields allow, so
    that a mutated index (frame numbers, offsets, lengths) reaches the checks behind it."""
    if len(blob) < 16:
        return blob
    hlen = struct.unpack_from("<I", blob, 8)[0]
    if 16 + hlen > len(blob):
        return blob
    count = struct.unpack_from("<I", blob, 12 + hlen)[0]
    end = 16 + hlen + 16 * count
    if end + 4 > len(blob):
        return blob
    out = bytearray(blob)
    struct.pack_into("<I", out, end, zlib.crc32(blob[:end]))
    return bytes(out)


@FUZZ
@given(seed=st.sampled_from(TRACK_SEEDS), edits=edits, fix_crc=st.booleans())
def test_track_file(seed, edits, fix_crc):
    data = mutate((VECTORS / seed).read_bytes(), edits)
    if fix_crc:
        data = fix_index_crc(data)
    try:
        header, packets = read_track_blob(data)
    except CLEAN:
        return
    _decode_track(header, packets)


@FUZZ
@given(edits=edits, fix_crc=st.booleans())
def test_track_header_and_data_track_sample(edits, fix_crc):
    blob = (VECTORS / "track.bin").read_bytes()
    hlen = struct.unpack_from("<I", blob, 8)[0]
    header_bytes = blob[12 : 12 + hlen]
    sample = mutate(header_bytes, edits, fix_crc) + (VECTORS / "packet_repeat.bin").read_bytes()
    try:
        header, packet = split_sample(sample)
    except CLEAN:
        return
    if header is not None:
        _decode_track(header, {0: packet})


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)

SIDECAR_PATHS = [
    ("header", "model_config", "hidden"), ("header", "model_config", "fourier_bands"),
    ("header", "model_config", "coord_features"), ("header", "model_config", "siren_w0"),
    ("header", "model_config"), ("header", "fps"), ("header", "frame_count"), ("header", "width"),
    ("header", "hdr10"), ("header", "version"), ("header",), ("version",), ("packets",),
    ("packets", 0, "frame"), ("packets", 0, "data"), ("packets", 3), ("format",),
]


@FUZZ
@given(path=st.sampled_from(SIDECAR_PATHS), value=json_value, packet_edits=edits)
def test_json_sidecar(path, value, packet_edits):
    doc = copy.deepcopy(json.loads((VECTORS / "track.itm.json").read_text()))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    if isinstance(doc.get("packets"), list) and doc["packets"] and isinstance(doc["packets"][-1], dict):
        try:
            raw = base64.b64decode(doc["packets"][-1]["data"])
            doc["packets"][-1]["data"] = base64.b64encode(mutate(raw, packet_edits, True)).decode()
        except (KeyError, TypeError, ValueError):
            pass
    try:
        header, packets = track_from_json(json.loads(json.dumps(doc)))
    except CLEAN:
        return
    _decode_track(header, packets)


CONFIG_KEYS = ["coord_encoding", "coord_features", "rgb_features", "hidden", "siren_w0", "fourier_bands", "prior",
               "unknown"]
config_value = json_value | st.sampled_from([1e9, 10**9, -4, 0, 1e6, 2**31, [10**9], [64] * 100, [1e9, 1],
                                             float("inf"), "fourier", "mmr3", True])


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), config_value, min_size=1, max_size=3),
       where=st.sampled_from(["weights", "header"]))
def test_model_config_in_a_weight_set_or_a_header(changes, where):
    """Structured: any JSON in any config field, behind a valid CRC (a PNG chunk, a still's
    sidecar, a track header): refused before a network is built, or built within limits."""
    config = {**json.loads(WEIGHT_SEED[8 : 8 + struct.unpack_from("<H", WEIGHT_SEED, 6)[0]]), **changes}
    text = json.dumps(config).encode()
    if where == "weights":
        payload = WEIGHT_SEED[12 + struct.unpack_from("<H", WEIGHT_SEED, 6)[0] : -4]
        body = b"ITMW" + struct.pack("<BBH", 1, 1, len(text) & 0xFFFF) + text + struct.pack("<I", len(payload)) + payload
        try:
            decode_weights(body + struct.pack("<I", zlib.crc32(body)))
        except CLEAN:
            return
    else:
        doc = json.loads((VECTORS / "track.itm.json").read_text())
        doc["header"]["model_config"] = json.loads(text)
        try:
            header, packets = track_from_json(doc)
        except CLEAN:
            return
        _decode_track(header, packets)


@FUZZ
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_everywhere(data):
    for parse in (decode_weights, decode_packet, read_track_blob, split_sample, TrackHeader.from_bytes):
        try:
            parse(data)
        except CLEAN:
            pass
