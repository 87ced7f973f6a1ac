"""Video IO at the edge: probe, exact-colour frame readers, SDR and HDR10 writers, per-frame data.

Layouts (channel-last, as everywhere in itmfilter):

* HDR frames: linear BT.2020 RGB, float32 ``(H, W, 3)``, in cd/m2.
* PQ frames (what :class:`Hdr10Writer` takes): PQ BT.2020 R'G'B', float32 ``(H, W, 3)`` in [0, 1].
* SDR frames: BT.709 R'G'B' code values, float32 ``(H, W, 3)`` in [0, 1].

Colour is converted here, never by swscale: swscale is off by 2-4 10-bit codes for BT.2020
and silently assumes BT.601 when a frame is untagged. Readers take the decoder's native
Y'CbCr planes (only the *layout* is ever reformatted: semi-planar, packed or alpha formats
become the planar format of the same bit depth and subsampling), upsample chroma and apply
the Y'CbCr matrix of :mod:`itmfilter.colour.ycbcr`; writers do the inverse and hand the
encoder finished planes. Colour tags are set on the stream's codec context (libx264,
libx265, ffv1 read them there) *and* on every frame (prores_ks reads them only there).

Frames are keyed by a presentation index ``round((t - t0) * fps)``, ``t0`` the video
stream's start time, so B-frame reordering and container timestamp offsets (NUT shifts
everything by the first B-frame delay) never misalign frames and per-frame data.

Per-frame data: MP4 takes a data track (``add_data_stream("bin_data")``, stored as a
``gpmd`` track); MOV and NUT get the same stream through ``add_stream_from_template`` of
an in-memory MP4's data stream; Matroska cannot hold data streams, so it carries
attachments instead. Every writer writes through
:func:`itmfilter.media.atomic.atomic_output`: nothing exists under the final name until
``close()`` succeeds, and an exception (Ctrl-C included) leaves nothing behind.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.colour.primaries import (
    PRIMARIES_BT709,
    PRIMARIES_BT2020,
    PRIMARIES_P3,
    WHITEPOINT_D65,
    matrix_rgb_to_rgb,
)
from itmfilter.colour.transfer import eotf_bt2100_hlg, eotf_inverse_st2084, eotf_st2084
from itmfilter.colour.ycbcr import (
    rgb_to_ycbcr,
    subsample_chroma,
    upsample_chroma,
    ycbcr_to_rgb,
)
from itmfilter.errors import ItmError
from itmfilter.limits import check_picture_size
from itmfilter.media.atomic import atomic_output
from itmfilter.media.containers import (
    ATTACHMENT_SUFFIXES,
    DATA_TRACK_SUFFIXES,
    QUICKTIME_SUFFIXES,
    add_data_stream,
)
from itmfilter.media.frames import (
    PresentationClock,
    frame_rate,
    open_input,
    open_input_hw,
    plane_view,
    stream_origin,
    video_stream,
)
from itmfilter.media.stills import read_hdr

__all__ = [
    "VideoInfo",
    "probe_video",
    "read_hdr_frames",
    "read_sdr_frames",
    "read_sdr_video_frames",
    "resolve_hevc_encoder",
    "HEVC_ENCODERS",
    "SdrWriter",
    "Hdr10Writer",
    "exr_sequence",
    "PRIMARIES_NAMES",
    "TRANSFER_NAMES",
    "MATRIX_NAMES",
]

# ITU-T H.273 code points, named as FFmpeg/ffprobe name them.
PRIMARIES_NAMES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                   8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFER_NAMES = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
                  8: "linear", 11: "iec61966-2-4", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
                  16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
MATRIX_NAMES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}

_PQ, _HLG, _UNSPECIFIED = 16, 18, 2
_BT709, _BT2020, _P3_D65 = 1, 9, 12
_RANGE_TV, _RANGE_PC = 1, 2
#: (primaries, trc, matrix, range) written on SDR and HDR10 output.
_TAGS_SDR = (_BT709, _BT709, _BT709, _RANGE_TV)
_TAGS_HDR10 = (_BT2020, _PQ, _BT2020, _RANGE_TV)

_SEQUENCE_PATTERN = re.compile(r"%0?(\d*)d")


def _name(table: dict, code: int | None) -> str:
    if code is None:
        return "unknown"
    return table.get(int(code), f"unknown({int(code)})")


# --------------------------------------------------------------------------- probing


@dataclass
class VideoInfo:
    """What :func:`probe_video` found in a video file.

    Colour tags use FFmpeg's names (``smpte2084``, ``arib-std-b67``, ``bt2020``,
    ``bt2020nc``, range ``tv``/``pc``); ``"unknown"`` means untagged. ``frame_count`` is
    exact when ``frame_count_exact`` (the container lists its frames, or they were
    counted), else estimated from duration x fps. ``chroma_subsampling`` is ``"420"``,
    ``"422"``, ``"444"`` (``None`` for RGB formats). ``hdr10`` holds the mastering
    display and content light levels (cd/m2) found on the first frame, else ``None``;
    ``content_light_level`` is ``(MaxCLL, MaxFALL)`` cd/m2 when present on its own.
    """

    path: str
    container: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    frame_count_exact: bool
    duration_s: float
    codec: str
    pix_fmt: str
    bit_depth: int
    chroma_subsampling: str | None
    color_primaries: str
    color_trc: str
    color_matrix: str
    color_range: str
    hdr10: HDR10Metadata | None = None
    content_light_level: tuple[float, float] | None = None
    has_audio: bool = False
    has_subtitles: bool = False
    has_data: bool = False
    attachments: list[str] = field(default_factory=list)

    @property
    def transfer(self) -> str:
        """``"pq"``, ``"hlg"`` or ``"sdr"`` (any other or no transfer tag)."""
        return {"smpte2084": "pq", "arib-std-b67": "hlg"}.get(self.color_trc, "sdr")

    @property
    def is_hdr(self) -> bool:
        return self.transfer != "sdr"


def _subsampling(fmt, width: int, height: int) -> str | None:
    if fmt.is_rgb:
        return None
    cw, ch = fmt.chroma_width(width), fmt.chroma_height(height)
    if ch == height:
        return {width: "444", -(-width // 2): "422"}.get(cw, "other")
    if ch == -(-height // 2) and cw == -(-width // 2):
        return "420"
    return "other"


def _rationals(raw: bytes, count: int) -> list[float]:
    values = struct.unpack(f"<{2 * count}i", raw[: 8 * count])
    return [num / den if den else 0.0 for num, den in zip(values[0::2], values[1::2])]


def _hdr10_from_frame(frame) -> tuple[HDR10Metadata | None, tuple[float, float] | None]:
    """Parse AVMasteringDisplayMetadata / AVContentLightMetadata side data of a decoded frame."""

    mastering, light = None, None
    for side in frame.side_data:
        raw = bytes(side)
        if side.type == Type.CONTENT_LIGHT_LEVEL and len(raw) >= 8:
            light = tuple(float(v) for v in struct.unpack("<II", raw[:8]))
        elif side.type == Type.MASTERING_DISPLAY_METADATA and len(raw) >= 88:
            # display_primaries[3][2] (R, G, B), white_point[2], min_luminance, max_luminance
            values = _rationals(raw, 10)
            has_primaries, has_luminance = struct.unpack("<ii", raw[80:88])
            if has_primaries and has_luminance:
                mastering = values
    if mastering is None:
        return None, light
    prims = ((mastering[0], mastering[1]), (mastering[2], mastering[3]), (mastering[4], mastering[5]))
    max_cll, max_fall = light or (0.0, 0.0)
    try:
        meta = HDR10Metadata(prims, (mastering[6], mastering[7]), mastering[9], mastering[8], max_cll, max_fall)
    except ValueError:
        return None, light
    return meta, light


def probe_video(path: str | os.PathLike, count_frames: bool = False) -> VideoInfo:
    """Describe a video file (first video stream); ``count_frames`` demuxes it to count exactly.

    Reads the container header and decodes the first frame (for HDR10 side data).
    Raises :class:`ItmError` for a missing, unreadable or video-less file.
    """

    path = Path(path)
    container = open_input(path)
    try:
        stream = video_stream(container, path)
        cc = stream.codec_context
        check_picture_size(path, cc.width, cc.height, minimum=False)
        fps = frame_rate(stream)
        tb = stream.time_base
        if stream.duration is not None and tb:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        frames, exact = int(stream.frames or 0), bool(stream.frames)
        if count_frames:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
            exact = True
            container.seek(0)
        elif not exact:
            frames = int(round(duration * fps))
        fmt = cc.format
        if fmt is None:
            raise ItmError(path, "has a video stream with an unknown pixel format",
                           "the file may be damaged; re-export it")
        hdr10, light = None, None
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise ItmError(path, f"cannot decode its first frame ({exc.strerror or exc})",
                           "the file may be truncated or damaged; re-export it") from None
        if first is not None:
            hdr10, light = _hdr10_from_frame(first)
        streams = container.streams
        return VideoInfo(
            path=str(path), container=container.format.name, width=cc.width, height=cc.height, fps=fps,
            frame_count=frames, frame_count_exact=exact, duration_s=duration, codec=cc.name,
            pix_fmt=fmt.name, bit_depth=max(c.bits for c in fmt.components),
            chroma_subsampling=_subsampling(fmt, cc.width, cc.height),
            color_primaries=_name(PRIMARIES_NAMES, cc.color_primaries), color_trc=_name(TRANSFER_NAMES, cc.color_trc),
            color_matrix=_name(MATRIX_NAMES, cc.colorspace), color_range=_name(RANGE_NAMES, cc.color_range),
            hdr10=hdr10, content_light_level=light, has_audio=bool(streams.audio),
            has_subtitles=bool(streams.subtitles), has_data=bool(streams.data),
            attachments=[s.name for s in streams if s.type == "attachment"],
        )
    finally:
        container.close()


# --------------------------------------------------------------------------- decoding


def _planar_format(fmt, width: int, height: int, path: Path):
    """The planar format with ``fmt``'s depth and subsampling, or ``None`` when ``fmt`` already is one."""
    bits = max(c.bits for c in fmt.components)
    if bits > 16:
        raise ItmError(path, f"has {bits}-bit samples ({fmt.name}); at most 16 are supported", "re-export it")
    if fmt.is_rgb:
        target = "gbrp" if bits == 8 else f"gbrp{bits}le"
    else:
        ss = _subsampling(fmt, width, height)
        if ss not in ("420", "422", "444"):
            raise ItmError(path, f"has chroma subsampling {fmt.name!r}, which is not supported",
                           "re-export it as 4:2:0, 4:2:2 or 4:4:4")
        target = f"yuv{ss}p" + ("" if bits == 8 else f"{bits}le")
    if fmt.name in (target, target.replace("yuv", "yuvj")):
        return None, bits
    return target, bits


