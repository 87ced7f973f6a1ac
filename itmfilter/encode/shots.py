"""Shots: the encoder cuts the master where the picture changes, and every shot starts
with a key set (so a shot is the unit a cut, a seek or a distributed worker can start at)."""

from __future__ import annotations

import numpy as np

from itmfilter.colour.primaries import luminance
from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.media.video import read_hdr_frames
from itmfilter.progress import progress_bar


def thumbnail(nits: np.ndarray) -> np.ndarray:
    """32x18 mean PQ luma thumbnail, the shot detector's signature of a frame."""
    h, w, _ = nits.shape
    y = luminance(nits, primaries="bt2020")
    ys = (np.arange(18) * h) // 18
    xs = (np.arange(32) * w) // 32
    return eotf_inverse_st2084(np.add.reduceat(np.add.reduceat(y, ys, axis=0), xs, axis=1) / ((h / 18) * (w / 32)))


class ShotDetector:
    """A cut where the mean |change| of the 32x18 PQ luma thumbnails (:func:`thumbnail`) between
    consecutive frames exceeds ``threshold``; the first frame opens a shot."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._prev: np.ndarray | None = None

    def __call__(self, nits: np.ndarray) -> bool:
        thumb = thumbnail(nits)
        cut = self._prev is None or float(np.abs(thumb - self._prev).mean()) > self.threshold
        self._prev = thumb
        return cut


def shot_starts(master, threshold: float, *, assume_hdr: bool = False, total: int | None = None,
                quiet: bool = False) -> tuple[set[int], int]:
    """The frames that open shots (the encoder's detector, run ahead over the whole master)
    and the frame count."""
    detect, starts, n = ShotDetector(threshold), set(), 0
    with progress_bar(total, unit="frame", desc="finding shots", quiet=quiet) as bar:
        for index, nits in read_hdr_frames(master, assume_hdr=assume_hdr):
            if detect(nits):
                starts.add(index)
            n = index + 1
            bar.update(1)
    return starts, n
