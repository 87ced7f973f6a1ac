"""What a decoded frame means, written once: its code planes, its presentation index, the
frame-rate rule, the opener every reader uses, and decoding ahead in a thread.

Every pipeline (encode, transcode, play, the weight-track readers) numbers frames the same
way: the presentation index ``round((t - t0) * fps)``, where ``t`` is the frame's
presentation time, ``t0`` the stream's start time (or the first frame's time when the
stream has none) and ``fps`` the rate of :func:`frame_rate`. Weights are keyed by that
index, never by decode order, so B-frames and remuxes keep them in place.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from itmfilter.errors import ItmError

DEFAULT_FPS = Fraction(24)
"""The rate assumed when a stream declares none at all (raw or damaged streams)."""


HWACCELS = ("none", "auto", "cuda")
"""Hardware decoding asked for by ``--hwaccel``: ``none`` (FFmpeg's software decoders),
``cuda`` (NVDEC through FFmpeg's CUDA hwaccel), ``auto`` (``cuda`` when it opens, else none)."""


def open_input(path: Path, hwaccel: str = "none"):
    """``av.open`` for reading, with :class:`ItmError` for a missing, non-file or unreadable
    input (one line naming the file and what to do). ``hwaccel`` other than ``none``: see
    :func:`open_input_hw` (the fallback note is dropped here)."""
    if hwaccel != "none":
        return open_input_hw(path, hwaccel)[0]
    if not path.exists():
        raise ItmError(path, "no such file", "check the path")
    if not path.is_file():
        raise ItmError(path, "is not a file", "give the path of a video file (or a folder of .exr frames)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ItmError(path, f"cannot be opened as a video ({exc.strerror or exc})",
                       "the file may be truncated, damaged or not a video; re-export it") from None


def open_input_hw(path: Path, hwaccel: str = "auto"):
    """Open ``path`` for hardware decoding (:data:`HWACCELS`); returns ``(container, note)``.

    PyAV >= 14 takes ``av.open(..., hwaccel=HWAccel(device_type))``; FFmpeg then decodes on
    the device and PyAV hands back frames copied to system memory in the decoder's
    software format (NV12/P010 for NVDEC; planes are read after a layout repack, as any
    semi-planar input). When the device cannot be opened (no GPU, no driver, an FFmpeg
    build without it) the file is opened for software decoding and ``note`` says so in
    one line, with the error and how long the failed attempt took; ``note`` is None when
    the hardware decoder opened or none was asked for.
    """
    if hwaccel not in HWACCELS:
        raise ItmError(None, f"unknown --hwaccel {hwaccel!r}", f"use one of {', '.join(HWACCELS)}")
    if hwaccel == "none":
        return open_input(path), None
    open_input(path).close()  # the file's own errors first, as one line
    started = time.perf_counter()
    try:
        from av.codec.hwaccel import HWAccel

        container = av.open(str(path), hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False))
        return container, None
    except Exception as exc:  # ImportError (PyAV < 14), PermissionError / FFmpegError (no device)
        ms = 1000 * (time.perf_counter() - started)
        note = (f"{path}: hardware decoding (NVDEC, --hwaccel {hwaccel}) is unavailable "
                f"({type(exc).__name__}: {exc}; the attempt took {ms:.0f} ms): decoding on the CPU")
        return open_input(path), note


def video_stream(container, path: Path):
    """The container's first video stream; :class:`ItmError` (container closed) if none."""
    if not container.streams.video:
        container.close()
        raise ItmError(path, "has no video stream", "give a video file")
    return container.streams.video[0]


def frame_rate(stream) -> Fraction:
    """The frame-rate rule: the stream's average rate, else FFmpeg's guess, else its base
    rate, else :data:`DEFAULT_FPS`."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return DEFAULT_FPS


def stream_origin(stream) -> float | None:
    """The stream's start time in seconds, or None when the container does not say."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else None


def presentation_index(seconds: float, origin: float, fps: Fraction | float) -> int:
    """The presentation index of a frame shown at ``seconds`` in a stream starting at
    ``origin`` seconds, at ``fps`` frames per second."""
    return int(round((seconds - origin) * float(fps)))


class PresentationClock:
    """Presentation indices of one stream's frames or packets from their ``pts``.

    The origin is the stream's start time; when the container gives none, the first
    ``pts`` seen becomes the origin."""

    def __init__(self, stream, fps: Fraction | None = None, origin: float | None = None) -> None:
        self.time_base = stream.time_base
        self.fps = fps if fps is not None else frame_rate(stream)
        self.origin = origin if origin is not None else stream_origin(stream)

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    def index(self, pts: int) -> int:
        t = self.seconds(pts)
        if self.origin is None:
            self.origin = t
        return presentation_index(t, self.origin, self.fps)


def settled_clock(container, stream) -> PresentationClock:
    """A :class:`PresentationClock` for ``stream`` whose origin is fixed before any seek:
    the stream's start time, or, when the container gives none, the ``pts`` of its first
    decoded frame (decoded here; the container is then seeked back to its start). Readers
    that start part-way (a seek, ``--start``) number frames as a reader from the start does."""
    clock = PresentationClock(stream)
    if clock.origin is None:
        first = next(container.decode(stream), None)
        if first is not None and first.pts is not None:
            clock.index(first.pts)
        container.seek(0)
    return clock


# --------------------------------------------------------------------------- planes

_PLANAR = {  # pix_fmt -> (bits, subsampling, full range)
    "yuv420p": (8, "420", False), "yuvj420p": (8, "420", True),
    "yuv422p": (8, "422", False), "yuvj422p": (8, "422", True),
    "yuv444p": (8, "444", False), "yuvj444p": (8, "444", True),
    "yuv420p10le": (10, "420", False), "yuv422p10le": (10, "422", False),
    "yuv444p10le": (10, "444", False),
}
_RANGE_JPEG = 2  # AVCOL_RANGE_JPEG: full range


@dataclass(frozen=True)
class Planes:
    """The Y'CbCr code planes of one decoded frame: views of its buffers (uint8 for 8-bit,
    uint16 for 10-bit), ``y`` ``(H, W)``, ``cb``/``cr`` at the chroma resolution of
    ``subsampling`` (``"420"``, ``"422"``, ``"444"``)."""

    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray
    bits: int
    subsampling: str
    full_range: bool


def plane_view(plane, dtype) -> np.ndarray:
    """A numpy view ``(height, width)`` of one ``av`` frame plane (line padding cut off)."""
    itemsize = np.dtype(dtype).itemsize
    arr = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // itemsize)
    return arr[:, : plane.width]


def code_planes(frame) -> Planes | None:
    """The :class:`Planes` of a planar 8/10-bit Y'CbCr frame, or None for other formats."""
    spec = _PLANAR.get(frame.format.name)
    if spec is None:
        return None
    bits, sub, full = spec
    full = full or getattr(frame, "color_range", 0) == _RANGE_JPEG
    dtype = np.uint8 if bits == 8 else np.uint16
    y, cb, cr = (plane_view(p, dtype) for p in frame.planes[:3])
    return Planes(y, cb, cr, bits, sub, full)


def is_planar_yuv(frame) -> bool:
    """Whether :func:`code_planes` reads ``frame`` directly (no repacking needed)."""
    return frame.format.name in _PLANAR


# --------------------------------------------------------------------------- decode-ahead


class DecodeAhead:
    """Demux and decode in a background thread, a few items ahead of the consumer.

    Iterating yields ``(packet, None)`` for packets of the non-video ``streams`` and
    ``(None, frame)`` for decoded frames of ``video``, in demux order. Decoding (FFmpeg,
    which releases the GIL) then overlaps the filter instead of adding to it: on a GPU the
    filter of a 2160p frame and its decode take comparable time; on a CPU the decoder uses
    the core the filter leaves idle. :meth:`close` stops and joins the thread; it must run
    before the container is closed.
    """

    _END = object()

    def __init__(self, src, streams, video, depth: int = 3) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(src, streams, video),
                                        daemon=True, name="itmfilter-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, src, streams, video) -> None:
        try:
            for packet in src.demux(*streams):
                if packet.stream is video:
                    for frame in packet.decode():
                        if not self._put((None, frame)):
                            return
                elif not self._put((packet, None)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
        finally:
            self._put(self._END)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
