"""Per-frame binary packets carried *inside* an H.264 or HEVC bitstream, as SEI.

Each video access unit (one coded picture) gets one SEI NAL unit holding one
``user_data_unregistered`` message: a 16-byte UUID that says "this is ours"
(:data:`ITMFILTER_SEI_UUID` by default) followed by that frame's packet, byte for byte.
Because the bytes live in the elementary stream, they survive whatever keeps the
elementary stream: ``ffmpeg -c copy`` to MKV, MOV or MPEG-TS and back, HLS segmenting,
cutting at a keyframe, concatenation. A data track or an attachment survives none of
these reliably.

The syntax implemented here (normative references):

* NAL unit header and the emulation prevention byte: ITU-T H.264 7.3.1 / 7.4.1
  (one-byte header; SEI is ``nal_unit_type`` 6) and ITU-T H.265 7.3.1.1 / 7.3.1.2
  (two-byte header; prefix SEI is ``nal_unit_type`` 39, ``nuh_layer_id`` 0,
  ``nuh_temporal_id_plus1`` that of the access unit). Inside a NAL unit payload the
  byte sequences ``00 00 00``, ``00 00 01``, ``00 00 02`` and ``00 00 03`` never occur:
  the writer turns each ``00 00 0x`` (x <= 3) of the RBSP into ``00 00 03 0x`` and the
  reader removes every ``03`` that follows ``00 00`` (:func:`add_emulation_prevention`,
  :func:`remove_emulation_prevention`).
* SEI RBSP and SEI message: H.264 7.3.2.3 / 7.3.2.3.1 and H.265 7.3.5 / 7.3.5.1
  (``sei_message()``: ``payloadType`` and ``payloadSize`` each coded as a run of
  ``0xFF`` bytes, each worth 255, plus one final byte below 255; then the payload; the
  RBSP ends with ``rbsp_trailing_bits``, a ``1`` bit and zero bits to the byte
  boundary, i.e. the byte ``0x80`` here).
* ``user_data_unregistered``: H.264 D.1.7 / D.2.7 (payloadType 5) and H.265 D.2.7 /
  D.3.7 (payloadType 5, the same syntax): ``uuid_iso_iec_11578`` (16 bytes) then
  ``user_data_payload_byte`` to the end of the payload.
* Where the SEI goes in an access unit: H.264 7.4.1.2.3 (after an access unit
  delimiter, SPS/PPS and other SEI NAL units are allowed before it, and it must
  precede the primary coded picture's first VCL NAL unit) and H.265 7.4.2.4.4 (prefix
  SEI after the AUD and before the first VCL NAL unit of the picture; VPS/SPS/PPS and
  other prefix SEI may come before it). :func:`insert_sei` puts ours immediately
  before the first VCL NAL unit, i.e. after whatever the encoder put in front
  (x264's and x265's own SEI, a buffering-period SEI which must come first, AUD,
  parameter sets).
* Two ways NAL units are framed in a packet. *Annex B* byte streams (H.264 Annex B,
  H.265 Annex B; MPEG-TS, raw ``.h264``/``.hevc``) separate them with start codes
  ``00 00 01`` / ``00 00 00 01``. MP4, MOV and Matroska prefix each NAL unit with its
  big-endian length on 1, 2 or 4 bytes (ISO/IEC 14496-15); the size is in the stream's
  extradata: ``avcC`` (starts with ``configurationVersion`` 1, ``lengthSizeMinusOne``
  in the low two bits of byte 4) and ``hvcC`` (``configurationVersion`` 1, the same
  field in byte 21). Extradata that starts with a start code, or none at all with
  packets that do, means Annex B (:func:`detect_nal_format`).

Writing: PyAV cannot attach SEI to frames it encodes, so :func:`remux_with_sei` is a
separate pass that stream-copies every stream of a finished file and rewrites each
video packet with its frame's SEI NAL unit inserted. Frame numbers are *presentation*
order indexes (0-based rank of the packet's pts among all video packets of the file),
so B-frames, whose packets arrive in decode order, get the right payload.

Reading: :func:`read_sei` demuxes only (no decoding, fast) and parses packets;
:func:`read_sei_decoded` gets the same bytes from PyAV's decoded-frame side data
(``SEI_UNREGISTERED``, 16-byte UUID + payload), which FFmpeg's h264 and hevc decoders
export. Both key the result by presentation index within the file being read: after a
cut, index 0 is the first frame of the cut, so a payload that must be placed in the
original timeline should carry its own frame number.

Overhead per frame, beyond the payload itself: H.264 1-byte NAL header, HEVC 2 bytes;
``payloadType`` 1 byte; ``payloadSize`` ``(16 + n) // 255 + 1`` bytes; the UUID 16
bytes; the trailing ``0x80`` 1 byte; the 4-byte length prefix or start code; plus one
emulation prevention byte per ``00 00 0x`` (x <= 3) run in the payload (none for
random-looking bytes in practice, up to n/2 for all-zero payloads). See
``docs/sei-carriage.md`` for measurements.

HDR10 static metadata as SEI (:func:`hdr10_sei_nal`, :func:`add_hdr10_sei`): the
H.265 ``mastering_display_colour_volume`` (D.2.28, payloadType 137: three primaries in the
order G, B, R as SMPTE ST 2086 lists them, then the white point, each x, y in 0.00002
steps as u(16); max and min luminance in 0.0001 cd/m2 as u(32)) and
``content_light_level_info`` (D.2.35, payloadType 144: MaxCLL and MaxFALL in cd/m2 as
u(16)) in one prefix SEI NAL unit of every IRAP access unit. libx265 writes the same two
messages itself (``master-display``, ``max-cll``); this is for encoders that take no such
option (``hevc_nvenc``), applied to their packets before muxing.

This module depends only on PyAV, :mod:`itmfilter.errors`, :mod:`itmfilter.media.atomic`
and the HDR10 dataclass of :mod:`itmfilter.colour.hdr10`.
"""

