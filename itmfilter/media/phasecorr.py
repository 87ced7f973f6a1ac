"""Global motion between consecutive frames, by phase correlation (encoder side).

C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method", IEEE
Conference on Cybernetics and Society, 1975: the normalised cross-power spectrum of two
pictures that differ by a translation is a pure phase ramp whose inverse transform peaks at
the translation. The peak's neighbours give the sub-pixel part (Foroosh et al. 2002).
Used by ``itmfilter encode`` to predict each frame's weights from the previous frame's set
shifted by the camera's motion (:mod:`itmfilter.track.motion`), and to place a grid shot's
frames in its scene (:mod:`itmfilter.encode.gridkeys`).

The camera's motion is the *dominant* one, which is not always the highest peak: a subject
that moves on its own across a smooth background (a bright, sharp-edged figure against sky
or wall) can correlate more strongly than the background it covers a fraction of. So each of
the correlation's few highest peaks is a candidate, and the one under which the most of the
picture agrees wins: the mean truncated squared difference between the frame and the
previous frame moved by the candidate (a robust, least-median-like cost: a pixel that does
not agree costs the truncation whatever its error, flat pixels agree with every candidate).
On the rate benchmark's 640x360 clip with a moving subject in every shot, the highest peak
followed the subject on 108 of 235 frames, where the background moved the other way; the
shots' scene placements drifted by up to 1.3 frame half-widths
(``benchmarks/pan_drift.py --subject``).
"""

from __future__ import annotations

import numpy as np

MAX_SIDE = 960
"""Pictures are block-averaged by an integer factor until their longer side is at most this."""

MIN_CONFIDENCE = 0.15
"""Peak height of the normalised correlation (1 for a perfect translation) below which no
motion is reported (a cut, a flash, motion that is not a global translation)."""

CANDIDATES = 5
"""Correlation peaks (local maxima over their 3x3 neighbours, highest first) that compete as
the frame's motion."""
CANDIDATE_SHARE = 0.2
"""A peak lower than this share of the highest is not a candidate (the ripples of one motion)."""
SUPPORT_SIDE = 320
"""The pictures the candidates are compared on are block-averaged until their longer side is at
most this (the comparison needs the large structures, not the detail)."""
TILES = 3
"""Each picture is also correlated in this many tiles a side: a tile the subject does not reach
finds the camera's motion even where the whole picture's correlation shows no peak for it (a
hard-edged figure whitens into a far sharper peak than a soft background)."""
TRUNCATION = 0.04
"""A pixel whose luma (0-1) differs by more than this between the frame and the moved previous
frame does not agree with the candidate; it costs ``TRUNCATION**2`` whatever its difference."""


def luma(sdr: np.ndarray) -> np.ndarray:
    """BT.709 luma Y' (ITU-R BT.709-6 item 3.2) of ``(H, W, 3)`` R'G'B' code values."""
    sdr = np.asarray(sdr, dtype=np.float32)
    return sdr[..., 0] * 0.2126 + sdr[..., 1] * 0.7152 + sdr[..., 2] * 0.0722


