
import numpy as np
import OpenEXR
import pytest

from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.errors import ItmError
from itmfilter.media import stills
from itmfilter.media.stills import (
    HdrPicture,
    anchor_exposure,
    read_hdr,
    read_png_chunks,
    read_rgbe,
    read_sdr,
    write_exr,
    write_png_pq16,
    write_sdr_png,
)

colour = pytest.importorskip("colour")

RNG = np.random.default_rng(7)


def _pixels(h=6, w=7, scale=4.0):
    return (RNG.random((h, w, 3)) * scale).astype(np.float32)


# ---------------------------------------------------------------- OpenEXR


def test_exr_white_luminance_and_bt709_chromaticities(tmp_path):
    rgb = _pixels()
    path = tmp_path / "bt709.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "chromaticities": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
              "whiteLuminance": 250.0}
    OpenEXR.File(header, {"RGB": rgb}).write(str(path))
    picture = read_hdr(path)
    assert isinstance(picture, HdrPicture) and picture.nits.dtype == np.float32
    expected = colour.RGB_to_RGB(rgb.astype(np.float64), "ITU-R BT.709", "ITU-R BT.2020") * 250.0
    np.testing.assert_allclose(picture.nits, np.maximum(expected, 0), rtol=1e-4, atol=1e-3)
    assert picture.info["nits_per_unit"] == 250.0
    # nits_per_unit overrides the header
    np.testing.assert_allclose(read_hdr(path, nits_per_unit=10.0).nits, picture.nits / 25.0, rtol=1e-5, atol=1e-4)


def test_exr_d50_white_uses_bradford(tmp_path):
    rgb = _pixels(scale=1.0)
    # ProPhoto-like primaries with a D50 white; colour's derived matrices as the oracle
    primaries, white = np.array([[0.7347, 0.2653], [0.1596, 0.8404], [0.0366, 0.0001]]), np.array([0.3457, 0.3585])
    prophoto = colour.RGB_Colourspace("d50 test", primaries, white, use_derived_matrix_RGB_to_XYZ=True,
                                      use_derived_matrix_XYZ_to_RGB=True)
    chroma = tuple(primaries.ravel()) + tuple(white)
    path = tmp_path / "prophoto.exr"
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
                  "chromaticities": chroma}, {"RGB": rgb}).write(str(path))
    expected = colour.RGB_to_RGB(rgb.astype(np.float64), prophoto, "ITU-R BT.2020",
                                 chromatic_adaptation_transform="Bradford") * 100.0  # no whiteLuminance
    np.testing.assert_allclose(read_hdr(path).nits, np.maximum(expected, 0), rtol=1e-3, atol=2e-3)


def test_write_exr_round_trip_and_header(tmp_path):
    nits = _pixels(scale=2000.0)
    nits[0, 0] = [-5.0, np.nan, 4000.0]
    path = tmp_path / "out.exr"
    write_exr(path, nits)
    with OpenEXR.File(str(path)) as exr:
        header = dict(exr.header())
        assert exr.channels()["RGB"].pixels.dtype == np.float16
    assert header["whiteLuminance"] == 100.0
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION
    np.testing.assert_allclose(header["chromaticities"], (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290), atol=1e-6)
    back = read_hdr(path).nits
    clean = np.nan_to_num(np.maximum(nits, 0))
    np.testing.assert_allclose(back, clean, rtol=1e-3, atol=1e-2)  # half float: 11-bit mantissa


# ---------------------------------------------------------------- Radiance RGBE