from __future__ import annotations

import os
import re
import uuid as _uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from itmfilter.colour.hdr10 import (
    ST2086_CHROMATICITY_UNIT,
    ST2086_LUMINANCE_UNIT,
    HDR10Metadata,
)
from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output

ITMFILTER_SEI_UUID: bytes = _uuid.UUID("91387850-49bb-5ff2-b902-4879b0332a66").bytes
"""Our ``uuid_iso_iec_11578``: ``uuid5(NAMESPACE_URL, "urn:itmfilter:sei:weight-track:v1")``."""

USER_DATA_UNREGISTERED = 5
"""``payloadType`` of ``user_data_unregistered`` in both H.264 and H.265."""

H264 = "h264"
HEVC = "hevc"
CODECS = (H264, HEVC)

H264_NAL_SEI = 6
H264_NAL_AUD = 9
_H264_FIRST_OF_PICTURE = frozenset({1, 2, 3, 4, 5, 14, 20, 21})
"""Slices (1-5), and the SVC/MVC prefix (14) and slice extensions (20, 21), which must
stay directly in front of / after the base-view slices: our SEI goes before the first."""

HEVC_NAL_PREFIX_SEI = 39
HEVC_NAL_SUFFIX_SEI = 40
HEVC_NAL_AUD = 35

START_CODE = b"\x00\x00\x00\x01"

_EPB_INSERT = re.compile(rb"\x00\x00(?=[\x00-\x03]|\Z)")
_EPB_REMOVE = re.compile(rb"\x00\x00\x03")


class SeiError(ItmError):
    """A malformed NAL unit, SEI message, packet or extradata."""


# --------------------------------------------------------------------------- RBSP <-> NAL


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """RBSP -> NAL unit payload: insert ``03`` after every ``00 00`` that is followed by
    ``00``-``03`` or ends the data (H.264 7.4.1, H.265 7.4.2)."""
    return _EPB_INSERT.sub(b"\x00\x00\x03", bytes(rbsp))


def remove_emulation_prevention(payload: bytes) -> bytes:
    """NAL unit payload -> RBSP: drop every ``03`` that follows ``00 00``."""
    return _EPB_REMOVE.sub(b"\x00\x00", bytes(payload))


# --------------------------------------------------------------------------- NAL headers


def _check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise SeiError(None, f"SEI carriage supports h264 and hevc, not {codec!r}",
                       "encode the SDR video with libx264 or libx265")
    return codec


def nal_header_size(codec: str) -> int:
    """1 for H.264, 2 for HEVC."""
    return 1 if _check_codec(codec) == H264 else 2


def nal_unit_type(nal: bytes, codec: str) -> int:
    """``nal_unit_type`` of a NAL unit (without start code or length prefix)."""
    if not nal:
        raise SeiError(None, "empty NAL unit")
    return nal[0] & 0x1F if codec == H264 else (nal[0] >> 1) & 0x3F


def is_vcl(nal: bytes, codec: str) -> bool:
    """True for coded slice NAL units (H.264 types 1-5; HEVC types 0-31)."""
    t = nal_unit_type(nal, codec)
    return 1 <= t <= 5 if codec == H264 else t < 32


def _is_sei(nal: bytes, codec: str) -> bool:
    t = nal_unit_type(nal, codec)
    return t == H264_NAL_SEI if codec == H264 else t in (HEVC_NAL_PREFIX_SEI, HEVC_NAL_SUFFIX_SEI)


def hevc_temporal_id(nal: bytes) -> int:
    """``TemporalId`` (``nuh_temporal_id_plus1`` - 1) of an HEVC NAL unit."""
    if len(nal) < 2:
        raise SeiError(None, "HEVC NAL unit shorter than its 2-byte header")
    return max((nal[1] & 0x07) - 1, 0)


# --------------------------------------------------------------------------- SEI messages


