"""The frame-filter API: frames from your own PyAV decode loop in, HDR10 frames out.

A plug-in style filter for programs that already decode with PyAV: open a file's weights
once, then hand each decoded SDR ``av.VideoFrame`` to :meth:`Weights.filter`::

    import av, itmfilter

    weights = itmfilter.open_weights("sdr.mp4")       # the file's weight track (blind: none)
    with av.open("sdr.mp4") as src:
        for frame in src.decode(video=0):
            hdr = weights.filter(frame)                # yuv420p10le, PQ, BT.2020 NCL, narrow

The public surface, kept stable: :func:`open_weights`, :class:`Weights` (``filter``,
``planes``, ``pq``, ``network``, ``index`` and the attributes documented on the class).

Each frame's network is chosen by its presentation index, computed from the frame's
``pts`` and ``time_base`` by the same rule every itmfilter pipeline uses
(:class:`itmfilter.media.frames.PresentationClock`,
:func:`~itmfilter.media.frames.settled_clock`), never by counting calls: frames may
come in any order, after a seek, or with some skipped. A frame without a ``pts`` needs an
explicit ``index=``.

HDR10 static metadata (ST 2086 mastering display, CTA-861.3 MaxCLL/MaxFALL) is
:attr:`Weights.hdr10`: PyAV 18 cannot attach side data to a frame, so it is not on the
frames; :meth:`Weights.x265_params` hands it to libx265, which writes it as SEI.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import torch

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.errors import ItmError
from itmfilter.media.frames import (
    open_input,
    presentation_index,
    settled_clock,
    video_stream,
)
from itmfilter.media.video import x265_hdr10_params
from itmfilter.model.grid import PlacedGrid
from itmfilter.model.inference import resolve_precision
from itmfilter.model.net import ModelConfig, resolve_device
from itmfilter.render.frame import (
    hdr10_planes,
    sdr_frame_to_rgb,
    tag_hdr10,
    yuv420p10_frame,
)
from itmfilter.render.ladder import GAIN_MODES, RUNG_NAMES, apply_rung_tensor, get_rung
from itmfilter.track.provider import FrameNetworks


def _source_path(source) -> Path:
    """The file behind ``source``: a path, or an ``av`` input container opened on a file."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    name = getattr(source, "name", None)
    if isinstance(source, av.container.InputContainer) and isinstance(name, str) and Path(name).is_file():
        return Path(name)
    raise ItmError(None, f"open_weights() needs a video file path or an av container opened on a file, "
                   f"got {type(source).__name__}", "pass the path of the SDR video")


