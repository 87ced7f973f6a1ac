"""Play SDR video as HDR10 through mpv: the mpv session (options, events, keys, stats).

libmpv gives Python no per-frame filter hook and mpv shaders cannot change weights per
frame, so the filter runs here (:mod:`itmfilter.player.producer`) and mpv only displays:

    PyAV decode (SDR, exact BT.709 Y'CbCr -> R'G'B') -> weights provider(frame) -> ladder
    rung -> exact PQ R'G'B' -> 10-bit Y'CbCr BT.2020 NCL narrow range 4:2:0 -> NUT
    (rawvideo yuv420p10le + the source's audio packets, copied) -> os.pipe() -> mpv
    ``fdclose://`` with ``vf=format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq``

``output=`` (mpv encode mode) and ``vo="image"`` are not real time: every frame is filtered
and sent.

Keys: mpv's own (space pause, q quit, f fullscreen). With ``hdr`` the seek keys
(LEFT/RIGHT 5 s, UP/DOWN 60 s) are bound to a restart of the producer at the new
position, because mpv cannot seek in a pipe.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import mpv
import torch

from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output
from itmfilter.media.frames import frame_rate
from itmfilter.model.net import resolve_device
from itmfilter.player.producer import PlayStats, Session, open_decoder
from itmfilter.render import fastpath
from itmfilter.render.frame import auto_rung, choose_gain_mode, hdr10_frame
from itmfilter.render.ladder import GAIN_MODES, gain_mode, get_rung
from itmfilter.track.provider import WeightsProvider, blind_provider

HDR_VF = "format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq:colorlevels=limited"
"""NUT carries no colour tags: this mpv filter tags the frames as HDR10 (no conversion)."""

SEEK_KEYS = {"LEFT": -5.0, "RIGHT": 5.0, "UP": 60.0, "DOWN": -60.0}

VIDEO_OUTPUTS = ("gpu", "gpu-next", "null", "image")

_MPV_END_EOF = (0, "eof")  # MPV_END_FILE_REASON_EOF
_MPV_END_STOP = (2, "stop")  # MPV_END_FILE_REASON_STOP: the file was replaced


@dataclass
class _Observed:
    """What mpv reported while playing (property observers and events write it)."""

    params: dict | None = None
    out_params: dict | None = None
    frame: int | None = None
    count: int | None = None
    eof: bool = False
    replacing: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    drops: dict = field(default_factory=lambda: {"frame-drop-count": 0, "vo-drop-frame-count": 0})

    @property
    def mpv_drops(self) -> int:
        return int(self.drops["frame-drop-count"]) + int(self.drops["vo-drop-frame-count"])


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
    :class:`~itmfilter.track.provider.WeightsProvider`; default blind mode for every frame. ``realtime``: skip frames
    the filter cannot finish in time (default: on unless ``output``/``vo="image"``).
    ``gain``: how rungs below ``full`` carry the network to full resolution (``prior``,
    ``rgb``; ``auto``: :func:`~itmfilter.render.frame.choose_gain_mode` on the first frame; ``PlayStats.gain_mode``).
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


def _first_frame(path: Path):
    """``(frame, fps)``: the first decoded frame of ``path`` and its frame rate, for the
    start-up choices (gain mode, rung timing, warm-up), decoded once."""
    with av.open(str(path)) as src:
        vin = src.streams.video[0]
        return next(src.decode(vin)), float(frame_rate(vin))


def _mpv_options(*, hdr, vo, output, image_dir, quiet, mpv_options) -> dict:
    if vo not in VIDEO_OUTPUTS:
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
    options.update(mpv_options or {})
    return options


def _hdr_session(path: Path, provider: WeightsProvider, device, precision: str, rung: str, gain: str,
                 realtime: bool) -> Session:
    """The filter's start-up choices (gain mode, rung), made on the first frame, and the
    session that plays with them."""
    net0, _ = provider(0)
    if gain != "auto":
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
        chosen, timings = auto_rung(net0, first, fps, device, precision, gain)
    else:
        chosen, timings = get_rung(rung).name, {}
        # Filter the first frame once before the clock starts: the first call loads the
        # fused kernel and allocates; in real time its delay would make the next frames late.
        hdr10_frame(first, net0, chosen, device, precision, gain=gain)
    session = Session(path, provider, device, precision, chosen, realtime, with_audio=True)
    session.gain = gain
    session.stats.rung_timings = timings
    session.stats.gain_mode = gain
    return session


def _observe(player, seen: _Observed) -> None:
    def keep_drop(name, value):
        if value is not None:
            seen.drops[name] = value

    def keep_frame(_name, value):
        if value is not None:
            seen.frame = max(value, seen.frame or 0)

    def keep(attr):
        def update(_name, value):
            if value:
                setattr(seen, attr, value)
        return update

    for name in seen.drops:
        player.observe_property(name, keep_drop)
    player.observe_property("video-params", keep("params"))
    player.observe_property("video-out-params", keep("out_params"))
    player.observe_property("estimated-frame-number", keep_frame)
    player.observe_property("estimated-frame-count", lambda _n, v: v is not None and setattr(seen, "count", v))

    @player.event_callback("end-file")
    def _ended(event):
        reason = getattr(getattr(event, "data", None), "reason", None)
        if seen.replacing and reason in _MPV_END_STOP:
            seen.replacing -= 1
            return
        seen.eof = reason in _MPV_END_EOF
        seen.ended.set()


def _bind_seek_keys(player, session: Session, seen: _Observed) -> None:
    def seek_by(delta: float) -> None:
        pos = player.time_pos or 0.0
        seen.replacing += 1
        session.start(player, max(0.0, pos + delta))

    def on_key(key_state, *_rest, delta):
        if key_state[:1] in ("d", "p"):  # key down or a synthetic press
            seek_by(delta)

    for key, delta in SEEK_KEYS.items():
        player.register_key_binding(key, functools.partial(on_key, delta=delta))


def _play(path, *, hdr, vo, output, rung, device, precision, weights_provider, image_dir,
          realtime, mpv_options, on_player, quiet, gain="auto") -> PlayStats:
    path = Path(path)
    if not path.is_file():
        raise ItmError(path, "no such video file", "check the path")
    options = _mpv_options(hdr=hdr, vo=vo, output=output, image_dir=image_dir, quiet=quiet,
                           mpv_options=mpv_options)
    if realtime is None:
        realtime = output is None and vo != "image"
    torch_device = resolve_device(device)
    session = None
    stats = PlayStats()
    if hdr:
        session = _hdr_session(path, weights_provider or blind_provider(), torch_device, precision,
                               rung, gain, realtime)
        stats = session.stats
        options["vf"] = HDR_VF
    else:
        open_decoder(path, torch_device).close()  # unreadable input -> ItmError, not mpv noise

    seen = _Observed()
    with ExitStack() as stack:
        if output is not None:
            temp = stack.enter_context(atomic_output(output, inputs=[path]))
            options.update({"o": str(temp), "ovc": "ffv1", "oac": "flac"})
            if hdr:  # mpv 0.35 passes only the matrix to the encoder: tag the rest here
                options["ovcopts"] = ("color_primaries=bt2020,color_trc=smpte2084,"
                                      "colorspace=bt2020nc,color_range=tv")
        player = mpv.MPV(**options)
        _observe(player, seen)
        try:
            if session is not None:
                player.observe_property("pause", lambda _n, v: session.on_pause(bool(v)))
                _bind_seek_keys(player, session, seen)
                session.start(player, 0.0)
            else:
                player.play(str(path))
            if on_player is not None:
                on_player(player)
            while not seen.ended.wait(0.05):
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
    stats.video_params = dict(seen.params or {})
    stats.video_out_params = dict(seen.out_params or {})
    if session is not None:
        stats.frames_shown = max(0, stats.frames_sent - seen.mpv_drops)
        stats.frames_dropped = seen.mpv_drops + stats.frames_skipped
    else:
        stats.frames_dropped = seen.mpv_drops
        if seen.eof and seen.count:
            # played to the end: every frame of the file was shown or dropped (the last
            # estimated-frame-number update can come after mpv has stopped reporting)
            stats.frames_shown = max(0, int(seen.count) - seen.mpv_drops)
        else:
            stats.frames_shown = int(seen.frame) + 1 if seen.frame is not None else 0
    return stats


__all__ = ["HDR_VF", "PlayStats", "play"]