def _ff_coded(value: int) -> bytes:
    """``payloadType`` / ``payloadSize`` coding: ``value // 255`` bytes 0xFF, then the rest."""
    if value < 0:
        raise SeiError(None, f"negative SEI payload type or size {value}")
    return b"\xff" * (value // 255) + bytes([value % 255])


def sei_rbsp(messages: Iterable[tuple[int, bytes]]) -> bytes:
    """``sei_rbsp()``: each ``(payloadType, payload)`` as a ``sei_message()``, then
    ``rbsp_trailing_bits`` (0x80)."""
    out = bytearray()
    for ptype, payload in messages:
        out += _ff_coded(ptype) + _ff_coded(len(payload)) + payload
    out.append(0x80)
    return bytes(out)


def parse_sei_rbsp(rbsp: bytes) -> list[tuple[int, bytes]]:
    """The ``(payloadType, payload)`` pairs of an SEI RBSP (emulation prevention
    already removed). Raises :class:`SeiError` if a message runs past the end."""
    messages: list[tuple[int, bytes]] = []
    pos, end = 0, len(rbsp)
    while end > 0 and rbsp[end - 1] == 0:  # trailing_zero_8bits / cabac_zero_words
        end -= 1
    # more_rbsp_data(): anything left before the final rbsp_stop_one_bit byte.
    while pos < end - 1 or (pos == end - 1 and rbsp[pos] != 0x80):
        values = []
        for _ in range(2):
            v = 0
            while True:
                if pos >= end:
                    raise SeiError(None, "SEI message header runs past the end of the NAL unit")
                b = rbsp[pos]
                pos += 1
                v += b
                if b != 0xFF:
                    break
            values.append(v)
        ptype, size = values
        if pos + size > end:
            raise SeiError(None, f"SEI payload of {size} bytes runs past the end of the NAL unit")
        messages.append((ptype, bytes(rbsp[pos:pos + size])))
        pos += size
    return messages


def build_sei_nal_from_messages(messages: Iterable[tuple[int, bytes]], codec: str,
                                temporal_id: int = 0) -> bytes:
    """One SEI NAL unit (no start code / length prefix) holding ``messages``.

    H.264: header byte 0x06 (``nal_ref_idc`` 0, type 6). HEVC: prefix SEI, type 39,
    ``nuh_layer_id`` 0, ``nuh_temporal_id_plus1`` = ``temporal_id`` + 1 (it must equal
    the access unit's TemporalId).
    """
    if _check_codec(codec) == H264:
        header = bytes([H264_NAL_SEI])
    else:
        if not 0 <= temporal_id <= 6:
            raise SeiError(None, f"HEVC TemporalId {temporal_id} outside 0..6")
        header = bytes([HEVC_NAL_PREFIX_SEI << 1, temporal_id + 1])
    return header + add_emulation_prevention(sei_rbsp(messages))


SEI_FRAMING_RESERVE_BYTES = 28
"""Bytes the rate budget reserves per frame for the SEI NAL unit around a sample: a 4-byte
length or start code, the NAL header (1 or 2), payloadType (1), payloadSize (1 below 239
bytes), the UUID (16) and the trailing bits (1) make 24-25; the rest covers emulation
prevention bytes of small samples (a zero shift is four zero bytes). A KEY's longer
payloadSize is repaid by the spare bytes of the frames around it."""


def sei_nal_bytes(sample: bytes, codec: str = H264) -> int:
    """Bytes a sample costs in the video stream, as the rate promise counts them: its SEI NAL
    unit (:func:`build_sei_nal`, emulation prevention included) and a 4-byte length or start
    code."""
    return len(build_sei_nal(sample, codec=codec)) + 4


def build_sei_nal(payload: bytes, uuid: bytes = ITMFILTER_SEI_UUID, codec: str = H264,
                  temporal_id: int = 0) -> bytes:
    """One SEI NAL unit with one ``user_data_unregistered`` message: ``uuid`` + ``payload``."""
    uuid = _check_uuid(uuid)
    return build_sei_nal_from_messages([(USER_DATA_UNREGISTERED, uuid + bytes(payload))],
                                       codec, temporal_id)


def parse_sei_nal(nal: bytes, codec: str) -> list[tuple[int, bytes]]:
    """The ``(payloadType, payload)`` messages of an SEI NAL unit (prefix or suffix)."""
    if not _is_sei(nal, codec):
        raise SeiError(None, f"NAL unit type {nal_unit_type(nal, codec)} is not SEI")
    return parse_sei_rbsp(remove_emulation_prevention(nal[nal_header_size(codec):]))


def user_data_from_nal(nal: bytes, codec: str, uuid: bytes = ITMFILTER_SEI_UUID) -> list[bytes]:
    """Payloads (after the UUID) of the ``user_data_unregistered`` messages with ``uuid``
    in one NAL unit; ``[]`` for a NAL unit that is not SEI or carries none."""
    if not nal or not _is_sei(nal, codec):
        return []
    uuid = _check_uuid(uuid)
    return [body[16:] for ptype, body in parse_sei_nal(nal, codec)
            if ptype == USER_DATA_UNREGISTERED and body[:16] == uuid]


def _check_uuid(uuid: bytes | _uuid.UUID | str) -> bytes:
    if isinstance(uuid, _uuid.UUID):
        return uuid.bytes
    if isinstance(uuid, str):
        return _uuid.UUID(uuid).bytes
    uuid = bytes(uuid)
    if len(uuid) != 16:
        raise SeiError(None, f"an SEI UUID has 16 bytes, not {len(uuid)}")
    return uuid


# --------------------------------------------------------------------------- packet framing


@dataclass(frozen=True)
class NalFormat:
    """How NAL units are framed in a stream's packets: Annex B start codes, or
    big-endian length prefixes of ``length_size`` bytes (MP4/MOV/MKV)."""

    annexb: bool
    length_size: int = 4

    def __str__(self) -> str:
        return "annexb" if self.annexb else f"length-prefixed({self.length_size})"


ANNEXB = NalFormat(annexb=True, length_size=0)


def _starts_with_start_code(data: bytes) -> bool:
    return data[:3] == b"\x00\x00\x01" or data[:4] == START_CODE


def nal_format_from_extradata(extradata: bytes | None, codec: str) -> NalFormat | None:
    """The framing that ``extradata`` declares: ``avcC``/``hvcC`` (length-prefixed, with
    its ``lengthSizeMinusOne``), Annex B parameter sets, or ``None`` when empty."""
    data = bytes(extradata or b"")
    if not data:
        return None
    if _starts_with_start_code(data):
        return ANNEXB
    if _check_codec(codec) == H264:
        if data[0] == 1 and len(data) >= 7:
            return NalFormat(False, (data[4] & 0x03) + 1)
    elif data[0] in (0, 1) and len(data) >= 23:  # some early muxers wrote version 0
        return NalFormat(False, (data[21] & 0x03) + 1)
    raise SeiError(None, f"unrecognised {codec} extradata (starts {data[:8].hex()})",
                   "expected avcC/hvcC or Annex B parameter sets")


def _length_prefixed_ok(data: bytes, size: int) -> bool:
    pos = 0
    while pos < len(data):
        if pos + size > len(data):
            return False
        n = int.from_bytes(data[pos:pos + size], "big")
        if n == 0:
            return False
        pos += size + n
    return pos == len(data)


def detect_nal_format(extradata: bytes | None, codec: str, packet: bytes | None = None) -> NalFormat:
    """The framing of a stream's packets: from its extradata if that says, else from a
    packet's bytes (start code, unless the bytes parse exactly as 4-byte lengths)."""
    fmt = nal_format_from_extradata(extradata, codec)
    if fmt is not None:
        return fmt
    if packet is not None:
        data = bytes(packet)
        if data[:4] == START_CODE:
            return ANNEXB
        if data[:3] == b"\x00\x00\x01" and not _length_prefixed_ok(data, 4):
            return ANNEXB
        if _length_prefixed_ok(data, 4):
            return NalFormat(False, 4)
    return ANNEXB


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes and trailing zero bytes removed)."""
    data = bytes(data)
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    if start < 0:
        return [data.rstrip(b"\x00")] if data.strip(b"\x00") else []
    pos = start + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        nal = data[pos:] if nxt < 0 else data[pos:nxt]
        nal = nal.rstrip(b"\x00")  # zero_byte of a 4-byte start code / trailing_zero_8bits
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        pos = nxt + 3


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of a length-prefixed (MP4/MOV/MKV) sample."""
    if length_size not in (1, 2, 3, 4):
        raise SeiError(None, f"NAL length size {length_size} is not 1..4")
    data = bytes(data)
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise SeiError(None, "truncated NAL length prefix")
        n = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if pos + n > len(data):
            raise SeiError(None, f"NAL unit of {n} bytes runs past the end of the packet",
                           "the packet is not length-prefixed with this size, or is truncated")
        nals.append(data[pos:pos + n])
        pos += n
    return nals