class _FrameDecoder:
    """Native-plane decoding shared by the HDR and SDR readers."""

    def __init__(self, path: Path, constant_rate: bool = False, hwaccel: str = "none"):

        self.path = path
        self.hwaccel = hwaccel
        self.container, self.note = open_input_hw(path, hwaccel)
        self.stream = video_stream(self.container, path)
        self.stream.thread_type = "AUTO"
        cc = self.stream.codec_context
        check_picture_size(path, cc.width, cc.height, minimum=False)
        self.clock = PresentationClock(self.stream)
        self.fps = self.clock.fps
        self.constant_rate = constant_rate
        self.expected = int(self.stream.frames or 0)
        if not self.expected and self.container.duration and all(
            s.type in ("video", "attachment", "data") for s in self.container.streams
        ) and len(self.container.streams.video) == 1:
            # Matroska lists no frame count, but its duration is the video's when nothing
            # else plays beside it: a file cut short decodes fewer frames than it lasts.
            self.expected = int(round(self.container.duration / 1_000_000 * float(self.fps)))
        self.primaries, self.trc, self.matrix, self.range = cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range
        self._av = av

    def _decoded(self, start: int):
        """Decoded frames from the last keyframe at or before presentation index ``start``
        (from the top when the stream has no start time to count from, or the seek landed
        past the frame); ``self.seeked`` says which."""
        self.seeked = False
        if start > 0 and self.clock.origin is not None:
            seconds = self.clock.origin + (start - 0.5) / float(self.fps)  # half a frame early: rounding
            self.container.seek(max(0, int(seconds / self.stream.time_base)), stream=self.stream,
                                backward=True, any_frame=False)
            frames = self.container.decode(self.stream)
            first = next(frames, None)
            if first is not None and first.pts is not None and self.clock.index(first.pts) <= start:
                self.seeked = True
                yield first
                yield from frames
                return
            self.container.close()
            self.container = open_input(self.path, "none" if self.note else self.hwaccel)
            self.stream = video_stream(self.container, self.path)
            self.stream.thread_type = "AUTO"
        yield from self.container.decode(self.stream)

    def frames(self, start: int = 0, native: bool = False) -> Iterator[tuple[int, np.ndarray, int, bool, str | None]]:
        """Yield ``(index, codes (H, W, 3) float32, bits, full_range, subsampling)`` for the
        frames from presentation index ``start`` on: a seek to the keyframe before it, then
        the frames before ``start`` are decoded and dropped (a segment of a distributed
        encode reads only its own frames this way). ``native``: ``codes`` is the decoded
        ``av.VideoFrame`` itself (planar layout, its ``color_range`` set to the range the
        codes would have been read with), for per-frame paths that read the planes."""
        av = self._av
        count = 0
        self.seeked = False
        try:
            for frame in self._decoded(start):
                index = (-1 if self.seeked else count) if frame.pts is None else self.clock.index(frame.pts)
                if index < start:
                    count += 1
                    continue
                fmt = frame.format
                full = fmt.name.startswith("yuvj") or frame.color_range == _RANGE_PC or (
                    frame.color_range not in (_RANGE_TV, _RANGE_PC) and self.range == _RANGE_PC)
                target, bits = _planar_format(fmt, frame.width, frame.height, self.path)
                if target is not None:  # layout only: same depth, subsampling and range, no matrix
                    frame = frame.reformat(format=target)
                    fmt = frame.format
                if native:
                    frame.color_range = _RANGE_PC if full else _RANGE_TV
                    yield index, frame, bits, full, None
                    count += 1
                    continue
                dtype = np.uint8 if bits <= 8 else np.uint16
                if fmt.is_rgb:  # planes are G, B, R
                    g, b, r = (_frame_plane(frame, i, dtype) for i in range(3))
                    codes = np.stack([r, g, b], axis=-1).astype(np.float32)
                    ss = None
                else:
                    ss = _subsampling(fmt, frame.width, frame.height)
                    y, cb, cr = (_frame_plane(frame, i, dtype) for i in range(3))
                    codes = upsample_chroma(y.astype(np.float32), cb, cr, ss)
                if self.constant_rate and not self.seeked and index != count:
                    raise ItmError(
                        self.path,
                        f"has a variable frame rate: frame {count} is shown at "
                        f"{float(frame.pts * self.stream.time_base):.3f} s, not at {count / float(self.fps):.3f} s "
                        f"as {float(self.fps):g} fps would place it",
                        "convert it to a constant frame rate first, e.g. ffmpeg -i IN -fps_mode cfr -r 24 OUT",
                    )
                yield index, codes, bits, full, ss
                count += 1
        except av.error.FFmpegError as exc:
            raise ItmError(self.path, f"cannot be decoded after {count} frames ({exc.strerror or exc})",
                           "the file may be truncated or damaged; re-export it") from None
        finally:
            self.container.close()
        if count == 0:
            raise ItmError(self.path, "has no decodable video frames", "the file may be truncated; re-export it")
        # a rounded duration may promise one more; a seeked read counts only its own frames
        if self.expected and not self.seeked and count < self.expected - 1:
            raise ItmError(self.path, f"is truncated: decoded {count} of the {self.expected} frames it lists",
                           "re-export or re-download it")

