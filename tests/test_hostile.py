"""Hostile and careless inputs (issue 15): each crafted here from real bytes and files.

Every case asserts what the README promises for bad input: a clean refusal (an
:class:`ItmError` in the library; one line and exit status 2 from the CLI), memory and
time bounded by the limits in :mod:`itmfilter.limits`, nothing partial left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard

from itmfilter.model.net import ModelConfig
from itmfilter.track import TrackFormatError
from itmfilter.track.codec import decode_delta_payload, decode_key_payload
from itmfilter.track.format import tensor_sizes

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SMALL = ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8))


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root."""
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def cli(*args, timeout: float = 300, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    """``itmfilter ARGS`` as a user runs it, in a fresh process."""
    return subprocess.run([PYTHON, "-m", "itmfilter.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 and one line on stderr that names each of ``words`` and no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], err[-3000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("itmfilter: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


# --------------------------------------------------------------------------- 1. zstd bombs


def _claiming_frame(size: int) -> bytes:
    """A tiny zstd frame whose header claims ``size`` bytes of content (and holds none)."""
    with_size = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * 1000)
    # frame header: magic, descriptor (FCS flag 3: 8-byte size), window, then the size
    descriptor = 0xC0 | 0x20  # 8-byte content size, single segment
    head = with_size[:4] + bytes([descriptor]) + size.to_bytes(8, "little")
    return head + b"\x01\x00\x00"  # one empty last raw block


def test_a_frame_claiming_64_gib_is_damaged_without_allocating():
    sizes = tensor_sizes(SMALL)
    bomb = _claiming_frame(64 << 30)
    assert len(bomb) <= 16 and zstandard.frame_content_size(bomb) == 64 << 30
    for decode in (lambda: decode_key_payload(1, bomb, sizes), lambda: decode_key_payload(2, bomb, sizes),
                   lambda: decode_delta_payload(bomb, np.zeros(sum(sizes), np.float32), sizes)):
        with pytest.raises(TrackFormatError, match="declares"):
            decode()


def test_a_real_bomb_expands_no_further_than_the_packet_allows():
    """A 256 MiB frame of zeros (a few KB compressed) costs the decoder no more memory than a
    packet's worth, with or without a declared content size."""
    proc = _run_child("""
        import io, resource, zstandard
        import numpy as np
        from itmfilter.model.net import ModelConfig
        from itmfilter.track.codec import decode_key_payload
        from itmfilter.track.format import TrackFormatError, tensor_sizes
        sizes = tensor_sizes(ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8)))
        for declare in (True, False):
            out = io.BytesIO()
            comp = zstandard.ZstdCompressor(level=3, write_content_size=declare)
            with comp.stream_writer(out, size=(256 << 20) if declare else -1, closefd=False) as w:
                for _ in range(256):
                    w.write(bytes(1 << 20))
            bomb = out.getvalue()
            assert len(bomb) < 100_000, len(bomb)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                decode_key_payload(1, bomb, sizes)
                raise SystemExit("decoded a bomb")
            except TrackFormatError as exc:
                print(declare, exc)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert grown < 64 << 10, f"memory grew by {grown} KiB"
        """)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- shared real media

W, H, N = 64, 48, 8


def _master_frames(n=N, w=W, h=H):
    yy, xx = np.mgrid[0:h, 0 : w + 2 * n].astype(np.float32)
    pano = np.stack([np.sin(xx / 9) ** 2, np.cos(yy / 7) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 13)], -1) * 300 + 2
    pano[10:18, 20:40] = 900.0
    for i in range(n):
        yield np.ascontiguousarray(pano[:, 2 * i : 2 * i + w]).astype(np.float32)


FAST = dict(first_steps=30, warm_steps=4, preset="ultrafast", key_seconds=0.125, model="mlp")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A real HDR10 master, its encode (MP4 with a data track), and the same SDR stream
    and track remuxed by ffmpeg: MKV with the track as an attachment, MP4 with a JSON
    sidecar (one encode: the others are ``-c copy`` remuxes, as a user would make them)."""
    import json

    from itmfilter.data.testmedia import make_master_from_arrays
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.track.carriage import load_track
    from itmfilter.track.format import track_to_json, write_track_blob

    d = tmp_path_factory.mktemp("hostile")
    master = d / "master.mkv"
    make_master_from_arrays(master, list(_master_frames()), fps=24, codec="hevc", peak_nits=1000)
    encode_video(master, d / "sdr.mp4", options=VideoEncodeOptions(sidecar="track", **FAST), quiet=True)
    track = load_track(d / "sdr.mp4")
    packets = [track.packets[f] for f in sorted(track.packets)]
    (d / "track.bin").write_bytes(write_track_blob(track.header, packets))
    _ffmpeg("-i", d / "sdr.mp4", "-map", "0:v", "-c", "copy", d / "side.mp4")
    Path(str(d / "side.mp4") + ".itm.json").write_text(json.dumps(track_to_json(track.header, packets)))
    _attach(d / "side.mp4", d / "track.bin", d / "sdr.mkv")
    return {"dir": d, "master": master, "sdr.mp4": d / "sdr.mp4", "sdr.mkv": d / "sdr.mkv", "side.mp4": d / "side.mp4"}


def _ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, capture_output=True)


def _attach(video: Path, blob: Path, out: Path) -> None:
    """``video``'s streams in an MKV with ``blob`` as the track attachment (any bytes)."""
    _ffmpeg("-i", video, "-map", "0", "-c", "copy", "-attach", blob, "-metadata:s:t",
            "mimetype=application/x-itmfilter-track", "-metadata:s:t", "filename=itmfilter-track.bin", out)


def _with_sidecar(media, tmp_path, edit) -> Path:
    """A copy of ``side.mp4`` whose JSON sidecar was changed by ``edit(doc)``."""
    import json
    import shutil

    video = tmp_path / "video.mp4"
    shutil.copy(media["side.mp4"], video)
    doc = json.loads(Path(str(media["side.mp4"]) + ".itm.json").read_text())
    edit(doc)
    Path(str(video) + ".itm.json").write_text(json.dumps(doc))
    return video


def _weight_blob(config_json: bytes, payload: bytes = b"\0" * 64) -> bytes:
    """An ``ITMW`` weight set with any config text (CRC valid)."""
    import struct
    import zlib

    body = b"ITMW" + struct.pack("<BBH", 1, 1, len(config_json)) + config_json + struct.pack("<I", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


# --------------------------------------------------------------------------- 2. absurd model configs

ABSURD_CONFIGS = [
    {"hidden": [1e9]},
    {"hidden": [1000000000]},
    {"fourier_bands": 1000000, "coord_encoding": "fourier"},
    {"coord_features": -4},
    {"hidden": [64] * 100},
    {"siren_w0": float("inf")},
    {"hidden": [1024, 1024, 1024, 1024]},  # each width allowed, the total (3.2M) is not
]


@pytest.mark.parametrize("change", ABSURD_CONFIGS, ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values())))[:12])
def test_absurd_config_refused_before_any_network_is_built(change):
    import dataclasses

    data = {**dataclasses.asdict(ModelConfig()), **change}
    started = time.perf_counter()
    with pytest.raises(ValueError, match="must|at most"):
        ModelConfig.from_dict(data)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("where", ["chunk", "sidecar"])
