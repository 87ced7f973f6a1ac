"""The real-time producer: decode, filter each frame to HDR10 and write one NUT stream
(rawvideo yuv420p10le + the source's audio packets, copied) into the pipe mpv plays.

Audio rides in the same NUT stream, packets copied with their source timestamps, rather
than given to mpv as ``audio-file=``: one stream and one clock keep sync by construction,
and a seek (which restarts the producer at the new position, since a pipe cannot seek)
brings the audio along.

Real time: the producer keeps a wall clock anchored at its first frame (moved on while
mpv is paused); a frame that is already more than a frame period late is decoded but not
filtered or sent (counted as skipped), and a :class:`~itmfilter.render.ladder.RungController`
steps down the ladder when too many drop.
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel

from itmfilter.errors import ItmError
from itmfilter.media.frames import (
    DecodeAhead,
    PresentationClock,
    frame_rate,
    stream_origin,
)
from itmfilter.render.frame import hdr10_frame
from itmfilter.render.ladder import LADDER, RungController
from itmfilter.track.provider import WeightsProvider

PREROLL_S = 0.25
"""Real time: the producer's clock starts this far behind its first frame, so the
start-up transient (mpv opening its outputs, caches filling, the first frames' allocations;
measured: the skipped frames of a 1080p run fell in its first 30 frames) is absorbed like
a player's pre-roll instead of being shed as skipped frames."""


@dataclass
class PlayStats:
    """What happened while playing.

    ``frames_shown``: frames mpv displayed (sent minus mpv's drops); ``frames_dropped``:
    mpv's dropped frames (``frame-drop-count`` + ``vo-drop-frame-count``) plus frames the
    producer skipped (``frames_skipped``); ``rung``: the rung in use at the end
    (``rung_changes``: ``(frame_index, rung)`` each time it changed); ``fps``: frames
    filtered per second of filter work (colour conversions + network, summed in
    ``filter_seconds``; decoding and waiting on mpv excluded); ``damaged_frames``:
    provider status other than ok/blind; ``blind_frames``: status ``"blind"``.
    """

    frames_shown: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    frames_sent: int = 0
    rung: str = ""
    fps: float = 0.0
    damaged_frames: int = 0
    blind_frames: int = 0
    rung_changes: list = field(default_factory=list)
    rung_timings: dict = field(default_factory=dict)
    gain_mode: str = ""
    restarts: int = 0
    filter_seconds: float = 0.0
    video_params: dict = field(default_factory=dict)
    video_out_params: dict = field(default_factory=dict)
    video_output: str = ""
    """The mpv video output that played, e.g. ``gpu-next`` or ``gpu-next with gpu-sw=yes``
    after a fallback (:func:`itmfilter.player.mpv.play`)."""
    user_quit: bool = False
    """mpv was quit before the end (``q``, the window closed, a ``quit`` command)."""


def open_decoder(path: Path, device):
    hwaccel = None
    if device.type == "cuda":
        try:
            hwaccel = HWAccel(device_type="cuda", allow_software_fallback=True)
        except Exception:  # no CUDA decoder in this FFmpeg build: software decoding
            hwaccel = None
    try:
        return av.open(str(path), hwaccel=hwaccel) if hwaccel else av.open(str(path))
    except av.FFmpegError as exc:
        raise ItmError(path, f"cannot be opened as a video ({exc})",
                       "check that it is a video file PyAV/FFmpeg can read") from None


class _PipeSink(io.FileIO):
    """The write end of mpv's pipe; remembers when mpv closed the other end."""

    reader_gone = False

    def write(self, data):
        try:
            return super().write(data)
        except BrokenPipeError:
            self.reader_gone = True
            raise


