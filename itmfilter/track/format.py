"""The weight track's bytes: header, packets, the whole-track blob and the JSON sidecar.

A video's weights travel as one *packet* per frame (KEY, DELTA or REPEAT; the payload
codings live in :mod:`itmfilter.track.codec`) plus one *header* describing the model, the
video and the quantiser. Since 1.3 packets have a compact form (:func:`encode_packet` with
``compact=True``: varint frame and shot, a 2-byte check on DELTA/REPEAT; 7 bytes of head
instead of 24) and the header a compressed form and an 8-byte reference
(:meth:`TrackHeader.to_compressed_bytes`, :class:`HeaderRef`) for the carriages that repeat it. The normative description, with byte tables, is
``sidecar/SPEC.md``; this module is its reference implementation. All integers are
little-endian; every checksum is CRC-32 (zlib / ISO-HDLC, the one in PNG and zip).

Parameters travel as one flat float32 vector in ``ITMNet(config).state_dict()`` order,
each tensor flattened row-major (:func:`flatten_state`, :func:`unflatten`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.errors import ItmError
from itmfilter.limits import (
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_PACKET_BYTES,
    MAX_PICTURE_SIDE,
    MAX_TRACK_BYTES,
)
from itmfilter.model.net import ITMNet, ModelConfig

FORMAT_NAME = "itmfilter-track"
VERSION_MAJOR = 1
"""Readers refuse any other major version: a major bump means old readers would misread."""
VERSION_MINOR = 3
"""Minor bumps only add optional header fields or new codings behind their own code. A track
writes the minor of its header (:attr:`TrackHeader.version`): 3 by default, 4 for a track
holding grid keys (KEY coding 4), 5 for one whose grid shots may be progressive (KEY coding 5,
DELTA coding 4), 6 for one whose grid shots carry their shifts in runs (DELTA coding 5), so
tracks without them stay byte-identical to 1.3."""

HEADER_MAGIC = b"ITMT"
COMPRESSED_HEADER_MAGIC = b"ITMZ"
"""The header with its JSON as one zstd frame (1.3): the form SEI and data-track samples carry."""
HEADER_REF_MAGIC = b"ITMR"
"""A header reference (1.3): the magic and the :attr:`TrackHeader.header_id` of the header in force."""
HEADER_REF_BYTES = 8
PACKET_MAGIC = b"ITMP"
COMPACT_PACKET_TAG = 0xC0 | VERSION_MAJOR
"""First byte of a compact packet (1.3): ``0xC0 | major``. Never ``I`` (0x49), which opens the
long packet and every header form, so a sample's first byte says what it holds."""
BLOB_MAGIC = b"ITMB"

KINDS = {"key": 1, "delta": 2, "repeat": 3}
_CODE_TO_KIND = {v: k for k, v in KINDS.items()}

PACKET_HEADER = struct.Struct("<4sBBBBIII")  # magic, version, kind, coding, flags, frame, shot, length
PACKET_OVERHEAD = PACKET_HEADER.size + 4  # 20-byte head + CRC-32
_BLOB_HEAD = struct.Struct("<4sBBHI")  # magic, major, minor, reserved, header length
_INDEX_ENTRY = struct.Struct("<IIIBxxx")  # frame, offset, length, kind, 3 reserved

MKV_ATTACHMENT_NAME = "itmfilter-track.bin"
MKV_ATTACHMENT_MIMETYPE = "application/x-itmfilter-track"
SIDECAR_SUFFIX = ".itm.json"

SDR_ASSUMPTIONS: dict[str, Any] = {
    "primaries": "bt709",
    "transfer": "bt1886",
    "matrix": "bt709",
    "range": "limited",
    "white_nits": 100.0,
    "black_nits": 0.0,
}
"""What the network's SDR input means: BT.709 primaries and Y'CbCr matrix, BT.1886 EOTF
(L_b = 0, a pure 2.4 power), 100 cd/m2 reference white, limited ("TV") range code values."""

_U32_MAX = 2**32 - 1


class TrackFormatError(ItmError, ValueError):
    """Bytes or JSON that are not a valid weight track; the message says what is wrong.

    Raised by the parsers here; :class:`itmfilter.track.codec.TrackDecoder` catches it
    for damaged packets during playback and conceals instead.
    """

    def __init__(self, problem: str, hint: str = "", path=None) -> None:
        super().__init__(path, problem, hint)


