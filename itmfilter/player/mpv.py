"""Play SDR video as HDR10 through mpv: the mpv session (options, events, keys, stats).

libmpv gives Python no per-frame filter hook and mpv shaders cannot change weights per
frame, so the filter runs here (:mod:`itmfilter.player.producer`) and mpv only displays:

    PyAV decode (SDR, exact BT.709 Y'CbCr -> R'G'B') -> weights provider(frame) -> ladder
    rung -> exact PQ R'G'B' -> 10-bit Y'CbCr BT.2020 NCL narrow range 4:2:0 -> NUT
    (rawvideo yuv420p10le + the source's audio packets, copied) -> os.pipe() -> mpv
    ``fdclose://`` with ``vf=format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq:...``

``output=`` (mpv encode mode) and ``vo="image"`` are not real time: every frame is filtered
and sent.

Options, in the order they are applied (a later one wins): itmfilter's defaults that a
user may change (``osc``, key bindings), then the user's mpv config (``mpv.conf``,
``input.conf``, scripts under ``$MPV_HOME`` or ``~/.config/mpv``, loaded as mpv itself
does; by default only for a window), then what playback needs (``vo``, ``vf``, ``idle``,
``keep-open``, ``target-colorspace-hint``, ...), then the caller's ``mpv_options``
(pass-through, checked by mpv: an unknown option or bad value is an :class:`ItmError`).

Video output: mpv reports a failed output through its log (``vo/...`` errors, then the
fatal "Error opening/initializing the selected video_out") and ends the file with an
error. A window output (``gpu``/``gpu-next``) then falls back to ``gpu-sw=yes``
(software OpenGL/Vulkan, e.g. Mesa llvmpipe: a machine without a usable GPU, Xvfb), and
SDR playback further to ``vo=x11``; with none left, one :class:`ItmError` line names mpv,
the outputs tried, mpv's reason and what to do.

Keys: mpv's own (space pause, q quit, f fullscreen). With ``hdr`` the seek keys
(LEFT/RIGHT 5 s, UP/DOWN 60 s) are bound to a restart of the producer at the new
position, because mpv cannot seek in a pipe. Quitting (``q``, closing the window, a
``quit`` command) returns normally with ``PlayStats.user_quit``.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import mpv
import torch

from itmfilter.colour.transfer import SDR_WHITE_NITS_BT2408
from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output
from itmfilter.media.frames import frame_rate
from itmfilter.model.grid import PlacedGrid
from itmfilter.model.net import resolve_device
from itmfilter.player.producer import PlayStats, Session, open_decoder
from itmfilter.render import fastpath
from itmfilter.render.frame import auto_rung, choose_gain_mode, hdr10_frame, warm_grid_rungs
from itmfilter.render.ladder import GAIN_MODES, GRID_LADDER, LADDER, gain_mode, get_rung
from itmfilter.track.provider import WeightsProvider, blind_provider

HDR_VF = "format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq:colorlevels=limited"
"""NUT carries no colour tags: this mpv filter tags the frames as HDR10 (no conversion).
:func:`hdr_vf` adds the signal peak."""

PQ_PEAK_NITS = 10000.0
"""The PQ signal's ceiling (SMPTE ST 2084), cd/m2: the peak assumed when none is known."""

SEEK_KEYS = {"LEFT": -5.0, "RIGHT": 5.0, "UP": 60.0, "DOWN": -60.0}

VIDEO_OUTPUTS = ("gpu", "gpu-next", "null", "image")
"""``vo=`` values :func:`play` takes; any other mpv output goes through
``mpv_options={"vo": ...}``."""

WINDOW_OUTPUTS = ("gpu", "gpu-next")

_MPV_END_EOF = (0, "eof")  # MPV_END_FILE_REASON_EOF
_MPV_END_STOP = (2, "stop")  # MPV_END_FILE_REASON_STOP: the file was replaced
_MPV_END_QUIT = (3, "quit")  # MPV_END_FILE_REASON_QUIT
_MPV_END_ERROR = (4, "error")  # MPV_END_FILE_REASON_ERROR