class Producer(threading.Thread):
    """Decode, filter and write one NUT stream into ``write_fd``, from ``start_s`` on.

    mpv closing its end of the pipe (a seek or fallback replaced the stream, the file
    ended, the player quit or died) ends the thread quietly: PyAV reports it as a
    ``BrokenPipeError`` or, from its I/O callback, as ``av.error.PyAVCallbackError``, and
    :func:`itmfilter.player.mpv.play` learns from mpv's own events what happened.
    Anything else is kept in ``error``.
    """

    def __init__(self, session: "Session", write_fd: int, start_s: float) -> None:
        super().__init__(daemon=True, name="itmfilter-producer")
        self.session = session
        self.write_fd = write_fd
        self.start_s = start_s
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.sink: _PipeSink | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by play()
            reader_gone = isinstance(exc, BrokenPipeError) or (self.sink is not None and self.sink.reader_gone)
            if not (reader_gone or self.stop.is_set()):
                self.error = exc
        finally:
            if self.write_fd is not None:  # never wrapped: close it here
                try:
                    os.close(self.write_fd)
                except OSError:
                    pass

    def _run(self) -> None:
        s = self.session
        src = open_decoder(s.path, s.device)
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if (s.with_audio and src.streams.audio) else None
        vin.thread_type = "AUTO"
        fps = frame_rate(vin)
        period = 1.0 / float(fps)
        clock = PresentationClock(vin, fps=fps, origin=stream_origin(vin) or 0.0)
        if self.start_s > 0:
            src.seek(int(self.start_s / vin.time_base), stream=vin, backward=True)
        sink = self.sink = _PipeSink(self.write_fd, "wb", closefd=True)
        self.write_fd = None  # sink owns it now
        out = av.open(sink, mode="w", format="nut")
        vout = out.add_stream("rawvideo", rate=fps)
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = "yuv420p10le"
        vout.time_base = vin.time_base
        aout = out.add_stream_from_template(ain) if ain is not None else None
        anchor = None
        streams = [vin] + ([ain] if ain is not None else [])
        ahead = DecodeAhead(src, streams, vin)
        try:
            for packet, frame in ahead:
                if self.stop.is_set():
                    return
                if packet is not None:  # audio: copied through
                    if packet.dts is None or packet.pts is None:
                        continue
                    if packet.pts * packet.time_base < self.start_s - 0.05:
                        continue
                    packet.stream = aout
                    out.mux(packet)
                    continue
                t = float(frame.pts * vin.time_base) if frame.pts is not None else 0.0
                if t < self.start_s - period / 2:
                    continue
                index = clock.index(frame.pts) if frame.pts is not None else 0
                if s.realtime:
                    now = time.perf_counter() - s.paused_total()
                    if anchor is None:
                        anchor = now - t + PREROLL_S
                    late = now - (anchor + t)
                    if late > period:
                        s.frame_skipped(index)
                        continue
                busy = time.perf_counter()
                net, status = s.provider(index)
                s.count_status(status)
                vf = hdr10_frame(frame, net, s.controller.rung, s.device, s.precision, gain=s.gain)
                s.add_filter_time(time.perf_counter() - busy)
                vf.pts = frame.pts
                vf.time_base = vin.time_base
                for p in vout.encode(vf):
                    out.mux(p)
                s.frame_sent(index)
            for p in vout.encode():
                out.mux(p)
        finally:
            ahead.close()
            try:
                out.close()
            finally:
                src.close()
                sink.close()


class Session:
    """Shared state of one HDR playback: settings, counters, the current producer."""

    def __init__(self, path: Path, provider: WeightsProvider, device, precision: str, rung: str,
                 realtime: bool, with_audio: bool, ladder: tuple[str, ...] = LADDER) -> None:
        self.path = path
        self.provider = provider
        self.device = device
        self.precision = precision
        self.realtime = realtime
        self.with_audio = with_audio
        self.first_rung = rung
        self.ladder = ladder  # the rungs to step down on drops (a grid track has its own)
        self.controller = RungController(rung, ladder=ladder)
        self.gain = "auto"
        self.stats = PlayStats(rung=rung)
        self.lock = threading.Lock()
        self.producer: Producer | None = None
        self.producers: list[Producer] = []
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self.started = time.perf_counter()

    def paused_total(self) -> float:
        with self.lock:
            extra = time.perf_counter() - self._paused_since if self._paused_since else 0.0
            return self._paused_total + extra

    def on_pause(self, paused: bool) -> None:
        with self.lock:
            if paused and self._paused_since is None:
                self._paused_since = time.perf_counter()
            elif not paused and self._paused_since is not None:
                self._paused_total += time.perf_counter() - self._paused_since
                self._paused_since = None

    def add_filter_time(self, seconds: float) -> None:
        with self.lock:
            self.stats.filter_seconds += seconds

    def count_status(self, status: str) -> None:
        with self.lock:
            if status == "blind":
                self.stats.blind_frames += 1
            elif status != "ok":
                self.stats.damaged_frames += 1

    def frame_sent(self, index: int) -> None:
        with self.lock:
            self.stats.frames_sent += 1
            self._step(index, False)

    def frame_skipped(self, index: int) -> None:
        with self.lock:
            self.stats.frames_skipped += 1
            self._step(index, True)

    def _step(self, index: int, dropped: bool) -> None:
        before = self.controller.rung
        after = self.controller.frame_done(dropped)
        if after != before:
            self.stats.rung_changes.append((index, after))

    def forget_counts(self) -> None:
        """Zero the frame counters and the rung's history: the frames sent so far went to
        an output that failed (their lateness says nothing about the next one)."""
        with self.lock:
            self.controller = RungController(self.first_rung, ladder=self.ladder)
            kept = PlayStats(rung=self.stats.rung, rung_timings=self.stats.rung_timings,
                             gain_mode=self.stats.gain_mode)
            self.stats.__dict__.update(kept.__dict__)

    def stop_all(self, timeout: float = 10.0) -> BaseException | None:
        """Stop every producer this session started and wait for them; the first error."""
        for producer in self.producers:
            producer.stop.set()
        for producer in self.producers:
            producer.join(timeout=timeout)
        return next((p.error for p in self.producers if p.error is not None), None)

    def start(self, player, start_s: float = 0.0, seek: bool = True) -> None:
        """(Re)start the producer at ``start_s`` seconds and point mpv at its pipe
        (``seek``: counted in ``restarts``; a fallback to another video output is not)."""
        old = self.producer
        if old is not None:
            old.stop.set()
            if seek:
                self.stats.restarts += 1
        read_fd, write_fd = os.pipe()
        self.producer = Producer(self, write_fd, start_s)
        self.producers.append(self.producer)
        self.producer.start()
        # mpv takes ownership of read_fd and closes it (fdclose://); replacing the file
        # closes the old pipe, which ends the old producer with a broken pipe.
        player.play(f"fdclose://{read_fd}")