def _version_error(what: str, major: int) -> TrackFormatError:
    return TrackFormatError(
        f"{what} has format version {major}, this itmfilter reads version {VERSION_MAJOR}",
        "upgrade itmfilter to read it",
    )


# --------------------------------------------------------------------------- parameters


@functools.lru_cache(maxsize=16)
def param_layout(config: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(name, shape)`` of every tensor, in ``ITMNet(config).state_dict()`` order."""
    return tuple((name, tuple(t.shape)) for name, t in ITMNet(config).state_dict().items())


def tensor_sizes(config: ModelConfig) -> list[int]:
    """Element count of each tensor in :func:`param_layout` order."""
    return [int(np.prod(shape)) for _, shape in param_layout(config)]


def param_count(config: ModelConfig) -> int:
    """Length of the flat parameter vector (8771 for the "paper" configuration)."""
    return sum(tensor_sizes(config))


def flatten_state(state: dict[str, torch.Tensor]) -> np.ndarray:
    """A state dict (in its own order, which must be ``state_dict()`` order) as a flat
    float32 vector, each tensor flattened row-major."""
    return np.concatenate(
        [np.asarray(v.detach().cpu().float().numpy(), dtype=np.float32).ravel() for v in state.values()]
    )


def unflatten(config: ModelConfig, vec: np.ndarray) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_state`: a state dict ``ITMNet(config).load_state_dict`` takes."""
    vec = np.asarray(vec, dtype=np.float32)
    if vec.shape != (param_count(config),):
        raise ValueError(f"parameter vector has shape {vec.shape}, the config needs ({param_count(config)},)")
    state, pos = {}, 0
    for name, shape in param_layout(config):
        n = int(np.prod(shape))
        state[name] = torch.from_numpy(vec[pos : pos + n].copy()).reshape(shape)
        pos += n
    return state


# --------------------------------------------------------------------------- header


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass
class TrackHeader:
    """Everything a player needs before the first packet; units on every field.

    ``config``: the network's :class:`ModelConfig`. ``fps``: frame rate as a rational
    ``(num, den)``, e.g. ``(24000, 1001)``. ``frame_count``: frames in the video (0 =
    unknown). ``width``/``height``: the SDR video's size in pixels (the network's xy input
    spans it). ``hdr10``: the master's HDR10 static metadata (``HDR10Metadata.to_dict()``
    form, cd/m2 and CIE xy) or ``None``. ``sdr``: what the SDR input means
    (:data:`SDR_ASSUMPTIONS`). ``quantiser``: the encoder's settings (informative; the
    packets carry whatever a decoder needs). ``binding``: identifies the SDR video this
    track belongs to (see :meth:`binding_matches`). ``encoder``: free-form provenance.
    ``init`` (since 1.2; empty when unused): the initialisation KEY coding 3 is predicted
    from, ``{"name": ..., "sha256": <SHA-256 of its flat little-endian float32 parameters>}``.
    """

    config: ModelConfig
    fps: tuple[int, int]
    frame_count: int
    width: int
    height: int
    hdr10: dict | None = None
    sdr: dict = field(default_factory=lambda: dict(SDR_ASSUMPTIONS))
    quantiser: dict = field(default_factory=dict)
    binding: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)
    init: dict = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: tuple[int, int] = (VERSION_MAJOR, VERSION_MINOR)

    def __post_init__(self) -> None:
        if isinstance(self.hdr10, HDR10Metadata):
            self.hdr10 = self.hdr10.to_dict()
        elif self.hdr10 is not None:
            HDR10Metadata.from_dict(self.hdr10)  # validates; raises ValueError naming the field
            self.hdr10 = dict(self.hdr10)
        num, den = (int(v) for v in self.fps)
        if num <= 0 or den <= 0:
            raise ValueError(f"fps must be a positive rational (num, den), got {self.fps!r}")
        self.fps = (num, den)
        self.version = tuple(int(v) for v in self.version)
        for name, top in (("frame_count", MAX_FRAMES), ("width", MAX_PICTURE_SIDE), ("height", MAX_PICTURE_SIDE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= top:
                raise ValueError(f"{name} must be a whole number in [0, {top}], got {value!r}")
            setattr(self, name, int(value))

    def hdr10_metadata(self) -> HDR10Metadata | None:
        return None if self.hdr10 is None else HDR10Metadata.from_dict(self.hdr10)

    def binding_matches(self, other: "TrackHeader | dict") -> bool:
        """Whether this track belongs to the video described by ``other`` (a header or a
        binding dict, as the carriage layer computes it for the video it opened).

        True when the two bindings share at least one key and agree on every shared key.
        An empty binding matches nothing: a player decides itself whether to trust an
        unbound track.
        """
        theirs = other.binding if isinstance(other, TrackHeader) else dict(other)
        shared = self.binding.keys() & theirs.keys()
        return bool(shared) and all(self.binding[k] == theirs[k] for k in shared)

    def to_json_dict(self) -> dict[str, Any]:
        out = {
            "format": self.format,
            "version": list(self.version),
            "model_config": json.loads(self.config.to_json()),
            "fps": list(self.fps),
            "frame_count": self.frame_count,
            "width": self.width,
            "height": self.height,
            "hdr10": self.hdr10,
            "sdr": dict(self.sdr),
            "quantiser": dict(self.quantiser),
            "binding": dict(self.binding),
            "encoder": dict(self.encoder),
        }
        if self.init:  # optional (1.2): only tracks with init-predicted keys carry it
            out["init"] = dict(self.init)
        return out

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "TrackHeader":
        """Inverse of :meth:`to_json_dict`. Unknown keys are ignored (a later minor
        version may add some); an unknown major version is refused."""
        if not isinstance(data, dict):
            raise TrackFormatError(f"track header must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_NAME:
            raise TrackFormatError(
                f"not an itmfilter track header (format {data.get('format')!r}, expected {FORMAT_NAME!r})"
            )
        try:
            major, minor = (int(v) for v in data["version"])
        except (KeyError, TypeError, ValueError):
            raise TrackFormatError("track header has no valid version [major, minor]") from None
        if major != VERSION_MAJOR:
            raise _version_error("track header", major)
        try:
            return cls(
                config=ModelConfig.from_dict(data["model_config"]),
                fps=tuple(data["fps"]),
                frame_count=data["frame_count"],
                width=data["width"],
                height=data["height"],
                hdr10=data.get("hdr10"),
                sdr=dict(data.get("sdr", SDR_ASSUMPTIONS)),
                quantiser=dict(data.get("quantiser", {})),
                binding=dict(data.get("binding", {})),
                encoder=dict(data.get("encoder", {})),
                init=dict(data.get("init") or {}),
                version=(major, minor),
            )
        except KeyError as exc:
            raise TrackFormatError(f"track header is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise TrackFormatError(f"track header has a bad field: {exc}") from None

    def to_bytes(self) -> bytes:
        """``"ITMT"``, major, minor, 2 reserved, u32 JSON length, canonical UTF-8 JSON, CRC-32."""
        body = _canonical_json(self.to_json_dict())
        head = HEADER_MAGIC + struct.pack("<BBHI", VERSION_MAJOR, self.version[1], 0, len(body)) + body
        return head + struct.pack("<I", zlib.crc32(head))

    @property
    def header_id(self) -> int:
        """CRC-32 of the canonical header JSON (the bytes :meth:`to_bytes` carries): what a
        :class:`HeaderRef` names. Two headers with the same JSON have the same id."""
        return zlib.crc32(_canonical_json(self.to_json_dict()))

    def to_compressed_bytes(self) -> bytes:
        """The compressed form (1.3): ``"ITMZ"``, major, minor, u16 flags, u32 length ``L``,
        the canonical JSON as one zstd frame (level 19, content size declared, no checksum) of
        ``L`` bytes, CRC-32 of all before it. About 0.55x of :meth:`to_bytes` (507 of 898 bytes
        for a 640x360 track's header). A header of minor :data:`HEADER_DICTIONARY_MINOR` or
        later is compressed against :func:`header_dictionary` (flag bit 0): ~20-60 bytes of
        zstd frame instead of ~540, which a carriage that repeats the header (SEI) pays on
        every KEY that carries it."""
        dictionary = self.version[1] >= HEADER_DICTIONARY_MINOR
        body = _header_compressor(dictionary).compress(_canonical_json(self.to_json_dict()))
        flags = HEADER_FLAG_DICTIONARY if dictionary else 0
        head = COMPRESSED_HEADER_MAGIC + struct.pack("<BBHI", VERSION_MAJOR, self.version[1], flags, len(body)) + body
        return head + struct.pack("<I", zlib.crc32(head))

    def reference(self) -> "HeaderRef":
        """The 8-byte reference to this header (:class:`HeaderRef`)."""
        return HeaderRef(self.header_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrackHeader":
        """Parse the binary header (``"ITMT"``) or its compressed form (``"ITMZ"``, 1.3)."""
        data = bytes(data)
        if len(data) < 16 or data[:4] not in (HEADER_MAGIC, COMPRESSED_HEADER_MAGIC):
            raise TrackFormatError("not an itmfilter track header (bad magic; expected b'ITMT' or b'ITMZ')")
        major, _minor, flags, length = struct.unpack("<BBHI", data[4:12])
        if length > MAX_HEADER_BYTES:
            raise TrackFormatError(f"track header claims {length} bytes of JSON, at most {MAX_HEADER_BYTES} are accepted")
        if len(data) != 16 + length:
            raise TrackFormatError(
                f"track header is truncated or has trailing bytes ({len(data)} bytes, expected {16 + length})"
            )
        (crc,) = struct.unpack("<I", data[-4:])
        if zlib.crc32(data[:-4]) != crc:
            raise TrackFormatError("track header is damaged (CRC-32 mismatch)")
        if major != VERSION_MAJOR:
            raise _version_error("track header", major)
        body = data[12:-4]
        if data[:4] == COMPRESSED_HEADER_MAGIC:
            if flags & ~HEADER_FLAG_DICTIONARY:
                raise TrackFormatError(f"compressed track header has unknown flags {flags:#06x} "
                                       f"(this reader knows bit 0, the header dictionary of 1.{HEADER_DICTIONARY_MINOR})")
            body = decompress_bounded(body, MAX_HEADER_BYTES, "compressed track header",
                                      dictionary=header_dictionary() if flags & HEADER_FLAG_DICTIONARY else None)
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise TrackFormatError(f"track header JSON is invalid: {exc}") from None
        return cls.from_json_dict(obj)


HEADER_DICTIONARY_MINOR = 10
"""From this minor on the compressed header (``"ITMZ"``) is compressed against
:func:`header_dictionary` and says so with flag bit 0 (sidecar/SPEC.md section 2)."""
HEADER_FLAG_DICTIONARY = 0x0001
HEADER_DICTIONARY_SHA256 = "add342d3132afd9f845d31ce0806f0e74c9da2b7c6d526decdbcbaab0b8e497e"
"""SHA-256 of the 905 bytes of header dictionary 1 (``itmfilter/assets/header-dictionary-1.json``,
printed in full in sidecar/SPEC.md section 2): checked when it is loaded."""


@functools.lru_cache(maxsize=1)
def header_dictionary() -> bytes:
    """Header dictionary 1: the canonical JSON of a 1080p24 grid track's header (UTF-8, no
    newline), the raw content that a 1.10 compressed header's zstd frame refers to. A typical
    header then costs ~20-60 bytes of frame: its fields' names and most values are there."""
    data = (Path(__file__).resolve().parent.parent / "assets" / "header-dictionary-1.json").read_bytes()
    if hashlib.sha256(data).hexdigest() != HEADER_DICTIONARY_SHA256:
        raise TrackFormatError("the installed header dictionary is damaged (SHA-256 mismatch); reinstall itmfilter")
    return data


@functools.lru_cache(maxsize=2)
def _raw_dictionary(data: bytes):
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def _header_compressor(dictionary: bool):
    """A new compressor each time (one is not safe to share between threads)."""
    return zstandard.ZstdCompressor(level=19, write_checksum=False, write_content_size=True, write_dict_id=False,
                                    dict_data=_raw_dictionary(header_dictionary()) if dictionary else None)


@dataclass(frozen=True)
class HeaderRef:
    """A header reference (1.3; 8 bytes: ``"ITMR"``, u32 :attr:`TrackHeader.header_id`): a
    sample that repeats the header in force names it instead of carrying it again."""

    header_id: int

    def to_bytes(self) -> bytes:
        return HEADER_REF_MAGIC + struct.pack("<I", self.header_id & 0xFFFFFFFF)

    def matches(self, header: "TrackHeader") -> bool:
        return header.header_id == self.header_id


def decompress_bounded(payload: bytes, limit: int, what: str = "payload", dictionary: bytes | None = None) -> bytes:
    """The zstd frame ``payload`` decompressed, never more than ``limit`` bytes: a frame
    declaring more is refused before anything is allocated, and the bytes are streamed with
    a hard cap (:class:`TrackFormatError` naming ``what``). ``dictionary``: raw content the
    frame was compressed against (zstd's raw-content dictionary, no dictionary id)."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError:
        raise TrackFormatError(f"{what} is not a zstd frame") from None
    if declared > limit:
        raise TrackFormatError(f"{what} declares {declared} decompressed bytes, at most {limit} allowed")
    try:
        dctx = zstandard.ZstdDecompressor(dict_data=None if dictionary is None else _raw_dictionary(dictionary))
        with dctx.stream_reader(io.BytesIO(payload)) as reader:
            raw = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise TrackFormatError(f"{what} does not decompress: {exc}") from None
    if len(raw) > limit:
        raise TrackFormatError(f"{what} decompresses to more than the {limit} bytes allowed")
    return raw


# --------------------------------------------------------------------------- packets


@dataclass
class Packet:
    """One frame's weights: ``frame`` is the presentation index (pts in frame units, 0
    first), ``kind`` one of ``"key"``, ``"delta"``, ``"repeat"``, ``shot`` the shot id,
    ``payload`` the coded weights (empty for repeat), ``coding`` how the payload is coded
    (see :mod:`itmfilter.track.codec`; 0 for repeat)."""

    frame: int
    kind: str
    shot: int
    payload: bytes
    coding: int = 0


def encode_packet(p: Packet, compact: bool = False) -> bytes:
    """The long form (1.0): 20-byte head (magic ``"ITMP"``, version, kind, coding, flags,
    frame, shot, payload length), payload, CRC-32 of everything before it.

    ``compact`` (1.3): tag ``0xC0 | major``, ``kind << 6 | coding``, the frame and the shot as
    unsigned LEB128 varints, the payload, then a check over everything before it: CRC-32 for
    a KEY, CRC-16/XMODEM (``binascii.crc_hqx(data, 0)``, u16) for a DELTA or REPEAT. The
    payload length is implied by the packet's own length, which every carriage knows. A
    REPEAT of frame 200 of shot 3 is 7 bytes instead of 24 (:func:`compact_head_bytes`)."""
    if p.kind not in KINDS:
        raise ValueError(f"unknown packet kind {p.kind!r}; expected one of {sorted(KINDS)}")
    if not (0 <= p.frame <= _U32_MAX and 0 <= p.shot <= _U32_MAX and 0 <= p.coding <= 255):
        raise ValueError(f"packet fields out of range: frame={p.frame}, shot={p.shot}, coding={p.coding}")
    if compact:
        if p.coding > _COMPACT_CODING_MAX or p.frame >= _VARINT_LIMIT or p.shot >= _VARINT_LIMIT:
            raise ValueError(f"packet fields out of the compact form's range: frame={p.frame}, shot={p.shot}, "
                             f"coding={p.coding}")
        body = (bytes([COMPACT_PACKET_TAG, KINDS[p.kind] << 6 | p.coding]) + _varint(p.frame) + _varint(p.shot)
                + bytes(p.payload))
        return body + _compact_check(KINDS[p.kind], body)
    head = PACKET_HEADER.pack(
        PACKET_MAGIC, VERSION_MAJOR, KINDS[p.kind], p.coding, 0, p.frame, p.shot, len(p.payload)
    )
    body = head + bytes(p.payload)
    return body + struct.pack("<I", zlib.crc32(body))


_COMPACT_CODING_MAX = 63
_VARINT_MAX_BYTES = 4
_VARINT_LIMIT = 1 << (7 * _VARINT_MAX_BYTES)  # 2^28: frame numbers stop at MAX_FRAMES = 2^24 anyway
_COMPACT_MIN = 6  # tag, kind/coding, two 1-byte varints, a 2-byte check


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, the top bit set on all but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def varint_bytes(value: int) -> int:
    """Length of ``value`` as an unsigned LEB128 varint (1 byte below 128, 2 below 16384...)."""
    return len(_varint(int(value)))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(_VARINT_MAX_BYTES):
        if pos + i >= len(data):
            raise TrackFormatError("compact packet is truncated inside a varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise TrackFormatError(f"compact packet has a varint longer than {_VARINT_MAX_BYTES} bytes")


def _check_bytes(kind_code: int) -> int:
    return 4 if kind_code == KINDS["key"] else 2


def _compact_check(kind_code: int, body: bytes) -> bytes:
    if kind_code == KINDS["key"]:
        return struct.pack("<I", zlib.crc32(body))
    return struct.pack("<H", binascii.crc_hqx(body, 0))


def compact_head_bytes(frame: int, shot: int, kind: str = "delta") -> int:
    """Bytes a compact packet of ``frame`` and ``shot`` costs beyond its payload: 2, the two
    varints, and the check (4 for a KEY, else 2)."""
    return 2 + varint_bytes(frame) + varint_bytes(shot) + _check_bytes(KINDS[kind])


def decode_packet(data: bytes) -> Packet:
    """Parse one packet, long or compact (by its first byte); raises :class:`TrackFormatError`
    saying which check failed (magic, truncation, CRC, version, kind)."""
    data = bytes(data)
    if len(data) > MAX_PACKET_BYTES:
        raise TrackFormatError(f"packet holds {len(data)} bytes, at most {MAX_PACKET_BYTES} are accepted")
    if data[:1] and data[0] & 0xF0 == 0xC0:
        return _decode_compact(data)
    if len(data) < PACKET_OVERHEAD:
        raise TrackFormatError(f"packet is truncated ({len(data)} bytes, at least {PACKET_OVERHEAD} needed)")
    magic, version, kind, coding, _flags, frame, shot, length = PACKET_HEADER.unpack_from(data)
    if magic != PACKET_MAGIC:
        raise TrackFormatError(f"not an itmfilter track packet (bad magic {magic!r}; expected b'ITMP')")
    if len(data) != PACKET_OVERHEAD + length:
        raise TrackFormatError(
            f"packet is truncated or has trailing bytes ({len(data)} bytes, "
            f"its header says {PACKET_OVERHEAD + length})"
        )
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise TrackFormatError(f"packet for frame {frame} is damaged (CRC-32 mismatch)")
    if version != VERSION_MAJOR:
        raise _version_error("packet", version)
    if kind not in _CODE_TO_KIND:
        raise TrackFormatError(f"packet for frame {frame} has unknown kind code {kind}")
    return Packet(frame, _CODE_TO_KIND[kind], shot, data[PACKET_HEADER.size : -4], coding)


def _decode_compact(data: bytes) -> Packet:
    if len(data) < _COMPACT_MIN:
        raise TrackFormatError(f"compact packet is truncated ({len(data)} bytes, at least {_COMPACT_MIN} needed)")
    kind = data[1] >> 6
    check = _check_bytes(kind)
    body, stored = data[:-check], data[-check:]
    if _compact_check(kind, body) != stored:
        raise TrackFormatError(f"compact packet is damaged ({'CRC-32' if check == 4 else 'CRC-16'} mismatch)")
    if data[0] != COMPACT_PACKET_TAG:
        raise _version_error("packet", data[0] & 0x0F)
    if kind not in _CODE_TO_KIND:
        raise TrackFormatError(f"compact packet has unknown kind code {kind}")
    frame, pos = _read_varint(body, 2)
    shot, pos = _read_varint(body, pos)
    return Packet(frame, _CODE_TO_KIND[kind], shot, body[pos:], data[1] & _COMPACT_CODING_MAX)


def peek_packet(raw: bytes | None) -> tuple[int, int] | None:
    """``(frame, kind code)`` read from the head of packet bytes (long or compact) without
    checking them, or None when they do not start like a packet."""
    if raw is None:
        return None
    raw = bytes(raw)
    if len(raw) >= PACKET_HEADER.size and raw[:4] == PACKET_MAGIC:
        fields = PACKET_HEADER.unpack_from(raw)
        return fields[5], fields[2]
    if len(raw) >= _COMPACT_MIN and raw[0] == COMPACT_PACKET_TAG:
        try:
            frame, _ = _read_varint(raw, 2)
        except TrackFormatError:
            return None
        return frame, raw[1] >> 6
    return None


# --------------------------------------------------------------------------- whole track


def _packet_bytes(packets) -> list[tuple[int, int, bytes]]:
    """(frame, kind code, bytes) for Packets or already-encoded packet bytes, frame-sorted."""
    out = []
    for p in packets:
        if isinstance(p, Packet):
            out.append((p.frame, KINDS[p.kind], encode_packet(p)))
        else:
            raw = bytes(p)
            peek = peek_packet(raw)
            if peek is None:
                raise ValueError("packet bytes start like neither a long (b'ITMP') nor a compact packet")
            frame, kind = peek
            out.append((frame, kind, raw))
    out.sort(key=lambda t: t[0])
    frames = [t[0] for t in out]
    if len(set(frames)) != len(frames):
        raise ValueError("two packets have the same frame index")
    return out


def write_track_blob(header: TrackHeader, packets) -> bytes:
    """The whole track as one file (the MKV attachment ``itmfilter-track.bin``).

    ``packets``: :class:`Packet` objects or encoded packet bytes. Layout: blob head
    (``"ITMB"``, major, minor, reserved, header length), header bytes, packet count, index
    of 16-byte entries (frame, offset from the blob start, length, kind), CRC-32 of all of
    that, then the packets back to back (each with its own CRC-32).
    """
    items = _packet_bytes(packets)
    hbytes = header.to_bytes()
    head = _BLOB_HEAD.pack(BLOB_MAGIC, VERSION_MAJOR, header.version[1], 0, len(hbytes)) + hbytes
    index_end = len(head) + 4 + _INDEX_ENTRY.size * len(items) + 4
    entries, offset = [], index_end
    for frame, kind, raw in items:
        entries.append(_INDEX_ENTRY.pack(frame, offset, len(raw), kind))
        offset += len(raw)
    front = head + struct.pack("<I", len(items)) + b"".join(entries)
    return front + struct.pack("<I", zlib.crc32(front)) + b"".join(raw for _, _, raw in items)


def read_track_blob(data: bytes) -> tuple[TrackHeader, dict[int, bytes]]:
    """Parse :func:`write_track_blob` output into the header and ``{frame: packet bytes}``.

    The header and index must be intact (else :class:`TrackFormatError`); packets are
    returned unchecked, so a damaged one is found, counted and concealed at playback.
    """
    data = bytes(data)
    if len(data) < _BLOB_HEAD.size or data[:4] != BLOB_MAGIC:
        raise TrackFormatError("not an itmfilter track file (bad magic; expected b'ITMB')")
    if len(data) > MAX_TRACK_BYTES:
        raise TrackFormatError(f"track file holds {len(data)} bytes, at most {MAX_TRACK_BYTES} are accepted")
    _, major, _minor, _, hlen = _BLOB_HEAD.unpack_from(data)
    if major != VERSION_MAJOR:
        raise _version_error("track file", major)
    pos = _BLOB_HEAD.size + hlen
    if len(data) < pos + 4:
        raise TrackFormatError("track file is truncated inside its header")
    (count,) = struct.unpack_from("<I", data, pos)
    if count > MAX_FRAMES:
        raise TrackFormatError(f"track file claims {count} packets, at most {MAX_FRAMES} are accepted")
    index_end = pos + 4 + count * _INDEX_ENTRY.size
    if len(data) < index_end + 4:
        raise TrackFormatError("track file is truncated inside its packet index")
    (crc,) = struct.unpack_from("<I", data, index_end)
    if zlib.crc32(data[:index_end]) != crc:
        raise TrackFormatError("track file header or index is damaged (CRC-32 mismatch)")
    header = TrackHeader.from_bytes(data[_BLOB_HEAD.size : pos])
    packets: dict[int, bytes] = {}
    for i in range(count):
        frame, offset, length, _kind = _INDEX_ENTRY.unpack_from(data, pos + 4 + i * _INDEX_ENTRY.size)
        if offset < index_end + 4 or offset + length > len(data):
            # A cut-off file: keep what is there; the missing packets are concealed.
            continue
        packets[frame] = data[offset : offset + length]
    check_frames(header, packets)
    return header, packets


def check_frames(header: TrackHeader, frames) -> None:
    """Refuse a track whose packets claim frames outside it: every frame number must lie in
    ``[0, header.frame_count)`` (``[0, MAX_FRAMES)`` when the count is unknown), and there
    are at most that many. Checked once when a track is loaded, so that no reader ever
    walks the frame numbers up to an absurd one (sidecar/SPEC.md section 13)."""
    top = header.frame_count or MAX_FRAMES
    for frame in frames:
        if not 0 <= frame < top:
            raise TrackFormatError(
                f"a packet claims frame {frame}, outside the track's {top} frames"
                + ("" if header.frame_count else " (the most accepted)")
            )


def pack_sample(packet: "Packet | bytes", header: "TrackHeader | HeaderRef | None" = None,
                compressed: bool = False) -> bytes:
    """One MP4/MOV data-track sample or SEI payload: the packet, preceded by the header when
    given (the sample at pts 0 must carry it; KEY samples may repeat it): its binary form,
    or with ``compressed`` its compressed form (1.3), or an 8-byte :class:`HeaderRef`."""
    raw = encode_packet(packet) if isinstance(packet, Packet) else bytes(packet)
    if header is None:
        return raw
    if isinstance(header, HeaderRef):
        return header.to_bytes() + raw
    return (header.to_compressed_bytes() if compressed else header.to_bytes()) + raw


def split_sample(sample: bytes) -> tuple["TrackHeader | HeaderRef | None", bytes]:
    """Inverse of :func:`pack_sample`: ``(leading header, packet bytes)``, the header being a
    :class:`TrackHeader` (binary or compressed form), a :class:`HeaderRef`, or None. A damaged
    leading header raises :class:`TrackFormatError`; the packet is returned unchecked."""
    sample = bytes(sample)
    if sample[:4] == HEADER_REF_MAGIC:
        if len(sample) < HEADER_REF_BYTES:
            raise TrackFormatError("sample is truncated inside its header reference")
        (header_id,) = struct.unpack_from("<I", sample, 4)
        return HeaderRef(header_id), sample[HEADER_REF_BYTES:]
    if sample[:4] not in (HEADER_MAGIC, COMPRESSED_HEADER_MAGIC):
        return None, sample
    if len(sample) < 16:
        raise TrackFormatError("data-track sample is truncated inside its header")
    (length,) = struct.unpack_from("<I", sample, 8)
    if length > MAX_HEADER_BYTES:
        raise TrackFormatError(f"track header claims {length} bytes of JSON, at most {MAX_HEADER_BYTES} are accepted")
    return TrackHeader.from_bytes(sample[: 16 + length]), sample[16 + length :]


def track_to_json(header: TrackHeader, packets) -> dict[str, Any]:
    """The JSON sidecar (``<video>.itm.json``), validated by ``sidecar/schema.json``:
    the header object plus one entry per frame with the packet bytes in base64."""
    return {
        "format": FORMAT_NAME,
        "version": [VERSION_MAJOR, header.version[1]],
        "header": header.to_json_dict(),
        "packets": [
            {"frame": frame, "kind": _CODE_TO_KIND.get(kind, "unknown"), "data": base64.b64encode(raw).decode()}
            for frame, kind, raw in _packet_bytes(packets)
        ],
    }


def track_from_json(data: dict[str, Any]) -> tuple[TrackHeader, dict[int, bytes]]:
    """Inverse of :func:`track_to_json`; packets come back as bytes, unchecked (the
    decoder verifies them). Raises :class:`TrackFormatError` for a wrong structure."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise TrackFormatError(f"not an itmfilter track sidecar (expected \"format\": \"{FORMAT_NAME}\")")
    try:
        major = int(data["version"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise TrackFormatError("track sidecar has no valid version [major, minor]") from None
    if major != VERSION_MAJOR:
        raise _version_error("track sidecar", major)
    header = TrackHeader.from_json_dict(data.get("header"))
    packets: dict[int, bytes] = {}
    entries = data.get("packets", [])
    if not isinstance(entries, list):
        raise TrackFormatError("track sidecar's \"packets\" is not a list")
    for entry in entries:
        try:
            frame = entry["frame"]
            if isinstance(frame, bool) or not isinstance(frame, int):
                raise ValueError(f"frame {frame!r} is not a whole number")
            packets[frame] = base64.b64decode(entry["data"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackFormatError(f"track sidecar has a bad packet entry: {exc}") from None
    check_frames(header, packets)
    return header, packets


__all__ = [
    "COMPACT_PACKET_TAG",
    "COMPRESSED_HEADER_MAGIC",
    "HEADER_REF_BYTES",
    "HEADER_REF_MAGIC",
    "HeaderRef",
    "compact_head_bytes",
    "decompress_bounded",
    "peek_packet",
    "varint_bytes",
    "FORMAT_NAME",
    "KINDS",
    "MKV_ATTACHMENT_MIMETYPE",
    "MKV_ATTACHMENT_NAME",
    "PACKET_OVERHEAD",
    "SDR_ASSUMPTIONS",
    "SIDECAR_SUFFIX",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "Packet",
    "TrackFormatError",
    "TrackHeader",
    "check_frames",
    "decode_packet",
    "encode_packet",
    "flatten_state",
    "param_count",
    "pack_sample",
    "param_layout",
    "read_track_blob",
    "split_sample",
    "tensor_sizes",
    "track_from_json",
    "track_to_json",
    "unflatten",
    "write_track_blob",
]
