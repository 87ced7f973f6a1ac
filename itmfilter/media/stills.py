"""HDR and SDR still pictures: OpenEXR, Radiance RGBE, 16-bit PQ/HLG PNG, SDR PNG/JPEG/TIFF.

Layouts (channel-last, as everywhere in itmfilter):

* HDR: linear BT.2020 RGB, float32 ``(H, W, 3)``, in cd/m2 (display light, >= 0).
* SDR: BT.709 R'G'B' code values (BT.1886 display), float32 ``(H, W, 3)`` in [0, 1].

PNG is written by our own small encoder (Pillow 13 reads and writes 16-bit RGB PNG only as
8-bit) and read through PyAV's PNG decoder; chunks (``cICP``, private payload chunks) are
walked by :func:`_png_chunks`, which also catches truncated files. Every writer goes
through :func:`itmfilter.media.atomic.atomic_output`.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import OpenEXR

from itmfilter.colour.primaries import (
    PRIMARIES_BT709,
    PRIMARIES_BT2020,
    WHITEPOINT_D65,
    apply_matrix,
    luminance,
    matrix_rgb_to_rgb,
)
from itmfilter.colour.transfer import eotf_bt2100_hlg, eotf_inverse_st2084, eotf_st2084
from itmfilter.errors import ItmError
from itmfilter.limits import MAX_PICTURE_SIDE, check_picture_size
from itmfilter.media.atomic import atomic_output

#: BT.2408-7 reference (diffuse) white, cd/m2.
REFERENCE_WHITE_NITS = 203.0
#: anchor_exposure keeps the luminance's 98th percentile at or below this, cd/m2.
ANCHOR_HIGHLIGHT_NITS = 1000.0
#: scene-linear EXR convention used when a file carries no ``whiteLuminance``: 1.0 = 100 cd/m2.
EXR_DEFAULT_NITS_PER_UNIT = 100.0
#: H.273 code points used in PNG ``cICP``.
CICP_PRIMARIES = {1: "bt709", 9: "bt2020"}
CICP_TRANSFER_HDR = {16: "pq", 18: "hlg"}
PQ_PEAK_NITS = 10000.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: BT.2020 primaries and D65 white as the 8 floats of the EXR ``chromaticities`` attribute.
_EXR_BT2020_CHROMATICITIES = (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)


@dataclass
class HdrPicture:
    """An HDR picture: ``nits`` is linear BT.2020 RGB float32 ``(H, W, 3)`` in cd/m2.

    ``source`` is the file it came from; ``info`` records how absolute luminance was
    obtained (``format``, ``nits_per_unit``, ``anchor_factor``, ``transfer``, ...).
    """

    nits: np.ndarray
    source: str
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _bt2020_from(rgb: np.ndarray, primaries, white) -> np.ndarray:
    """Convert linear RGB in (primaries, white) to BT.2020/D65 (Bradford when whites differ)."""
    primaries = np.asarray(primaries, dtype=np.float64).reshape(3, 2)
    white = np.asarray(white, dtype=np.float64).reshape(2)
    if np.allclose(primaries, PRIMARIES_BT2020, atol=5e-4) and np.allclose(white, WHITEPOINT_D65, atol=5e-4):
        return rgb
    matrix = matrix_rgb_to_rgb(primaries, white, PRIMARIES_BT2020, WHITEPOINT_D65)
    return apply_matrix(rgb, matrix).astype(np.float32)


def _clean(nits: np.ndarray) -> np.ndarray:
    """Finite, non-negative float32: lossy codecs (DWAB) and gamut mapping leave negatives."""
    nits = np.nan_to_num(np.asarray(nits, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.maximum(nits, 0.0, out=nits)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise ItmError(path, "no such file", "check the path")
    if not path.is_file():
        raise ItmError(path, "is not a file", "give the path of a picture file")


def _check_hw3(path, array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ItmError(path, f"{what} must have shape (H, W, 3), got {array.shape}",
                       "pass a channel-last RGB array")
    return array


# --------------------------------------------------------------------------- anchoring


def anchor_exposure(
    rel_rgb: np.ndarray, reference_white_nits: float = REFERENCE_WHITE_NITS
) -> tuple[np.ndarray, float]:
    """Scale relative (scene-referred) linear BT.2020 RGB so diffuse white lands at ``reference_white_nits``.

    Estimator of the scene's diffuse white (documented because every training picture
    depends on it): the BT.2020 luminance's 90th percentile, over pixels with positive
    luminance, capped at 8 x its median. The percentile looks past the dark half of a
    scene and ignores the brightest 10 % (sun, lamps, specular highlights, open sky),
    which are meant to stay above reference white; the cap keeps a large bright sky or
    window from being taken for white, so mid-tones stay near the BT.2408 18 % grey of
    about 26 cd/m2 (203 / 26 = 7.8). Finally white is raised, if needed, until the 98th
    percentile sits at or below 1000 cd/m2 (``ANCHOR_HIGHLIGHT_NITS``), so a dark studio
    with large soft boxes is not pushed 20 % into clipping. Returns ``(rgb * factor, factor)``; ``factor``
    is in cd/m2 per input unit.

    ``rel_rgb``: ``(..., 3)`` linear, >= 0, any scale. ``reference_white_nits``: cd/m2
    (BT.2408-7: 203).
    """
    rel_rgb = np.asarray(rel_rgb, dtype=np.float32)
    lum = luminance(np.maximum(rel_rgb, 0.0), "bt2020")
    lum = np.asarray(lum, dtype=np.float64).ravel()
    lum = lum[np.isfinite(lum) & (lum > 0)]
    if lum.size == 0:
        return rel_rgb, 1.0
    median, p90, p98 = (float(v) for v in np.percentile(lum, [50.0, 90.0, 98.0]))
    white = min(p90, 8.0 * median) if median > 0 else p90
    # as a colourist would: at most 2 % of the picture above a 1000 cd/m2 master's peak
    white = max(white, p98 * float(reference_white_nits) / ANCHOR_HIGHLIGHT_NITS)
    if not white > 0:
        return rel_rgb, 1.0
    factor = float(reference_white_nits) / white
    return rel_rgb * np.float32(factor), factor


def _scale(rgb, path, info, nits_per_unit, anchor, default_nits_per_unit):
    """Turn relative or unit-scaled linear BT.2020 into cd/m2 and record how."""
    if nits_per_unit is not None and anchor is not None:
        raise ItmError(path, "both nits_per_unit and anchor were given", "give only one of them")
    if nits_per_unit is not None:
        if not (np.isfinite(nits_per_unit) and nits_per_unit > 0):
            raise ItmError(path, f"nits_per_unit must be a positive number, got {nits_per_unit}",
                           "give the cd/m2 of pixel value 1.0")
        info.update(nits_per_unit=float(nits_per_unit), scale_source="nits_per_unit argument")
        return rgb * np.float32(nits_per_unit)
    if anchor is not None:
        nits, factor = anchor_exposure(rgb, float(anchor))
        info.update(nits_per_unit=factor, anchor_factor=factor, anchor_white_nits=float(anchor),
                    scale_source="anchor_exposure (BT.2408 diffuse white)")
        return nits
    if default_nits_per_unit is None:
        raise ItmError(path, "holds relative radiance with no absolute scale",
                       "pass nits_per_unit= (cd/m2 of value 1.0) or anchor=203.0 "
                       "(place the diffuse white at 203 cd/m2)")
    return rgb * np.float32(default_nits_per_unit)


# --------------------------------------------------------------------------- OpenEXR


def _read_exr(path: Path, nits_per_unit, anchor) -> HdrPicture:

    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            window = exr.header().get("dataWindow")
    except Exception as exc:  # OpenEXR raises RuntimeError for truncated/foreign files
        raise ItmError(path, f"cannot be read as OpenEXR ({exc})",
                       "check that the file is a complete .exr picture") from None
    if window is not None:
        (x0, y0), (x1, y1) = (tuple(int(v) for v in corner) for corner in window)
        check_picture_size(path, x1 - x0 + 1, y1 - y0 + 1, minimum=False)
    try:
        with OpenEXR.File(str(path)) as exr:
            header = dict(exr.header())  # a copy: the File's own dict is emptied on close
            channels = exr.channels()
            if "RGB" in channels:
                rgb = np.array(channels["RGB"].pixels, dtype=np.float32)
            elif "RGBA" in channels:
                rgb = np.array(channels["RGBA"].pixels[..., :3], dtype=np.float32)
            elif all(c in channels for c in "RGB"):
                rgb = np.stack([np.asarray(channels[c].pixels, np.float32) for c in "RGB"], axis=-1)
            elif "Y" in channels:
                y = np.asarray(channels["Y"].pixels, np.float32)
                rgb = np.repeat(y[..., None], 3, axis=-1)
            else:
                raise ItmError(path, f"has no R, G, B or Y channels (found {sorted(channels)})",
                               "export the picture with RGB channels")
    except ItmError:
        raise
    except Exception as exc:  # OpenEXR raises RuntimeError for truncated/foreign files
        raise ItmError(path, f"cannot be read as OpenEXR ({exc})",
                       "check that the file is a complete .exr picture") from None
    rgb = _check_hw3(path, rgb, "the picture")
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=65504.0, neginf=0.0)
    info: dict = {"format": "exr", "compression": str(header.get("compression", ""))}
    chroma = header.get("chromaticities")
    if chroma is not None:
        chroma = np.asarray(chroma, dtype=np.float64)
        rgb = _bt2020_from(rgb, chroma[:6], chroma[6:8])
        info["chromaticities"] = tuple(float(c) for c in chroma)
    else:
        info["chromaticities"] = "absent (BT.709/D65 assumed, the OpenEXR default)"
        rgb = _bt2020_from(rgb, PRIMARIES_BT709, WHITEPOINT_D65)
    white_luminance = header.get("whiteLuminance")
    if white_luminance is not None and float(white_luminance) > 0:
        default = float(white_luminance)
        info.update(nits_per_unit=default, scale_source="whiteLuminance header")
    else:
        default = EXR_DEFAULT_NITS_PER_UNIT
        info.update(nits_per_unit=default, scale_source="no whiteLuminance: 1.0 = 100 cd/m2")
    nits = _scale(_clean(rgb), path, info, nits_per_unit, anchor, default)
    return HdrPicture(_clean(nits), str(path), info)


def write_exr(path: str | os.PathLike, nits: np.ndarray, inputs=()) -> None:
    """Write linear BT.2020 cd/m2 ``(H, W, 3)`` as half-float, ZIP-compressed OpenEXR.

    Stored with 1.0 = 100 cd/m2; the header carries ``whiteLuminance`` = 100 and BT.2020
    ``chromaticities`` so other tools read the absolute scale and gamut.
    """

    nits = _check_hw3(path, nits, "nits")
    units = np.clip(_clean(nits) / np.float32(EXR_DEFAULT_NITS_PER_UNIT), 0.0, 65504.0)
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        "chromaticities": _EXR_BT2020_CHROMATICITIES,
        "whiteLuminance": EXR_DEFAULT_NITS_PER_UNIT,
    }
    with atomic_output(path, inputs) as tmp:
        OpenEXR.File(header, {"RGB": np.ascontiguousarray(units.astype(np.float16))}).write(str(tmp))


# --------------------------------------------------------------------------- Radiance RGBE


_RGBE_RESOLUTION = re.compile(rb"^([-+])Y\s+(\d+)\s+([-+])X\s+(\d+)\s*$")


def _rgbe_scanline(data: bytes, pos: int, width: int, path: Path) -> tuple[np.ndarray, int]:
    """Decode one scanline starting at ``pos``; returns ``(uint8 (width, 4), new pos)``."""
    head = data[pos:pos + 4]
    if len(head) < 4:
        raise ItmError(path, "is truncated (scanline data ends early)", "download or export it again")
    if 8 <= width < 0x8000 and head[0] == 2 and head[1] == 2 and not head[2] & 0x80:
        if (head[2] << 8 | head[3]) != width:
            raise ItmError(path, "has a corrupt run-length scanline header", "export it again")
        pos += 4
        line = np.empty((4, width), dtype=np.uint8)
        for channel in range(4):
            x = 0
            while x < width:
                if pos >= len(data):
                    raise ItmError(path, "is truncated (scanline data ends early)",
                                   "download or export it again")
                count = data[pos]
                pos += 1
                if count > 128:  # a run of one byte
                    count -= 128
                    if x + count > width or pos >= len(data):
                        raise ItmError(path, "has a corrupt run-length scanline", "export it again")
                    line[channel, x:x + count] = data[pos]
                    pos += 1
                else:  # count literal bytes
                    if count == 0 or x + count > width or pos + count > len(data):
                        raise ItmError(path, "has a corrupt run-length scanline", "export it again")
                    line[channel, x:x + count] = np.frombuffer(data, np.uint8, count, pos)
                    pos += count
                x += count
        return line.T, pos
    # flat pixels, possibly with old-style runs (1,1,1,n repeats the previous pixel)
    line = np.empty((width, 4), dtype=np.uint8)
    x, shift = 0, 0
    while x < width:
        pixel = data[pos:pos + 4]
        if len(pixel) < 4:
            raise ItmError(path, "is truncated (scanline data ends early)", "download or export it again")
        pos += 4
        if pixel[0] == 1 and pixel[1] == 1 and pixel[2] == 1 and x > 0:
            count = pixel[3] << shift
            if x + count > width:
                raise ItmError(path, "has a corrupt old-style run", "export it again")
            line[x:x + count] = line[x - 1]
            x += count
            shift += 8
        else:
            line[x] = np.frombuffer(pixel, np.uint8)
            x += 1
            shift = 0
    return line, pos


def read_rgbe(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a Radiance RGBE (.hdr/.pic) file: linear RGB float32 ``(H, W, 3)`` and its header.

    Values are relative radiance divided by any ``EXPOSURE`` lines (so they are the
    radiance the renderer or camera recorded, up to an unknown scale). Primaries are
    those of a valid ``PRIMARIES`` line, else BT.709/D65 (Radiance's default).
    """
    path = Path(path)
    _require_file(path)
    data = path.read_bytes()
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ItmError(path, "is not a Radiance RGBE picture (no '#?RADIANCE' signature)",
                       "give a .hdr file written by Radiance-compatible software")
    header_end = data.find(b"\n\n")
    if header_end < 0:
        raise ItmError(path, "is truncated (header never ends)", "download or export it again")
    header: dict = {"exposure": 1.0, "primaries": None}
    for line in data[:header_end].split(b"\n")[1:]:
        line = line.strip()
        if line.startswith(b"FORMAT="):
            fmt = line[7:].decode("ascii", "replace")
            if fmt != "32-bit_rle_rgbe":
                raise ItmError(path, f"uses pixel format {fmt!r}", "only 32-bit_rle_rgbe (RGB) is supported")
        elif line.startswith(b"EXPOSURE="):
            try:
                header["exposure"] *= float(line[9:])
            except ValueError:
                pass
        elif line.startswith(b"PRIMARIES="):
            try:
                values = [float(v) for v in line[10:].split()]
            except ValueError:
                values = []
            if len(values) == 8 and all(0 < v < 1 for v in values):
                header["primaries"] = values
    res_end = data.find(b"\n", header_end + 2)
    if res_end < 0:
        raise ItmError(path, "is truncated (no resolution line)", "download or export it again")
    match = _RGBE_RESOLUTION.match(data[header_end + 2:res_end])
    if not match:
        raise ItmError(path, "has an unsupported resolution line (only ±Y ±X orientations)",
                       "rotate the picture to a standard orientation")
    height, width = int(match.group(2)), int(match.group(4))
    if height == 0 or width == 0:
        raise ItmError(path, "has an empty picture (0 pixels)", "give a real picture")
    check_picture_size(path, width, height, minimum=False)
    pos = res_end + 1
    rgbe = np.empty((height, width, 4), dtype=np.uint8)
    for y in range(height):
        rgbe[y], pos = _rgbe_scanline(data, pos, width, path)
    if match.group(1) == b"+":  # +Y: bottom-to-top
        rgbe = rgbe[::-1]
    if match.group(3) == b"-":
        rgbe = rgbe[:, ::-1]
    exponent = rgbe[..., 3].astype(np.int32)
    # Radiance colr_color: (mantissa + 0.5) * 2^(e - 136); e == 0 means black.
    scale = np.where(exponent > 0, np.ldexp(np.float32(1.0), exponent - 136), 0.0).astype(np.float32)
    rgb = (rgbe[..., :3].astype(np.float32) + 0.5) * scale[..., None]
    if header["exposure"] > 0:
        rgb /= np.float32(header["exposure"])
    return np.ascontiguousarray(rgb), header