def exr_sequence(path: str | os.PathLike) -> list[Path] | None:
    """The frames of an EXR sequence, in order, or ``None`` when ``path`` is not one.

    ``path`` is a folder of ``.exr`` files (sorted by name) or a printf pattern such as
    ``frames/%06d.exr`` (sorted by number). Raises :class:`ItmError` for an empty sequence.
    """
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".exr" and f.is_file())
        if not files:
            raise ItmError(p, "is a folder without .exr frames", "give a video file or a folder of .exr frames")
        return files
    match = _SEQUENCE_PATTERN.search(p.name)
    if match is None:
        return None
    width = match.group(1)
    regex = re.compile(re.escape(p.name[: match.start()]) + (rf"(\d{{{int(width)},}})" if width else r"(\d+)")
                       + re.escape(p.name[match.end():]) + "$")
    folder = p.parent
    found = []
    if folder.is_dir():
        for f in folder.iterdir():
            m = regex.match(f.name)
            # printf semantics: %06d names frame 7 "000007", never "0000007" or "7"
            if m and (not width or f"{int(m.group(1)):0{int(width)}d}" == m.group(1)):
                found.append((int(m.group(1)), f))
    if not found:
        raise ItmError(p, "matches no files", "check the frame pattern, e.g. frames/%06d.exr")
    return [f for _, f in sorted(found)]


