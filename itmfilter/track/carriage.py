"""Carriage of the weight track in and beside video files.

Four forms (``sidecar/SPEC.md`` section 7): SEI inside the H.264/HEVC bitstream (each
access unit carries its frame's packet, KEY access units the track header too;
:mod:`itmfilter.track.sei`), an MP4/MOV timed data track (one sample per frame, keyed by
presentation time; the sample at frame 0 starts with the track header), a Matroska
attachment ``itmfilter-track.bin`` holding the whole track blob, and a JSON sidecar
``<video>.itm.json``. :func:`load_track` finds whichever is present (SEI first) and checks
the binding, so that a sidecar made for another video is refused.

The binding of the three outer forms: SHA-256 of the SDR video stream's first packet (in
decode order) plus its width, height and frame count. Packet bytes survive ``-c copy``
remuxes between MP4, MOV and MKV; a re-encode changes them, as it should (the weights were
fitted to the pixels). SEI needs no such check: the packets ride inside the very access
units they were fitted to, so its header binds only ``width`` and ``height``
(:func:`sei_binding`); a cut or a concatenation changes the first packet and the frame
count and must not break it.

Packets are addressed by *runs* (:class:`TrackRun`): stretches of the file's frames whose
packets' own ``frame`` numbers advance one per frame. A data track, attachment or sidecar
is one run from frame 0. An SEI stream that was cut or concatenated has a run per piece;
a frame's packet is found through its run (:meth:`LoadedTrack.locate`), so a cut at frame
96 that starts at presentation index 0 still finds the packet numbered 96.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import av

from itmfilter.errors import ItmError
from itmfilter.limits import MAX_JSON_SIDECAR_BYTES
from itmfilter.media.containers import (
    ATTACHMENT_SUFFIXES,
    DATA_TRACK_SUFFIXES,
    has_data_stream,
    read_attachments,
    read_data_track,
)
from itmfilter.media.frames import frame_rate, presentation_index, stream_origin
from itmfilter.track.format import MKV_ATTACHMENT_NAME as ATTACHMENT_NAME
from itmfilter.track.format import (
    SIDECAR_SUFFIX,
    HeaderRef,
    TrackFormatError,
    TrackHeader,
    check_frames,
    peek_packet,
    read_track_blob,
    split_sample,
    track_from_json,
)
from itmfilter.track.sei import (
    carries_sei,
    iter_sei_samples,
    presentation_indexes,
    sei_nal_bytes,
    video_codec,
)

CARRIAGE_MODES = ("auto", "sei", "track", "attachment", "json")

SEI_CODECS = ("libx264", "libx265", "h264", "hevc")
"""Encoder or stream codec names whose bitstreams can carry the SEI form."""

SEI_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".ts", ".m2ts", ".mts")
"""Containers the SEI form is written to (any that keeps an H.264/HEVC stream would do)."""


def sidecar_path(video: str | os.PathLike) -> Path:
    return Path(os.fspath(video) + SIDECAR_SUFFIX)


def check_sidecar_size(side: Path, limit: int, fix: str) -> None:
    """Refuse a JSON sidecar larger than ``limit`` bytes before reading it (parsing JSON takes
    several times its size in memory)."""
    size = side.stat().st_size
    if size > limit:
        raise ItmError(side, f"the JSON sidecar is {size} bytes, above the {limit} bytes a sidecar may have", fix)


def stream_binding(video: str | os.PathLike) -> dict:
    """The binding of a video file's first video stream, with the key names of sidecar/SPEC.md
    section 6: ``first_keyframe_sha256`` (the first packet in decode order, a keyframe),
    ``width``, ``height`` and ``frame_count`` (when the container states it). Tracks written
    before these names were aligned with the spec (``first_packet_sha256``, ``frames``)
    still match on width and height."""

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
        "first_keyframe_sha256": hashlib.sha256(first).hexdigest(),
        "width": stream.codec_context.width,
        "height": stream.codec_context.height,
    } | ({"frame_count": int(frames)} if frames else {})


def sei_binding(width: int, height: int) -> dict:
    """The binding written into a header carried as SEI: the picture size only (module
    docstring: the stream itself is the binding)."""
    return {"width": int(width), "height": int(height)}


def sei_header_frames(key_frames, key_interval: int) -> frozenset[int]:
    """The KEY frames whose SEI carries the whole (compressed) header, from a track's planned
    KEY frames (ascending: its segment starts): the first, then each KEY at least
    ``key_interval`` frames after the last one that carried it. The other KEYs carry an 8-byte
    reference (sidecar/SPEC.md section 7.1). A reader joining a stream at any picture meets a
    whole header within ``2 * key_interval`` frames (the next KEY at most ``key_interval`` on,
    and a whole header at most ``key_interval`` after the last one); with shots of
    ``key_interval`` frames or longer, every KEY carries it, as before 1.3."""
    chosen, last = [], None
    for frame in sorted(key_frames):
        if last is None or frame - last >= key_interval:
            chosen.append(frame)
            last = frame
    return frozenset(chosen)


def resolve_mode(mode: str, output: Path, codec: str | None = None) -> str:
    """``auto``: SEI inside the video stream when ``codec`` is H.264/HEVC and the container
    is one of :data:`SEI_SUFFIXES`; else a data track in MP4/MOV, an attachment in MKV, a
    JSON sidecar otherwise."""
    if mode not in CARRIAGE_MODES:
        raise ItmError(None, f"unknown --sidecar {mode!r}", f"use one of {', '.join(CARRIAGE_MODES)}")
    ext = output.suffix.lower()
    sei_ok = codec is not None and codec.lower() in SEI_CODECS
    if mode == "auto":
        if sei_ok and ext in SEI_SUFFIXES:
            return "sei"
        return {".mp4": "track", ".m4v": "track", ".mov": "track", ".mkv": "attachment"}.get(ext, "json")
    if mode == "sei" and not sei_ok:
        raise ItmError(output, f"SEI carriage needs an H.264 or HEVC stream, not {codec or 'unknown'}",
                       "encode with --codec libx264/libx265, or use --sidecar track, attachment or json")
    if mode == "sei" and ext not in SEI_SUFFIXES:
        raise ItmError(output, f"{ext} is not a container the SEI form is written to",
                       f"use one of {', '.join(SEI_SUFFIXES)}")
    if mode == "track" and ext not in DATA_TRACK_SUFFIXES:
        raise ItmError(output, f"{ext} cannot hold a data track", "use .mp4/.mov, or --sidecar attachment (mkv) or json")
    if mode == "attachment" and ext not in ATTACHMENT_SUFFIXES:
        raise ItmError(output, f"{ext} cannot hold attachments", "use .mkv, or --sidecar track (mp4/mov) or json")
    return mode


@dataclass
class TrackRun:
    """Frames ``first_index`` .. ``first_index + length - 1`` of the file (presentation
    indexes as :mod:`itmfilter.media.frames` counts them) carry the packets numbered
    ``first_frame`` .. on, one more per frame. ``length`` None: to the end of the file.
    ``packets`` are keyed by their own ``frame`` numbers; ``header`` is the track header in
    force (None when the run carries none: its frames cannot be decoded)."""

    first_index: int
    first_frame: int
    length: int | None
    header: TrackHeader | None
    packets: dict[int, bytes] = field(default_factory=dict)

    def covers(self, index: int) -> bool:
        return index >= self.first_index and (self.length is None or index < self.first_index + self.length)

    def frame_of(self, index: int) -> int:
        """The packet frame number of presentation index ``index``."""
        return self.first_frame + index - self.first_index


@dataclass
class LoadedTrack:
    """A file's weight track: the first ``header``, every packet by its own frame number
    (``packets``; runs merged, the first run's packet kept where numbers repeat), where it
    was found, and its :class:`TrackRun` list (one run unless an SEI stream was cut or
    concatenated)."""

    header: TrackHeader
    packets: dict[int, bytes]
    where: str
    runs: list[TrackRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.runs:
            self.runs = [TrackRun(0, 0, None, self.header, self.packets)]

    def locate(self, index: int) -> tuple[TrackRun, int] | None:
        """The run holding presentation index ``index`` and the packet frame number there,
        or None for a frame outside every run."""
        for run in self.runs:
            if run.covers(index):
                return run, run.frame_of(index)
        return None


def _packet_frame(raw: bytes | None) -> int | None:
    """The ``frame`` field of packet bytes (long or compact), or None when they do not start
    like a packet."""
    peek = peek_packet(raw)
    return None if peek is None else peek[0]


def read_sei_track(path: str | os.PathLike) -> LoadedTrack | None:
    """The weight track carried as SEI in ``path`` (sidecar/SPEC.md section 7.1), or None
    when no access unit carries one or none carries a header (a cut shorter than the key
    interval: nothing can be decoded).

    Each shown access unit gets the presentation index the players give it; a new run
    starts where a packet's ``frame`` number does not continue the previous one (a cut, a
    concatenation) or where a KEY brings a different header (another video joined on).
    """
    samples = [s for s in iter_sei_samples(path) if s.presented]
    if not any(s.payloads for s in samples):
        return None
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        fps, origin = frame_rate(stream), stream_origin(stream)
    if origin is None:
        origin = min(s.time for s in samples)
    items = sorted(((presentation_index(s.time, origin, fps), s) for s in samples), key=lambda t: (t[0], t[1].time))
    runs: list[TrackRun] = []
    offsets: list[int | None] = []
    ids: list[int | None] = []  # the header id each run is known to use (a header or a reference)
    for index, sample in items:
        header, raw = None, None
        if sample.payloads:
            try:
                header, raw = split_sample(sample.payloads[0])
            except TrackFormatError:  # a damaged header: the whole payload counts as a damaged packet
                raw = sample.payloads[0]
        ref = header if isinstance(header, HeaderRef) else None
        header = header if isinstance(header, TrackHeader) else None
        named = ref.header_id if ref is not None else header.header_id if header is not None else None
        frame = _packet_frame(raw)
        run = runs[-1] if runs else None
        if (run is None or (frame is not None and offsets[-1] is not None and frame - index != offsets[-1])
                or (named is not None and ids[-1] is not None and named != ids[-1])):
            run = TrackRun(index, 0, None, None)
            runs.append(run)
            offsets.append(None)
            ids.append(None)
        if frame is not None and offsets[-1] is None:
            offsets[-1] = frame - index
        if named is not None and ids[-1] is None:
            ids[-1] = named
        if header is not None and run.header is None:
            run.header = header
        if raw is not None:
            run.packets[index] = raw  # re-keyed by frame number below, once the offset is known
        run.length = index - run.first_index + 1
    for run, offset in zip(runs, offsets):
        offset = offset if offset is not None else 0
        run.first_frame = run.first_index + offset
        run.packets = {index + offset: raw for index, raw in run.packets.items()}
    runs[-1].length = None
    headed = [r.header for r in runs if r.header is not None]
    if not headed:
        return None
    merged: dict[int, bytes] = {}
    for run in runs:
        for frame, raw in run.packets.items():
            merged.setdefault(frame, raw)
    return LoadedTrack(headed[0], merged, "SEI", runs)


def carried_bytes(video: str | os.PathLike, track: LoadedTrack | None = None) -> list[int]:
    """Bytes of the weight track each frame of ``video`` carries, as the rate promise counts
    them (sidecar/SPEC.md section 4): the whole SEI NAL unit with its 4-byte length or start
    code (sample, UUID, framing and emulation prevention), the whole data-track sample, or for
    an attachment or sidecar each packet plus the binary header on frame 0. Indexed by
    presentation index, over every frame of the video (0 for a frame without a sample: the
    frames a shift run covers, DELTA coding 5, carry none, up to the last)."""
    track = track if track is not None else load_track(video, check_binding=False)
    if track is None:
        return []
    if track.where == "SEI":
        codec = video_codec(video) or "h264"
        shown = iter_sei_samples(video)
        indexes = presentation_indexes(shown)
        samples = {i: s.payloads[0] for s, i in zip(shown, indexes) if i is not None and s.payloads}
        count = max((i for i in indexes if i is not None), default=-1) + 1
        return [sei_nal_bytes(samples[i], codec) if i in samples else 0 for i in range(count)]
    elif track.where == "data track":
        samples = read_data_track(video)
    else:
        samples = dict(track.packets)
        samples[0] = track.header.to_bytes() + samples.get(0, b"")
    count = max(max(samples, default=-1) + 1, track.header.frame_count or 0)
    return [len(samples.get(i, b"")) for i in range(count)]


def load_track(video: str | os.PathLike, *, check_binding: bool = True) -> LoadedTrack | None:
    """The weight track carried in or beside ``video``, or None when there is none.

    Looks for SEI in the video stream first, then a data track, an attachment, a JSON
    sidecar. A damaged header or a sidecar for another video raises :class:`ItmError`.
    """

    path = Path(video)
    found: LoadedTrack | None = None
    try:
        if carries_sei(path):
            found = read_sei_track(path)
        data_stream = found is None and has_data_stream(path)
        samples = read_data_track(path) if data_stream else {}
        if data_stream and not samples:
            # a data stream whose sample index is cut off or zeroed: damaged, not absent
            raise ItmError(path, "damaged weight track: the data track's sample index lists no readable samples",
                           "re-encode, or remux from an intact copy; play without it for blind mode")
        if samples:
            header, first = split_sample(samples.get(0, b""))
            if not isinstance(header, TrackHeader):
                raise ItmError(path, "the data track's first sample has no track header", "re-encode with itmfilter")
            packets = dict(samples)
            packets[0] = first
            check_frames(header, packets)
            found = LoadedTrack(header, packets, "data track")
        if found is None and path.suffix.lower() in ATTACHMENT_SUFFIXES:
            blob = read_attachments(path).get(ATTACHMENT_NAME)
            if blob is not None:
                header, packets = read_track_blob(blob)
                found = LoadedTrack(header, packets, "attachment")
        if found is None and sidecar_path(path).exists():
            side = sidecar_path(path)
            check_sidecar_size(side, MAX_JSON_SIDECAR_BYTES,
                               "carry the weights in the video instead (--sidecar sei or track)")
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
        for header in {id(r.header): r.header for r in found.runs if r.header is not None}.values():
            if header.binding and not header.binding_matches(mine):
                raise ItmError(
                    path,
                    f"the weight track ({found.where}) was made for another video (binding mismatch)",
                    "use the sidecar written with this video, or delete it to play in blind mode",
                )
    return found
