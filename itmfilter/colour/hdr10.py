"""HDR10 static metadata: mastering display colour volume and content light levels.

* Mastering display colour volume: SMPTE ST 2086:2018 (carried in HEVC as the
  mastering_display_colour_volume SEI, ITU-T H.265 D.2.28): primaries and white point
  as CIE 1931 xy, max/min luminance in cd/m2.
* Content light level: CTA-861.3-A (2015) Annex A; MaxCLL and MaxFALL in cd/m2, 0 means
  unknown (HEVC content_light_level_info SEI, H.265 D.2.35).

The dataclass holds plain cd/m2 and xy; it is converted to the integer units of the
bitstream (chromaticity in 0.00002 steps, luminance in 0.0001 cd/m2) only at the IO edge
by :meth:`HDR10Metadata.to_x265_params`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .primaries import PRIMARIES_BT2020, PRIMARIES_P3, WHITEPOINT_D65
from .transfer import PQ_PEAK_NITS

__all__ = [
    "HDR10Metadata",
    "LightLevelAccumulator",
    "compute_light_levels",
    "ST2086_CHROMATICITY_UNIT",
    "ST2086_LUMINANCE_UNIT",
]

ST2086_CHROMATICITY_UNIT = 0.00002
"""Step of the xy chromaticity fields in ST 2086 / H.265 SEI (value 50000 = 1.0)."""

ST2086_LUMINANCE_UNIT = 0.0001
"""Step of the mastering luminance fields in ST 2086 / H.265 SEI, cd/m2."""

_LIGHT_LEVEL_MAX = 65535  # MaxCLL / MaxFALL are u(16) in cd/m2 (H.265 D.2.35)

XY = tuple[float, float]


def _xy_tuple(value: Any, what: str) -> XY:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an (x, y) pair of numbers, got {value!r}") from None
    if not (0.0 <= x <= 1.0 and 0.0 < y <= 1.0 and x + y <= 1.0):
        raise ValueError(
            f"{what} = ({x}, {y}) is not a CIE 1931 xy chromaticity (need 0 <= x, 0 < y, x + y <= 1)"
        )
    return (x, y)


def _xy_code(v: float) -> int:
    return int(round(v / ST2086_CHROMATICITY_UNIT))


def _lum_code(v: float) -> int:
    return int(round(v / ST2086_LUMINANCE_UNIT))


@dataclass
class HDR10Metadata:
    """HDR10 static metadata (SMPTE ST 2086:2018 + CTA-861.3-A).

    Attributes
    ----------
    primaries : ((x, y), (x, y), (x, y))
        CIE 1931 xy of the mastering display's R, G, B primaries (in that order; the
        x265 string reorders them to G, B, R).
    white_point : (x, y)
        CIE 1931 xy of the mastering display's white.
    max_luminance : float
        Mastering display peak luminance, cd/m2, (0, 10000].
    min_luminance : float
        Mastering display black luminance, cd/m2, [0, max_luminance).
    max_cll : float
        Maximum content light level, cd/m2, [0, 65535]; 0 = unknown.
    max_fall : float
        Maximum frame-average light level, cd/m2, [0, 65535]; 0 = unknown; at most
        ``max_cll`` when both are known.

    Raises ``ValueError`` naming the field when a value is out of range. Validation runs
    at construction; use :func:`dataclasses.replace` or :meth:`with_light_levels` rather
    than assigning fields so changed values are checked too.
    """

    primaries: tuple[XY, XY, XY]
    white_point: XY
    max_luminance: float
    min_luminance: float
    max_cll: float = 0.0
    max_fall: float = 0.0

    def __post_init__(self) -> None:
        try:
            prims = list(self.primaries)
        except TypeError:
            raise ValueError(f"primaries must be three (x, y) pairs R, G, B, got {self.primaries!r}") from None
        if len(prims) != 3:
            raise ValueError(f"primaries must be three (x, y) pairs R, G, B, got {len(prims)}")
        prims = tuple(_xy_tuple(p, f"primaries[{'RGB'[i]}]") for i, p in enumerate(prims))
        object.__setattr__(self, "primaries", prims)
        object.__setattr__(self, "white_point", _xy_tuple(self.white_point, "white_point"))

        for name in ("max_luminance", "min_luminance", "max_cll", "max_fall"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number of cd/m2, got {value!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            object.__setattr__(self, name, value)

        if not 0.0 < self.max_luminance <= PQ_PEAK_NITS:
            raise ValueError(f"max_luminance must be in (0, 10000] cd/m2, got {self.max_luminance}")
        if not 0.0 <= self.min_luminance < self.max_luminance:
            raise ValueError(
                f"min_luminance must be in [0, max_luminance={self.max_luminance}) cd/m2, "
                f"got {self.min_luminance}"
            )
        for name in ("max_cll", "max_fall"):
            value = getattr(self, name)
            if not 0.0 <= value <= _LIGHT_LEVEL_MAX:
                raise ValueError(f"{name} must be in [0, {_LIGHT_LEVEL_MAX}] cd/m2 (0 = unknown), got {value}")
        if self.max_cll > 0 and self.max_fall > self.max_cll:
            raise ValueError(
                f"max_fall ({self.max_fall}) cannot exceed max_cll ({self.max_cll}): a frame "
                "average is never above the brightest pixel"
            )

    @classmethod
    def p3_d65(
        cls,
        max_luminance: float = 1000.0,
        min_luminance: float = 0.0001,
        max_cll: float = 0.0,
        max_fall: float = 0.0,
    ) -> HDR10Metadata:
        """Mastering on a P3-D65 display (the common HDR10 grading setup)."""
        return cls(
            primaries=tuple(map(tuple, PRIMARIES_P3.tolist())),
            white_point=tuple(WHITEPOINT_D65.tolist()),
            max_luminance=max_luminance,
            min_luminance=min_luminance,
            max_cll=max_cll,
            max_fall=max_fall,
        )

    @classmethod
    def bt2020(
        cls,
        max_luminance: float = 1000.0,
        min_luminance: float = 0.0001,
        max_cll: float = 0.0,
        max_fall: float = 0.0,
    ) -> HDR10Metadata:
        """Mastering display with the full BT.2020 primaries and D65 white."""
        return cls(
            primaries=tuple(map(tuple, PRIMARIES_BT2020.tolist())),
            white_point=tuple(WHITEPOINT_D65.tolist()),
            max_luminance=max_luminance,
            min_luminance=min_luminance,
            max_cll=max_cll,
            max_fall=max_fall,
        )

    def with_light_levels(self, max_cll: float, max_fall: float) -> HDR10Metadata:
        """Copy with MaxCLL / MaxFALL (cd/m2) replaced, e.g. from :func:`compute_light_levels`."""
        return HDR10Metadata(
            self.primaries, self.white_point, self.max_luminance, self.min_luminance, max_cll, max_fall
        )

    def to_x265_params(self) -> str:
        """The x265 ``-x265-params`` fragment for this metadata.

        Format: ``master-display=G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min):max-cll=CLL,FALL`` with
        chromaticities in 0.00002 steps and luminances in 0.0001 cd/m2 (ST 2086 units),
        MaxCLL / MaxFALL rounded to whole cd/m2. P3-D65 at 1000 / 0.0001 cd/m2 gives
        ``G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)``.
        """
        (rx, ry), (gx, gy), (bx, by) = self.primaries
        wx, wy = self.white_point
        master = (
            f"G({_xy_code(gx)},{_xy_code(gy)})"
            f"B({_xy_code(bx)},{_xy_code(by)})"
            f"R({_xy_code(rx)},{_xy_code(ry)})"
            f"WP({_xy_code(wx)},{_xy_code(wy)})"
            f"L({_lum_code(self.max_luminance)},{_lum_code(self.min_luminance)})"
        )
        return f"master-display={master}:max-cll={round(self.max_cll)},{round(self.max_fall)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: lists for xy, floats for cd/m2; keys are the field names."""
        return {
            "primaries": [list(p) for p in self.primaries],
            "white_point": list(self.white_point),
            "max_luminance": self.max_luminance,
            "min_luminance": self.min_luminance,
            "max_cll": self.max_cll,
            "max_fall": self.max_fall,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HDR10Metadata:
        """Inverse of :meth:`to_dict`; ``max_cll`` / ``max_fall`` default to 0 (unknown).

        Raises ``ValueError`` for a missing or unknown key or an out-of-range value.
        """
        if not isinstance(data, dict):
            raise ValueError(f"HDR10 metadata must be a JSON object, got {type(data).__name__}")
        required = {"primaries", "white_point", "max_luminance", "min_luminance"}
        known = required | {"max_cll", "max_fall"}
        missing = required - data.keys()
        if missing:
            raise ValueError(f"HDR10 metadata is missing {sorted(missing)}")
        unknown = data.keys() - known
        if unknown:
            raise ValueError(f"HDR10 metadata has unknown keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)


@dataclass
class LightLevelAccumulator:
    """Running MaxCLL / MaxFALL over frames, as CTA-861.3-A Annex A defines them.

    MaxCLL is the largest max(R, G, B) of any pixel of any frame; MaxFALL the largest
    frame mean of max(R, G, B). Frames are linear BT.2020 RGB in cd/m2, ``(..., 3)``
    (normally ``(H, W, 3)``). Pixel values are clipped to [0, 10000] cd/m2 first
    (negative light from gamut conversion counts as 0, the PQ ceiling bounds the top);
    NaN channels are ignored, all-NaN pixels count as 0.
    """

    max_cll: float = 0.0
    max_fall: float = 0.0
    frame_count: int = field(default=0)

    def add(self, frame_nits) -> None:
        """Fold one frame (linear BT.2020 RGB, cd/m2, shape (..., 3)) into the running levels."""
        arr = np.asarray(frame_nits)
        if arr.ndim == 0 or arr.shape[-1] != 3 or arr.size == 0:
            raise ValueError(
                f"light levels need a non-empty (H, W, 3) RGB frame in cd/m2, got shape {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        # fmax: a NaN channel does not hide the others. Two element-wise fmax calls, not
        # fmax.reduce over the last axis (an inner loop of length 3 per pixel): the same values,
        # 15.0 ms against 114.6 a 1080p frame (benchmarks/colour_speed.py).
        pixel_max = np.fmax(np.fmax(arr[..., 0], arr[..., 1]), arr[..., 2])
        np.nan_to_num(pixel_max, copy=False, nan=0.0, posinf=PQ_PEAK_NITS)
        pixel_max = np.clip(pixel_max, 0.0, PQ_PEAK_NITS, out=pixel_max)
        self.max_cll = max(self.max_cll, float(np.max(pixel_max)))
        self.max_fall = max(self.max_fall, float(np.mean(pixel_max, dtype=np.float64)))
        self.frame_count += 1

    def result(self) -> tuple[float, float]:
        """``(max_cll, max_fall)`` in cd/m2; ``(0.0, 0.0)`` (unknown) before any frame."""
        return self.max_cll, self.max_fall


def compute_light_levels(frames: Iterable) -> tuple[float, float]:
    """MaxCLL and MaxFALL (cd/m2) of an iterable of linear BT.2020 frames in cd/m2.

    See :class:`LightLevelAccumulator`; an empty iterable gives ``(0.0, 0.0)``.
    """
    acc = LightLevelAccumulator()
    for frame in frames:
        acc.add(frame)
    return acc.result()