def split_nal_units(data: bytes, fmt: NalFormat) -> list[bytes]:
    """NAL units of a packet in format ``fmt``."""
    return split_annexb(data) if fmt.annexb else split_length_prefixed(data, fmt.length_size)


def join_nal_units(nals: Sequence[bytes], fmt: NalFormat) -> bytes:
    """A packet from NAL units: each after a 4-byte start code (Annex B) or its length."""
    if fmt.annexb:
        return b"".join(START_CODE + n for n in nals)
    limit = 1 << (8 * fmt.length_size)
    out = bytearray()
    for n in nals:
        if len(n) >= limit:
            raise SeiError(None, f"NAL unit of {len(n)} bytes does not fit a {fmt.length_size}-byte length")
        out += len(n).to_bytes(fmt.length_size, "big") + n
    return bytes(out)


def framed_size(nal: bytes, fmt: NalFormat) -> int:
    """Bytes a NAL unit takes in a packet, its start code or length prefix included."""
    return len(nal) + (len(START_CODE) if fmt.annexb else fmt.length_size)


# --------------------------------------------------------------------------- HDR10 static metadata

MASTERING_DISPLAY_COLOUR_VOLUME = 137
"""``payloadType`` of ``mastering_display_colour_volume`` (H.265 D.2.28; H.264 D.1.29)."""

CONTENT_LIGHT_LEVEL_INFO = 144
"""``payloadType`` of ``content_light_level_info`` (H.265 D.2.35; H.264 D.1.31)."""

_HEVC_IRAP = range(16, 24)  # BLA, IDR, CRA and the reserved IRAP types (H.265 table 7-1)