def test_absurd_config_in_a_still_is_exit_2(tmp_path, where):
    import base64
    import json

    from itmfilter.media.stills import write_sdr_png
    from itmfilter.track.stills import sidecar_document

    blob = _weight_blob(b'{"coord_encoding":"siren","coord_features":32,"fourier_bands":6,"hidden":[1e9],'
                        b'"prior":"bt2408","rgb_features":32,"siren_w0":30.0}')
    png = tmp_path / "sdr.png"
    sdr = np.random.default_rng(0).random((32, 48, 3)).astype(np.float32)
    write_sdr_png(png, sdr, chunks={"itMf": blob} if where == "chunk" else None)
    if where == "sidecar":
        Path(str(png) + ".itm.json").write_text(json.dumps(sidecar_document(blob, "", {})))
        assert base64.b64decode(json.loads(Path(str(png) + ".itm.json").read_text())["weights"]) == blob
    for args in (("info", png), ("transcode", png, "-o", tmp_path / "hdr.exr")):
        if where == "sidecar" and args[0] == "info":
            continue  # info reads chunks and sidecars alike; one path is enough
        assert_refused(cli(*args), "hidden")
    assert not (tmp_path / "hdr.exr").exists()


def test_absurd_config_in_a_track_header_is_exit_2(media, tmp_path):
    def edit(doc):
        doc["header"]["model_config"]["hidden"] = [1000000000]

    video = _with_sidecar(media, tmp_path, edit)
    assert_refused(cli("transcode", video, "-o", tmp_path / "out.mkv", "-q"), "hidden")
    assert_refused(cli("play", video, "--hdr", "--vo", "null", "-q"), "hidden")
    assert not (tmp_path / "out.mkv").exists()