class Weights:
    """The per-frame networks of one SDR video, and the filter that applies them.

    Made by :func:`open_weights`. Attributes (read-only):

    ``path``: the video. ``mode``: ``"weights"`` (a weight track was found) or ``"blind"``
    (none: the shipped blind initialisation for every frame). ``carriage``: where the track
    was found (``"data track"``, ``"attachment"``, ``"JSON sidecar ..."``), ``None`` when
    blind. ``config``: the network's :class:`~itmfilter.model.net.ModelConfig`.
    ``hdr10``: the master's :class:`~itmfilter.colour.hdr10.HDR10Metadata` from the track
    header (cd/m2, CIE xy), ``None`` when the file does not carry it (blind files).
    ``width``, ``height``: the video's size in pixels; ``fps``: its frame rate
    (``Fraction``); ``frame_count``: frames the track header declares (0: unknown).
    ``device`` (``torch.device``), ``precision`` (``torch.dtype``), ``rung`` and ``gain``:
    the filter's settings. ``damaged_frames``: frames so far whose weights were concealed
    or missing; ``last_status``: the status of the last frame (``"ok"``, ``"blind"`` or a
    concealment status of :data:`itmfilter.track.codec.STATUSES`).
    """

    def __init__(self, source, *, device: str = "auto", precision: str = "auto", rung: str = "full",
                 gain: str = "auto") -> None:
        self.path = _source_path(source)
        try:
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            self.rung = get_rung(rung).name
            if gain != "auto" and gain not in GAIN_MODES:
                raise ValueError(f"unknown gain mode {gain!r}; expected auto or one of {', '.join(GAIN_MODES)}")
        except ValueError as exc:
            raise ItmError(None, str(exc), "see help(itmfilter.open_weights)") from None
        self._precision_name = precision
        self.gain = gain
        container = open_input(self.path)
        try:
            stream = video_stream(container, self.path)
            self._clock = settled_clock(container, stream)
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
        except av.error.FFmpegError as exc:
            raise ItmError(self.path, f"cannot be decoded ({exc})", "check that it is a video file") from None
        finally:
            container.close()
        self.fps = Fraction(self._clock.fps)
        self._networks = FrameNetworks(self.path)
        track = self._networks.track
        self.mode = self._networks.mode
        self.carriage = None if track is None else track.where
        self.config: ModelConfig = self._networks.blind.config if track is None else track.header.config
        self.hdr10: HDR10Metadata | None = None if track is None else track.header.hdr10_metadata()
        self.frame_count = 0 if track is None else track.header.frame_count

    @property
    def damaged_frames(self) -> int:
        return self._networks.damaged

    @property
    def last_status(self) -> str:
        return self._networks.last_status

    def __repr__(self) -> str:
        return (f"Weights({str(self.path)!r}, mode={self.mode!r}, carriage={self.carriage!r}, "
                f"{self.width}x{self.height} @ {self.fps} fps, device={self.device.type}, rung={self.rung!r})")

    def index(self, frame) -> int:
        """The presentation index of a decoded frame (0 = the stream's first frame), from
        its ``pts`` and ``time_base``; :class:`ItmError` when it has no ``pts``."""
        if frame.pts is None:
            raise ItmError(self.path, "a frame without a pts was given",
                           "pass index= (its presentation index) with frames that carry no timestamp")
        time_base = frame.time_base if frame.time_base is not None else self._clock.time_base
        return presentation_index(float(frame.pts * time_base), self._clock.origin or 0.0, self.fps)

    def network(self, index: int):
        """``(net, status)`` for presentation index ``index``: the
        :class:`~itmfilter.model.net.ITMNet` (eval mode, CPU) and its status; in a grid shot
        (format 1.4) a :class:`~itmfilter.model.grid.PlacedGrid` (its ``predict_pq``)."""
        net = self._networks(int(index))
        return net, self._networks.last_status

    def _net(self, frame, index):
        net, _ = self.network(self.index(frame) if index is None else index)
        return net

    def filter(self, frame, *, index: int | None = None, rung: str | None = None) -> av.VideoFrame:
        """One decoded SDR frame -> a new HDR10 ``av.VideoFrame``: yuv420p10le, PQ
        (SMPTE ST 2084), BT.2020 NCL, narrow range, 4:2:0 (chroma_loc_type 0), tagged with
        those colour properties, with the input's ``pts`` and ``time_base``. ``rung``
        overrides the quality-ladder rung for this frame."""
        planes = self.planes(frame, index=index, rung=rung)
        out = tag_hdr10(yuv420p10_frame(planes))
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    def planes(self, frame, *, index: int | None = None, rung: str | None = None, tensors: bool = False):
        """One decoded SDR frame -> ``[Y, Cb, Cr]``: 10-bit HDR10 codes (the planes of
        :meth:`filter`), Y ``(H, W)``, Cb and Cr ``(ceil(H/2), ceil(W/2))``; numpy uint16,
        or with ``tensors`` torch int16 tensors (on ``device`` when it is a GPU). Made by the
        player's per-frame path (:func:`itmfilter.render.frame.hdr10_planes`, fused on a CPU
        and a GPU): within one code of :meth:`pq` converted exactly
        (:func:`itmfilter.render.frame.pq_to_yuv420p10`)."""
        net = self._net(frame, index)
        return hdr10_planes(frame, net, rung or self.rung, self.device, self._precision_name,
                            gain=self.gain, tensors=tensors)

    def pq(self, frame, *, index: int | None = None, rung: str | None = None, tensors: bool = False):
        """One decoded SDR frame -> PQ BT.2020 R'G'B' code values [0, 1], ``(H, W, 3)``
        float32 (numpy; with ``tensors`` a torch tensor on ``device``), before the Y'CbCr
        conversion: what the network outputs."""
        net = self._net(frame, index)
        if isinstance(net, PlacedGrid):  # a grid shot's frame (format 1.4): its own decoder, every rung
            pq = net.predict_pq(sdr_frame_to_rgb(frame))
            return torch.from_numpy(pq).to(self.device) if tensors else pq
        sdr = torch.from_numpy(sdr_frame_to_rgb(frame)).to(self.device)
        out = apply_rung_tensor(net, sdr, rung or self.rung, self.device, self._precision_name, gain=self.gain)
        return out if tensors else out.cpu().numpy()

    def x265_params(self) -> str:
        """libx265's ``x265-params`` for this video's HDR10 output: PQ BT.2020 signalling and,
        when the file carries it, :attr:`hdr10` as mastering display and MaxCLL/MaxFALL SEI."""
        return x265_hdr10_params(self.hdr10)


def open_weights(source, *, device: str = "auto", precision: str = "auto", rung: str = "full",
                 gain: str = "auto") -> Weights:
    """Open the weights carried in or beside an SDR video, for filtering its frames.

    ``source``: the video's path, or an ``av`` input container opened on a file (its
    ``name`` is used; the container itself is not read or moved). ``device``: ``auto``
    (CUDA when present), ``cpu`` or ``cuda``. ``precision``: the network's arithmetic,
    ``auto`` (bf16 where the CPU/GPU has it), ``fp32`` or ``bf16``. ``rung``: the quality
    ladder (``full``, the default, runs the network on every pixel; also
    ``half``, ``quarter``, ``eighth``, ``sixteenth``). ``gain``: how rungs below ``full``
    carry the network to full resolution (``auto``, ``prior``, ``rgb``).

    A file without weights opens in blind mode (``Weights.mode == "blind"``). Raises
    :class:`itmfilter.errors.ItmError` (one line: the file, the problem, what to do) for a
    missing or unreadable video, a damaged weight track or one made for another video.
    """
    return Weights(source, device=device, precision=precision, rung=rung, gain=gain)


__all__ = ["RUNG_NAMES", "Weights", "open_weights"]