def _eotf(trc: int, rgb: np.ndarray) -> np.ndarray:
    if trc == _HLG:
        return eotf_bt2100_hlg(rgb)
    return eotf_st2084(rgb)


def read_hdr_frames(path: str | os.PathLike, assume_hdr: bool = False,
                    start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a PQ or HLG video (or an EXR sequence) to linear BT.2020 cd/m2 frames.

    Yields ``(index, nits)`` in presentation order: ``index`` is the frame's presentation
    index from the start of the stream (position for EXR sequences), ``nits`` float32
    ``(H, W, 3)`` linear BT.2020 RGB in cd/m2. The decoder's own 8-16 bit Y'CbCr
    planes (any 4:2:0 / 4:2:2 / 4:4:4 layout, alpha dropped) are converted exactly:
    chroma upsampled (chroma_loc_type 0), BT.2020 NCL (or the tagged BT.709) matrix, range
    from the tags, then the PQ (ST 2084) or HLG (BT.2100, 1000 cd/m2 display) EOTF.
    BT.709- or P3-D65-primaries PQ streams are converted to BT.2020.

    A stream whose transfer is neither PQ (``smpte2084``) nor HLG (``arib-std-b67``)
    raises :class:`ItmError`; ``assume_hdr=True`` reads it as PQ BT.2020 instead
    (for files that lost their tags), limited range unless tagged full.

    ``start``: the first presentation index to yield (a seek, not a decode from the top).
    """

    sequence = exr_sequence(path)
    if sequence is not None:
        return ((i, read_hdr(f).nits) for i, f in enumerate(sequence) if i >= start)
    decoder = _FrameDecoder(Path(path), constant_rate=True)
    trc, prim, matrix = decoder.trc, decoder.primaries, decoder.matrix
    if trc not in (_PQ, _HLG):
        if not assume_hdr:
            decoder.container.close()
            raise ItmError(path, f"looks like SDR (transfer={_name(TRANSFER_NAMES, trc)}), not PQ or HLG HDR",
                           "give an HDR10/HLG video; if it is PQ BT.2020 with missing tags, pass --assume-hdr")
        trc, prim, matrix = _PQ, _BT2020, _BT2020
    if matrix not in (_BT2020, _UNSPECIFIED, _BT709, 0, None):
        decoder.container.close()
        raise ItmError(path, f"has Y'CbCr matrix {_name(MATRIX_NAMES, matrix)}; only bt2020nc and bt709 are supported",
                       "re-export it with BT.2020 non-constant-luminance Y'CbCr")
    to_bt2020 = _primaries_matrix(prim, path, decoder)
    ycbcr_matrix = "bt709" if matrix == _BT709 else "bt2020nc"

    def generate():
        for index, codes, bits, full, ss in decoder.frames(start):
            if ss is None:
                rgb = codes / np.float32(2**bits - 1)
            else:
                rgb = ycbcr_to_rgb(codes, ycbcr_matrix, bits, full, dtype=np.float32)
            nits = np.asarray(_eotf(trc, np.clip(rgb, 0.0, 1.0)), dtype=np.float32)
            if to_bt2020 is not None:
                nits = np.maximum(nits @ to_bt2020.T.astype(np.float32), 0.0)
            yield index, nits

    return generate()


def _primaries_matrix(prim, path, decoder) -> np.ndarray | None:

    if prim in (_BT2020, _UNSPECIFIED, None, 0):
        return None
    source = {_BT709: PRIMARIES_BT709, _P3_D65: PRIMARIES_P3}.get(prim)
    if source is None:
        decoder.container.close()
        raise ItmError(path, f"has colour primaries {_name(PRIMARIES_NAMES, prim)}; bt2020, bt709 and smpte432 (P3-D65) are supported",
                       "re-export it with BT.2020 primaries")
    return np.asarray(matrix_rgb_to_rgb(source, WHITEPOINT_D65, PRIMARIES_BT2020, WHITEPOINT_D65), dtype=np.float64)


def read_sdr_frames(path: str | os.PathLike, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Decode an SDR BT.709 video to R'G'B' code values.

    Yields ``(index, sdr)`` in presentation order, ``sdr`` float32 ``(H, W, 3)`` BT.709
    R'G'B' in [0, 1] (clipped), exact from the 8/10-bit (any depth) Y'CbCr planes, limited
    or full range per the tags. Untagged streams are read as BT.709. PQ/HLG streams and
    other matrices or primaries raise :class:`ItmError`. ``start``: the first presentation
    index to yield (a seek to the keyframe before it).
    """
    path = Path(path)
    return _sdr_reader(path, start)[0]


def read_sdr_video_frames(path: str | os.PathLike, start: int = 0,
                          hwaccel: str = "none") -> tuple[Iterator[tuple[int, object]], str | None]:
    """Decode an SDR BT.709 video to its frames as decoded: ``(iterator, note)``.

    The iterator yields ``(index, frame)`` in presentation order, ``frame`` an
    ``av.VideoFrame`` in a planar layout of the decoded depth and subsampling (no matrix
    applied; :func:`itmfilter.media.frames.code_planes` reads it), with ``color_range``
    set as :func:`read_sdr_frames` reads it. The same checks as there. ``hwaccel``:
    :data:`itmfilter.media.frames.HWACCELS`; ``note`` is the one-line fallback note of
    :func:`itmfilter.media.frames.open_input_hw`, or None.
    """
    path = Path(path)
    return _sdr_reader(path, start, native=True, hwaccel=hwaccel)


def _sdr_reader(path: Path, start: int, native: bool = False, hwaccel: str = "none"):
    decoder = _FrameDecoder(path, hwaccel=hwaccel)
    if decoder.trc in (_PQ, _HLG):
        decoder.container.close()
        raise ItmError(path, f"is HDR (transfer={_name(TRANSFER_NAMES, decoder.trc)}), not SDR",
                       "read it with read_hdr_frames, or give the SDR video")
    if decoder.matrix not in (_BT709, _UNSPECIFIED, 0, None) or decoder.primaries not in (_BT709, _UNSPECIFIED, 0, None):
        decoder.container.close()
        raise ItmError(path, f"is not BT.709 (primaries={_name(PRIMARIES_NAMES, decoder.primaries)}, "
                       f"matrix={_name(MATRIX_NAMES, decoder.matrix)})",
                       "convert it first, e.g. ffmpeg -i IN -vf colorspace=all=bt709 OUT")

    if native:
        return ((index, frame) for index, frame, _, _, _ in decoder.frames(start, native=True)), decoder.note

    def generate():
        for index, codes, bits, full, ss in decoder.frames(start):
            if ss is None:
                rgb = codes / np.float32(2**bits - 1)
            else:
                rgb = ycbcr_to_rgb(codes, "bt709", bits, full, dtype=np.float32)
            yield index, np.clip(rgb, 0.0, 1.0, out=rgb)

    return generate(), decoder.note


# --------------------------------------------------------------------------- per-frame data


# --------------------------------------------------------------------------- writing


def _as_fraction(fps) -> Fraction:
    if isinstance(fps, (int, Fraction)):
        rate = Fraction(fps)
    else:
        value = float(fps)
        ntsc = round(value * 1.001)
        rate = Fraction(ntsc * 1000, 1001) if ntsc and abs(value - ntsc * 1000 / 1001) < 1e-3 \
            else Fraction(value).limit_denominator(1000)
    if rate <= 0:
        raise ItmError(None, f"frame rate must be positive, got {fps!r}", "pass e.g. fps=24")
    return rate


# Frames this narrow make libx265 (3.x, as bundled with PyAV) free an invalid pointer when
# the encoder closes (x265::Lookahead::destroy, cutree buffers): glibc's malloc checker
# aborts on it every time, plain malloc only sometimes (a CI run died of it). Measured with
# every width 8..200: 16-48 fail, 56 and up are clean; x264 is clean at all of them.
# Turning off cutree (a rate-control refinement, irrelevant at such sizes) avoids it.
X265_CUTREE_MIN_WIDTH = 64


def _with_param(options: dict, key: str, param: str) -> dict:
    """``options`` with ``param`` appended to the ``:``-separated list under ``key``
    (``x264-params`` / ``x265-params``)."""
    params = options.get(key, "")
    return {**options, key: (params + ":" if params else "") + param}


def _x265_workarounds(codec: str, width: int, options: dict) -> dict:
    """``options`` with ``no-cutree=1`` added to x265-params for frames narrower than
    :data:`X265_CUTREE_MIN_WIDTH` (libx265 corrupts the heap there, see above)."""
    if codec != "libx265" or width >= X265_CUTREE_MIN_WIDTH:
        return options
    return _with_param(options, "x265-params", "no-cutree=1")


# libx264's AVX-512 code path (as bundled with PyAV) is not bit-exact: the same frames
# encoded several times in one process gave 2-3 different bitstreams (3 of 6 runs
# differed), while its C and AVX2 paths always gave the one same bitstream (so does
# valgrind, which has no AVX-512). So the same master gave different SDR videos, and
# different weight tracks, from run to run. On CPUs with AVX-512, x264 is held to AVX2.
_X264_AVX512_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@functools.lru_cache(maxsize=1)
def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return _X264_AVX512_FLAGS <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def _x264_workarounds(codec: str, options: dict) -> dict:
    """``options`` with x264 held to AVX2 where the CPU has AVX-512 (see above); an
    ``asm`` the caller chose is kept."""
    if codec != "libx264" or not _cpu_has_avx512() or "asm=" in options.get("x264-params", ""):
        return options
    return _with_param(options, "x264-params", "asm=AVX2")


class _VideoWriter:
    """Encoder + muxer plumbing shared by :class:`SdrWriter` and :class:`Hdr10Writer`."""

    _tags: tuple[int, int, int, int]
    _matrix: str
    _subsampling: str = "420"

    def __init__(self, path, width, height, fps, *, codec, pix_fmt, bits, options, data_track, copy_from,
                 packet_filter=None, frame_format: str | None = None):

        self._av = av
        self._packet_filter = packet_filter
        self._frame_format = frame_format  # the layout the planes are written in, when not pix_fmt
        self.path = Path(path)
        self.width, self.height, self.bits = int(width), int(height), int(bits)
        self.fps = _as_fraction(fps)
        self.frames_written = 0
        self._container = None
        self._source = None
        self._closed = False
        suffix = self.path.suffix.lower()
        if self.width < 2 or self.height < 2:
            raise ItmError(self.path, f"frame size {width}x{height} is too small", "use at least 2x2")
        if self._subsampling == "420" and (self.width % 2 or self.height % 2):
            raise ItmError(self.path, f"4:2:0 video needs an even width and height, got {width}x{height}",
                           "crop or pad the frames by one pixel")
        if data_track and suffix not in DATA_TRACK_SUFFIXES:
            raise ItmError(self.path, f"{suffix or 'this'} files cannot hold a per-frame data track",
                           "write .mp4 or .mov (or use add_attachment with .mkv)")
        self._atomic = atomic_output(self.path, [copy_from] if copy_from is not None else [])
        temp = self._temp = self._atomic.__enter__()
        self._late_attachments: list[tuple[str, str, bytes]] = []
        try:
            options_container = {"movflags": "+faststart"} if suffix in QUICKTIME_SUFFIXES else {}
            self._container = av.open(str(temp), "w", options=options_container)
            stream = self._container.add_stream(codec, rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
            cc = stream.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = self._tags
            cc.thread_type = "AUTO"
            stream.options = _x264_workarounds(codec, _x265_workarounds(codec, self.width, options))
            self._stream, self._pix_fmt = stream, pix_fmt
            self._data = None
            if data_track:
                self._data = add_data_stream(self._container, suffix, self.fps)
            self._copies = {}
            if copy_from is not None:
                self._open_copy_source(Path(copy_from))
        except BaseException as exc:
            self._abort(exc)
            raise

    # -- copy_from -----------------------------------------------------------------

    def _open_copy_source(self, source_path: Path) -> None:
        source = open_input(source_path)
        self._source = source
        wanted = [s for s in source.streams if s.type in ("audio", "subtitle")]
        supported = self._container.supported_codecs
        for s in wanted:
            name = s.codec_context.name if s.codec_context is not None else "?"
            if name not in supported:
                raise ItmError(self.path, f"cannot hold the {s.type} stream #{s.index} ({name}) of {source_path}",
                               "write another container (.mkv holds most), or convert that stream first")
            self._copies[s.index] = self._container.add_stream_from_template(s)
        video_in = source.streams.video[0] if source.streams.video else None
        self._source_origin = (stream_origin(video_in) or 0.0) if video_in is not None else 0.0
        self._packets = source.demux(*wanted) if wanted else iter(())
        self._pending = None

    def _copy_until(self, seconds: float | None) -> None:
        """Mux copied audio/subtitle packets up to ``seconds`` of output time (all when None)."""
        if self._source is None:
            return
        while True:
            packet = self._pending
            self._pending = None
            if packet is None:
                packet = next(self._packets, None)
                if packet is None:
                    return
                if packet.dts is None and packet.pts is None:
                    continue  # demuxer flush packet
            tb = packet.time_base
            t = float((packet.pts if packet.pts is not None else packet.dts) * tb) - self._source_origin
            if seconds is not None and t > seconds:
                self._pending = packet
                return
            if self._source_origin:
                shift = int(round(self._source_origin / tb))
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
            packet.stream = self._copies[packet.stream.index]
            self._container.mux(packet)

    # -- frames --------------------------------------------------------------------

    def _codes(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_frame(self, frame, what: str) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3):
            raise ItmError(self.path, f"{what} frame {self.frames_written} has shape {frame.shape}, "
                           f"expected {(self.height, self.width, 3)}", "resize the frames to the writer's size")
        return frame

    def _write_codes(self, rgb_prime: np.ndarray, payload: bytes | None) -> None:
        if self._closed:
            raise ItmError(self.path, "write() after close()", "open a new writer")
        codes = rgb_to_ycbcr(rgb_prime, self._matrix, self.bits)
        self._write_planes(subsample_chroma(codes, self._subsampling), payload)

    def _mux_video(self, packets) -> None:
        for packet in packets:
            self._container.mux(self._packet_filter(packet) if self._packet_filter is not None else packet)

    def _write_planes(self, planes, payload: bytes | None) -> None:
        av = self._av
        if self._closed:
            raise ItmError(self.path, "write() after close()", "open a new writer")
        frame = av.VideoFrame(self.width, self.height, self._frame_format or self._pix_fmt)
        dtype = np.uint8 if self.bits == 8 else np.uint16
        for index, values in enumerate(planes):
            _frame_plane(frame, index, dtype)[...] = values
        if self._frame_format is not None and self._frame_format != self._pix_fmt:
            frame = frame.reformat(format=self._pix_fmt)  # a layout change only (p010le for NVENC)
        primaries, trc, matrix, full = self._tags
        frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = primaries, trc, matrix, full
        i = self.frames_written
        frame.pts, frame.time_base = i, Fraction(1) / self.fps
        try:
            self._mux_video(self._stream.encode(frame))
            if payload is not None:
                if self._data is None:
                    raise ItmError(self.path, "a payload was given but the writer has no data track",
                                   "open the writer with data_track=True")
                packet = av.Packet(bytes(payload))
                packet.stream, packet.pts, packet.dts = self._data, i, i
                packet.duration, packet.time_base = 1, Fraction(1) / self.fps
                self._container.mux(packet)
            self._copy_until(i / self.fps)
        except av.error.FFmpegError as exc:
            raise ItmError(self.path, f"encoding frame {i} failed ({exc.strerror or exc})",
                           "check the codec options and free disk space") from None
        self.frames_written += 1

    def add_attachment(self, name: str, mimetype: str, data: bytes) -> None:
        """Attach a file (Matroska only); may be called any time before :meth:`close`.

        Attachments live in the Matroska header, which FFmpeg writes with the first
        packet (adding one afterwards aborts the process), so late ones are kept and the
        finished file is remuxed once (packets copied, nothing re-encoded) at close.
        """
        if self.path.suffix.lower() not in ATTACHMENT_SUFFIXES:
            raise ItmError(self.path, "only Matroska (.mkv) files hold attachments",
                           "write .mkv, or use data_track=True with .mp4/.mov")
        if self._closed:
            raise ItmError(self.path, "add_attachment() after close()", "attach before closing the writer")
        if self.frames_written == 0:
            self._container.add_attachment(str(name), str(mimetype), bytes(data))
        else:
            self._late_attachments.append((str(name), str(mimetype), bytes(data)))

    def _remux_with_attachments(self, temp: Path) -> None:
        av = self._av
        second = temp.with_name(temp.stem + "-attach" + temp.suffix)
        try:
            with av.open(str(temp)) as source, av.open(str(second), "w") as out:
                mapping = {}
                for stream in source.streams:
                    if stream.type == "attachment":
                        out.add_attachment(stream.name, stream.mimetype, bytes(stream.data))
                    else:
                        mapping[stream.index] = out.add_stream_from_template(stream)
                for name, mimetype, data in self._late_attachments:
                    out.add_attachment(name, mimetype, data)
                for packet in source.demux(*[source.streams[i] for i in mapping]):
                    if packet.dts is None and packet.pts is None:
                        continue
                    packet.stream = mapping[packet.stream.index]
                    out.mux(packet)
            os.replace(second, temp)
        finally:
            if second.exists():
                second.unlink()

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio/subtitles, finish the file and move it into place."""
        if self._closed:
            return
        av = self._av
        try:
            if self.frames_written == 0:
                raise ItmError(self.path, "no frames were written", "write at least one frame before closing")
            try:
                self._mux_video(self._stream.encode(None))
                self._copy_until(None)
                self._container.close()
                if self._late_attachments:
                    self._remux_with_attachments(self._temp)
            except av.error.FFmpegError as exc:
                raise ItmError(self.path, f"finishing the file failed ({exc.strerror or exc})",
                               "check free disk space") from None
            if self._source is not None:
                self._source.close()
            self._closed = True
            self._atomic.__exit__(None, None, None)
        except BaseException as exc:
            self._abort(exc)
            raise

    def abort(self) -> None:
        """Stop writing and delete the partial output."""
        self._abort(ItmError(self.path, "writing was aborted"))

    def _abort(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        for thing in (self._container, self._source):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self._abort(exc)
        else:
            self.close()


class SdrWriter(_VideoWriter):
    """Encode SDR frames as BT.709 limited-range 4:2:0 H.264 or HEVC, optionally with per-frame data.

    ``write(sdr, payload)`` takes BT.709 R'G'B' code values float32 ``(H, W, 3)`` in [0, 1]
    and converts them exactly (:func:`itmfilter.colour.ycbcr.rgb_to_ycbcr`, BT.709,
    limited range, chroma_loc_type 0) to ``bits`` = 8 (``yuv420p``) or 10
    (``yuv420p10le``) codes. Colour tags bt709/bt709/bt709/tv go on the stream and on
    every frame. ``payload`` bytes go into the data track (``data_track=True``, MP4/MOV/
    NUT) at the frame's presentation index, duration 1 frame. ``copy_from`` copies the
    audio and subtitle streams of another file. ``codec_options`` are raw encoder
    options (``{"qp": 0}`` is lossless with libx264 at 8 and 10 bits; ``qp`` replaces
    ``crf``). Output is atomic (see module docstring).

    Example::

        with SdrWriter("out.mp4", 1920, 1080, 24, data_track=True) as writer:
            for sdr, weights in frames:
                writer.write(sdr, weights)
    """

    _tags = _TAGS_SDR
    _matrix = "bt709"

    def __init__(self, path, width, height, fps, codec="libx264", crf=18, preset="medium", bits=8,
                 data_track=False, copy_from=None, codec_options: dict | None = None):
        if codec not in ("libx264", "libx265"):
            raise ItmError(path, f"unknown SDR codec {codec!r}", "use libx264 or libx265")
        if bits not in (8, 10):
            raise ItmError(path, f"bits must be 8 or 10, got {bits!r}", "choose 8 or 10")
        options = {"crf": str(crf), "preset": str(preset)}
        if codec == "libx265":
            options["x265-params"] = "log-level=error:colorprim=bt709:transfer=bt709:colormatrix=bt709:range=limited"
        extra = {str(k): str(v) for k, v in (codec_options or {}).items()}
        if "qp" in extra:  # constant QP (qp=0: lossless x264) replaces CRF
            options.pop("crf")
        options.update(extra)
        super().__init__(path, width, height, fps, codec=codec, pix_fmt="yuv420p" if bits == 8 else "yuv420p10le",
                         bits=bits, options=options, data_track=data_track, copy_from=copy_from)

    def write(self, sdr_frame, payload: bytes | None = None) -> None:
        """Encode one BT.709 R'G'B' frame float32 ``(H, W, 3)`` in [0, 1], with optional payload bytes."""
        self._write_codes(self._check_frame(sdr_frame, "SDR"), payload)


def x265_hdr10_params(metadata: HDR10Metadata | None) -> str:
    """libx265's ``x265-params`` for HDR10: PQ BT.2020 NCL narrow-range signalling in the
    VUI, ``hdr10=1:repeat-headers=1`` and, with ``metadata``, its mastering display and
    MaxCLL/MaxFALL as SEI (:meth:`~itmfilter.colour.hdr10.HDR10Metadata.to_x265_params`)."""
    params = ("log-level=error:hdr10=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:"
              "colormatrix=bt2020nc:range=limited")
    return params + (":" + metadata.to_x265_params() if metadata is not None else "")


class Hdr10Writer(_VideoWriter):
    """Encode PQ BT.2020 frames as an HDR10 master: HEVC Main10 (libx265 or hevc_nvenc) or
    ProRes 422 HQ.

    ``write(pq)`` takes PQ BT.2020 R'G'B' float32 ``(H, W, 3)`` in [0, 1] (``write_nits``
    takes linear BT.2020 cd/m2) and converts exactly to BT.2020 NCL 10-bit limited-range
    Y'CbCr, 4:2:0 for HEVC, 4:2:2 for ``codec="prores_ks"`` (``.mov``); ``write_planes``
    takes finished 10-bit 4:2:0 planes (the per-frame filter's output). Tags bt2020 /
    smpte2084 / bt2020nc / tv go on the stream and every frame; libx265 also gets
    ``hdr10=1:repeat-headers=1`` and ``metadata`` (mastering display, MaxCLL/MaxFALL in
    cd/m2; default P3-D65 1000 cd/m2, light levels unknown) as SEI. ``hevc_nvenc`` (NVIDIA's
    encoder) takes no such option: give a ``packet_filter`` that inserts the SEI
    (:func:`itmfilter.track.sei.hdr10_sei_filter`), applied to every packet before it is
    muxed; ``encoder_sei=False`` leaves them to that filter with libx265 too. NVENC is fed
    P010 (the same codes, another layout), rate-controlled by constant quality ``crf`` and a
    preset mapped from x265's names (``medium`` -> ``p5``). ProRes carries the tags only
    (PyAV cannot write container-level HDR10 metadata). ``x265_params`` appends raw
    x265 options, e.g. ``"lossless=1"``.
    """

    _tags = _TAGS_HDR10
    _matrix = "bt2020nc"

    def __init__(self, path, width, height, fps, codec="libx265", crf=18, preset="medium",
                 metadata: HDR10Metadata | None = None, x265_params: str = "", data_track=False, copy_from=None,
                 packet_filter=None, encoder_sei: bool = True):
        metadata = metadata if metadata is not None else HDR10Metadata.p3_d65(1000.0)
        self.metadata = metadata
        frame_format = None
        if codec == "libx265":
            params = x265_hdr10_params(metadata if encoder_sei else None)
            if not encoder_sei:
                params = params.replace("hdr10=1:", "")  # no SEI of x265's own (it would write MaxCLL 0)
            if x265_params:
                params += ":" + x265_params.strip(":")
            options = {"crf": str(crf), "preset": str(preset), "x265-params": params}
            pix_fmt = "yuv420p10le"
        elif codec == "hevc_nvenc":
            options = {"preset": NVENC_PRESETS.get(str(preset), str(preset)), "tune": "hq", "rc": "vbr",
                       "cq": str(crf), "b": "0", "profile": "main10"}
            pix_fmt, frame_format = "p010le", "yuv420p10le"
        elif codec == "prores_ks":
            self._subsampling = "422"
            options = {"profile": "3", "vendor": "apl0"}  # profile 3 = 422 HQ
            pix_fmt = "yuv422p10le"
        else:
            raise ItmError(path, f"unknown HDR10 codec {codec!r}", "use libx265, hevc_nvenc or prores_ks")
        super().__init__(path, width, height, fps, codec=codec, pix_fmt=pix_fmt, bits=10, options=options,
                         data_track=data_track, copy_from=copy_from, packet_filter=packet_filter,
                         frame_format=frame_format)

    def write(self, pq_frame, payload: bytes | None = None) -> None:
        """Encode one PQ BT.2020 R'G'B' frame float32 ``(H, W, 3)`` in [0, 1]."""
        self._write_codes(self._check_frame(pq_frame, "PQ"), payload)

    def write_nits(self, nits_frame, payload: bytes | None = None) -> None:
        """Encode one linear BT.2020 frame float32 ``(H, W, 3)`` in cd/m2 (PQ-encoded here)."""
        nits = self._check_frame(nits_frame, "HDR")
        self._write_codes(eotf_inverse_st2084(np.asarray(nits, dtype=np.float32)), payload)

    def write_planes(self, planes, payload: bytes | None = None) -> None:
        """Encode one frame given as its BT.2020 NCL 10-bit narrow-range Y'CbCr 4:2:0 code
        planes: ``Y (H, W)``, ``Cb``/``Cr (H/2, W/2)``, integers 0-1023 (what
        :func:`itmfilter.render.frame.hdr10_planes` returns)."""
        if self._subsampling != "420":
            raise ItmError(self.path, "write_planes takes 4:2:0 planes", "write PQ frames with write() for ProRes")
        want = [(self.height, self.width)] + [(self.height // 2, self.width // 2)] * 2
        got = [tuple(np.shape(p)) for p in planes]
        if got != want:
            raise ItmError(self.path, f"planes of frame {self.frames_written} have shapes {got}, expected {want}",
                           "give Y at the writer's size and Cb, Cr at half of it")
        self._write_planes(planes, payload)


HEVC_ENCODERS = ("auto", "libx265", "hevc_nvenc")
"""``--video-codec`` of an HDR10 output: ``auto`` is ``hevc_nvenc`` where it opens, else libx265."""


@functools.lru_cache(maxsize=1)
def _nvenc_probe() -> str | None:
    """None when PyAV can open hevc_nvenc for 10-bit 4:2:0 here, else why not (one line)."""
    try:
        cc = av.CodecContext.create("hevc_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt = 256, 256, "p010le"
        cc.time_base = Fraction(1, 24)
        cc.options = {"profile": "main10"}
        cc.open()
        return None
    except Exception as exc:  # not in this FFmpeg build, no GPU, no driver, no free session
        return f"{type(exc).__name__}: {exc}"


def resolve_hevc_encoder(choice: str = "auto") -> tuple[str, str | None]:
    """The HEVC encoder for ``choice`` (:data:`HEVC_ENCODERS`) and a one-line note when
    ``auto`` fell back to libx265 (None otherwise). ``hevc_nvenc`` asked for by name but
    not usable here is an :class:`ItmError`."""
    if choice not in HEVC_ENCODERS:
        raise ItmError(None, f"unknown --video-codec {choice!r}", f"use one of {', '.join(HEVC_ENCODERS)}")
    if choice == "libx265":
        return "libx265", None
    why = _nvenc_probe()
    if why is None:
        return "hevc_nvenc", None
    if choice == "hevc_nvenc":
        raise ItmError(None, f"hevc_nvenc cannot be opened here ({why})", "use --video-codec libx265 or auto")
    return "libx265", f"hevc_nvenc is unavailable here ({why}): encoding with libx265"


NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
"""x265 preset names -> NVENC's (p1 fastest ... p7 best); NVENC's own names pass through."""


def _frame_plane(frame, index: int, dtype) -> np.ndarray:
    return plane_view(frame.planes[index], dtype)
