"""The pixel conformance vectors (sidecar/SPEC.md section 12, ``sidecar/vectors/pixels/``).

Three checks: the reference code still produces the stored vectors; an independent
float64 NumPy implementation written from the spec's formulas (below, importing nothing
from the network or colour code) lands within the spec's stated tolerance of them; and the
parts the spec defines bit-exactly (the SDR Y'CbCr -> R'G'B' conversion, the integer
4:2:0 output subsampling, chunking) are bit-exact. The track-layer vectors are checked in
tests/test_track.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

SIDECAR = Path(__file__).resolve().parents[1] / "sidecar"
PIXELS = SIDECAR / "vectors" / "pixels"
MANIFEST = json.loads((PIXELS / "manifest.json").read_text())
H, W = MANIFEST["inputs"]["size"]

PQ_TOLERANCE = 1e-4
"""SPEC 12: a decoder's PQ output must be within this of ``*_pq.npy`` (absolute)."""


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", SIDECAR / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _yuv(name: str, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = np.frombuffer((PIXELS / name).read_bytes(), dtype=np.dtype(dtype).newbyteorder("<"))
    ch, cw = -(-H // 2), -(-W // 2)
    assert flat.size == H * W + 2 * ch * cw
    return (flat[: H * W].reshape(H, W), flat[H * W : H * W + ch * cw].reshape(ch, cw),
            flat[H * W + ch * cw :].reshape(ch, cw))


# --------------------------------------------------------------------------- the reference code


def test_pixel_vectors_regenerate():
    """Inputs, weights, the still and the manifest byte for byte; outputs within the
    spec's tolerance (the CPU's BLAS may sum in another order than the one that made
    them: SPEC 12); on the machine that made them, identical."""
    built = _load_make_vectors().build_pixel_vectors()
    on_disk = {p.name: p.read_bytes() for p in PIXELS.iterdir()}
    assert sorted(built) == sorted(on_disk)
    for name, data in built.items():
        if name.endswith("_pq.npy") and not name.startswith("input"):
            got = np.load(PIXELS / name)
            new = np.frombuffer(data[-got.nbytes :], "<f4").reshape(got.shape)
            assert np.abs(new - got).max() <= 1e-5, name
        elif name.endswith(".yuv") and not name.startswith("input"):
            got = np.frombuffer(on_disk[name], "<u2").astype(int)
            assert np.abs(np.frombuffer(data, "<u2").astype(int) - got).max() <= 1, name
        else:
            assert data == on_disk[name], f"{name} differs: rerun python sidecar/make_vectors.py"
    assert sum(map(len, on_disk.values())) < 300_000


def test_chunking_does_not_change_fp32_results():
    """SPEC 12.3 (precision): chunking changes no pixel beyond the last bits. Not bit-exact: torch's
    vectorised sin/pow and GEMM kernels take scalar tail paths for the elements left over
    from the SIMD width, so a pixel's rounding depends on its place in the chunk (measured
    here: up to 7.8e-6 PQ on ``paper``, 6e-8 elsewhere)."""
    import torch

    from itmfilter.model.inference import predict_pq
    from itmfilter.model.net import CONFIGS, ITMNet

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    sdr = rng.uniform(0, 1, (37, 53, 3)).astype(np.float32)
    for name in ("default", "paper"):
        net = ITMNet(CONFIGS[name])
        with torch.no_grad():
            for p in net.fusion[-1].parameters():
                p.normal_(0, 0.05)
        whole = predict_pq(net, sdr, precision="fp32", chunk=37 * 53)
        for chunk in (1, 7, 1000):
            got = predict_pq(net, sdr, precision="fp32", chunk=chunk)
            assert (got - whole).abs().max().item() <= 1e-5, (name, chunk)


def test_still_vector_through_the_reader():
    """PNG chunk -> weights -> pixels, through the same readers ``itmfilter transcode`` uses."""
    from itmfilter.media.stills import read_png_chunks, read_sdr
    from itmfilter.model.inference import predict_pq
    from itmfilter.model.weightset import decode
    from itmfilter.track.stills import find_weights, sdr_fingerprint

    path = PIXELS / "still.png"
    sdr, bits = read_sdr(path)
    blob, where = find_weights(path, sdr, bits)
    assert where == "embedded PNG chunk"
    info = json.loads(read_png_chunks(path)["itMj"])
    assert info["binding"]["sdr_sha256"] == sdr_fingerprint(sdr, bits) == MANIFEST["still"]["sdr_sha256"]
    pq = predict_pq(decode(blob).to_net(), sdr, precision="fp32").numpy()
    assert np.abs(pq - np.load(PIXELS / "still_pq.npy")).max() <= 1e-5


def test_header_and_binding_vectors():
    from itmfilter.track import TrackHeader
    from itmfilter.track.format import TrackFormatError, read_track_blob

    vec = SIDECAR / "vectors"
    manifest = json.loads((vec / "manifest.json").read_text())
    header, _ = read_track_blob((vec / "track.bin").read_bytes())
    for entry in manifest["headers"]:
        raw = (vec / entry["file"]).read_bytes()
        if "error_contains" in entry:
            with pytest.raises(TrackFormatError, match=entry["error_contains"]):
                TrackHeader.from_bytes(raw)
        elif raw[:4] == b"ITMR":  # a header reference (1.3): "ITMR" and the header id
            assert len(raw) == 8 and struct.unpack("<I", raw[4:])[0] == entry["header_id"] == header.header_id
        elif "dictionary" in entry:  # 1.10: compressed against header dictionary 1 (flag bit 0)
            want = dataclasses.replace(header, version=tuple(entry["version"]))
            assert raw[:4] == b"ITMZ" and struct.unpack("<H", raw[6:8])[0] == 1
            got = TrackHeader.from_bytes(raw)
            assert got == want and got.header_id == entry["header_id"]
            # decoded from the spec's words alone: zstd with the dictionary's bytes as raw content
            zdict = zstandard.ZstdCompressionDict((SIDECAR.parent / entry["dictionary"]).read_bytes(),
                                                  dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            assert zlib.crc32(zstandard.ZstdDecompressor(dict_data=zdict).decompress(raw[12:-4])) == entry["header_id"]
            with pytest.raises(zstandard.ZstdError):  # and not without it
                zstandard.ZstdDecompressor().decompress(raw[12:-4])
            assert len(raw) < len(header.to_compressed_bytes()) - 300
        elif "same_as" in entry:  # the compressed form (1.3) of track.bin's header
            assert raw[:4] == b"ITMZ" and len(raw) < len(header.to_bytes())
            got = TrackHeader.from_bytes(raw)
            assert got == header and got.header_id == entry["header_id"]
            assert zlib.crc32(zstandard.ZstdDecompressor().decompress(raw[12:-4])) == entry["header_id"]
        else:
            assert list(TrackHeader.from_bytes(raw).version) == entry["version"]
    cases = manifest["bindings"]
    assert {c["matches"] for c in cases} == {True, False}
    for case in cases:
        assert header.binding_matches(case["computed"]) == case["matches"], case["what"]


# --------------------------------------------------------------------------- an independent decoder

PQ = {"m1": 2610 / 16384, "m2": 2523 / 4096 * 128, "c1": 3424 / 4096, "c2": 2413 / 4096 * 32, "c3": 2392 / 4096 * 32}


def _layout(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """SPEC 12.1: the tensor list from the config alone."""
    out = [("prior_mmr", (22, 3))] if cfg["prior"] == "mmr3" else []
    width = cfg["rgb_features"]
    if cfg["coord_encoding"] != "none":
        inputs = 2 if cfg["coord_encoding"] == "siren" else 4 * cfg["fourier_bands"]
        out += [("coord.0.weight", (cfg["coord_features"], inputs)), ("coord.0.bias", (cfg["coord_features"],))]
        width += cfg["coord_features"]
    out += [("rgb.0.weight", (cfg["rgb_features"], 3)), ("rgb.0.bias", (cfg["rgb_features"],))]
    for i, h in enumerate([*cfg["hidden"], 3]):
        out += [(f"fusion.{2 * i}.weight", (h, width)), (f"fusion.{2 * i}.bias", (h,))]
        width = h
    return out


def _key_params(raw: bytes, layout) -> dict[str, np.ndarray]:
    """SPEC 3 + 4 + addendum: a KEY coding 1 packet -> named float64 tensors."""
    magic, version, kind, coding, _, _, _, length = struct.unpack_from("<4sBBBBIII", raw)
    assert (magic, version, kind, coding) == (b"ITMP", 1, 1, 1)
    assert struct.unpack_from("<I", raw, 20 + length)[0] == zlib.crc32(raw[: 20 + length])
    data = zstandard.ZstdDecompressor().decompress(raw[20 : 20 + length])
    sizes = [int(np.prod(s)) for _, s in layout]
    wide = [name.startswith("prior_") for name, _ in layout]
    n16, n32 = sum(n for n, w in zip(sizes, wide) if not w), sum(n for n, w in zip(sizes, wide) if w)
    assert len(data) == 2 * n16 + 4 * n32
    half = np.frombuffer(data[: 2 * n16], np.uint8).reshape(2, n16).T.copy().view("<f2").ravel()
    single = np.frombuffer(data[2 * n16 :], np.uint8).reshape(4, n32).T.copy().view("<f4").ravel()
    out, i16, i32 = {}, 0, 0
    for (name, shape), n, w in zip(layout, sizes, wide):
        src = single[i32 : i32 + n] if w else half[i16 : i16 + n]
        i32, i16 = (i32 + n, i16) if w else (i32, i16 + n)
        out[name] = src.astype(np.float64).reshape(shape)
    return out


def _forward(cfg: dict, t: dict[str, np.ndarray], sdr: np.ndarray) -> np.ndarray:
    """SPEC 12.2-12.3 in float64: (H, W, 3) R'G'B' -> (H, W, 3) PQ."""
    h, w, _ = sdr.shape
    ys = (np.arange(h) + 0.5) / h * 2 - 1
    xs = (np.arange(w) + 0.5) / w * 2 - 1
    x, y = np.meshgrid(xs, ys)
    xy = np.stack([x.ravel(), y.ravel()], -1)
    s = sdr.reshape(-1, 3).astype(np.float64)
    relu = lambda v: np.maximum(v, 0.0)
    feats = [relu(s @ t["rgb.0.weight"].T + t["rgb.0.bias"])]
    if cfg["coord_encoding"] == "siren":
        feats.insert(0, np.sin(cfg["siren_w0"] * (xy @ t["coord.0.weight"].T + t["coord.0.bias"])))
    elif cfg["coord_encoding"] == "fourier":
        f = np.array([2.0**k * math.pi for k in range(cfg["fourier_bands"])])
        enc = np.concatenate([np.sin(xy[:, :1] * f), np.cos(xy[:, :1] * f),
                              np.sin(xy[:, 1:] * f), np.cos(xy[:, 1:] * f)], -1)
        feats.insert(0, relu(enc @ t["coord.0.weight"].T + t["coord.0.bias"]))
    v = np.concatenate(feats, -1)
    layers = len(cfg["hidden"]) + 1
    for i in range(layers):
        v = v @ t[f"fusion.{2 * i}.weight"].T + t[f"fusion.{2 * i}.bias"]
        if i < layers - 1:
            v = relu(v)
    if cfg["prior"] == "bt2408":
        m = _bt709_to_bt2020()
        lin = np.clip(s, 0, 1) ** 2.4 * 203.0 @ m.T
        yy = (np.maximum(lin, 0) / 10000) ** PQ["m1"]
        v = v + ((PQ["c1"] + PQ["c2"] * yy) / (1 + PQ["c3"] * yy)) ** PQ["m2"]
    elif cfg["prior"] == "mmr3":
        r, g, b = s.T
        first = np.stack([r, g, b, r * g, r * b, g * b, r * g * b], -1)
        v = v + np.concatenate([np.ones((len(s), 1)), first, first**2, first**3], -1) @ t["prior_mmr"]
    return v.reshape(h, w, 3)


def _bt709_to_bt2020() -> np.ndarray:
    """SPEC 12.3: the matrix from the primaries (D65 white for both)."""
    def rgb_to_xyz(prim):
        xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in prim]).T
        wx, wy = 0.3127, 0.3290
        return xyz * np.linalg.solve(xyz, [wx / wy, 1.0, (1 - wx - wy) / wy])

    bt709 = rgb_to_xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)])
    bt2020 = rgb_to_xyz([(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)])
    return np.linalg.solve(bt2020, bt709)