def _read_radiance(path: Path, nits_per_unit, anchor) -> HdrPicture:
    rgb, header = read_rgbe(path)
    info: dict = {"format": "radiance-rgbe", "exposure_header": header["exposure"]}
    if header["primaries"]:
        prim = np.asarray(header["primaries"])
        rgb = _bt2020_from(rgb, prim[:6], prim[6:])
        info["primaries"] = "PRIMARIES header"
    else:
        rgb = _bt2020_from(rgb, PRIMARIES_BT709, WHITEPOINT_D65)
        info["primaries"] = "BT.709 assumed"
    nits = _scale(_clean(rgb), path, info, nits_per_unit, anchor, None)
    return HdrPicture(_clean(nits), str(path), info)


# --------------------------------------------------------------------------- PNG


def _png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG as ``(type, payload)``; ItmError for bad, truncated or foreign files."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ItmError(path, "is not a PNG file (bad signature)", "give a .png picture")
    chunks, pos = [], len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ItmError(path, "is truncated (PNG ends before its IEND chunk)", "export it again")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise ItmError(path, f"is truncated (PNG chunk {kind!r} runs past the end of the file)",
                           "export it again")
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + payload) != crc:
            raise ItmError(path, f"is corrupt (CRC mismatch in PNG chunk {kind!r})", "export it again")
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ItmError(path, "is corrupt (PNG does not start with IHDR)", "export it again")
    return chunks


