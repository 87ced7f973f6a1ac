"""What each container can hold, written once: the file suffixes of each kind, the
per-frame data stream (MP4/MOV/NUT) and Matroska attachments, read and written.

Measured with PyAV 18 / FFmpeg 8.1: MP4 takes ``add_data_stream("bin_data")`` (stored as
a ``gpmd`` track); MOV and NUT refuse it but accept a clone of an MP4 data stream
(``add_stream_from_template``); Matroska holds no data streams at all, only attachments.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import av

from itmfilter.errors import ItmError
from itmfilter.media.frames import (
    PresentationClock,
    frame_rate,
    open_input,
    stream_origin,
)

MP4_SUFFIXES = frozenset({".mp4", ".m4v"})
"""ISO BMFF files that take a data stream directly."""
QUICKTIME_SUFFIXES = MP4_SUFFIXES | {".mov"}
"""Files whose index can be moved to the front (``movflags=+faststart``)."""
DATA_TRACK_SUFFIXES = QUICKTIME_SUFFIXES | {".nut"}
"""Containers that hold a per-frame data track."""
ATTACHMENT_SUFFIXES = frozenset({".mkv", ".mka", ".mks"})
"""Matroska: attachments, no data tracks."""
STILL_SUFFIXES = frozenset({".exr", ".hdr", ".png", ".tif", ".tiff", ".jpg", ".jpeg"})
"""Picture files (the stills pipeline), as opposed to video files and EXR sequences."""

_TEMPLATE_BYTES: bytes | None = None


def _data_stream_template():
    """An input data stream (from a tiny in-memory MP4) to clone into MOV/NUT outputs."""
    global _TEMPLATE_BYTES
    if _TEMPLATE_BYTES is None:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as out:
            stream = out.add_data_stream("bin_data")
            packet = av.Packet(b"\0")
            packet.stream, packet.pts, packet.dts, packet.duration = stream, 0, 0, 1
            out.mux(packet)
        _TEMPLATE_BYTES = buf.getvalue()
    source = av.open(io.BytesIO(_TEMPLATE_BYTES), "r", format="mp4")
    return source, source.streams.data[0]


def add_data_stream(container, suffix: str, fps: Fraction):
    """Add a per-frame data stream (time base ``1/fps``, one packet per frame, pts = the
    presentation index) to an output ``container`` whose file ends in ``suffix``."""
    if suffix.lower() in MP4_SUFFIXES:
        stream = container.add_data_stream("bin_data")
    else:
        source, template = _data_stream_template()
        stream = container.add_stream_from_template(template)
        source.close()
    stream.time_base = Fraction(1) / Fraction(fps)
    return stream


def mux_data(container, stream, index: int, payload: bytes) -> None:
    """Mux one data packet for presentation index ``index``. ``duration`` is set: without
    it the MP4 muxer drops the last packet."""
    packet = av.Packet(payload)
    packet.stream = stream
    packet.pts = packet.dts = index
    packet.duration = 1
    packet.time_base = stream.time_base
    container.mux(packet)


def read_data_track(path: str | os.PathLike) -> dict[int, bytes]:
    """Payloads of the first data track, keyed by the presentation index of their video frame.

    For MP4/MOV/NUT files written with a data track (also after ``ffmpeg -map 0 -c copy``
    remuxing between them). Raises :class:`ItmError` when there is no data track or two
    payloads share a frame.
    """
    path = Path(path)
    container = open_input(path)
    try:
        if not container.streams.data:
            hint = ("Matroska cannot hold data tracks; use read_attachments" if path.suffix.lower() in ATTACHMENT_SUFFIXES
                    else "the payloads were lost (e.g. remuxed to MKV); use the original file")
            raise ItmError(path, "has no data track", hint)
        stream = container.streams.data[0]
        if container.streams.video:
            video = container.streams.video[0]
            clock = PresentationClock(stream, fps=frame_rate(video), origin=stream_origin(video) or 0.0)
        else:
            clock = PresentationClock(stream, fps=Fraction(1) / stream.time_base, origin=0.0)
        out: dict[int, bytes] = {}
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            index = clock.index(packet.pts)
            if index in out:
                raise ItmError(path, f"has two data packets for frame {index}", "re-create the file")
            out[index] = bytes(packet)
        return out
    finally:
        container.close()


def has_data_stream(path: Path) -> bool:
    """Whether ``path`` holds a data stream; :class:`ItmError` if it cannot be opened."""
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.data)
    except (av.error.FFmpegError, OSError) as exc:
        raise ItmError(path, f"cannot open ({exc})", "check the file") from None


def read_attachments(path: str | os.PathLike) -> dict[str, bytes]:
    """Attachments (file name -> bytes) of a Matroska file; ``{}`` when it has none."""
    container = open_input(Path(path))
    try:
        return {s.name: bytes(s.data) for s in container.streams if s.type == "attachment"}
    finally:
        container.close()