def test_a_huge_json_sidecar_is_refused_before_it_is_read(media, tmp_path):
    """A sidecar claiming gigabytes (a sparse file here) is refused by its size, without
    reading or parsing it, for a video and for a still."""
    import shutil

    from itmfilter.limits import MAX_JSON_SIDECAR_BYTES, MAX_STILL_SIDECAR_BYTES

    video = tmp_path / "video.mp4"
    shutil.copy(media["side.mp4"], video)
    with open(str(video) + ".itm.json", "wb") as f:
        f.truncate(MAX_JSON_SIDECAR_BYTES + 1)
    started = time.perf_counter()
    assert_refused(cli("transcode", video, "-o", tmp_path / "out.mkv", "-q"), "above the")
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "out.mkv").exists()

    from itmfilter.errors import ItmError
    from itmfilter.track.stills import find_weights

    still = tmp_path / "still.tif"  # not a PNG: the sidecar is the only place to look
    still.write_bytes(b"")
    with open(str(still) + ".itm.json", "wb") as f:
        f.truncate(MAX_STILL_SIDECAR_BYTES + 1)
    with pytest.raises(ItmError, match="above the"):
        find_weights(still, None, 8)


def test_the_three_carriages_of_the_fixture_load(media):
    from itmfilter.track.carriage import load_track

    wheres = {name: load_track(media[name]).where for name in ("sdr.mp4", "sdr.mkv", "side.mp4")}
    assert wheres == {"sdr.mp4": "data track", "sdr.mkv": "attachment", "side.mp4": "JSON sidecar side.mp4.itm.json"}


# --------------------------------------------------------------------------- 13. transcode exit status


def test_video_transcode_of_bad_input_exits_2(media, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(50_000))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(media["sdr.mp4"].read_bytes()[:3000])
    assert_refused(cli("transcode", empty, "-o", tmp_path / "a.mkv", "-q"), "empty.mp4")
    assert_refused(cli("transcode", media["sdr.mp4"], "-o", tmp_path / "no" / "such" / "b.mkv", "-q"), "not exist")
    many = cli("transcode", noise, cut, "-o", tmp_path / "out", "-q")
    assert many.returncode == 2 and "Traceback" not in many.stderr, many.stderr
    assert many.stderr.count("itmfilter: error:") == 2, many.stderr
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("empty.mp4", "noise.mp4", "cut.mp4")]
    assert leftovers == [], leftovers


# --------------------------------------------------------------------------- 3. absurd frame numbers


def _blob_with_index_frame(blob: bytes, entry: int, frame: int) -> bytes:
    """``blob`` with index entry ``entry``'s frame number replaced (index CRC recomputed)."""
    import struct
    import zlib

    hlen = struct.unpack_from("<I", blob, 8)[0]
    pos = 12 + hlen
    count = struct.unpack_from("<I", blob, pos)[0]
    out = bytearray(blob)
    struct.pack_into("<I", out, pos + 4 + 16 * entry, frame)
    index_end = pos + 4 + 16 * count
    struct.pack_into("<I", out, index_end, zlib.crc32(bytes(out[:index_end])))
    return bytes(out)


def test_frame_numbers_outside_the_track_are_refused_at_once(media, tmp_path):
    from itmfilter.errors import ItmError
    from itmfilter.track.carriage import load_track
    from itmfilter.track.format import read_track_blob

    blob = (media["dir"] / "track.bin").read_bytes()
    hostile = _blob_with_index_frame(blob, N - 1, 0xFFFFFFFF)
    started = time.perf_counter()
    with pytest.raises(TrackFormatError, match="4294967295"):
        read_track_blob(hostile)
    (tmp_path / "track.bin").write_bytes(hostile)
    _attach(media["side.mp4"], tmp_path / "track.bin", tmp_path / "hostile.mkv")
    with pytest.raises(ItmError, match="outside the track"):
        load_track(tmp_path / "hostile.mkv")

    def far(doc):
        doc["packets"].append({**doc["packets"][-1], "frame": 10**12})

    with pytest.raises(ItmError, match="1000000000000"):
        load_track(_with_sidecar(media, tmp_path, far))
    assert time.perf_counter() - started < 10
    assert_refused(cli("transcode", tmp_path / "hostile.mkv", "-o", tmp_path / "out.mkv", "-q"), "outside the track")


def test_decoder_never_walks_to_the_last_frame_number():
    """A decoder given packets far apart (frame count unknown) looks only at the packets
    there are: a lost shot key followed by a packet at frame 2^24 - 1 costs nothing."""
    from itmfilter.track import Packet, TrackDecoder, TrackEncoder, TrackHeader, encode_packet

    header = TrackHeader(SMALL, (24, 1), 0, 64, 48)
    enc = TrackEncoder(header)
    rng = np.random.default_rng(0)
    n = sum(tensor_sizes(SMALL))
    packets = {f: encode_packet(enc.add(f, rng.normal(0, 0.1, n).astype(np.float32), shot_start=f == 2))
               for f in range(4)}
    del packets[2]  # the key opening shot 1 is lost
    packets[(1 << 24) - 1] = encode_packet(Packet((1 << 24) - 1, "repeat", 1, b""))
    started = time.perf_counter()
    dec = TrackDecoder(header)
    statuses = [dec.params_at(f, packets)[1] for f in range(4)]
    assert time.perf_counter() - started < 2
    assert statuses[:2] == ["ok", "ok"] and statuses[2] == "missing"