def _png_ihdr(chunks, path=None) -> tuple[int, int, int, int]:
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    if path is not None:
        check_picture_size(path, width, height, minimum=False)
    return width, height, bit_depth, colour_type


def _decode_with_pyav(path: Path, bits: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a PNG/TIFF with FFmpeg: ``(uint8/uint16 (H, W, 3), bits)``, alpha dropped, exact.

    ``bits=None`` keeps the file's own depth (16 for 48/64-bit RGB and 16-bit grey).
    """

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            if bits is None:
                bits = 16 if re.search(r"(48|64|16|12|10)", frame.format.name) else 8
            fmt = "rgb48le" if bits > 8 else "rgb24"
            return frame.to_ndarray(format=fmt), bits
    except Exception as exc:
        raise ItmError(path, f"cannot be decoded ({exc})", "check that it is a complete picture") from None


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png(codes: np.ndarray, bits: int, extra: list[tuple[bytes, bytes]]) -> bytes:
    """Encode uint8/uint16 RGB ``(H, W, 3)`` as PNG with Paeth filtering on every row.

    ``extra`` chunks go between IHDR and IDAT (where cICP must be).
    """
    height, width, _ = codes.shape
    raw = codes.astype(">u2" if bits == 16 else np.uint8).view(np.uint8).reshape(height, -1)
    bpp = 6 if bits == 16 else 3
    a = np.zeros_like(raw, dtype=np.int16)  # left
    a[:, bpp:] = raw[:, :-bpp]
    b = np.zeros_like(a)  # up
    b[1:] = raw[:-1]
    c = np.zeros_like(a)  # up-left
    c[1:, bpp:] = raw[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    filtered = ((raw.astype(np.int16) - predictor) & 0xFF).astype(np.uint8)
    rows = np.concatenate([np.full((height, 1), 4, np.uint8), filtered], axis=1)  # 4 = Paeth
    ihdr = struct.pack(">IIBBBBB", width, height, bits, 2, 0, 0, 0)  # colour type 2 = RGB
    out = [_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr)]
    out += [_png_chunk(kind, payload) for kind, payload in extra]
    out += [_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _read_png_hdr(path: Path, transfer, nits_per_unit, anchor) -> HdrPicture:
    chunks = _png_chunks(path)
    _, _, bit_depth, colour_type = _png_ihdr(chunks, path)
    cicp = next((payload for kind, payload in chunks if kind == b"cICP"), None)
    info: dict = {"format": "png", "bits": bit_depth}
    primaries = "bt2020"
    if cicp is not None:
        if len(cicp) != 4:
            raise ItmError(path, "has a malformed cICP chunk", "export it again")
        cp, tc, mc, full_range = cicp
        info["cicp"] = (cp, tc, mc, full_range)
        if tc not in CICP_TRANSFER_HDR:
            raise ItmError(path, f"this is not an HDR picture (cICP transfer {tc}, not 16 PQ or 18 HLG)",
                           "give a PQ or HLG PNG, an .exr or a .hdr file")
        if cp not in CICP_PRIMARIES:
            raise ItmError(path, f"has cICP primaries {cp}; only 9 (BT.2020) and 1 (BT.709) are supported",
                           "convert it to BT.2020")
        if mc != 0 or full_range != 1:
            raise ItmError(path, f"has cICP matrix {mc} / full-range {full_range}; PNG must be RGB (0, 1)",
                           "export it again as full-range RGB")
        transfer_name, primaries = CICP_TRANSFER_HDR[tc], CICP_PRIMARIES[cp]
        if transfer is not None and transfer != transfer_name:
            raise ItmError(path, f"is tagged {transfer_name} but transfer={transfer!r} was given",
                           "leave transfer= out for tagged files")
    elif transfer is None:
        raise ItmError(path, "this is not an HDR picture (PNG without a cICP chunk)",
                       "give a PQ/HLG PNG with cICP, or pass transfer='pq' or 'hlg' for an untagged 16-bit PNG")
    else:
        transfer_name = str(transfer).lower()
        if transfer_name not in ("pq", "hlg"):
            raise ItmError(path, f"unknown transfer {transfer!r}", "use 'pq' or 'hlg'")
    if bit_depth != 16:
        raise ItmError(path, f"this is not an HDR picture ({bit_depth}-bit PNG)",
                       "HDR PNGs must be 16-bit; give a 16-bit PQ/HLG PNG, an .exr or a .hdr file")
    if colour_type not in (2, 6):
        raise ItmError(path, "this is not an HDR picture (greyscale or palette PNG)", "give a 16-bit RGB PNG")
    codes = _decode_with_pyav(path, 16)[0].astype(np.float64) / 65535.0
    if transfer_name == "pq":
        nits = eotf_st2084(codes)
    else:
        nits = eotf_bt2100_hlg(codes)
    info.update(transfer=transfer_name, primaries=primaries, nits_per_unit=1.0, scale_source="absolute (PQ/HLG)")
    nits = np.asarray(nits, dtype=np.float32)
    if primaries == "bt709":
        nits = _bt2020_from(nits, PRIMARIES_BT709, WHITEPOINT_D65)
    if nits_per_unit is not None or anchor is not None:
        nits = _scale(nits, path, info, nits_per_unit, anchor, None)
    return HdrPicture(_clean(nits), str(path), info)


def write_png_pq16(path: str | os.PathLike, nits: np.ndarray, inputs=()) -> None:
    """Write linear BT.2020 cd/m2 ``(H, W, 3)`` as a 16-bit PQ BT.2020 PNG tagged cICP (9, 16, 0, 1).

    Values are clipped to [0, 10000] cd/m2 (the PQ range).
    """
    nits = _check_hw3(path, nits, "nits")
    pq = eotf_inverse_st2084(np.clip(_clean(nits), 0.0, PQ_PEAK_NITS))
    codes = np.round(np.clip(np.asarray(pq, np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    png = _encode_png(codes, 16, [(b"cICP", bytes((9, 16, 0, 1)))])
    with atomic_output(path, inputs) as tmp:
        Path(tmp).write_bytes(png)


# --------------------------------------------------------------------------- SDR


def _check_chunk_type(kind: str) -> bytes:
    raw = kind.encode("ascii", "replace") if isinstance(kind, str) else bytes(kind)
    if not (len(raw) == 4 and raw.isalpha() and raw[0:1].islower() and raw[1:2].islower()
            and raw[2:3].isupper()):
        raise ItmError(None, f"PNG chunk type {kind!r} is not a private ancillary chunk name",
                       "use 4 letters: lower, lower, upper, any (e.g. 'itMf')")
    return raw


def write_sdr_png(
    path: str | os.PathLike,
    sdr: np.ndarray,
    bits: int = 8,
    chunks: dict[str, bytes] | None = None,
    inputs=(),
) -> None:
    """Write SDR code values ``(H, W, 3)`` in [0, 1] as an 8- or 16-bit RGB PNG.

    Each ``chunks`` entry (type -> payload bytes) is stored raw in a private ancillary
    chunk, e.g. ``{"itMf": weights}``: raw bytes are a third smaller than base64 in
    iTXt. Decoders skip unknown ancillary chunks, but image editors and many web
    pipelines drop them when they rewrite a file; a lower-case 4th letter (``itMf``)
    declares the chunk safe to copy, an upper-case one (``itMF``) asks editors to drop
    it once they change the pixels. The picture carries no colour tag: it is BT.709
    R'G'B' as every SDR viewer assumes.
    """
    if bits not in (8, 16):
        raise ItmError(path, f"bits must be 8 or 16, got {bits}", "choose 8 or 16")
    sdr = _check_hw3(path, sdr, "sdr")
    peak = (1 << bits) - 1
    values = np.nan_to_num(np.asarray(sdr, np.float64), nan=0.0)
    codes = np.round(np.clip(values, 0.0, 1.0) * peak).astype(np.uint16 if bits == 16 else np.uint8)
    extra = [(_check_chunk_type(kind), bytes(payload)) for kind, payload in (chunks or {}).items()]
    png = _encode_png(codes, bits, [])
    if extra:  # after IDAT: payloads can be large, and readers get the picture first
        iend = len(png) - 12
        png = png[:iend] + b"".join(_png_chunk(k, p) for k, p in extra) + png[iend:]
    with atomic_output(path, inputs) as tmp:
        Path(tmp).write_bytes(png)


def read_png_chunks(path: str | os.PathLike) -> dict[str, bytes]:
    """The private ancillary chunks of a PNG (type -> payload), as written by :func:`write_sdr_png`.

    Public chunks (tEXt, cICP, ...) are not included. A private type that occurs twice
    is an error (its payload would be ambiguous).
    """
    path = Path(path)
    _require_file(path)
    found: dict[str, bytes] = {}
    for kind, payload in _png_chunks(path):
        if kind[0:1].islower() and kind[1:2].islower():
            name = kind.decode("ascii", "replace")
            if name in found:
                raise ItmError(path, f"has chunk {name!r} twice", "write the payload once")
            found[name] = payload
    return found


def _check_header_size_with_pil(path: Path) -> None:
    """Pillow reads only the header on open: the size is known before any pixel."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        width, height = MAX_PICTURE_SIDE + 1, MAX_PICTURE_SIDE + 1
    except Exception as exc:
        raise ItmError(path, f"cannot be read as a picture ({exc})", "check that it is a complete picture") from None
    check_picture_size(path, width, height, minimum=False)


def read_sdr(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an SDR picture (8/16-bit PNG, JPEG, TIFF): ``(float32 (H, W, 3) in [0, 1], bits)``.

    Alpha is dropped, greyscale and palette pictures become RGB. Code values are
    returned as stored (no transfer function applied).
    """
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        chunks = _png_chunks(path)
        bits = 16 if _png_ihdr(chunks, path)[2] == 16 else 8
        cicp = next((p for k, p in chunks if k == b"cICP"), None)
        if cicp is not None and len(cicp) == 4 and cicp[1] in CICP_TRANSFER_HDR:
            raise ItmError(path, "is an HDR picture (cICP PQ/HLG), not SDR", "use read_hdr for it")
        codes, _ = _decode_with_pyav(path, bits)
    elif suffix in (".tif", ".tiff"):
        _check_header_size_with_pil(path)
        codes, bits = _decode_with_pyav(path)
    elif suffix in (".jpg", ".jpeg"):
        from PIL import Image

        _check_header_size_with_pil(path)
        try:
            with Image.open(path) as image:
                codes = np.asarray(image.convert("RGB"))
        except Exception as exc:
            raise ItmError(path, f"cannot be read as JPEG ({exc})", "check that it is a complete picture") from None
        bits = 8
    else:
        raise ItmError(path, f"has unsupported extension {suffix!r} for an SDR picture",
                       "give a .png, .jpg or .tif file")
    scale = np.float32(1.0 / ((1 << bits) - 1))
    return codes.astype(np.float32) * scale, bits


# --------------------------------------------------------------------------- entry point


def read_hdr(
    path: str | os.PathLike,
    nits_per_unit: float | None = None,
    anchor: float | None = None,
    transfer: str | None = None,
) -> HdrPicture:
    """Read an HDR picture as linear BT.2020 cd/m2.

    * ``.exr``: ``whiteLuminance`` (cd/m2 of RGB 1,1,1) sets the scale, else 1.0 = 100
      cd/m2; ``chromaticities`` are converted to BT.2020 (Bradford when whites differ),
      absent ones mean BT.709/D65. Negatives (lossy DWAB) are clamped.
    * ``.hdr``/``.pic`` (Radiance RGBE): relative radiance, BT.709 unless a valid
      PRIMARIES line says otherwise; needs ``nits_per_unit`` or ``anchor``.
    * ``.png``: 16-bit with cICP transfer 16 (PQ) or 18 (HLG, 1000 cd/m2 display) and
      primaries 9 or 1; an untagged 16-bit PNG needs ``transfer='pq'`` or ``'hlg'``
      (BT.2020 assumed).

    ``nits_per_unit`` (cd/m2 of value 1.0) overrides any stored scale; ``anchor`` (cd/m2,
    e.g. 203.0) instead places the estimated diffuse white there (:func:`anchor_exposure`)
    and records the factor in ``info["anchor_factor"]``.
    """
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".exr":
        return _read_exr(path, nits_per_unit, anchor)
    if suffix in (".hdr", ".pic", ".rgbe"):
        return _read_radiance(path, nits_per_unit, anchor)
    if suffix == ".png":
        return _read_png_hdr(path, transfer, nits_per_unit, anchor)
    raise ItmError(path, f"this is not an HDR picture format ({suffix or 'no extension'})",
                   "give an .exr, a Radiance .hdr or a 16-bit PQ/HLG .png")
