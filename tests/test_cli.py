"""The stills command line end to end, through the real typer app (real PNG/EXR files)."""

import json
import struct
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from itmfilter.cli import app
from itmfilter.data import sample_path
from itmfilter.media.stills import read_png_chunks, read_sdr, write_sdr_png

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out = d / "sdr.png"
    res = run("encode", sample_path(), "-o", out, "--steps", 40, "--sidecar", "both", "--quiet")
    assert res.exit_code == 0, res.output
    return d, out


def test_encode_transcode_eval(encoded, tmp_path):
    d, sdr = encoded
    assert "itMf" in read_png_chunks(sdr)
    assert (d / "sdr.png.itm.json").exists()
    hdr = tmp_path / "hdr.exr"
    assert run("transcode", sdr, "-o", hdr, "--quiet").exit_code == 0
    res = run("eval", sample_path(), hdr, "--json")
    scores = json.loads(res.output)
    assert scores["pu21_psnr"] > 30 and scores["delta_e_itp"] < 10
    png = tmp_path / "hdr.png"
    assert run("transcode", sdr, "-o", png, "--quiet").exit_code == 0
    assert b"cICP" in png.read_bytes()[:200]
    info = json.loads(run("info", sdr).output)
    assert info["where"] == "embedded PNG chunk" and 15000 < info["bytes"] < 25000


def test_grade_pixels_kept_and_wrong_size_refused(tmp_path):
    from itmfilter.colour.tonecurves import get_curve
    from itmfilter.media.stills import read_hdr

    nits = read_hdr(sample_path()).nits
    grade = tmp_path / "grade.png"
    write_sdr_png(grade, get_curve("local").forward(nits))
    out = tmp_path / "sdr.png"
    assert run("encode", sample_path(), "-o", out, "--sdr", grade, "--steps", 10, "--quiet").exit_code == 0
    assert np.array_equal(read_sdr(out)[0], read_sdr(grade)[0])
    small = tmp_path / "small.png"
    write_sdr_png(small, np.zeros((10, 12, 3), np.float32))
    res = run("encode", sample_path(), "-o", tmp_path / "x.png", "--sdr", small, "--quiet")
    assert res.exit_code == 2 and "small.png" in res.output and "same size" in res.output
    assert not (tmp_path / "x.png").exists()


def test_blind_mode_note(tmp_path):
    plain = tmp_path / "plain.png"
    write_sdr_png(plain, np.full((16, 16, 3), 0.5, np.float32))
    res = runner.invoke(app, ["transcode", str(plain), "-o", str(tmp_path / "h.exr")])
    assert res.exit_code == 0 and "blind mode" in res.output


def _replace_chunk(src, dst, name, data):
    raw = bytearray(src.read_bytes())
    pos = 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        if raw[pos + 4 : pos + 8] == name.encode():
            new = struct.pack(">I", len(data)) + name.encode() + data + struct.pack(">I", zlib.crc32(name.encode() + data))
            raw[pos : pos + 12 + length] = new
            break
        pos += 12 + length
    dst.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip", "version"])
def test_damaged_or_future_weights_refused(encoded, tmp_path, damage):
    _, sdr = encoded
    blob = bytearray(read_png_chunks(sdr)["itMf"])
    if damage == "flip":
        blob[100] ^= 0xFF
    else:
        blob[4] = 7
        blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))
    bad = tmp_path / "bad.png"
    _replace_chunk(sdr, bad, "itMf", bytes(blob))
    res = run("transcode", bad, "-o", tmp_path / "h.exr")
    assert res.exit_code == 2 and "bad.png" in res.output
    assert ("CRC" in res.output) if damage == "flip" else ("version 7" in res.output)
    assert not (tmp_path / "h.exr").exists()


def test_bad_inputs_give_one_clear_line(encoded, tmp_path):
    _, sdr = encoded
    res = run("transcode", sdr, "-o", tmp_path / "h.tiff")
    assert res.exit_code == 2 and "unsupported HDR output extension" in res.output
    res = run("encode", sdr, "-o", tmp_path / "o.png")  # an 8-bit SDR PNG is not an HDR master
    assert res.exit_code == 2 and "sdr.png" in res.output
    trunc = tmp_path / "trunc.exr"
    trunc.write_bytes(sample_path().read_bytes()[:5000])
    res = run("encode", trunc, "-o", tmp_path / "o.png")
    assert res.exit_code == 2 and "trunc.exr" in res.output
    res = run("encode", sample_path(), "-o", sample_path())
    assert res.exit_code == 2
    res = run("encode", sample_path(), "-o", tmp_path / "o.png", "--tm", "nope")
    assert res.exit_code == 2 and "bt2446a" in res.output


def test_mismatched_sidecar_refused(encoded, tmp_path):
    d, _ = encoded
    other = tmp_path / "other.png"
    write_sdr_png(other, np.full((270, 480, 3), 0.25, np.float32))
    (tmp_path / "other.png.itm.json").write_bytes((d / "sdr.png.itm.json").read_bytes())
    res = run("transcode", other, "-o", tmp_path / "h.exr")
    assert res.exit_code == 2 and "other pixels" in res.output


def test_stills_carry_the_stills_network(encoded):
    """Stills are adapted from the wider stills initialisation (8 Fourier bands, 48
    coordinate features); the weights carry that config, so any decoder rebuilds it."""
    from itmfilter.model.initial import STILLS_INIT, load_init
    from itmfilter.model.net import CONFIGS
    from itmfilter.model.weightset import decode
    from itmfilter.track.stills import find_weights

    _, sdr_png = encoded
    sdr, bits = read_sdr(sdr_png)
    blob, _ = find_weights(sdr_png, sdr, bits)
    net = decode(blob).to_net()
    assert net.config == CONFIGS["stills"] == load_init(name=STILLS_INIT)[0].config
    assert net.config != CONFIGS["default"]