def _rgbe_encode(rgb):
    mx = rgb.max(axis=-1)
    mant, expo = np.frexp(mx)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(mx[..., None] > 1e-32, rgb * (mant * 256.0 / mx)[..., None], 0)
    out = np.zeros(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = np.clip(np.floor(scaled), 0, 255)
    out[..., 3] = np.where(mx > 1e-32, expo + 128, 0)
    return out


def _rle_channel(values):
    out, i = bytearray(), 0
    while i < len(values):  # runs of equal bytes (>= 3) as runs, the rest literal
        run = 1
        while i + run < len(values) and run < 127 and values[i + run] == values[i]:
            run += 1
        if run >= 3:
            out += bytes((128 + run, values[i]))
            i += run
        else:
            j = i
            while j < len(values) and j - i < 128 and not (j + 2 < len(values) and values[j] == values[j + 1] == values[j + 2]):
                j += 1
            j = max(j, i + 1)
            out += bytes((j - i,)) + bytes(values[i:j])
            i = j
    return bytes(out)


def _write_rgbe(path, rgb, rle=True, exposure=None):
    h, w, _ = rgb.shape
    head = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n"
    if exposure:
        head += b"EXPOSURE=%g\n" % exposure
    body = bytearray(head + b"\n-Y %d +X %d\n" % (h, w))
    pixels = _rgbe_encode(rgb)
    for y in range(h):
        if rle:
            body += bytes((2, 2, w >> 8, w & 0xFF))
            for c in range(4):
                body += _rle_channel(pixels[y, :, c].tobytes())
        else:
            body += pixels[y].tobytes()
    path.write_bytes(bytes(body))


@pytest.mark.parametrize("rle", [True, False])
def test_radiance_read(tmp_path, rle):
    rgb = _pixels(h=5, w=40, scale=50.0)
    rgb[1, 10:30] = 3.0  # a run
    rgb[2, 0] = 0.0
    path = tmp_path / "scene.hdr"
    _write_rgbe(path, rgb, rle=rle, exposure=2.0)
    raw, header = read_rgbe(path)
    # shared 8-bit mantissa: error up to one step of the pixel's largest channel
    step = rgb.max(axis=-1, keepdims=True) / 128
    assert np.all(np.abs(raw * 2.0 - rgb) <= step)
    assert header["exposure"] == 2.0
    picture = read_hdr(path, nits_per_unit=1.0)
    expected = colour.RGB_to_RGB(raw.astype(np.float64), "ITU-R BT.709", "ITU-R BT.2020")
    np.testing.assert_allclose(picture.nits, np.maximum(expected, 0), rtol=1e-4, atol=1e-4)


def test_radiance_needs_a_scale_and_anchor_is_recorded(tmp_path):
    path = tmp_path / "rel.hdr"
    _write_rgbe(path, _pixels(h=8, w=16))
    with pytest.raises(ItmError, match="rel.hdr.*relative radiance"):
        read_hdr(path)
    picture = read_hdr(path, anchor=203.0)
    assert picture.info["anchor_factor"] > 0 and picture.info["anchor_white_nits"] == 203.0


def test_anchor_exposure_places_diffuse_white():
    lum = np.exp(RNG.normal(0.0, 1.0, size=(64, 64)))
    rgb = np.repeat(lum[..., None], 3, axis=-1).astype(np.float32)
    nits, factor = anchor_exposure(rgb * 7.0)
    y = nits[..., 0]
    assert factor > 0
    assert np.percentile(y, 90) == pytest.approx(203.0, rel=1e-3) or np.median(y) * 8 == pytest.approx(203.0, rel=1e-3)
    _, factor_1 = anchor_exposure(rgb)
    assert factor_1 == pytest.approx(7.0 * factor, rel=1e-5)  # scale-invariant
    assert anchor_exposure(np.zeros((4, 4, 3), np.float32))[1] == 1.0


# ---------------------------------------------------------------- PNG


def test_pq_png_round_trip_with_cicp(tmp_path):
    nits = np.concatenate([_pixels(4, 8, 1.0), _pixels(4, 8, 300.0), _pixels(4, 8, 9000.0)])
    path = tmp_path / "pq.png"
    write_png_pq16(path, nits)
    assert b"cICP" in path.read_bytes()[:64]
    picture = read_hdr(path)
    assert picture.info["cicp"] == (9, 16, 0, 1) and picture.info["transfer"] == "pq"
    pq_in = eotf_inverse_st2084(nits.astype(np.float64))
    pq_out = eotf_inverse_st2084(picture.nits.astype(np.float64))
    assert np.abs(pq_out - pq_in).max() <= 1 / 65535  # 16-bit codes, float32 nits


def test_untagged_16bit_png_needs_transfer(tmp_path):
    path = tmp_path / "untagged.png"
    codes = RNG.random((4, 5, 3)).astype(np.float32)
    write_sdr_png(path, codes, bits=16)
    with pytest.raises(ItmError, match="untagged.png.*not an HDR picture"):
        read_hdr(path)
    pq = read_hdr(path, transfer="pq")
    expected = colour.models.eotf_ST2084(np.round(codes * 65535) / 65535)
    np.testing.assert_allclose(pq.nits, expected, rtol=1e-4, atol=1e-4)
    hlg = read_hdr(path, transfer="hlg")
    assert hlg.nits.max() <= 1000.0 + 1e-3


def test_hlg_and_bt709_cicp_png(tmp_path):
    codes = np.full((2, 3, 3), 65535, np.uint16)
    path = tmp_path / "hlg709.png"
    path.write_bytes(stills._encode_png(codes, 16, [(b"cICP", bytes((1, 18, 0, 1)))]))
    picture = read_hdr(path)
    assert picture.info["transfer"] == "hlg" and picture.info["primaries"] == "bt709"
    np.testing.assert_allclose(picture.nits, 1000.0, rtol=1e-4)  # white stays white


def test_sdr_png_with_chunks_round_trip(tmp_path):
    sdr = RNG.random((9, 11, 3)).astype(np.float32)
    payload = bytes(range(256)) * 40
    for bits in (8, 16):
        path = tmp_path / f"sdr{bits}.png"
        write_sdr_png(path, sdr, bits=bits, chunks={"itMf": payload, "itMx": b""})
        back, got_bits = read_sdr(path)
        assert got_bits == bits and back.dtype == np.float32 and back.shape == sdr.shape
        peak = (1 << bits) - 1
        np.testing.assert_array_equal(np.round(back * peak), np.round(sdr * peak))
        assert read_png_chunks(path) == {"itMf": payload, "itMx": b""}
    with pytest.raises(ItmError, match="private ancillary"):
        write_sdr_png(tmp_path / "bad.png", sdr, chunks={"IDAT": b"x"})


def test_read_sdr_jpeg_and_tiff(tmp_path):
    from PIL import Image

    codes = (RNG.random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(codes).save(tmp_path / "a.tif")
    back, bits = read_sdr(tmp_path / "a.tif")
    assert bits == 8
    np.testing.assert_array_equal(np.round(back * 255), codes)
    Image.fromarray(codes).save(tmp_path / "a.jpg", quality=95)
    back, bits = read_sdr(tmp_path / "a.jpg")
    assert bits == 8 and back.shape == (16, 16, 3) and 0 <= back.min() and back.max() <= 1


# ---------------------------------------------------------------- bad input


def test_8bit_png_is_not_hdr(tmp_path):
    path = tmp_path / "photo.png"
    write_sdr_png(path, np.zeros((2, 2, 3), np.float32), bits=8)
    with pytest.raises(ItmError, match=r"photo\.png.*not an HDR picture"):
        read_hdr(path)
    path.write_bytes(stills._encode_png(np.zeros((2, 2, 3), np.uint8), 8, [(b"cICP", bytes((9, 16, 0, 1)))]))
    with pytest.raises(ItmError, match=r"photo\.png.*8-bit"):
        read_hdr(path)


@pytest.mark.parametrize("kind", ["png", "exr", "hdr", "sdr"])
def test_truncated_files(tmp_path, kind):
    path = tmp_path / f"cut.{kind if kind != 'sdr' else 'png'}"
    pixels = _pixels(h=16, w=32, scale=100.0)
    if kind == "png":
        write_png_pq16(path, pixels)
    elif kind == "exr":
        write_exr(path, pixels)
    elif kind == "hdr":
        _write_rgbe(path, pixels)
    else:
        write_sdr_png(path, pixels / 100.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    reader = read_sdr if kind == "sdr" else (lambda p: read_hdr(p, nits_per_unit=1.0))
    with pytest.raises(ItmError, match=r"cut\.(png|exr|hdr)"):
        reader(path)


def test_not_an_image_and_missing(tmp_path):
    for name in ("notes.exr", "notes.hdr", "notes.png"):
        (tmp_path / name).write_text("hello")
        with pytest.raises(ItmError, match=name.replace(".", r"\.")):
            read_hdr(tmp_path / name, nits_per_unit=1.0)
    with pytest.raises(ItmError, match="no such file"):
        read_hdr(tmp_path / "missing.exr")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ItmError, match="not an HDR picture"):
        read_hdr(tmp_path / "x.bmp")


def test_corrupt_png_crc(tmp_path):
    path = tmp_path / "crc.png"
    write_sdr_png(path, np.zeros((3, 3, 3), np.float32))
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside IHDR
    path.write_bytes(bytes(data))
    with pytest.raises(ItmError, match=r"crc\.png.*CRC"):
        read_sdr(path)


def test_writers_refuse_to_overwrite_input(tmp_path):
    path = tmp_path / "in.exr"
    write_exr(path, _pixels())
    with pytest.raises(ItmError, match="same file as an input"):
        write_exr(path, _pixels(), inputs=[path])