def hdr10_sei_messages(metadata: HDR10Metadata) -> list[tuple[int, bytes]]:
    """``(payloadType, payload)`` of the mastering display (24 bytes) and content light
    level (4 bytes) messages for ``metadata`` (cd/m2 and CIE xy, converted here to the
    ST 2086 units; MaxCLL/MaxFALL rounded, 0 = unknown)."""
    (rx, ry), (gx, gy), (bx, by) = metadata.primaries
    wx, wy = metadata.white_point
    xy = [int(round(v / ST2086_CHROMATICITY_UNIT)) for v in (gx, gy, bx, by, rx, ry, wx, wy)]
    lum = [int(round(v / ST2086_LUMINANCE_UNIT)) for v in (metadata.max_luminance, metadata.min_luminance)]
    mdcv = b"".join(v.to_bytes(2, "big") for v in xy) + b"".join(v.to_bytes(4, "big") for v in lum)
    cll = b"".join(min(65535, int(round(v))).to_bytes(2, "big") for v in (metadata.max_cll, metadata.max_fall))
    return [(MASTERING_DISPLAY_COLOUR_VOLUME, mdcv), (CONTENT_LIGHT_LEVEL_INFO, cll)]


def hdr10_sei_nal(metadata: HDR10Metadata) -> bytes:
    """One HEVC prefix SEI NAL unit (TemporalId 0) holding :func:`hdr10_sei_messages`."""
    return build_sei_nal_from_messages(hdr10_sei_messages(metadata), HEVC)


def add_hdr10_sei(data: bytes, sei_nal: bytes, fmt: NalFormat) -> bytes:
    """An HEVC packet with ``sei_nal`` (:func:`hdr10_sei_nal`) before its first VCL NAL
    unit when it is an IRAP access unit that carries no mastering display message yet;
    other packets unchanged. As x265 does with ``repeat-headers``, every IRAP picture
    repeats it, so a stream cut at any keyframe keeps its metadata."""
    nals = split_nal_units(data, fmt)
    vcl = [nal_unit_type(n, HEVC) for n in nals if nal_unit_type(n, HEVC) < 32]
    if not vcl or vcl[0] not in _HEVC_IRAP:
        return data
    for nal in nals:
        if nal_unit_type(nal, HEVC) == HEVC_NAL_PREFIX_SEI and any(
                t == MASTERING_DISPLAY_COLOUR_VOLUME for t, _ in parse_sei_nal(nal, HEVC)):
            return data
    return join_nal_units(insert_sei(nals, sei_nal, HEVC), fmt)


def hdr10_sei_filter(metadata: HDR10Metadata) -> Callable[[av.Packet], av.Packet]:
    """A packet filter for an HEVC encoder's output (``Hdr10Writer(packet_filter=...)``):
    IRAP packets get :func:`hdr10_sei_nal` (:func:`add_hdr10_sei`), the rest pass as they
    are. The framing is read from each packet (encoders hand out Annex B; the muxer
    rewrites it for MP4/Matroska)."""
    sei_nal = hdr10_sei_nal(metadata)

    def apply(pkt: av.Packet) -> av.Packet:
        data = bytes(pkt)
        if not data:
            return pkt
        new_data = add_hdr10_sei(data, sei_nal, detect_nal_format(None, HEVC, data))
        if new_data == data:
            return pkt
        new = repacket(pkt, new_data)
        new.stream = pkt.stream  # the encoder's stream, which the muxer maps to its output stream
        return new

    return apply


def repacket(pkt: av.Packet, data: bytes) -> av.Packet:
    """A new packet holding ``data`` with ``pkt``'s timing, flags and side data."""
    new = av.Packet(data)
    new.pts, new.dts, new.duration = pkt.pts, pkt.dts, pkt.duration
    new.time_base = pkt.time_base
    new.is_keyframe = pkt.is_keyframe
    for flag in ("is_discard", "is_disposable", "is_corrupt"):
        try:
            setattr(new, flag, getattr(pkt, flag))
        except AttributeError:  # read-only in this PyAV
            pass
    for sd in pkt.iter_sidedata():
        new.set_sidedata(sd)
    return new


# --------------------------------------------------------------------------- access units


def insert_sei(nals: Sequence[bytes], sei_nal: bytes, codec: str) -> list[bytes]:
    """``nals`` with ``sei_nal`` placed immediately before the first VCL NAL unit (so
    after any AUD, parameter sets and the encoder's own prefix SEI); at the end if the
    access unit has no VCL NAL unit."""
    out = list(nals)
    for i, nal in enumerate(out):
        t = nal_unit_type(nal, codec)
        if (t in _H264_FIRST_OF_PICTURE) if codec == H264 else (t < 32):
            out.insert(i, sei_nal)
            return out
    out.append(sei_nal)
    return out


def strip_user_data(nals: Sequence[bytes], codec: str, uuid: bytes = ITMFILTER_SEI_UUID) -> list[bytes]:
    """``nals`` without our ``user_data_unregistered`` messages: an SEI NAL unit with only
    ours is dropped, one that also holds others is rewritten without ours."""
    uuid = _check_uuid(uuid)
    out: list[bytes] = []
    for nal in nals:
        if nal and _is_sei(nal, codec):
            try:
                msgs = parse_sei_nal(nal, codec)
            except SeiError:  # someone else's malformed SEI: leave it alone
                out.append(nal)
                continue
            keep = [m for m in msgs if not (m[0] == USER_DATA_UNREGISTERED and m[1][:16] == uuid)]
            if len(keep) != len(msgs):
                if keep:
                    tid = hevc_temporal_id(nal) if codec == HEVC else 0
                    rebuilt = build_sei_nal_from_messages(keep, codec, tid)
                    out.append(bytes([nal[0]]) + rebuilt[1:] if codec == H264 else nal[:2] + rebuilt[2:])
                continue
        out.append(nal)
    return out


