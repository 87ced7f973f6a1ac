"""Weights per frame: the network each presentation index is reconstructed with, from the
file's weight track (one rebuild per distinct set) or, without a track or before a cut
file's first key, blind.

A frame of a grid shot (KEY coding 4, format 1.4) gets a
:class:`itmfilter.model.grid.PlacedGrid` instead of an :class:`ITMNet`: the shot's grid model
at that frame's placement. Renderers evaluate it with its ``predict_pq`` (the exact path)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from itmfilter.model.grid import PlacedGrid
from itmfilter.model.initial import load_init
from itmfilter.model.net import ITMNet
from itmfilter.track.carriage import load_track
from itmfilter.track.codec import TrackDecoder
from itmfilter.track.format import unflatten


class WeightsProvider(Protocol):
    """``provider(frame_index) -> (net, status)``. ``frame_index`` counts presentation order
    from 0; ``status`` is ``"ok"``, ``"blind"`` (no metadata: the blind initialisation) or
    one of :data:`itmfilter.track.codec.STATUSES` for frames whose metadata was concealed,
    damaged or missing."""

    def __call__(self, frame_index: int) -> tuple[ITMNet | PlacedGrid, str]: ...


def blind_provider() -> WeightsProvider:
    """The shipped blind initialisation for every frame."""
    net, _ = load_init(name="blind")
    return lambda index: (net, "blind")


class FrameNetworks:
    """The network for each frame: from the track (one rebuild per distinct set) or blind.

    Frames are located through the track's runs (:meth:`LoadedTrack.locate`), so a cut or
    concatenated SEI stream finds each frame's packet by the packet's own frame number.
    Frames the track cannot give a set for (before the first KEY of a cut, status
    ``awaiting_key``; outside every run; a run without a header; no good KEY at all,
    ``unavailable``) get the blind initialisation: :attr:`blind_frames` counts them and
    their status is ``"blind"`` (``"unavailable"`` for a track without any good KEY, which
    also counts in :attr:`damaged`).
    """

    def __init__(self, source: Path) -> None:
        self.source = Path(source)
        self.track = load_track(source)
        self.damaged = 0
        self.blind_frames = 0
        self.blind, _ = load_init(name="blind")
        self._decoders: dict[int, TrackDecoder] = {}
        self.decoder = None if self.track is None else self._decoder_for(self.track.runs[0])
        self._last_vec: np.ndarray | None = None
        self._last_net = None
        self._last_config = None
        self.last_status = "blind" if self.track is None else "ok"

    @property
    def mode(self) -> str:
        return "blind" if self.track is None else "weights"

    def _decoder_for(self, run) -> TrackDecoder | None:
        if run.header is None:
            return None
        decoder = self._decoders.get(id(run))
        if decoder is None:
            decoder = self._decoders[id(run)] = TrackDecoder(run.header)
        return decoder

    def _blind(self, status: str = "blind"):
        self.last_status = status
        self.blind_frames += 1
        return self.blind

    def __call__(self, frame: int):
        if self.track is None:
            self.last_status = "blind"
            return self.blind
        found = self.track.locate(frame)
        decoder = None if found is None else self._decoder_for(found[0])
        if decoder is None:
            return self._blind()
        run, number = found
        vec, status = decoder.params_interpolated(number, run.packets)
        if status == "awaiting_key":
            return self._blind()
        if status == "unavailable":
            self.damaged += 1
            return self._blind("unavailable")
        self.last_status = status
        if status != "ok":
            self.damaged += 1
        if isinstance(vec, PlacedGrid):
            return vec
        config = run.header.config
        if self._last_vec is None or config != self._last_config or not np.array_equal(vec, self._last_vec):
            net = ITMNet(config)
            net.load_state_dict(unflatten(config, vec))
            self._last_net, self._last_vec, self._last_config = net.eval(), vec, config
        return self._last_net

    def provider(self, frame: int) -> tuple[ITMNet, str]:
        """``(net, status)``: this object as a :class:`WeightsProvider`."""
        net = self(frame)
        return net, self.last_status

    def warning(self) -> str | None:
        """One line on the damage met so far (the count and the first problem, e.g. an
        unknown format version or a set decoding to NaN), or ``None`` when every frame with
        a set decoded as coded."""
        if not self.damaged:
            return None
        problems: dict[int, str] = {}
        for decoder in self._decoders.values():
            for frame, reason in decoder.problems.items():
                problems.setdefault(frame, reason)
        first = f"; first problem, frame {min(problems)}: {problems[min(problems)]}" if problems else ""
        blind = (f", {self.blind_frames} frames reconstructed blind (no good key set)" if self.blind_frames
                 else ", each given the nearest good set")
        return f"{self.source}: {self.damaged} frames with damaged weight metadata{blind}{first}"
