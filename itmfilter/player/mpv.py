"""Play SDR video as HDR10 through mpv, running each frame's network in Python.

libmpv gives Python no per-frame filter hook and mpv shaders cannot change weights per
frame (../shared/FACTS.md), so the filter runs here and mpv only displays:

    PyAV decode (SDR, exact BT.709 Y'CbCr -> R'G'B') -> weights_provider(frame) -> ladder
    rung -> exact PQ R'G'B' -> 10-bit Y'CbCr BT.2020 NCL narrow range 4:2:0 -> NUT
    (rawvideo yuv420p10le + the source's audio packets, copied) -> os.pipe() -> mpv
    ``fdclose://`` with ``vf=format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq``

Audio is muxed into the same NUT stream, packets copied with their source timestamps,
rather than given to mpv as ``audio-file=``: one stream and one clock keep sync by
construction, and a seek (which restarts the producer at the new position, since a pipe
cannot seek) brings the audio along without asking mpv to seek an external file beside an
unseekable main stream.

Real time: the producer keeps a wall clock anchored at its first frame (moved on while
mpv is paused); a frame that is already more than a frame period late is decoded but not
filtered or sent (counted as skipped), and a :class:`~itmfilter.ladder.RungController`
steps down the ladder when too many drop. ``output=`` (mpv encode mode) and ``vo="image"``
are not real time: every frame is filtered and sent.

Keys: mpv's own (space pause, q quit, f fullscreen). With ``hdr`` the seek keys
(LEFT/RIGHT 5 s, UP/DOWN 60 s) are bound to a restart of the producer at the new
position, because mpv cannot seek in a pipe.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from itmfilter.errors import ItmError

HDR_VF = "format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq:colorlevels=limited"
"""NUT carries no colour tags: this mpv filter tags the frames as HDR10 (no conversion)."""

PREROLL_S = 0.25
"""Real time: the producer's clock starts this far behind its first frame, so the
start-up transient (mpv opening its outputs, caches filling, the first frames' allocations;
measured: the skipped frames of a 1080p run fell in its first 30 frames) is absorbed like
a player's pre-roll instead of being shed as skipped frames."""

SEEK_KEYS = {"LEFT": -5.0, "RIGHT": 5.0, "UP": 60.0, "DOWN": -60.0}

WeightsProvider = Callable[[int], tuple]
"""``provider(frame_index) -> (ITMNet, status)``; ``frame_index`` counts presentation order
from 0; ``status`` is ``"ok"``, ``"blind"`` (no metadata: blind mode) or anything else for
frames whose metadata was damaged (counted in :attr:`PlayStats.damaged_frames`)."""


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


# --------------------------------------------------------------------------- frames


_PLANAR = {  # pix_fmt -> (bits, subsampling, full range)
    "yuv420p": (8, "420", False), "yuvj420p": (8, "420", True),
    "yuv422p": (8, "422", False), "yuvj422p": (8, "422", True),
    "yuv444p": (8, "444", False), "yuvj444p": (8, "444", True),
    "yuv420p10le": (10, "420", False), "yuv422p10le": (10, "422", False),
    "yuv444p10le": (10, "444", False),
}