def add_sei_to_nals(nals: Sequence[bytes], payload: bytes | None, codec: str,
                    uuid: bytes = ITMFILTER_SEI_UUID, replace: bool = True) -> list[bytes]:
    """An access unit's NAL units with ``payload`` inserted as our SEI NAL unit
    (HEVC: with the TemporalId of the access unit's first VCL NAL unit).

    ``replace`` first removes any SEI of ours already there (remuxing twice does not
    stack them). ``payload`` ``None`` inserts nothing (but still removes, if ``replace``).
    """
    out = strip_user_data(nals, codec, uuid) if replace else list(nals)
    if payload is not None:
        tid = 0
        if codec == HEVC:
            vcl = next((n for n in out if n and is_vcl(n, codec)), None)
            tid = hevc_temporal_id(vcl) if vcl is not None else 0
        out = insert_sei(out, build_sei_nal(payload, uuid, codec, tid), codec)
    return out


def add_sei_to_packet(data: bytes, payload: bytes | None, fmt: NalFormat, codec: str,
                      uuid: bytes = ITMFILTER_SEI_UUID, replace: bool = True) -> bytes:
    """One access unit's packet (framed as ``fmt``) with ``payload`` inserted as our SEI
    NAL unit; see :func:`add_sei_to_nals`."""
    return join_nal_units(add_sei_to_nals(split_nal_units(data, fmt), payload, codec, uuid, replace), fmt)


def user_data_from_packet(data: bytes, fmt: NalFormat, codec: str,
                          uuid: bytes = ITMFILTER_SEI_UUID) -> list[bytes]:
    """Our payloads in one packet, in bitstream order (normally zero or one)."""
    found: list[bytes] = []
    for nal in split_nal_units(data, fmt):
        try:
            found.extend(user_data_from_nal(nal, codec, uuid))
        except SeiError:  # a malformed SEI NAL unit (ours or not) yields nothing
            continue
    return found


# --------------------------------------------------------------------------- files


def _codec_of(stream) -> str | None:
    name = stream.codec_context.name
    return {"h264": H264, "hevc": HEVC, "h265": HEVC}.get(name)


def _video_stream(container, path):
    for s in container.streams.video:
        if _codec_of(s) is not None:
            return s
    raise ItmError(path, "no H.264 or HEVC video stream",
                   "SEI carriage needs an H.264 or HEVC video stream")


def _presentation_index(pts_values: Iterable[int]) -> dict[int, int]:
    """Map pts -> 0-based presentation index (rank among the distinct pts)."""
    return {p: i for i, p in enumerate(sorted(set(pts_values)))}


_HEVC_BLA = frozenset({16, 17, 18})
_HEVC_IDR = frozenset({19, 20})
_HEVC_CRA = 21
_HEVC_RASL = frozenset({8, 9})


class _Presented:
    """Which packets a decoder shows, from packets alone (decode order).

    A packet is not shown when the demuxer flags it ``discard`` (MP4 edit lists after a
    cut), or when it is an HEVC RASL picture that belongs to a CRA starting the stream
    or to a BLA (H.265 8.1.3: ``NoRaslOutputFlag``; a cut at an open-GOP keyframe
    leaves such pictures, which the decoder drops).
    """

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.seen_irap = False
        self.skip_rasl = False

    def __call__(self, nals: Sequence[bytes], discard: bool) -> bool:
        if self.codec == HEVC:
            vcl = next((n for n in nals if n and is_vcl(n, HEVC)), None)
            if vcl is not None:
                t = nal_unit_type(vcl, HEVC)
                if t in _HEVC_BLA or (t == _HEVC_CRA and not self.seen_irap):
                    self.skip_rasl = True
                elif t in _HEVC_IDR or t == _HEVC_CRA:
                    self.skip_rasl = False
                if 16 <= t <= 23:
                    self.seen_irap = True
                if t in _HEVC_RASL and self.skip_rasl:
                    return False
        return not discard


@dataclass
class SeiSample:
    """One video packet of a file, with our payload(s) found in it."""

    pts: int
    time: float
    """pts in seconds."""
    is_keyframe: bool
    presented: bool
    """False for packets a decoder does not show (see :class:`_Presented`); they get no
    presentation index."""
    payloads: list[bytes]


def iter_sei_samples(path: str | os.PathLike, uuid: bytes = ITMFILTER_SEI_UUID) -> list[SeiSample]:
    """Every video packet of ``path`` (demux only, decode order) with our payloads in it
    (possibly none). Works for any container PyAV opens, ``.m3u8`` playlists included."""
    p = os.fspath(path)
    samples: list[SeiSample] = []
    with av.open(p) as c:
        stream = _video_stream(c, path)
        codec = _codec_of(stream)
        fmt = nal_format_from_extradata(bytes(stream.codec_context.extradata or b""), codec)
        presented = _Presented(codec)
        for pkt in c.demux(stream):
            if pkt.size == 0:
                continue
            data = bytes(pkt)
            if fmt is None:
                fmt = detect_nal_format(None, codec, data)
            pts = pkt.pts if pkt.pts is not None else pkt.dts
            if pts is None:
                raise ItmError(path, "a video packet has no timestamp", "remux it into MP4 or MKV first")
            nals = split_nal_units(data, fmt)
            found: list[bytes] = []
            for nal in nals:
                try:
                    found.extend(user_data_from_nal(nal, codec, uuid))
                except SeiError:  # a malformed SEI NAL unit yields nothing
                    continue
            samples.append(SeiSample(pts, float(pts * pkt.time_base), bool(pkt.is_keyframe),
                                     presented(nals, bool(pkt.is_discard)), found))
    return samples


