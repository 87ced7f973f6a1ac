"""Carriage of the weight track in and beside video files.

Three forms (``sidecar/SPEC.md``): an MP4/MOV timed data track (one sample per frame,
keyed by presentation time; the sample at frame 0 starts with the track header), a
Matroska attachment ``itmfilter-track.bin`` holding the whole track blob, and a JSON
sidecar ``<video>.itm.json``. :func:`load_track` finds whichever is present and checks the
binding, so that a sidecar made for another video is refused.

The binding: SHA-256 of the SDR video stream's first packet (in decode order) plus its
width, height and frame count. Packet bytes survive ``-c copy`` remuxes between MP4, MOV
and MKV; a re-encode changes them, as it should (the weights were fitted to the pixels).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import av

from itmfilter.errors import ItmError
from itmfilter.media.containers import (
    ATTACHMENT_SUFFIXES,
    DATA_TRACK_SUFFIXES,
    has_data_stream,
    read_attachments,
    read_data_track,
)
from itmfilter.track.format import MKV_ATTACHMENT_NAME as ATTACHMENT_NAME
from itmfilter.track.format import (
    SIDECAR_SUFFIX,
    TrackFormatError,
    TrackHeader,
    read_track_blob,
    split_sample,
    track_from_json,
)

CARRIAGE_MODES = ("auto", "track", "attachment", "json")


def sidecar_path(video: str | os.PathLike) -> Path:
    return Path(os.fspath(video) + SIDECAR_SUFFIX)


def stream_binding(video: str | os.PathLike) -> dict:
    """The binding of a video file's first video stream (see the module docstring)."""

    path = Path(video)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = b""
            for packet in container.demux(stream):
                if packet.size:
                    first = bytes(packet)
                    break
            frames = stream.frames
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise ItmError(path, f"cannot read the video stream ({exc})", "check the file") from None
    return {
        "first_packet_sha256": hashlib.sha256(first).hexdigest(),
        "width": stream.codec_context.width,
        "height": stream.codec_context.height,
    } | ({"frames": int(frames)} if frames else {})


def resolve_mode(mode: str, output: Path) -> str:
    """``auto``: a data track in MP4/MOV, an attachment in MKV, a JSON sidecar otherwise."""
    if mode not in CARRIAGE_MODES:
        raise ItmError(None, f"unknown --sidecar {mode!r}", f"use one of {', '.join(CARRIAGE_MODES)}")
    ext = output.suffix.lower()
    if mode == "auto":
        return {".mp4": "track", ".m4v": "track", ".mov": "track", ".mkv": "attachment"}.get(ext, "json")
    if mode == "track" and ext not in DATA_TRACK_SUFFIXES:
        raise ItmError(output, f"{ext} cannot hold a data track", "use .mp4/.mov, or --sidecar attachment (mkv) or json")
    if mode == "attachment" and ext not in ATTACHMENT_SUFFIXES:
        raise ItmError(output, f"{ext} cannot hold attachments", "use .mkv, or --sidecar track (mp4/mov) or json")
    return mode


@dataclass
class LoadedTrack:
    header: TrackHeader
    packets: dict[int, bytes]
    where: str


def load_track(video: str | os.PathLike, *, check_binding: bool = True) -> LoadedTrack | None:
    """The weight track carried in or beside ``video``, or None when there is none.

    A damaged header or a sidecar for another video raises :class:`ItmError`.
    """

    path = Path(video)
    found: LoadedTrack | None = None
    try:
        samples = read_data_track(path) if has_data_stream(path) else {}
        if samples:
            header, first = split_sample(samples.get(0, b""))
            if header is None:
                raise ItmError(path, "the data track's first sample has no track header", "re-encode with itmfilter")
            packets = dict(samples)
            packets[0] = first
            found = LoadedTrack(header, packets, "data track")
        elif path.suffix.lower() in ATTACHMENT_SUFFIXES:
            blob = read_attachments(path).get(ATTACHMENT_NAME)
            if blob is not None:
                header, packets = read_track_blob(blob)
                found = LoadedTrack(header, packets, "attachment")
        if found is None and sidecar_path(path).exists():
            side = sidecar_path(path)
            try:
                doc = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ItmError(side, f"unreadable JSON sidecar ({exc})", "re-encode or delete it") from None
            header, packets = track_from_json(doc)
            found = LoadedTrack(header, packets, f"JSON sidecar {side.name}")
    except TrackFormatError as exc:
        raise ItmError(path, f"damaged weight track: {exc}", "re-encode, or play without it (blind mode)") from None
    if found is not None and check_binding:
        mine = stream_binding(path)
        if found.header.binding and not found.header.binding_matches(mine):
            raise ItmError(
                path,
                f"the weight track ({found.where}) was made for another video (binding mismatch)",
                "use the sidecar written with this video, or delete it to play in blind mode",
            )
    return found