def _downscale(img: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return img
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _subpixel(m: float, c: float, p: float) -> float:
    """Sub-pixel offset of a phase-correlation peak ``c`` from its neighbours ``m`` (at -1)
    and ``p`` (at +1): the peak of a shifted, band-limited impulse is a sampled sinc, for
    which the larger neighbour ``n`` gives ``|offset| = n / (n + c)`` (H. Foroosh, J. B.
    Zerubia, M. Berthod, "Extension of phase correlation to subpixel registration", IEEE
    Trans. Image Processing 11(3), 2002)."""
    side, sign = (p, 1.0) if p >= m else (m, -1.0)
    if side <= 0 or c <= 0:
        return 0.0
    return sign * min(0.5, side / (side + c))


class MotionEstimator:
    """Global translation between consecutive frames.

    ``est(frame)`` returns ``(v_x, v_y)`` in pixels of the full frame, with
    ``frame(p) ~ previous(p + v)``, or ``None`` for the first frame, after :meth:`reset`, or
    when the correlation peak is below :data:`MIN_CONFIDENCE`. ``frame``: ``(H, W)`` luma or
    ``(H, W, 3)`` R'G'B' (its BT.709 luma is used).
    """

    def __init__(self, max_side: int = MAX_SIDE, min_confidence: float = MIN_CONFIDENCE) -> None:
        self.max_side, self.min_confidence = int(max_side), float(min_confidence)
        self._prev: np.ndarray | None = None
        self._last: tuple[int, int] | None = None  # the last motion's correlation cell (row, column)
        self.confidence = 0.0

    def reset(self) -> None:
        self._prev = None
        self._last = None

    def _spectrum(self, frame: np.ndarray) -> np.ndarray:
        img = luma(frame) if frame.ndim == 3 else np.asarray(frame, dtype=np.float32)
        self._factor = max(1, -(-max(img.shape) // self.max_side))
        small = _downscale(img.astype(np.float32), self._factor)
        self._shape = small.shape
        self._support_factor = max(1, -(-max(small.shape) // SUPPORT_SIDE))
        self._small = _downscale(small, self._support_factor)
        window = np.outer(np.hanning(small.shape[0]), np.hanning(small.shape[1])).astype(np.float32)
        self._tiles = _tile_spectra(small, TILES)
        return np.fft.rfft2((small - small.mean()) * window)

    def _cost(self, prev: np.ndarray, cur: np.ndarray, vx: float, vy: float) -> float:
        """Mean truncated squared difference between ``cur`` and ``prev`` moved by ``(vx, vy)``
        (pixels of the correlation's pictures, rounded to the comparison's), over their overlap."""
        f = self._support_factor
        dx, dy = int(round(vx / f)), int(round(vy / f))
        h, w = cur.shape
        if abs(dx) >= w // 2 or abs(dy) >= h // 2:
            return TRUNCATION ** 2
        # cur(p) ~ prev(p + v): cur rows y pair with prev rows y + dy
        c = cur[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        p = prev[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        return float(np.minimum((c - p) ** 2, TRUNCATION ** 2).mean())

    def __call__(self, frame: np.ndarray) -> tuple[float, float] | None:
        prev_small, prev_tiles = getattr(self, "_small", None), getattr(self, "_tiles", None)
        spec = self._spectrum(frame)
        prev, self._prev = self._prev, spec
        if prev is None or prev.shape != spec.shape:
            self.confidence = 0.0
            return None
        cross = prev * np.conj(spec)
        cross /= np.abs(cross) + 1e-12
        corr = np.fft.irfft2(cross, s=self._shape)
        h, w = corr.shape
        peaks = _peaks(corr, CANDIDATES, CANDIDATE_SHARE)
        py, px = peaks[0]
        self.confidence = float(corr[py, px])
        last, self._last = self._last, None
        if self.confidence < self.min_confidence:
            return None
        cells = [last] if last is not None else []  # the camera's motion changes slowly: the last one competes too
        if prev_tiles is not None and len(prev_tiles) == len(self._tiles):
            for (a, shape), (b, _) in zip(prev_tiles, self._tiles):
                if a.shape != b.shape:
                    continue
                cross_tile = a * np.conj(b)
                tile = np.fft.irfft2(cross_tile / (np.abs(cross_tile) + 1e-12), s=shape)
                ty, tx = np.unravel_index(int(np.argmax(tile)), shape)
                if tile[ty, tx] >= self.min_confidence:
                    dy = ty if ty <= shape[0] // 2 else ty - shape[0]
                    dx = tx if tx <= shape[1] // 2 else tx - shape[1]
                    cells.append((dy % h, dx % w))
        for cell in cells:
            near = _climb(corr, cell)
            if near not in peaks:
                peaks.append(near)
        if len(peaks) > 1 and prev_small is not None and prev_small.shape == self._small.shape:
            def signed(p: int, n: int) -> int:
                return p if p <= n // 2 else p - n

            costs = [self._cost(prev_small, self._small, signed(x, w), signed(y, h)) for y, x in peaks]
            py, px = peaks[int(np.argmin(costs))]  # the first of equal costs: the higher peak
        self._last = (int(py), int(px))
        # numpy integers, as np.argmax gives them: int64 + float32 is float64 (a Python int would
        # keep the sub-pixel sum in float32, 1e-6 px from the single-peak answer)
        py, px = np.intp(py), np.intp(px)
        fy = _subpixel(corr[(py - 1) % h, px], corr[py, px], corr[(py + 1) % h, px])
        fx = _subpixel(corr[py, (px - 1) % w], corr[py, px], corr[py, (px + 1) % w])
        vy = (py if py <= h // 2 else py - h) + fy
        vx = (px if px <= w // 2 else px - w) + fx
        return (vx * self._factor, vy * self._factor)


def _tile_spectra(small: np.ndarray, tiles: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """The windowed spectra of ``small``'s ``tiles x tiles`` tiles (none when a tile would be
    under 16 pixels a side), each with its shape."""
    h, w = small.shape
    th, tw = h // tiles, w // tiles
    if min(th, tw) < 16:
        return []
    window = np.outer(np.hanning(th), np.hanning(tw)).astype(np.float32)
    out = []
    for i in range(tiles):
        for j in range(tiles):
            t = small[i * th:(i + 1) * th, j * tw:(j + 1) * tw]
            out.append((np.fft.rfft2((t - t.mean()) * window), (th, tw)))
    return out


def _climb(corr: np.ndarray, at: tuple[int, int]) -> tuple[int, int]:
    """The local maximum of ``corr`` reached from cell ``at`` by steps to the highest of the 3x3
    neighbours (wrapping around), at most a few steps away."""
    h, w = corr.shape
    y, x = at
    for _ in range(4):
        best = max((((y + dy) % h, (x + dx) % w) for dy in (-1, 0, 1) for dx in (-1, 0, 1)),
                   key=lambda c: corr[c])
        if best == (y, x):
            break
        y, x = best
    return int(y), int(x)


def _peaks(corr: np.ndarray, count: int, share: float) -> list[tuple[int, int]]:
    """Up to ``count`` local maxima of ``corr`` (over their 3x3 neighbours, the picture
    wrapping around as the correlation does), highest first, none below ``share`` of the
    highest: ``(row, column)`` pairs."""
    top = np.unravel_index(int(np.argmax(corr)), corr.shape)
    local = np.ones(corr.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                local &= corr >= np.roll(corr, (dy, dx), axis=(0, 1))
    floor = share * float(corr[top])
    rows, cols = np.nonzero(local & (corr >= floor))
    order = np.argsort(-corr[rows, cols], kind="stable")[:count]
    found = [(int(rows[i]), int(cols[i])) for i in order]
    if (int(top[0]), int(top[1])) not in found:  # a plateau's maximum is still the first candidate
        found = [(int(top[0]), int(top[1]))] + found[:count - 1]
    return found


__all__ = ["MotionEstimator", "luma"]
