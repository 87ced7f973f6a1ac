"""The weight track: per-frame network weights carried beside an SDR video.

``format`` holds the bytes (header, packets, whole-track blob, JSON sidecar); ``codec``
turns per-frame parameter vectors into KEY / DELTA / REPEAT packets and back. The
normative description is ``sidecar/SPEC.md``.
"""

from .codec import STATUSES, TrackDecoder, TrackEncoder
from .format import (
    MKV_ATTACHMENT_MIMETYPE,
    MKV_ATTACHMENT_NAME,
    SIDECAR_SUFFIX,
    Packet,
    TrackFormatError,
    TrackHeader,
    decode_packet,
    encode_packet,
    flatten_state,
    pack_sample,
    param_count,
    read_track_blob,
    split_sample,
    track_from_json,
    track_to_json,
    unflatten,
    write_track_blob,
)

__all__ = [
    "MKV_ATTACHMENT_MIMETYPE",
    "MKV_ATTACHMENT_NAME",
    "SIDECAR_SUFFIX",
    "STATUSES",
    "Packet",
    "TrackDecoder",
    "TrackEncoder",
    "TrackFormatError",
    "TrackHeader",
    "decode_packet",
    "encode_packet",
    "flatten_state",
    "pack_sample",
    "param_count",
    "read_track_blob",
    "split_sample",
    "track_from_json",
    "track_to_json",
    "unflatten",
    "write_track_blob",
]