def hdr_vf(peak_nits: float | None = None) -> str:
    """The ``vf`` that tags the producer's frames as HDR10, with their signal peak.

    ``peak_nits``: the content's peak in cd/m2 (MaxCLL or the mastering display's peak);
    ``None``: :data:`PQ_PEAK_NITS`, as mpv assumes for a tagged PQ file without metadata.
    mpv reads an untagged stream's peak as 1.0 (SDR white, 203 cd/m2 by BT.2408), so
    without ``sig-peak`` its tone mapping would clip every highlight above 203 cd/m2.
    """
    peak = float(peak_nits) if peak_nits else PQ_PEAK_NITS
    return f"{HDR_VF}:sig-peak={peak / SDR_WHITE_NITS_BT2408:.6g}"


def parse_mpv_options(items: list[str] | None) -> dict[str, str]:
    """``["gpu-sw=yes", "--geometry=50%", "--no-osc", "fs"]`` -> mpv options
    ``{"gpu-sw": "yes", "geometry": "50%", "osc": "no", "fs": "yes"}``.

    Accepts ``KEY=VALUE`` (``--mpv-opt``) and mpv's own command-line spelling (after
    ``--``): a leading ``--`` is dropped, ``KEY`` alone means ``yes`` and ``no-KEY`` means
    ``KEY=no``, as mpv reads them. Raises :class:`ItmError` for an empty name.
    """
    options: dict[str, str] = {}
    for item in items or []:
        text = item[2:] if item.startswith("--") else item
        key, eq, value = text.partition("=")
        key = key.strip()
        if not eq:
            value = "yes"
            if key.startswith("no-"):
                key, value = key[3:], "no"
        if not key:
            raise ItmError(None, f"mpv option {item!r} has no name", "write KEY=VALUE, e.g. gpu-sw=yes")
        options[key.replace("_", "-")] = value
    return options


@dataclass
class _Observed:
    """What mpv reported while playing (property observers and events write it)."""

    params: dict | None = None
    out_params: dict | None = None
    frame: int | None = None
    count: int | None = None
    eof: bool = False
    end_reason: object = None
    vo_ready: bool = False
    shutdown: bool = False
    replacing: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    drops: dict = field(default_factory=lambda: {"frame-drop-count": 0, "vo-drop-frame-count": 0})

    @property
    def mpv_drops(self) -> int:
        return int(self.drops["frame-drop-count"]) + int(self.drops["vo-drop-frame-count"])

    def new_attempt(self) -> None:
        """Forget one video output's attempt before the next."""
        self.eof, self.end_reason, self.vo_ready = False, None, False
        self.ended.clear()