# --------------------------------------------------------------------------- 4. non-finite and orphaned sets


def _edit_packets(change):
    """A sidecar edit applying ``change(Packet) -> bytes | None`` to every packet."""
    import base64

    from itmfilter.track.format import decode_packet

    def edit(doc):
        for entry in doc["packets"]:
            new = change(decode_packet(base64.b64decode(entry["data"])))
            if new is not None:
                entry["data"] = base64.b64encode(new).decode()

    return edit


def _transcode_exr(video: Path, out_dir: Path):
    from itmfilter.media.stills import read_hdr
    from itmfilter.transcode.video import TranscodeJob, transcode_one

    out_dir.mkdir()
    result = transcode_one(TranscodeJob(str(video), str(out_dir / "%03d.exr"), precision="fp32"))
    assert result.status == "done", result.error
    return result, [read_hdr(out_dir / f"{i:03d}.exr").nits for i in range(N)]


def test_nan_key_is_damaged_and_concealed_by_the_nearest_good_set(media, tmp_path):
    from itmfilter.track.codec import encode_key_payload, wide_tensors
    from itmfilter.track.format import Packet, encode_packet, tensor_sizes

    def poison(p):
        if p.frame != 0:
            return None
        header_config = ModelConfig.from_dict(__import__("json").loads(_config_json(media)))
        values = np.full(sum(tensor_sizes(header_config)), np.nan, np.float32)
        coding, payload = encode_key_payload(values, tensor_sizes(header_config), "fp16", wide=wide_tensors(header_config))
        return encode_packet(Packet(0, "key", p.shot, payload, coding))

    result, frames = _transcode_exr(_with_sidecar(media, tmp_path, _edit_packets(poison)), tmp_path / "exr")
    _, clean = _transcode_exr(media["side.mp4"], tmp_path / "clean")
    assert all(np.isfinite(f).all() for f in frames)
    assert result.damaged_frames >= 1 and any("NaN" in n for n in result.notes), result.notes
    # frames after the next key are exactly the clean ones; the concealed ones are close
    assert np.array_equal(frames[-1], clean[-1])
    assert min(np.mean(f) / np.mean(c) for f, c in zip(frames, clean)) > 0.5


def _config_json(media) -> str:
    import json

    doc = json.loads(Path(str(media["side.mp4"]) + ".itm.json").read_text())
    return json.dumps(doc["header"]["model_config"])


def test_lost_keys_with_intact_deltas_fall_back_to_blind_not_black(media, tmp_path):
    """Every key damaged, every delta intact: no set can be rebuilt, so the frames are
    reconstructed blind (exactly as a file without weights), with a warning; before, the
    decoder's all-zero vector gave a black picture reported as success."""
    import shutil

    def damage_keys(p):
        from itmfilter.track.format import encode_packet

        if p.kind != "key":
            return None
        raw = bytearray(encode_packet(p))
        raw[30] ^= 0x40  # inside the payload: the CRC-32 no longer matches
        return bytes(raw)

    result, frames = _transcode_exr(_with_sidecar(media, tmp_path, _edit_packets(damage_keys)), tmp_path / "exr")
    bare = tmp_path / "bare.mp4"
    shutil.copy(media["side.mp4"], bare)
    blind_result, blind = _transcode_exr(bare, tmp_path / "blind")
    assert blind_result.mode == "blind"
    assert all(np.array_equal(f, b) for f, b in zip(frames, blind))
    assert result.damaged_frames == N
    assert any("reconstructed blind" in n and "CRC-32" in n for n in result.notes), result.notes