def _plane(plane, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    arr = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // itemsize)
    return arr[:, : plane.width]


def sdr_frame_to_rgb(frame) -> np.ndarray:
    """A decoded SDR ``av.VideoFrame`` -> ``(H, W, 3)`` BT.709 R'G'B' [0, 1] float32.

    Exact: the Y'CbCr planes go through :func:`~itmfilter.colour.ycbcr.upsample_chroma` and
    :func:`~itmfilter.colour.ycbcr.ycbcr_to_rgb` (BT.709, the frame's range), not through
    swscale's matrix. Formats other than planar 8/10-bit Y'CbCr are first repacked to
    yuv420p10le (a layout change only).
    """
    from itmfilter.colour.ycbcr import upsample_chroma, ycbcr_to_rgb

    if frame.format.name not in _PLANAR:
        frame = frame.reformat(format="yuv420p10le")
    y, cb, cr, bits, sub, full = _code_planes(frame)
    codes = upsample_chroma(y.astype(np.float32), cb, cr, sub)
    rgb = ycbcr_to_rgb(codes, "bt709", bits, full, dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def pq_to_yuv420p10(pq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` PQ BT.2020 R'G'B' [0, 1] -> 10-bit Y, Cb, Cr planes (uint16).

    Exact BT.2100 formulas (:func:`~itmfilter.colour.ycbcr.rgb_to_ycbcr`, BT.2020 NCL,
    narrow range), then :func:`~itmfilter.colour.ycbcr.subsample_chroma` (4:2:0,
    chroma_loc_type 0). Y is ``(H, W)``, Cb and Cr ``(ceil(H/2), ceil(W/2))``.
    """
    from itmfilter.colour.ycbcr import rgb_to_ycbcr, subsample_chroma

    return subsample_chroma(rgb_to_ycbcr(pq, "bt2020nc", 10, False), "420")


def yuv420p10_frame(planes) -> "av.VideoFrame":
    """An ``av.VideoFrame`` (yuv420p10le) holding the planes of :func:`pq_to_yuv420p10`."""
    import av

    y = planes[0]
    frame = av.VideoFrame(y.shape[1], y.shape[0], "yuv420p10le")
    for plane, values in zip(frame.planes, planes):
        view = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        view[:, : plane.width] = values
    return frame


def _code_planes(frame):
    """``(y, cb, cr, bits, subsampling, full_range)`` of a planar Y'CbCr frame of
    :data:`_PLANAR` (views of its buffers, uint8 or uint16), or None for other formats."""
    spec = _PLANAR.get(frame.format.name)
    if spec is None:
        return None
    bits, sub, full = spec
    full = full or getattr(frame, "color_range", 0) == 2  # AVCOL_RANGE_JPEG
    dtype = np.uint8 if bits == 8 else np.uint16
    y, cb, cr = (_plane(p, dtype) for p in frame.planes[:3])
    return y, cb, cr, bits, sub, full


def planes420(frame):
    """``(y, cb, cr, bits, full_range)``: the code planes of a 4:2:0 8/10-bit frame (views of
    its buffers, uint8 or uint16), or None for other layouts."""
    codes = _code_planes(frame)
    if codes is None or codes[4] != "420":
        return None
    y, cb, cr, bits, _, full = codes
    return y, cb, cr, bits, full


def _torch_planes(planes, device):
    """:func:`planes420`'s planes as tensors on ``device`` (10-bit codes as int16: torch has
    no uint16 arithmetic)."""
    import torch

    y, cb, cr, bits, _ = planes
    dtype = np.uint8 if bits == 8 else np.int16
    return [torch.from_numpy(np.ascontiguousarray(p).view(dtype)).to(device, non_blocking=True)
            for p in (y, cb, cr)]


def hdr10_frame(frame, net, rung: str, device, precision: str = "auto", *,
                path: str = "auto", gain: str = "auto") -> "av.VideoFrame":
    """One decoded SDR frame -> the HDR10 frame the player sends (yuv420p10le, BT.2020 NCL,
    PQ, narrow range), through ``net`` at ``rung``.

    ``path``:

    - ``torch`` (auto on CUDA, for 4:2:0 input): the frame stays on ``device`` from its
      4:2:0 planes to the output planes (:mod:`itmfilter.colour.tensor`);
    - ``fused`` (auto on a CPU for the gain rungs with 4:2:0 input, when numba is there):
      :mod:`itmfilter.render.fastpath`, one multi-threaded pass from planes to planes;
    - ``exact``: the float64 numpy conversions (:func:`sdr_frame_to_rgb`,
      :func:`pq_to_yuv420p10`) around :func:`itmfilter.ladder.apply_rung`.

    All give the same codes up to 1 (rare half-code ties; the fused path's low-resolution
    input averages Y'CbCr before the clip to [0, 1]); tested. ``gain``: how a rung below
    ``full`` carries the network to full resolution (:func:`itmfilter.ladder.gain_mode`).
    """
    import torch

    from itmfilter.render import fastpath
    from itmfilter.render.ladder import apply_rung, apply_rung_tensor, get_rung

    device = torch.device(device)
    planes = planes420(frame)
    downscale = get_rung(rung).downscale
    if path == "auto":
        if device.type == "cuda":
            path = "torch"
        elif downscale > 1 and downscale % 2 == 0 and fastpath.available():
            path = "fused"
        else:
            path = "exact"
    if path == "torch" and planes is not None:
        from itmfilter.colour.tensor import planes420_to_rgb, rgb_to_planes420

        y, cb, cr = _torch_planes(planes, device)
        sdr = planes420_to_rgb(y, cb, cr, bits=planes[3], full_range=planes[4])
        pq = apply_rung_tensor(net, sdr, rung, device, precision, gain=gain)
        out = [p.to(dtype=torch.int16).cpu().numpy().view(np.uint16)
               for p in rgb_to_planes420(pq, bits=10, full_range=False)]
        return yuv420p10_frame(out)
    if path == "fused" and device.type == "cpu" and downscale > 1 and planes is not None:
        return yuv420p10_frame(fastpath.hdr10_planes(net, planes, downscale, precision=precision, gain=gain))
    pq = apply_rung(net, sdr_frame_to_rgb(frame), rung, device, precision, gain=gain)
    return yuv420p10_frame(pq_to_yuv420p10(pq))


class DecodeAhead:
    """Demux and decode in a background thread, a few items ahead of the filter.

    Iterating yields ``(packet, None)`` for packets of the non-video ``streams`` and
    ``(None, frame)`` for decoded frames of ``video``, in demux order. Decoding (FFmpeg,
    which releases the GIL) then overlaps the filter instead of adding to it: on a GPU the
    filter of a 2160p frame and its decode take comparable time; on a CPU the decoder uses
    the core the filter leaves idle. :meth:`close` stops and joins the thread; it must run
    before the container is closed.
    """

    _END = object()

    def __init__(self, src, streams, video, depth: int = 3) -> None:
        import queue

        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(src, streams, video),
                                        daemon=True, name="itmfilter-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

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
        import queue

        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


# --------------------------------------------------------------------------- producer


def _blind_provider():
    from itmfilter.model.initial import load_init

    net, _ = load_init(name="blind")
    return lambda index: (net, "blind")


def _open_decoder(path: Path, device):
    import av

    hwaccel = None
    if device.type == "cuda":
        try:
            from av.codec.hwaccel import HWAccel

            hwaccel = HWAccel(device_type="cuda", allow_software_fallback=True)
        except Exception:  # no CUDA decoder in this FFmpeg build: software decoding
            hwaccel = None
    try:
        return av.open(str(path), hwaccel=hwaccel) if hwaccel else av.open(str(path))
    except av.FFmpegError as exc:
        raise ItmError(path, f"cannot be opened as a video ({exc})",
                       "check that it is a video file PyAV/FFmpeg can read") from None


class _Producer(threading.Thread):
    """Decode, filter and write one NUT stream into ``write_fd``, from ``start_s`` on."""

    def __init__(self, session: "_Session", write_fd: int, start_s: float) -> None:
        super().__init__(daemon=True, name="itmfilter-producer")
        self.session = session
        self.write_fd = write_fd
        self.start_s = start_s
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except (BrokenPipeError, OSError) as exc:
            if not self.stop.is_set() and not isinstance(exc, BrokenPipeError):
                self.error = exc
        except BaseException as exc:  # reported by play()
            self.error = exc
        finally:
            if self.write_fd is not None:  # never wrapped: close it here
                try:
                    os.close(self.write_fd)
                except OSError:
                    pass

    def _run(self) -> None:
        import av

        s = self.session
        src = _open_decoder(s.path, s.device)
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if (s.with_audio and src.streams.audio) else None
        vin.thread_type = "AUTO"
        period = 1.0 / float(vin.average_rate or vin.guessed_rate or 24)
        origin = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        if self.start_s > 0:
            src.seek(int(self.start_s / vin.time_base), stream=vin, backward=True)
        sink = os.fdopen(self.write_fd, "wb", buffering=0)
        self.write_fd = None  # sink owns it now
        out = av.open(sink, mode="w", format="nut")
        vout = out.add_stream("rawvideo", rate=vin.average_rate or 24)
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
                index = int(round((t - origin) / period))  # presentation order
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


# --------------------------------------------------------------------------- session


class _Session:
    """Shared state of one HDR playback: settings, counters, the current producer."""

    def __init__(self, path, provider, device, precision, rung, realtime, with_audio):
        from itmfilter.render.ladder import RungController

        self.path = path
        self.provider = provider
        self.device = device
        self.precision = precision
        self.realtime = realtime
        self.with_audio = with_audio
        self.controller = RungController(rung)
        self.gain = "auto"
        self.stats = PlayStats(rung=rung)
        self.lock = threading.Lock()
        self.producer: _Producer | None = None
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

    def start(self, player, start_s: float = 0.0) -> None:
        """(Re)start the producer at ``start_s`` seconds and point mpv at its pipe."""
        old = self.producer
        if old is not None:
            old.stop.set()
            self.stats.restarts += 1
        read_fd, write_fd = os.pipe()
        self.producer = _Producer(self, write_fd, start_s)
        self.producer.start()
        # mpv takes ownership of read_fd and closes it (fdclose://); replacing the file
        # closes the old pipe, which ends the old producer with a broken pipe.
        player.play(f"fdclose://{read_fd}")


# --------------------------------------------------------------------------- play


def choose_gain_mode(net, frame, rung: str = "eighth", device="cpu", samples: int = 4096) -> str:
    """``prior`` or ``rgb`` for ``net`` on this content (:func:`itmfilter.ladder.gain_mode`):
    both rungs are run on ``frame`` and compared with the full network at ``samples``
    random pixels; the smaller mean PQ error wins. A global tone curve is carried almost
    exactly by ``prior`` (its polynomial is per pixel); a spatially varying grade is often
    better by ``rgb`` (a local exposure is a gain). Networks without an ``mmr3`` prior: ``rgb``."""
    import torch

    from itmfilter.render.ladder import apply_rung
    from itmfilter.model.net import pixel_grid

    if net.config.prior != "mmr3":
        return "rgb"
    sdr = sdr_frame_to_rgb(frame)
    h, w, _ = sdr.shape
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, h * w, (min(samples, h * w),), generator=gen)
    rgb = torch.from_numpy(sdr).reshape(-1, 3)[idx]
    xy = pixel_grid(h, w).reshape(-1, 2)[idx]
    with torch.no_grad():
        truth = net.to("cpu").eval()(rgb, xy).clamp(0.0, 1.0)
    errors = {}
    for mode in ("prior", "rgb"):
        pq = torch.from_numpy(apply_rung(net, sdr, rung, device, "fp32", gain=mode)).reshape(-1, 3)[idx]
        errors[mode] = float((pq - truth).abs().mean())
    return min(errors, key=errors.get)


def _first_frame(path: Path):
    """``(frame, fps)``: the first decoded frame of ``path`` and its frame rate, for the
    start-up choices (gain mode, rung timing, warm-up), decoded once."""
    import av

    with av.open(str(path)) as src:
        vin = src.streams.video[0]
        return next(src.decode(vin)), float(vin.average_rate or vin.guessed_rate or 24)


def _auto_rung(net, frame, fps: float, device, precision, gain: str = "auto") -> tuple[str, dict]:
    """Time the rungs on the first frame, through the same per-frame path the producer
    uses (decode excluded: it runs ahead in its own thread), and pick the best that fits
    the frame period. Rungs are timed cheapest first and the timing stops at the first
    rung that takes over twice the period (the better ones are slower still). The first
    call of each rung is untimed: it also warms the filter up (JIT cache, allocations)."""
    import statistics

    from itmfilter.render.ladder import RUNGS, choose_rung

    timings: dict[str, float] = {}
    for rung in reversed(RUNGS):
        hdr10_frame(frame, net, rung.name, device, precision, gain=gain)  # warm-up (and JIT compile)
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            hdr10_frame(frame, net, rung.name, device, precision, gain=gain)
            runs.append(time.perf_counter() - t)
        timings[rung.name] = statistics.median(runs)
        if timings[rung.name] > 2.0 / fps:
            break
    return choose_rung(1.0 / fps, timings), timings


def play(
    path: str | os.PathLike,
    *,
    hdr: bool,
    vo: str = "gpu",
    output: str | os.PathLike | None = None,
    rung: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    weights_provider: WeightsProvider | None = None,
    image_dir: str | os.PathLike | None = None,
    realtime: bool | None = None,
    mpv_options: dict | None = None,
    threads: int | None = None,
    fused_threads: int | None = None,
    gain: str = "auto",
    on_player: Callable | None = None,
    quiet: bool = False,
) -> PlayStats:
    """Play ``path`` with mpv; with ``hdr``, as HDR10 reconstructed frame by frame.

    ``vo``: ``"gpu"`` (a window; with ``hdr`` this becomes ``gpu-next`` with
    ``target-colorspace-hint=yes`` so an HDR display switches to PQ), ``"null"`` (no
    output, for tests and timing) or ``"image"`` (PNG files into ``image_dir``).
    ``output``: a file (e.g. ``.mkv``) recorded by mpv's encode mode (``o=``, lossless
    FFV1) with exactly the frames mpv was given; written atomically. ``rung``: a ladder
    rung name or ``"auto"`` (timed on the first frame). ``weights_provider``: see
    :data:`WeightsProvider`; default blind mode for every frame. ``realtime``: skip frames
    the filter cannot finish in time (default: on unless ``output``/``vo="image"``).
    ``gain``: how rungs below ``full`` carry the network to full resolution (``prior``,
    ``rgb``; ``auto``: :func:`choose_gain_mode` on the first frame; ``PlayStats.gain_mode``).
    ``fused_threads``: threads of the fused CPU pass (:mod:`itmfilter.render.fastpath`; ``None``:
    numba's default, every core: its work is split into equal row blocks and finishes
    before the decoder needs the core again).
    ``threads``: torch CPU threads while playing (restored after). ``None`` leaves one
    core to the decoder and mpv: ``min(torch threads, cores - 1)``, at least 1. torch's
    OpenMP threads spin, and on 2 cores shared with mpv, the decoder or other jobs a
    2-thread network call was measured 10-20x slower than a 1-thread one
    (players/README.md).
    ``on_player``: called with the ``mpv.MPV`` once playback started (embedding, tests:
    e.g. ``player.command("keypress", "RIGHT")``).
    Raises :class:`ItmError` for a missing or unreadable input.
    """
    import torch

    from itmfilter.render import fastpath

    saved_threads = torch.get_num_threads()
    if threads is None:
        threads = max(1, min(saved_threads, (os.cpu_count() or 2) - 1))
    torch.set_num_threads(int(threads))
    saved_fused = fastpath.set_threads(fused_threads)
    try:
        return _play(path, hdr=hdr, vo=vo, output=output, rung=rung, device=device,
                     precision=precision, weights_provider=weights_provider,
                     image_dir=image_dir, realtime=realtime, mpv_options=mpv_options,
                     on_player=on_player, quiet=quiet, gain=gain)
    finally:
        torch.set_num_threads(saved_threads)
        fastpath.set_threads(saved_fused)


def _play(path, *, hdr, vo, output, rung, device, precision, weights_provider, image_dir,
          realtime, mpv_options, on_player, quiet, gain="auto") -> PlayStats:
    import mpv

    from itmfilter.render.ladder import get_rung
    from itmfilter.model.net import resolve_device

    path = Path(path)
    if not path.is_file():
        raise ItmError(path, "no such video file", "check the path")
    if vo not in ("gpu", "gpu-next", "null", "image"):
        raise ItmError(None, f"unknown video output {vo!r}", "use gpu, null or image")
    options = {"vo": vo, "idle": "yes", "keep_open": "no", "input_default_bindings": True,
               "input_vo_keyboard": True, "osc": vo in ("gpu", "gpu-next")}
    if quiet:
        options["msg_level"] = "all=error"
    if vo in ("null", "image") or output is not None:
        options["ao"] = "null"  # headless: no sound device needed
    if vo == "image":
        if image_dir is None:
            raise ItmError(None, "vo='image' needs image_dir", "give a folder for the PNG files")
        options["vo_image_outdir"] = str(image_dir)
        options["vo_image_format"] = "png"
    if hdr and vo in ("gpu", "gpu-next"):
        options["vo"] = "gpu-next"
        options["target_colorspace_hint"] = "yes"
    if realtime is None:
        realtime = output is None and vo != "image"
    options.update(mpv_options or {})

    torch_device = resolve_device(device)
    stats = PlayStats()
    session = None
    if hdr:
        provider = weights_provider or _blind_provider()
        net0, _ = provider(0)
        if gain != "auto":
            from itmfilter.render.ladder import GAIN_MODES, gain_mode

            if gain not in GAIN_MODES:
                raise ItmError(None, f"unknown gain mode {gain!r}", f"use auto or one of {', '.join(GAIN_MODES)}")
            try:
                gain = gain_mode(net0, gain)
            except ValueError as exc:
                raise ItmError(path, str(exc), "use --gain rgb or auto") from None
        first, fps = _first_frame(path)
        if gain == "auto":
            gain = choose_gain_mode(net0, first)
        if rung == "auto":
            chosen, timings = _auto_rung(net0, first, fps, torch_device, precision, gain)
        else:
            chosen, timings = get_rung(rung).name, {}
            # Filter the first frame once before the clock starts: the first call loads
            # the fused kernel and allocates; in real time its delay would make the next
            # frames late.
            hdr10_frame(first, net0, chosen, torch_device, precision, gain=gain)
        session = _Session(path, provider, torch_device, precision, chosen, realtime,
                           with_audio=True)
        session.gain = gain
        session.stats.rung_timings = timings
        session.stats.gain_mode = gain
        stats = session.stats
        options["vf"] = HDR_VF
    else:
        _open_decoder(path, torch_device).close()  # unreadable input -> ItmError, not mpv noise

    from contextlib import ExitStack

    from itmfilter.media.atomic import atomic_output

    with ExitStack() as stack:
        if output is not None:
            temp = stack.enter_context(atomic_output(output, inputs=[path]))
            options.update({"o": str(temp), "ovc": "ffv1", "oac": "flac"})
            if hdr:  # mpv 0.35 passes only the matrix to the encoder: tag the rest here
                options["ovcopts"] = ("color_primaries=bt2020,color_trc=smpte2084,"
                                      "colorspace=bt2020nc,color_range=tv")
        player = mpv.MPV(**options)
        drops = {"frame-drop-count": 0, "vo-drop-frame-count": 0}
        state = {"params": None, "out_params": None, "frame": None,
                 "ended": threading.Event(), "replacing": 0}

        def keep(name, value):
            if value is not None:
                drops[name] = value

        for name in drops:
            player.observe_property(name, keep)
        player.observe_property("video-params", lambda _n, v: v and state.update(params=v))
        player.observe_property("video-out-params",
                                lambda _n, v: v and state.update(out_params=v))
        def keep_frame(_name, value):
            if value is not None:
                state["frame"] = max(value, state["frame"] or 0)

        player.observe_property("estimated-frame-number", keep_frame)
        player.observe_property("estimated-frame-count",
                                lambda _n, v: v is not None and state.update(count=v))

        @player.event_callback("end-file")
        def _ended(event):
            reason = getattr(getattr(event, "data", None), "reason", None)
            if state["replacing"] and reason in (2, "stop"):  # MPV_END_FILE_REASON_STOP
                state["replacing"] -= 1
                return
            state["eof"] = reason in (0, "eof")  # MPV_END_FILE_REASON_EOF
            state["ended"].set()

        try:
            if session is not None:
                player.observe_property("pause", lambda _n, v: session.on_pause(bool(v)))

                def seek_by(delta: float) -> None:
                    pos = player.time_pos or 0.0
                    state["replacing"] += 1
                    session.start(player, max(0.0, pos + delta))

                def on_key(key_state, *_rest, delta):
                    if key_state[:1] in ("d", "p"):  # key down or a synthetic press
                        seek_by(delta)

                for key, delta in SEEK_KEYS.items():
                    player.register_key_binding(key, functools.partial(on_key, delta=delta))
                session.start(player, 0.0)
            else:
                player.play(str(path))
            if on_player is not None:
                on_player(player)
            while not state["ended"].wait(0.05):
                if player.core_idle is None:
                    break
        except mpv.ShutdownError:
            pass  # the user quit
        finally:
            try:
                player.terminate()
            except Exception:
                pass
        if session is not None and session.producer is not None:
            session.producer.stop.set()
            session.producer.join(timeout=10)
            if session.producer.error is not None:
                raise session.producer.error
            busy = stats.filter_seconds
            stats.fps = stats.frames_sent / busy if busy > 0 else 0.0
            stats.rung = session.controller.rung
    mpv_drops = int(drops["frame-drop-count"]) + int(drops["vo-drop-frame-count"])
    stats.video_params = dict(state["params"] or {})
    stats.video_out_params = dict(state["out_params"] or {})
    if session is not None:
        stats.frames_shown = max(0, stats.frames_sent - mpv_drops)
        stats.frames_dropped = mpv_drops + stats.frames_skipped
    else:
        stats.frames_dropped = mpv_drops
        if state.get("eof") and state.get("count"):
            # played to the end: every frame of the file was shown or dropped (the last
            # estimated-frame-number update can come after mpv has stopped reporting)
            stats.frames_shown = max(0, int(state["count"]) - mpv_drops)
        else:
            stats.frames_shown = int(state["frame"]) + 1 if state["frame"] is not None else 0
    return stats


__all__ = ["HDR_VF", "PlayStats", "WeightsProvider", "play", "pq_to_yuv420p10", "sdr_frame_to_rgb",
           "yuv420p10_frame"]