class _MpvLog:
    """mpv's error messages (its log handler, called on python-mpv's event thread).

    A video output that cannot start logs ``vo/<name>...`` errors (e.g. "Failed
    initializing any suitable GPU context!") and then, from ``cplayer``, the fatal "Error
    opening/initializing the selected video_out (--vo) device."
    """

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=16)
        self.vo_reason: str | None = None
        self.vo_failed = False
        self.stale = False  # the last attempt's fatal lines may still come

    def __call__(self, level: str, prefix: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self.stale and prefix == "cplayer" and level == "fatal":
            # the failed attempt's own ending, delivered after the next attempt began
            # (libmpv delivers log messages after the events queued with them, and its
            # event thread lags behind a busy filter): it says nothing of this attempt
            if "video_out" in text:
                self.stale = False
            return
        self.lines.append(f"{prefix}: {text}")
        if prefix.startswith("vo/") and level in ("error", "fatal"):
            self.vo_reason = text
        elif prefix == "cplayer" and level == "fatal" and "video_out" in text:
            self.vo_failed = True

    def new_attempt(self) -> None:
        # a failure seen only by its vo/ error has its fatal cplayer line still to come
        self.stale = self.vo_reason is not None and not self.vo_failed
        self.vo_reason, self.vo_failed = None, False
        self.lines.clear()

    def reason(self) -> str:
        text = self.vo_reason or (self.lines[-1] if self.lines else "no reason given")
        return text.rstrip(" .!")


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
    mpv_config: bool | None = None,
    fallback: bool = True,
    peak_nits: float | None = None,
    threads: int | None = None,
    fused_threads: int | None = None,
    gain: str = "auto",
    on_player: Callable | None = None,
    on_note: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> PlayStats:
    """Play ``path`` with mpv; with ``hdr``, as HDR10 reconstructed frame by frame.

    ``vo``: ``"gpu"`` (a window; with ``hdr`` this becomes ``gpu-next`` with
    ``target-colorspace-hint=yes`` so an HDR display switches to PQ), ``"gpu-next"``,
    ``"null"`` (no output, for tests and timing) or ``"image"`` (PNG files into
    ``image_dir``); other mpv outputs through ``mpv_options={"vo": ...}``.
    ``output``: a file (e.g. ``.mkv``) recorded by mpv's encode mode (``o=``, lossless
    FFV1) with exactly the frames mpv was given; written atomically. ``rung``: a ladder
    rung name or ``"auto"`` (timed on the first frame). ``weights_provider``: see
    :class:`~itmfilter.track.provider.WeightsProvider`; default blind mode for every frame. ``realtime``: skip frames
    the filter cannot finish in time (default: on unless ``output``/``vo="image"``).
    ``mpv_options``: mpv options (``{"gpu-sw": "yes"}``), set last so they win over the
    config and over itmfilter's own; an unknown option or a bad value raises
    :class:`ItmError`. Options mpv reads only at start-up (``config-dir``,
    ``input-conf``, ``scripts``) belong in mpv.conf or ``$MPV_HOME``.
    ``mpv_config``: load the user's mpv config as mpv does (``mpv.conf``, ``input.conf``,
    scripts from ``$MPV_HOME`` or ``~/.config/mpv``); ``None``: for a window
    (``vo`` gpu/gpu-next without ``output``), not for headless runs, which stay
    reproducible. ``fallback``: when the window's output cannot start, retry with
    ``gpu-sw=yes`` (unless ``mpv_options`` set ``gpu-sw``) and, without ``hdr``, with
    ``vo=x11``; each retry is reported through ``on_note``; ``PlayStats.video_output``
    says which output played. No output left: :class:`ItmError`.
    ``peak_nits``: the content's peak for mpv's tone mapping (:func:`hdr_vf`).
    ``gain``: how rungs below ``full`` carry the network to full resolution (``prior``,
    ``rgb``; ``auto``: :func:`~itmfilter.render.frame.choose_gain_mode` on the first frame; ``PlayStats.gain_mode``).
    ``fused_threads``: threads of the fused CPU pass (:mod:`itmfilter.render.fastpath`; ``None``:
    numba's default, every core: its work is split into equal row blocks and finishes
    before the decoder needs the core again).
    ``threads``: torch CPU threads while playing (restored after). ``None``: every core
    torch would use when OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` in the
    environment before torch loaded; ``itmfilter play`` sets it), else one core left to the
    decoder and mpv: ``min(torch threads, cores - 1)``, at least 1. Spinning OpenMP threads
    on 2 cores shared with mpv, the decoder or other jobs made a 2-thread network call
    10-20x slower than a 1-thread one (players/README.md); waiting passively, the network
    gets both cores.
    ``on_player``: called with the ``mpv.MPV`` once playback started (embedding, tests:
    e.g. ``player.command("keypress", "RIGHT")``).
    Returns normally when the file ends or the user quits (``PlayStats.user_quit``).
    Raises :class:`ItmError` for a missing or unreadable input, a rejected mpv option, a
    video output that cannot start, or mpv stopping with an error.
    """
    saved_threads = torch.get_num_threads()
    if threads is None:
        threads = default_threads(saved_threads, os.cpu_count() or 2, os.environ)
    torch.set_num_threads(int(threads))
    saved_fused = fastpath.set_threads(fused_threads)
    try:
        return _play(path, hdr=hdr, vo=vo, output=output, rung=rung, device=device,
                     precision=precision, weights_provider=weights_provider,
                     image_dir=image_dir, realtime=realtime, mpv_options=mpv_options,
                     mpv_config=mpv_config, fallback=fallback, peak_nits=peak_nits,
                     on_player=on_player, on_note=on_note, quiet=quiet, gain=gain)
    finally:
        torch.set_num_threads(saved_threads)
        fastpath.set_threads(saved_fused)


def default_threads(torch_threads: int, cores: int, environ) -> int:
    """The network's threads while playing (:func:`play`'s ``threads=None``): all of
    ``torch_threads`` when OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``), else
    ``min(torch_threads, cores - 1)``, at least 1."""
    if environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return max(1, torch_threads)
    return max(1, min(torch_threads, cores - 1))


def _first_frame(path: Path):
    """``(frame, fps)``: the first decoded frame of ``path`` and its frame rate, for the
    start-up choices (gain mode, rung timing, warm-up), decoded once."""
    with av.open(str(path)) as src:
        vin = src.streams.video[0]
        return next(src.decode(vin)), float(frame_rate(vin))


def _mpv_options(*, hdr, vo, output, image_dir, quiet, peak_nits) -> tuple[dict, dict]:
    """``(defaults, required)``: options a user's config may change, and options playback
    needs (applied again after the config is loaded)."""
    if vo not in VIDEO_OUTPUTS:
        raise ItmError(None, f"unknown video output {vo!r}",
                       "use gpu, gpu-next, null or image (others: --mpv-opt vo=NAME)")
    window = vo in WINDOW_OUTPUTS
    defaults = {"input_default_bindings": True, "input_vo_keyboard": True, "osc": window}
    required = {"vo": vo, "idle": "yes", "keep_open": "no", "stop_playback_on_init_failure": "yes"}
    if quiet:
        required["msg_level"] = "all=error"
    if vo in ("null", "image") or output is not None:
        required["ao"] = "null"  # headless: no sound device needed
    if vo == "image":
        if image_dir is None:
            raise ItmError(None, "vo='image' needs image_dir", "give a folder for the PNG files")
        required["vo_image_outdir"] = str(image_dir)
        required["vo_image_format"] = "png"
    if hdr and window:
        required["vo"] = "gpu-next"
        required["target_colorspace_hint"] = "yes"
    if hdr:
        required["vf"] = hdr_vf(peak_nits)
        # a seek restarts the stream at the new position with the source's timestamps;
        # mpv's default would move each stream's start to 0, so time-pos (and the next
        # seek, which starts from it) would lose the position
        required["rebase_start_time"] = "no"
    return defaults, required


def _set_options(player, options: dict, *, user: bool) -> None:
    """Set mpv options on a running player; ``user``: explain a rejected one as an
    :class:`ItmError` (unknown option, bad value)."""
    for key, value in options.items():
        name = key.replace("_", "-")
        text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        try:
            player[name] = text
        except AttributeError:
            if not user:
                raise
            raise ItmError(None, f"mpv has no option {name!r} (given as {name}={text})",
                           "check the name in `mpv --list-options`") from None
        except (TypeError, ValueError) as exc:
            if not user:
                raise
            raise ItmError(None, f"mpv rejected the value {text!r} of its option {name!r} ({exc.args[0]})",
                           f"see `mpv --{name}=help` or `mpv --list-options`") from None


def _open_player(defaults: dict, required: dict, user: dict, *, config: bool, encode: dict,
                 log: _MpvLog):
    """A started ``mpv.MPV``: defaults and encode-mode options before mpv starts (the
    config loads while it starts and may change the defaults), then what playback needs,
    then the user's options. Encode mode picks its own vo and ao at start-up (mpv's
    ``encoding`` profile), so those are not set again."""
    player = mpv.MPV(config=config, log_handler=log, loglevel="error", **defaults, **required, **encode)
    try:
        after = {k: v for k, v in required.items() if not (encode and k in ("vo", "ao"))}
        _set_options(player, after, user=False)
        _set_options(player, user, user=True)
    except BaseException:
        player.terminate()
        raise
    return player


def _fallbacks(player, vo: str, hdr: bool, user: dict) -> list[tuple[dict, str, str]]:
    """The outputs to try, in order, after ``vo`` failed: ``[(options, name, why)]``."""
    steps = []
    if vo not in WINDOW_OUTPUTS:
        return steps
    if not _software(player) and "gpu-sw" not in user:
        steps.append(({"gpu-sw": "yes"}, f"{vo} with gpu-sw=yes", "software rendering"))
    if not hdr and "vo" not in user:
        # vo=x11 cannot tone-map, so it shows SDR only
        steps.append(({"vo": "x11"}, "x11", "no tone mapping: SDR only"))
    return steps


def _software(player) -> bool:
    """Whether mpv's ``gpu-sw`` is on (set by the config or the caller)."""
    try:
        return bool(player["gpu-sw"])
    except (AttributeError, TypeError):
        return False


def _output_error(tried: list[str], reason: str) -> ItmError:
    where = ""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        where = "; neither DISPLAY nor WAYLAND_DISPLAY is set"
    return ItmError(
        None,
        f"mpv could not open its video output (tried {', then '.join(tried)}): {reason}{where}",
        "run it in a graphical session, choose another output with --mpv-opt (e.g. vo=x11, gpu-api=opengl), "
        "or play headless with --vo null or --output FILE",
    )


def _hdr_session(path: Path, provider: WeightsProvider, device, precision: str, rung: str, gain: str,
                 realtime: bool) -> Session:
    """The filter's start-up choices (gain mode, rung), made on the first frame, and the
    session that plays with them."""
    net0, _ = provider(0)
    if isinstance(net0, PlacedGrid):  # a grid shot opens the file: no gain mode to choose
        gain = "rgb" if gain == "auto" else gain
    if gain != "auto" and not isinstance(net0, PlacedGrid):
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
    if isinstance(net0, PlacedGrid):  # the kernels a shot's scene residual needs, and the fastest rung's
        warm_grid_rungs(net0, first, (chosen, GRID_LADDER[-1]), device, precision)
    session = Session(path, provider, device, precision, chosen, realtime, with_audio=True,
                      ladder=GRID_LADDER if isinstance(net0, PlacedGrid) else LADDER)
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
    player.observe_property("vo-configured", keep("vo_ready"))
    player.observe_property("estimated-frame-number", keep_frame)
    player.observe_property("estimated-frame-count", lambda _n, v: v is not None and setattr(seen, "count", v))

    @player.event_callback("end-file")
    def _ended(event):
        reason = getattr(getattr(event, "data", None), "reason", None)
        if seen.replacing and reason in _MPV_END_STOP:
            seen.replacing -= 1
            return
        seen.end_reason = reason
        seen.eof = reason in _MPV_END_EOF
        seen.ended.set()

    @player.event_callback("shutdown")
    def _shutdown(_event):
        seen.shutdown = True
        seen.ended.set()


def _bind_seek_keys(player, session: Session, seen: _Observed) -> None:
    def seek_by(delta: float) -> None:
        if player.core_shutdown:
            return
        try:
            pos = player.time_pos or 0.0
        except mpv.ShutdownError:
            return
        seen.replacing += 1
        session.start(player, max(0.0, pos + delta))

    def on_key(key_state, *_rest, delta):
        if key_state[:1] in ("d", "p"):  # key down or a synthetic press
            seek_by(delta)

    for key, delta in SEEK_KEYS.items():
        player.register_key_binding(key, functools.partial(on_key, delta=delta))


def _wait(player, seen: _Observed, log: _MpvLog) -> str:
    """Wait for the file to end: ``"eof"``, ``"quit"`` (the user quit or mpv shut down),
    ``"vo-failed"`` (the video output could not start) or ``"error"``."""
    while not seen.ended.wait(0.05):
        if player.core_shutdown:
            return "quit"
        if log.vo_failed and not seen.vo_ready:
            # stop-playback-on-init-failure ends the file; a user's =no keeps playing
            # without video: stop it. Either way its end-file is consumed here, so it
            # cannot end the next attempt.
            if not seen.ended.wait(1.0):
                player.command("stop")
                seen.ended.wait(10.0)
            return "vo-failed"
    if seen.shutdown or seen.end_reason in _MPV_END_QUIT:
        return "quit"
    if seen.end_reason in _MPV_END_ERROR:
        # libmpv queues log messages apart from events: give the log a moment to catch
        # up, longer where a vo/ error says the output's fatal line is on its way
        deadline = time.monotonic() + (5.0 if log.vo_reason and not seen.vo_ready else 0.5)
        while not log.vo_failed and time.monotonic() < deadline:
            time.sleep(0.025)  # (seen.ended is set: waiting on it would not wait)
        return "vo-failed" if (log.vo_failed or (log.vo_reason and not seen.vo_ready)) else "error"
    return "eof"


def _play(path, *, hdr, vo, output, rung, device, precision, weights_provider, image_dir,
          realtime, mpv_options, mpv_config, fallback, peak_nits, on_player, on_note, quiet,
          gain="auto") -> PlayStats:
    path = Path(path)
    if not path.is_file():
        raise ItmError(path, "no such video file", "check the path")
    defaults, required = _mpv_options(hdr=hdr, vo=vo, output=output, image_dir=image_dir, quiet=quiet,
                                      peak_nits=peak_nits)
    user = parse_mpv_options([f"{k}={v}" for k, v in (mpv_options or {}).items()])
    if mpv_config is None:
        mpv_config = vo in WINDOW_OUTPUTS and output is None
    if realtime is None:
        realtime = output is None and vo != "image"
    torch_device = resolve_device(device)
    session = None
    stats = PlayStats()
    if hdr:
        session = _hdr_session(path, weights_provider or blind_provider(), torch_device, precision,
                               rung, gain, realtime)
        stats = session.stats
    else:
        open_decoder(path, torch_device).close()  # unreadable input -> ItmError, not mpv noise

    seen, log = _Observed(), _MpvLog()
    note = on_note or (lambda _text: None)
    outcome = "eof"
    with ExitStack() as stack:
        encode = {}
        if output is not None:
            temp = stack.enter_context(atomic_output(output, inputs=[path]))
            encode = {"o": str(temp), "ovc": "ffv1", "oac": "flac"}
            if hdr:  # mpv 0.35 passes only the matrix to the encoder: tag the rest here
                encode["ovcopts"] = ("color_primaries=bt2020,color_trc=smpte2084,"
                                     "colorspace=bt2020nc,color_range=tv")
        player = _open_player(defaults, required, user, config=mpv_config, encode=encode, log=log)
        error = None
        try:
            _observe(player, seen)
            current = user.get("vo", required["vo"])
            tried = [current + (" with gpu-sw=yes" if current in WINDOW_OUTPUTS and _software(player) else "")]
            steps = _fallbacks(player, current, hdr, user) if fallback and output is None else []
            if session is not None:
                player.observe_property("pause", lambda _n, v: session.on_pause(bool(v)))
                _bind_seek_keys(player, session, seen)
                session.start(player, 0.0)
            else:
                player.play(str(path))
            if on_player is not None:
                on_player(player)
            while True:
                outcome = _wait(player, seen, log)
                if outcome != "vo-failed":
                    break
                reason = log.reason()
                if not steps:
                    error = _output_error(tried, reason)
                    break
                options, name, why = steps.pop(0)
                note(f"mpv could not open its video output {tried[-1]} ({reason}); trying {name} ({why})")
                tried.append(name)
                seen.new_attempt()
                log.new_attempt()
                _set_options(player, options, user=False)
                if session is not None:
                    session.forget_counts()
                    session.start(player, 0.0, seek=False)
                else:
                    player.play(str(path))
            if outcome == "error":
                error = ItmError(path, f"mpv stopped playing it ({log.reason()})",
                                 "see mpv's message; try --vo null to check the file")
            stats.video_output = tried[-1]
        except mpv.ShutdownError:
            outcome = "quit"  # the user quit while a property was read
        finally:
            for producer in session.producers if session is not None else []:
                producer.stop.set()
            try:
                player.terminate()
            except Exception:
                pass
        if session is not None:
            producer_error = session.stop_all(timeout=10)
            if producer_error is not None and error is None:
                raise producer_error
            busy = stats.filter_seconds
            stats.fps = stats.frames_sent / busy if busy > 0 else 0.0
            stats.rung = session.controller.rung
        if error is not None:
            raise error
    stats.user_quit = outcome == "quit"
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


__all__ = ["HDR_VF", "PQ_PEAK_NITS", "PlayStats", "hdr_vf", "parse_mpv_options", "play"]
