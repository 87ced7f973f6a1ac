"""Weights per frame: the network each presentation index is reconstructed with, from the
file's weight track (one rebuild per distinct set) or, without a track, blind."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

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

    def __call__(self, frame_index: int) -> tuple[ITMNet, str]: ...


def blind_provider() -> WeightsProvider:
    """The shipped blind initialisation for every frame."""
    net, _ = load_init(name="blind")
    return lambda index: (net, "blind")


class FrameNetworks:
    """The network for each frame: from the track (one rebuild per distinct set) or blind.

    Frames whose metadata is damaged get the nearest good set (the decoder's concealment);
    frames with no good set at all (every key lost: the decoder's ``unavailable``) get the
    blind initialisation, never the decoder's all-zero vector (with an ``mmr3`` prior that
    is a black picture). :attr:`damaged` counts frames not decoded as coded,
    :attr:`blind_frames` those of them reconstructed blind; :meth:`warning` says so.
    """

    def __init__(self, source: Path) -> None:
        self.source = Path(source)
        self.track = load_track(source)
        self.damaged = 0
        self.blind_frames = 0
        self.blind = None
        if self.track is None:
            self.blind, _ = load_init(name="blind")
            self.decoder = None
        else:
            self.decoder = TrackDecoder(self.track.header)
        self._last_vec: np.ndarray | None = None
        self._last_net = None
        self.last_status = "blind" if self.track is None else "ok"

    @property
    def mode(self) -> str:
        return "blind" if self.track is None else "weights"

    def __call__(self, frame: int):
        if self.decoder is None:
            self.last_status = "blind"
            return self.blind
        vec, status = self.decoder.params_interpolated(frame, self.track.packets)
        self.last_status = status
        if status != "ok":
            self.damaged += 1
        if status == "unavailable":
            self.blind_frames += 1
            if self.blind is None:
                self.blind, _ = load_init(name="blind")
            return self.blind
        if self._last_vec is None or not np.array_equal(vec, self._last_vec):
            net = ITMNet(self.track.header.config)
            net.load_state_dict(unflatten(self.track.header.config, vec))
            self._last_net, self._last_vec = net.eval(), vec
        return self._last_net

    def provider(self, frame: int) -> tuple[ITMNet, str]:
        """``(net, status)``: this object as a :class:`WeightsProvider`."""
        net = self(frame)
        return net, self.last_status

    def warning(self) -> str | None:
        """One line on the damage met so far (the count and the first problem, e.g. an
        unknown format version), or ``None`` when every frame decoded as coded."""
        if not self.damaged:
            return None
        problems = self.decoder.problems if self.decoder is not None else {}
        first = f"; first problem, frame {min(problems)}: {problems[min(problems)]}" if problems else ""
        blind = (f", {self.blind_frames} of them reconstructed blind (no good key set)"
                 if self.blind_frames else ", each given the nearest good set")
        return f"{self.source}: {self.damaged} frames with damaged weight metadata{blind}{first}"
