"""Global motion between consecutive frames, by phase correlation (encoder side).

C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method", IEEE
Conference on Cybernetics and Society, 1975: the normalised cross-power spectrum of two
pictures that differ by a translation is a pure phase ramp whose inverse transform peaks at
the translation. The peak's neighbours give the sub-pixel part (Foroosh et al. 2002).
Used by ``itmfilter encode`` to predict each frame's weights from the previous frame's set
shifted by the camera's motion (:mod:`itmfilter.track.motion`).
"""

from __future__ import annotations

import numpy as np

MAX_SIDE = 960
"""Pictures are block-averaged by an integer factor until their longer side is at most this."""

MIN_CONFIDENCE = 0.15
"""Peak height of the normalised correlation (1 for a perfect translation) below which no
motion is reported (a cut, a flash, motion that is not a global translation)."""


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
        self.confidence = 0.0

    def reset(self) -> None:
        self._prev = None

    def _spectrum(self, frame: np.ndarray) -> np.ndarray:
        img = luma(frame) if frame.ndim == 3 else np.asarray(frame, dtype=np.float32)
        self._factor = max(1, -(-max(img.shape) // self.max_side))
        small = _downscale(img.astype(np.float32), self._factor)
        self._shape = small.shape
        window = np.outer(np.hanning(small.shape[0]), np.hanning(small.shape[1])).astype(np.float32)
        return np.fft.rfft2((small - small.mean()) * window)

    def __call__(self, frame: np.ndarray) -> tuple[float, float] | None:
        spec = self._spectrum(frame)
        prev, self._prev = self._prev, spec
        if prev is None or prev.shape != spec.shape:
            self.confidence = 0.0
            return None
        cross = prev * np.conj(spec)
        cross /= np.abs(cross) + 1e-12
        corr = np.fft.irfft2(cross, s=self._shape)
        py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
        h, w = corr.shape
        self.confidence = float(corr[py, px])
        if self.confidence < self.min_confidence:
            return None
        fy = _subpixel(corr[(py - 1) % h, px], corr[py, px], corr[(py + 1) % h, px])
        fx = _subpixel(corr[py, (px - 1) % w], corr[py, px], corr[py, (px + 1) % w])
        vy = (py if py <= h // 2 else py - h) + fy
        vx = (px if px <= w // 2 else px - w) + fx
        return (vx * self._factor, vy * self._factor)


__all__ = ["MotionEstimator", "luma"]