def _codes420(pq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SPEC 12.6: PQ R'G'B' -> 10-bit narrow BT.2020 NCL codes, then integer 4:2:0."""
    r, g, b = np.nan_to_num(pq.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0).transpose(2, 0, 1)
    yy = 0.2627 * r + (1 - 0.2627 - 0.0593) * g + 0.0593 * b
    cb, cr = (b - yy) / (2 * (1 - 0.0593)), (r - yy) / (2 * (1 - 0.2627))
    code = lambda v, gain, off: np.floor(np.clip(v * gain + off, 4, 1019) + 0.5).astype(np.int64)
    dy, dcb, dcr = code(yy, 876, 64), code(cb, 896, 512), code(cr, 896, 512)

    def down(c):
        c = np.concatenate([c, c[-1:]]) if len(c) % 2 else c
        rows = c[0::2] + c[1::2]
        pad = np.concatenate([rows[:, :1], rows, rows[:, -1:]], 1)
        even = np.arange(0, rows.shape[1], 2)
        return (pad[:, even] + 2 * pad[:, even + 1] + pad[:, even + 2] + 4) // 8

    return dy, down(dcb), down(dcr)


def _sdr_420_to_rgb(y8, cb8, cr8) -> np.ndarray:
    """SPEC 12.4, in binary32 exactly as specified (each operation rounded to binary32)."""
    f = np.float32
    h, w = y8.shape

    def up(c):
        c = c.astype(f)
        rows = np.empty((h, c.shape[1]), f)
        for i in range(h):
            k, near = divmod(i, 2)
            other = min(max(k - 1 if near == 0 else k + 1, 0), c.shape[0] - 1)
            rows[i] = c[k] * f(0.75) + c[other] * f(0.25)  # row 2k + 0.5 is nearest, then k -+ 1
        out = np.empty((h, w), f)
        for j in range(w):
            k = j // 2
            out[:, j] = rows[:, k] if j % 2 == 0 else (rows[:, k] + rows[:, min(k + 1, rows.shape[1] - 1)]) * f(0.5)
        return out

    yy = y8.astype(f) * f(1 / 219) + f(-16 / 219)
    cb = up(cb8) * f(1 / 224) + f(-128 / 224)
    cr = up(cr8) * f(1 / 224) + f(-128 / 224)
    kr, kb = 0.2126, 0.0722
    kg = 1 - kr - kb
    r = cr * f(2 * (1 - kr)) + yy
    b = cb * f(2 * (1 - kb)) + yy
    g = (cb * f(-kb * 2 * (1 - kb) / kg) + yy) + cr * f(-kr * 2 * (1 - kr) / kg)
    return np.clip(np.stack([r, g, b], -1), f(0), f(1))


def test_sdr_420_input_conversion_is_bit_exact():
    y, cb, cr = _yuv(MANIFEST["inputs"]["420"], np.uint8)
    expected = np.load(PIXELS / MANIFEST["inputs"]["420_rgb"])
    assert np.array_equal(_sdr_420_to_rgb(y, cb, cr), expected)


def test_codes_are_a_function_of_the_pq_output():
    """The 10-bit codes of every vector follow bit-exactly from its PQ output."""
    for entry in MANIFEST["networks"]:
        for files in entry["outputs"].values():
            got = _codes420(np.load(PIXELS / files["pq"]))
            for mine, theirs in zip(got, _yuv(files["yuv420p10le"], np.uint16)):
                assert np.array_equal(mine, theirs), files["yuv420p10le"]


@pytest.mark.parametrize("entry", MANIFEST["networks"], ids=lambda e: e["config"])
def test_independent_float64_decoder_matches(entry):
    """A float64 decoder of the spec's formulas is within PQ_TOLERANCE of every vector, and
    its codes differ by at most 1 (where the PQ value lies within the tolerance of a code
    boundary)."""
    from itmfilter.model.net import ModelConfig
    from itmfilter.track.format import param_layout

    cfg = entry["model_config"]
    layout = _layout(cfg)
    assert [(n, tuple(s)) for n, s in layout] == list(param_layout(ModelConfig.from_dict(cfg)))
    tensors = _key_params((PIXELS / entry["key"]).read_bytes(), layout)
    inputs = {"rgb": np.load(PIXELS / MANIFEST["inputs"]["rgb"]),
              "420": np.load(PIXELS / MANIFEST["inputs"]["420_rgb"])}
    for src, files in entry["outputs"].items():
        ref = _forward(cfg, tensors, inputs[src])
        expected = np.load(PIXELS / files["pq"])
        assert np.abs(ref - expected).max() <= PQ_TOLERANCE, (src, np.abs(ref - expected).max())
        for mine, theirs in zip(_codes420(ref), _yuv(files["yuv420p10le"], np.uint16)):
            assert np.abs(mine - theirs.astype(np.int64)).max() <= 1


def test_schema_accepts_every_named_config():
    """schema.json must take every config a track can carry (``mmr3``, the default, too)."""
    jsonschema = pytest.importorskip("jsonschema")
    from itmfilter.model.net import CONFIGS
    from itmfilter.track import TrackHeader, track_to_json

    schema = json.loads((SIDECAR / "schema.json").read_text())
    for config in CONFIGS.values():
        jsonschema.validate(track_to_json(TrackHeader(config, (24, 1), 0, 64, 36), []), schema)


def test_the_spec_prints_header_dictionary_1_byte_for_byte():
    """SPEC section 2 prints the dictionary a 1.10 header is compressed against, and its SHA-256:
    both must be the installed bytes (a decoder written from the spec alone needs them)."""
    import hashlib
    import re

    from itmfilter.track.format import HEADER_DICTIONARY_SHA256, header_dictionary

    data = header_dictionary()
    spec = (SIDECAR / "SPEC.md").read_text()
    assert hashlib.sha256(data).hexdigest() == HEADER_DICTIONARY_SHA256 and HEADER_DICTIONARY_SHA256 in spec
    blocks = re.findall(r"```\n(\{\"binding\".*?)\n```", spec)
    assert blocks == [data.decode("utf-8")] and not data.endswith(b"\n")
    assert re.search(rf"the {len(data)} bytes\s+below", spec)
