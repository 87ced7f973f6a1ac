"""The weight track's bytes: header, packets, the whole-track blob and the JSON sidecar.

A video's weights travel as one *packet* per frame (KEY, DELTA or REPEAT; the payload
codings live in :mod:`itmfilter.track.codec`) plus one *header* describing the model, the
video and the quantiser. The normative description, with byte tables, is
``sidecar/SPEC.md``; this module is its reference implementation. All integers are
little-endian; every checksum is CRC-32 (zlib / ISO-HDLC, the one in PNG and zip).

Parameters travel as one flat float32 vector in ``ITMNet(config).state_dict()`` order,
each tensor flattened row-major (:func:`flatten_state`, :func:`unflatten`).
"""

from __future__ import annotations

import base64
import functools
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

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
VERSION_MINOR = 2
"""Minor bumps only add optional header fields or new codings behind their own code."""

HEADER_MAGIC = b"ITMT"
PACKET_MAGIC = b"ITMP"
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
        head = HEADER_MAGIC + struct.pack("<BBHI", VERSION_MAJOR, VERSION_MINOR, 0, len(body)) + body
        return head + struct.pack("<I", zlib.crc32(head))

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrackHeader":
        data = bytes(data)
        if len(data) < 16 or data[:4] != HEADER_MAGIC:
            raise TrackFormatError("not an itmfilter track header (bad magic; expected b'ITMT')")
        major, _minor, _reserved, length = struct.unpack("<BBHI", data[4:12])
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
        try:
            obj = json.loads(data[12:-4].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise TrackFormatError(f"track header JSON is invalid: {exc}") from None
        return cls.from_json_dict(obj)


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


def encode_packet(p: Packet) -> bytes:
    """20-byte head (magic ``"ITMP"``, version, kind, coding, flags, frame, shot, payload
    length), payload, CRC-32 of everything before it."""
    if p.kind not in KINDS:
        raise ValueError(f"unknown packet kind {p.kind!r}; expected one of {sorted(KINDS)}")
    if not (0 <= p.frame <= _U32_MAX and 0 <= p.shot <= _U32_MAX and 0 <= p.coding <= 255):
        raise ValueError(f"packet fields out of range: frame={p.frame}, shot={p.shot}, coding={p.coding}")
    head = PACKET_HEADER.pack(
        PACKET_MAGIC, VERSION_MAJOR, KINDS[p.kind], p.coding, 0, p.frame, p.shot, len(p.payload)
    )
    body = head + bytes(p.payload)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_packet(data: bytes) -> Packet:
    """Parse one packet; raises :class:`TrackFormatError` saying which check failed
    (magic, truncation, CRC-32, version, kind)."""
    data = bytes(data)
    if len(data) > MAX_PACKET_BYTES:
        raise TrackFormatError(f"packet holds {len(data)} bytes, at most {MAX_PACKET_BYTES} are accepted")
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


# --------------------------------------------------------------------------- whole track


def _packet_bytes(packets) -> list[tuple[int, int, bytes]]:
    """(frame, kind code, bytes) for Packets or already-encoded packet bytes, frame-sorted."""
    out = []
    for p in packets:
        if isinstance(p, Packet):
            out.append((p.frame, KINDS[p.kind], encode_packet(p)))
        else:
            raw = bytes(p)
            if len(raw) < PACKET_HEADER.size or raw[:4] != PACKET_MAGIC:
                raise ValueError("packet bytes do not start with b'ITMP'")
            _, _, kind, _, _, frame, _, _ = PACKET_HEADER.unpack_from(raw)
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
    head = _BLOB_HEAD.pack(BLOB_MAGIC, VERSION_MAJOR, VERSION_MINOR, 0, len(hbytes)) + hbytes
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


def pack_sample(packet: "Packet | bytes", header: TrackHeader | None = None) -> bytes:
    """One MP4/MOV data-track sample: the packet, preceded by the header bytes when given
    (the sample at pts 0 must carry it; KEY samples may repeat it)."""
    raw = encode_packet(packet) if isinstance(packet, Packet) else bytes(packet)
    return (header.to_bytes() if header is not None else b"") + raw


def split_sample(sample: bytes) -> tuple[TrackHeader | None, bytes]:
    """Inverse of :func:`pack_sample`: ``(header or None, packet bytes)``. A damaged
    leading header raises :class:`TrackFormatError`; the packet is returned unchecked."""
    sample = bytes(sample)
    if sample[:4] != HEADER_MAGIC:
        return None, sample
    if len(sample) < 16:
        raise TrackFormatError("data-track sample is truncated inside its header")
    (length,) = struct.unpack_from("<I", sample, 8)
    return TrackHeader.from_bytes(sample[: 16 + length]), sample[16 + length :]


def track_to_json(header: TrackHeader, packets) -> dict[str, Any]:
    """The JSON sidecar (``<video>.itm.json``), validated by ``sidecar/schema.json``:
    the header object plus one entry per frame with the packet bytes in base64."""
    return {
        "format": FORMAT_NAME,
        "version": [VERSION_MAJOR, VERSION_MINOR],
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