def video_codec(path: str | os.PathLike) -> str | None:
    """``"h264"`` or ``"hevc"`` for the first such video stream of ``path``, else None."""
    with av.open(os.fspath(path)) as c:
        return next((_codec_of(s) for s in c.streams.video if _codec_of(s) is not None), None)


def carries_sei(path: str | os.PathLike, uuid: bytes = ITMFILTER_SEI_UUID, packets: int = 32) -> bool:
    """Whether any of the first ``packets`` video packets of ``path`` carries our SEI
    (demux only; a quick test before :func:`iter_sei_samples` reads the whole file).
    False for a file without an H.264 or HEVC video stream."""
    try:
        with av.open(os.fspath(path)) as c:
            stream = next((s for s in c.streams.video if _codec_of(s) is not None), None)
            if stream is None:
                return False
            codec = _codec_of(stream)
            fmt = nal_format_from_extradata(bytes(stream.codec_context.extradata or b""), codec)
            seen = 0
            for pkt in c.demux(stream):
                if not pkt.size:
                    continue
                data = bytes(pkt)
                if fmt is None:
                    fmt = detect_nal_format(None, codec, data)
                try:
                    if user_data_from_packet(data, fmt, codec, uuid):
                        return True
                except SeiError:
                    pass
                seen += 1
                if seen >= packets:
                    break
    except (av.error.FFmpegError, OSError, SeiError):
        return False
    return False


def presentation_indexes(samples: Sequence[SeiSample]) -> list[int | None]:
    """Each sample's 0-based presentation index (rank of its pts among the presented
    samples), ``None`` for samples not presented."""
    index_of = _presentation_index(s.pts for s in samples if s.presented)
    return [index_of[s.pts] if s.presented else None for s in samples]


@dataclass
class RemuxReport:
    """What :func:`remux_with_sei` did."""

    codec: str
    nal_format: NalFormat
    frames: int
    frames_with_payload: int
    payload_bytes: int
    """Sum of the payloads' lengths."""
    added_bytes: int
    """Growth of the video stream: SEI NAL units with their framing, less any SEI of ours removed."""

    @property
    def overhead_bytes(self) -> int:
        """Bytes added beyond the payloads themselves."""
        return self.added_bytes - self.payload_bytes


def remux_with_sei(src: str | os.PathLike, dst: str | os.PathLike,
                   payload_for_frame: Callable[[int], bytes | None],
                   uuid: bytes = ITMFILTER_SEI_UUID, *, replace: bool = True,
                   format: str | None = None) -> RemuxReport:
    """Copy ``src`` to ``dst`` (every stream, no re-encoding) with an SEI NAL unit of
    ``uuid`` + ``payload_for_frame(i)`` in the access unit of presentation frame ``i``.

    ``i`` is the 0-based rank of the packet's pts among the presented packets of the
    (first H.264 or HEVC) video stream, so it follows display order with B-frames and
    matches :func:`read_sei`. A ``None`` payload leaves that frame without one; packets
    a decoder would not show (see :class:`SeiSample`) get none either. ``replace``
    removes SEI of ours already in ``src``.
    Other streams (audio, subtitles, MP4 data tracks) are copied as they are; MKV
    attachments are carried over. The output is written to a temporary file and
    renamed onto ``dst`` only when complete; ``dst`` may not be ``src``.
    """
    src_s = os.fspath(src)
    with av.open(src_s) as probe:
        vstream = _video_stream(probe, src)
        vindex = vstream.index
        codec = _codec_of(vstream)
        extradata = bytes(vstream.codec_context.extradata or b"")
    samples = iter_sei_samples(src_s, uuid)
    index_of = _presentation_index(x.pts for x in samples if x.presented)
    presented = _Presented(codec)

    frames = with_payload = payload_bytes = added = 0
    fmt: NalFormat | None = nal_format_from_extradata(extradata, codec)
    with atomic_output(dst, inputs=[src]) as tmp:
        with av.open(src_s) as inp, av.open(os.fspath(tmp), "w", format=format) as out:
            out.metadata.update(inp.metadata)
            mapping = {}
            for s in inp.streams:
                if s.type == "attachment":
                    out.add_attachment(s.name, s.mimetype, bytes(s.data))
                    continue
                try:
                    o = out.add_stream_from_template(s)
                except (ValueError, av.FFmpegError) as exc:
                    raise ItmError(dst, f"cannot copy stream {s.index} ({s.type}) into this container: {exc}",
                                   "choose an output container that can hold it") from exc
                try:
                    o.metadata.update(s.metadata)
                except (AttributeError, TypeError):
                    pass
                mapping[s.index] = o
            for pkt in inp.demux():
                o = mapping.get(pkt.stream.index)
                if o is None or (pkt.size == 0 and pkt.dts is None):
                    continue
                if pkt.stream.index == vindex and pkt.size:
                    data = bytes(pkt)
                    if fmt is None:
                        fmt = detect_nal_format(None, codec, data)
                    nals = split_nal_units(data, fmt)
                    pts = pkt.pts if pkt.pts is not None else pkt.dts
                    payload = None
                    if presented(nals, bool(pkt.is_discard)):
                        payload = payload_for_frame(index_of[pts])
                    if payload is not None:
                        payload = bytes(payload)
                    new_data = join_nal_units(add_sei_to_nals(nals, payload, codec, uuid, replace), fmt)
                    frames += 1
                    if payload is not None:
                        with_payload += 1
                        payload_bytes += len(payload)
                    added += len(new_data) - len(data)
                    pkt = repacket(pkt, new_data)
                pkt.stream = o
                out.mux(pkt)
    return RemuxReport(codec, fmt or ANNEXB, frames, with_payload, payload_bytes, added)