def test_unknown_packet_version_is_named(media, tmp_path):
    import struct
    import zlib

    def version_2(p):
        from itmfilter.track.format import encode_packet

        if p.frame != N - 1:
            return None
        raw = bytearray(encode_packet(p))
        raw[4] = 2
        struct.pack_into("<I", raw, len(raw) - 4, zlib.crc32(bytes(raw[:-4])))
        return bytes(raw)

    video = _with_sidecar(media, tmp_path, _edit_packets(version_2))
    proc = cli("transcode", video, "-o", tmp_path / "out.mkv", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "format version 2" in proc.stderr and "upgrade itmfilter" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- 5. a data track cut off


def test_data_track_with_a_cut_sample_index_is_damaged_not_absent(media, tmp_path):
    import struct

    from itmfilter.errors import ItmError
    from itmfilter.track.carriage import load_track

    raw = bytearray(media["sdr.mp4"].read_bytes())
    last_stsz = raw.rfind(b"stsz")  # the data track's sample sizes (it follows the video track)
    assert last_stsz > 0 and struct.unpack_from(">I", raw, last_stsz + 12)[0] == N
    struct.pack_into(">I", raw, last_stsz + 12, 0)  # its sample count: the index is cut off
    video = tmp_path / "cut-index.mp4"
    video.write_bytes(bytes(raw))
    with pytest.raises(ItmError, match="damaged weight track"):
        load_track(video)


# --------------------------------------------------------------------------- 6, 7, 12. masters that are not what they seem


def _leftovers(folder: Path, keep=()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_truncated_master_is_refused_and_leaves_nothing(tmp_path):
    """An MKV cut to 40/63 of its bytes (Matroska lists no frame count: its duration says
    how many frames there should be)."""
    from itmfilter.data.testmedia import make_master_from_arrays

    rng = np.random.default_rng(0)
    frames = [f * (1 + 0.3 * rng.random(f.shape, dtype=np.float32)) for f in _master_frames(48)]
    whole = tmp_path / "whole.mkv"
    make_master_from_arrays(whole, frames, fps=24, codec="hevc", peak_nits=1000)
    raw = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(raw[: len(raw) * 40 // 63])
    proc = cli("encode", cut, "-o", tmp_path / "sdr.mp4", "-q", "--steps", "5", "--preset", "ultrafast")
    assert_refused(proc, "cut.mkv", "truncated")
    assert _leftovers(tmp_path) == ["cut.mkv", "whole.mkv"]


def _write_vfr_master(path: Path, frames, pts) -> None:
    """An intra-only PQ BT.2020 master whose frames are shown at ``pts`` (units of 1/24 s)."""
    from fractions import Fraction

    import av

    from itmfilter.colour.transfer import eotf_inverse_st2084

    frames = list(frames)
    out = av.open(str(path), "w")
    v = out.add_stream("ffv1", rate=24)
    v.height, v.width = frames[0].shape[:2]
    v.pix_fmt = "yuv420p10le"
    cc = v.codec_context
    cc.time_base = Fraction(1, 24)
    cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, 16, 9, 1
    for t, nits in zip(pts, frames):
        codes = (np.clip(eotf_inverse_st2084(nits), 0, 1) * 65535).astype(np.uint16)
        frame = av.VideoFrame.from_ndarray(codes, format="rgb48le").reformat(
            format="yuv420p10le", dst_colorspace=9, dst_color_range=1)
        frame.pts, frame.time_base = t, Fraction(1, 24)
        frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = 9, 16, 9, 1
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    out.close()


def test_variable_frame_rate_master_is_refused(tmp_path):
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.errors import ItmError

    master = tmp_path / "vfr.mkv"
    _write_vfr_master(master, list(_master_frames(36)), list(range(24)) + [24 + 2 * k for k in range(12)])
    with pytest.raises(ItmError, match="variable frame rate.*constant frame rate"):
        encode_video(master, tmp_path / "sdr.mp4", options=VideoEncodeOptions(**FAST), quiet=True)
    assert _leftovers(tmp_path) == ["vfr.mkv"]


def test_odd_sized_master_names_no_temp_file_and_leaves_no_work_folder(tmp_path):
    from itmfilter.encode.video import VideoEncodeOptions, encode_video
    from itmfilter.errors import ItmError

    master = tmp_path / "odd.mkv"
    _write_vfr_master(master, [f[:47, :63] for f in _master_frames(4)], range(4))  # ffv1 takes odd sizes
    with pytest.raises(ItmError) as err:
        encode_video(master, tmp_path / "sdr.mp4", options=VideoEncodeOptions(**FAST), quiet=True)
    message = str(err.value)
    assert "63x47" in message and "even" in message
    assert "partial" not in message and "itm-work" not in message
    assert _leftovers(tmp_path) == ["odd.mkv"]


# --------------------------------------------------------------------------- 9, 16. picture sizes


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A real, valid 8-bit RGB PNG of ``width`` x ``height`` black pixels (a few hundred KB
    for 12000x12000: zlib squeezes the zero rows), written row by row in bounded memory."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    comp = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_huge_valid_png_is_refused_from_its_header(tmp_path):
    from itmfilter.errors import ItmError
    from itmfilter.media.stills import read_sdr

    big = tmp_path / "big.png"
    _png_declaring(big, 12000, 12000)
    assert big.stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(ItmError, match="12000x12000.*above the maximum"):
        read_sdr(big)
    assert time.perf_counter() - started < 2
    proc = cli("transcode", big, "-o", tmp_path / "hdr.exr")
    assert_refused(proc, "big.png", "8192x8192")
    assert _leftovers(tmp_path) == ["big.png"]


def test_huge_exr_and_rgbe_are_refused_from_their_headers(tmp_path):
    import OpenEXR

    from itmfilter.errors import ItmError
    from itmfilter.media.stills import read_hdr

    exr = tmp_path / "wide.exr"
    # a valid header declaring 20000x4 pixels (the data window), with few pixels behind it
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": np.ones((4, 20000, 3), np.float32)}).write(str(exr))
    with pytest.raises(ItmError, match="20000x4"):
        read_hdr(exr)
    rgbe = tmp_path / "tall.hdr"
    rgbe.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n")
    with pytest.raises(ItmError, match="100000x100000"):
        read_hdr(rgbe, nits_per_unit=100)


def test_one_pixel_pictures_are_refused(tmp_path):
    import OpenEXR

    from itmfilter.media.stills import write_sdr_png

    tiny = tmp_path / "tiny.exr"
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": np.full((1, 1, 3), 2.0, np.float32)}).write(str(tiny))
    assert_refused(cli("encode", tiny, "-o", tmp_path / "sdr.png", "--steps", "2"), "tiny.exr", "1x1", "minimum")
    dot = tmp_path / "dot.png"
    write_sdr_png(dot, np.full((1, 1, 3), 0.5, np.float32))
    assert_refused(cli("transcode", dot, "-o", tmp_path / "hdr.exr"), "dot.png", "1x1")
    assert _leftovers(tmp_path) == ["dot.png", "tiny.exr"]


# --------------------------------------------------------------------------- 15. make-media arguments


@pytest.mark.parametrize("args,words", [
    (("--size", "0x0"), ("0x0",)),
    (("--size", "1x1"), ("1x1",)),
    (("--size", "65x49"), ("even",)),
    (("--seconds", "-1"), ("--seconds", "positive")),
    (("--seconds", "nan"), ("--seconds",)),
    (("--fps", "0"), ("--fps",)),
    (("--shot-seconds", "0"), ("--shot-seconds",)),
])
def test_make_media_refuses_nonsense_arguments(tmp_path, args, words):
    from itmfilter.data.testmedia import make_master
    from itmfilter.errors import ItmError

    kwargs = {"--size": "size", "--seconds": "seconds", "--fps": "fps", "--shot-seconds": "shot_seconds"}
    value = args[1]
    if args[0] == "--size":
        value = tuple(int(v) for v in value.split("x"))
    else:
        value = float(value)
    with pytest.raises(ItmError) as err:
        make_master(tmp_path / "m.mkv", **{kwargs[args[0]]: value}, quiet=True)
    for word in words:
        assert word in str(err.value)
    assert _leftovers(tmp_path) == []


def test_make_media_cli_zero_size_is_exit_2(tmp_path):
    assert_refused(cli("make-media", "-o", tmp_path / "m.mkv", "--size", "0x0", "-q"), "0x0")
    assert_refused(cli("make-media", "-o", tmp_path / "m.mkv", "--seconds", "-1", "-q"), "--seconds")
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 8, 11. destinations


@pytest.fixture()
def unwritable(tmp_path) -> Path:
    """A folder this process cannot create files in: mode 555, or sysfs when running as
    root (root ignores mode bits; sysfs refuses new files to everyone)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        folder = Path("/sys/kernel")
        if not folder.is_dir():
            pytest.skip("no sysfs to stand for a read-only folder")
        yield folder


def test_read_only_destination_is_named_with_exit_2(media, unwritable, tmp_path):
    from itmfilter.media.stills import write_sdr_png

    sdr = tmp_path / "sdr.png"
    write_sdr_png(sdr, np.random.default_rng(0).random((32, 48, 3)).astype(np.float32))
    assert_refused(cli("transcode", sdr, "-o", unwritable / "hdr.exr"), "not writable")
    assert_refused(cli("encode", media["master"], "-o", unwritable / "sdr.mp4", "-q"), "not writable")
    assert_refused(cli("transcode", media["sdr.mp4"], "-o", unwritable / "hdr.mkv", "-q"), "not writable")


def test_stale_partials_of_dead_processes_are_removed_on_the_next_run(tmp_path):
    from itmfilter.media.atomic import atomic_output

    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.partial-{dead.pid}.mkv"
    stale.write_bytes(b"half a video")
    other = tmp_path / f".y.png.partial-{dead.pid}.png"
    other.write_bytes(b"half a picture")
    live = tmp_path / f".z.partial-{os.getppid()}.mkv"  # a running process's: not ours to delete
    live.write_bytes(b"in progress")
    with atomic_output(tmp_path / "x.mkv") as tmp:
        Path(tmp).write_bytes(b"whole")
    assert _leftovers(tmp_path) == [live.name, "x.mkv"]


# --------------------------------------------------------------------------- 17. nothing unpickles


def test_a_planted_pickle_checkpoint_runs_no_code(tmp_path):
    import torch

    from itmfilter.errors import ItmError
    from itmfilter.model.metatrain import load_checkpoint, save_checkpoint
    from itmfilter.model.net import ITMNet

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    planted = tmp_path / "init.ckpt"
    torch.save({"net": Payload()}, planted)
    net = ITMNet(SMALL)
    outer = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ItmError, match="not a meta-train checkpoint"):
        load_checkpoint(planted, net, outer, gen)
    assert not marker.exists()

    # what save_checkpoint writes resumes exactly: weights, Adam moments, the generator, the step
    xy, sdr = torch.rand(64, 2, generator=gen) * 2 - 1, torch.rand(64, 3, generator=gen)
    for _ in range(3):
        outer.zero_grad()
        net(sdr, xy).square().mean().backward()
        outer.step()
    save_checkpoint(tmp_path / "good.ckpt", net, outer, gen, 3)
    net2, gen2 = ITMNet(SMALL), torch.Generator()
    outer2 = torch.optim.Adam(net2.parameters(), lr=5.0)
    assert load_checkpoint(tmp_path / "good.ckpt", net2, outer2, gen2) == 3
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(gen.get_state(), gen2.get_state()) and outer2.param_groups[0]["lr"] == 1e-3
    for (a, b) in zip(outer.state_dict()["state"].values(), outer2.state_dict()["state"].values()):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def test_no_module_unpickles():
    import ast

    for path in (ROOT / "itmfilter").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads", "Unpickler"):
                base = node.value
                name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                assert name not in ("torch", "pickle", "dill", "cloudpickle", "joblib"), f"{path}: {name}.{node.attr}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names), path


# --------------------------------------------------------------------------- 10. resume after SIGKILL; determinism


_ENCODE_CHILD = """
import os, signal, sys
from itmfilter.encode import segments as encode_module
from itmfilter.encode.video import VideoEncodeOptions, encode_video
kill = sys.argv[3] == "1"
stored = os.path.join(os.path.dirname(sys.argv[2]), "." + os.path.basename(sys.argv[2]) + ".itm-work", "segment-00000.bin")
original = encode_module.adapt
def adapt(*args, **kwargs):
    if kill and os.path.exists(stored):  # the first segment is stored, a later one being adapted
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs: as a power cut or the OOM killer
    return original(*args, **kwargs)
encode_module.adapt = adapt
# no rate cap: four key sets in 14 frames, each with the ~1 KB header (SEI), cost more than 64
# kbit/s, and a capped encode refuses what it cannot carry (encode/rate.py)
encode_video(sys.argv[1], sys.argv[2], options=VideoEncodeOptions(first_steps=30, warm_steps=4,
             preset="ultrafast", key_seconds=0.25, max_kbps=None), quiet=True)
"""


def _encode_in_child(master: Path, out: Path, kill: bool = False) -> int:
    return subprocess.run([PYTHON, "-c", _ENCODE_CHILD, str(master), str(out), "1" if kill else "0"], cwd=ROOT,
                          capture_output=True, timeout=600).returncode


def _cut_frames(n=14, cut=7):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for i in range(n):
        base = (xx + 2 * i) / W if i < cut else 1 - yy / H
        nits = np.stack([base, base**2, 1 - base], -1) * (400 if i < cut else 120) + 1.0
        nits[10:20, 10 + i : 20 + i] = 900.0
        yield nits.astype(np.float32)


def test_resume_after_sigkill_is_byte_identical_and_encodes_are_deterministic(tmp_path):
    import signal

    from itmfilter.data.testmedia import make_master_from_arrays
    from itmfilter.track.carriage import load_track
    from itmfilter.track.format import decode_packet

    master = tmp_path / "master.mkv"
    make_master_from_arrays(master, list(_cut_frames()), fps=24, codec="hevc", peak_nits=1000)
    whole, again, resumed = tmp_path / "whole.mp4", tmp_path / "again.mp4", tmp_path / "resumed.mp4"
    assert _encode_in_child(master, whole) == 0
    assert _encode_in_child(master, again) == 0
    assert whole.read_bytes() == again.read_bytes()  # two processes, the same bytes

    assert _encode_in_child(master, resumed, kill=True) == -signal.SIGKILL  # inside the second shot
    work = tmp_path / ".resumed.mp4.itm-work"
    assert (work / "segment-00000.bin").exists() and not resumed.exists()
    assert _encode_in_child(master, resumed) == 0
    shots = [decode_packet(p).shot for _, p in sorted(load_track(resumed).packets.items())]
    assert shots == [0] * 7 + [1] * 7
    assert resumed.read_bytes() == whole.read_bytes()
    assert not work.exists()


# --------------------------------------------------------------------------- promises the other tests missed


def _frac(text: str) -> float:
    num, _, den = str(text).partition("/")
    return float(num) / float(den or 1)


def test_transcode_writes_the_track_headers_hdr10_values(media, tmp_path):
    """ffprobe reads back the mastering display and MaxCLL/MaxFALL the track header holds
    (to their SEI precision: 0.00002 in xy, 0.0001 cd/m2, whole cd/m2 for the light levels):
    a transcode that ignored them, or computed its own, fails here."""
    import json

    from itmfilter.track.carriage import load_track
    from itmfilter.transcode.video import TranscodeJob, transcode_one

    meta = load_track(media["sdr.mp4"]).header.hdr10_metadata()
    assert meta is not None and meta.max_cll > 0
    out = tmp_path / "hdr10.mkv"
    result = transcode_one(TranscodeJob(str(media["sdr.mp4"]), str(out), preset="ultrafast"))
    assert result.status == "done" and not any("computed" in n for n in result.notes), result.notes
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-read_intervals", "%+#1",
         "-of", "json", str(out)], capture_output=True, text=True, check=True).stdout)
    sides = {s["side_data_type"]: s for s in probe["frames"][0]["side_data_list"]}
    display, light = sides["Mastering display metadata"], sides["Content light level metadata"]
    (rx, ry), (gx, gy), (bx, by) = meta.primaries
    expected = {"red_x": rx, "red_y": ry, "green_x": gx, "green_y": gy, "blue_x": bx, "blue_y": by,
                "white_point_x": meta.white_point[0], "white_point_y": meta.white_point[1]}
    for key, value in expected.items():
        assert abs(_frac(display[key]) - value) <= 0.00002 + 1e-9, (key, display[key], value)
    assert abs(_frac(display["max_luminance"]) - meta.max_luminance) <= 0.0001 + 1e-9
    assert abs(_frac(display["min_luminance"]) - meta.min_luminance) <= 0.0001 + 1e-9
    assert light["max_content"] == round(meta.max_cll) and light["max_average"] == round(meta.max_fall)


def test_play_hdr_from_the_command_line_uses_the_real_track(media, tmp_path):
    """``itmfilter play --hdr`` on a file carrying a track: every frame recorded by mpv (FFV1,
    lossless) is exactly the player's filter with that frame's decoded weights, and within one
    code of the exact reconstruction."""
    import av

    from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb
    from itmfilter.render.ladder import apply_rung
    from itmfilter.track.provider import FrameNetworks

    seen = tmp_path / "seen.mkv"
    proc = cli("play", media["sdr.mp4"], "--hdr", "--vo", "null", "--output", seen, "--rung", "full",
               "--precision", "fp32", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"shown {N}" in proc.stdout and "damaged-metadata frames 0, blind frames 0" in proc.stdout, proc.stdout
    nets = FrameNetworks(media["sdr.mp4"])
    with av.open(str(media["sdr.mp4"])) as src:
        frames = list(src.decode(video=0))
    # the player's per-frame path (fused on a CPU) with that frame's weights, exactly; and
    # within one code of the exact reconstruction
    expected = [hdr10_planes(f, nets(i), "full", "cpu", "fp32") for i, f in enumerate(frames)]
    exact = [pq_to_yuv420p10(apply_rung(nets(i), sdr_frame_to_rgb(f), "full", "cpu", "fp32"))
             for i, f in enumerate(frames)]
    assert nets.damaged == 0 and len(expected) == N
    with av.open(str(seen)) as rec:
        got = [[np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width] for p in f.planes]
               for f in rec.decode(video=0)]
    assert len(got) == N
    for g, e, x in zip(got, expected, exact):
        for gp, ep, xp in zip(g, e, x):
            np.testing.assert_array_equal(gp, ep)
            assert np.abs(gp.astype(int) - xp.astype(int)).max() <= 1


def test_output_folder_that_cannot_be_created_is_named(media, unwritable):
    from itmfilter.errors import ItmError
    from itmfilter.transcode.video import plan_jobs

    with pytest.raises(ItmError, match="cannot create the output folder"):
        plan_jobs([media["sdr.mp4"], media["side.mp4"]], unwritable / "out")