def read_sei(path: str | os.PathLike, uuid: bytes = ITMFILTER_SEI_UUID) -> dict[int, bytes]:
    """``{presentation index: payload}`` for every shown frame of ``path`` that carries
    our SEI.

    Packets only: no decoding. The index is the 0-based rank of the frame's pts among
    the presented video packets of *this* file (after a cut, 0 is the cut's first
    frame; :func:`iter_sei_samples` gives pts and times for aligning with another
    timeline). If a frame carries several payloads of ours, the first in bitstream
    order is returned.
    """
    samples = iter_sei_samples(path, uuid)
    return {i: s.payloads[0] for s, i in zip(samples, presentation_indexes(samples))
            if i is not None and s.payloads}


def read_sei_decoded(path: str | os.PathLike, uuid: bytes = ITMFILTER_SEI_UUID) -> dict[int, bytes]:
    """Like :func:`read_sei`, but from PyAV's decoded-frame side data
    (``SEI_UNREGISTERED``: UUID + payload), keyed by the decoded frame's presentation
    rank. Slower (it decodes).

    When a frame has several entries with our UUID, the *last* is taken: FFmpeg 8.1's
    hevc decoder carries the SEI of pictures it skips (RASL pictures after a cut at an
    open-GOP CRA) over to the next frame it outputs, in front of that frame's own.
    """
    uuid = _check_uuid(uuid)
    found: dict[int, bytes] = {}
    pts_list: list[int] = []
    sei_type = av.sidedata.sidedata.Type.SEI_UNREGISTERED
    with av.open(os.fspath(path)) as c:
        stream = _video_stream(c, path)
        for i, frame in enumerate(c.decode(stream)):
            key = frame.pts if frame.pts is not None else i
            pts_list.append(key)
            for sd in frame.side_data:  # iterating yields every entry, repeats of a type too
                if sd.type == sei_type:
                    body = bytes(sd)
                    if body[:16] == uuid:
                        found[key] = body[16:]
    index_of = _presentation_index(pts_list)
    return {index_of[k]: v for k, v in found.items()}


def sei_overhead(payload: bytes, codec: str, fmt: NalFormat = NalFormat(False, 4)) -> int:
    """Bytes one frame's SEI adds to the stream beyond ``len(payload)`` (NAL header,
    type/size, UUID, emulation prevention, trailing bits, start code or length)."""
    return framed_size(build_sei_nal(payload, ITMFILTER_SEI_UUID, codec), fmt) - len(payload)


def fps_index(pts: int, first_pts: int, time_base: Fraction, fps: Fraction) -> int:
    """Presentation index from a timestamp for constant-rate video:
    ``round((pts - first_pts) * time_base * fps)``; an alternative to ranking pts when
    only some packets are at hand."""
    return round((pts - first_pts) * Fraction(time_base) * Fraction(fps))


__all__ = [
    "ANNEXB", "CODECS", "H264", "HEVC", "ITMFILTER_SEI_UUID", "USER_DATA_UNREGISTERED",
    "NalFormat", "RemuxReport", "SeiError", "SeiSample",
    "add_emulation_prevention", "remove_emulation_prevention",
    "sei_rbsp", "parse_sei_rbsp", "build_sei_nal", "build_sei_nal_from_messages",
    "parse_sei_nal", "user_data_from_nal", "nal_unit_type", "nal_header_size", "is_vcl",
    "hevc_temporal_id", "nal_format_from_extradata", "detect_nal_format", "split_annexb",
    "split_length_prefixed", "split_nal_units", "join_nal_units", "framed_size",
    "insert_sei", "strip_user_data", "add_sei_to_packet", "user_data_from_packet",
    "remux_with_sei", "iter_sei_samples", "carries_sei", "presentation_indexes", "add_sei_to_nals", "read_sei", "read_sei_decoded", "sei_overhead",
    "fps_index", "MASTERING_DISPLAY_COLOUR_VOLUME", "CONTENT_LIGHT_LEVEL_INFO", "hdr10_sei_messages",
    "hdr10_sei_nal", "add_hdr10_sei", "hdr10_sei_filter", "repacket",
]
