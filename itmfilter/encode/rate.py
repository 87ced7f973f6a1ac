"""The metadata rate budget: what ``--max-kbps`` lets each packet of the weight track cost."""

from __future__ import annotations

import dataclasses

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.track.format import TrackHeader

MIN_DELTA_BYTES = 256
"""A delta is not even attempted with fewer bytes than this in the budget."""

PACKET_OVERHEAD_BYTES = 24
"""Bytes every packet costs on top of its payload (ITMP header and CRC; sidecar/SPEC.md)."""


class RateBudget:
    """The metadata rate cap (``max_kbps``; None/0: unlimited), key interval by key interval.

    A KEY (always sent: a shot must start with one) opens a segment that runs to the next
    key (the next shot start or ``key_interval`` frames on, whichever comes first, known
    from the shot pre-pass). The segment may cost ``max_kbps`` over its duration: what the
    key and one packet header per frame leave is spread evenly over its frames as tokens,
    and a delta is offered only the tokens gathered so far. So every segment, and the whole
    track, averages at most the cap (unless a key alone exceeds it), and the deltas are
    spread through the segment instead of all waiting until a key's cost is paid off.
    """

    def __init__(self, max_kbps: float | None, fps: float, shot_starts: set[int], key_interval: int,
                 frame_count: int, per_packet: int = 0) -> None:
        self.limited = bool(max_kbps)
        self.per_packet = PACKET_OVERHEAD_BYTES + int(per_packet)  # what every non-key frame costs anyway
        self.per_frame = (max_kbps or 0.0) * 1000 / 8 / fps
        self.shot_starts = sorted(shot_starts)
        self.key_interval, self.frame_count = key_interval, frame_count
        self.tokens, self.per_delta_frame = 0.0, 0.0

    def segment_frames(self, key_frame: int) -> int:
        end = min(key_frame + self.key_interval, self.frame_count)
        for s in self.shot_starts:
            if s > key_frame:
                end = min(end, s)
                break
        return max(1, end - key_frame)

    def key_sent(self, key_frame: int, nbytes: int, extra: int = 0) -> None:
        """A key of ``nbytes`` (plus ``extra``, e.g. the track header) opened a segment."""
        n = self.segment_frames(key_frame)
        spare = self.per_frame * n - nbytes - extra - self.per_packet * (n - 1)
        self.tokens, self.per_delta_frame = 0.0, max(0.0, spare) / max(1, n - 1)

    def next_frame(self) -> None:
        """Call once per frame after a key, before deciding its packet."""
        self.tokens += self.per_delta_frame

    def affordable(self) -> int | None:
        """Payload bytes a delta may use now (None: unlimited)."""
        return int(self.tokens) if self.limited else None

    def can_afford(self, nbytes: int) -> bool:
        return not self.limited or self.tokens >= nbytes

    def spend(self, payload_bytes: int) -> None:
        self.tokens -= payload_bytes


def final_header_bytes(header: TrackHeader, hdr10: HDR10Metadata | None) -> int:
    """Bytes the header will have once the master's HDR10 metadata is in it (MaxCLL/MaxFALL
    are only known at the end): the rate budget reserves this, not the early header's size.
    Values are written as JSON floats, so the longest plausible ones are assumed."""
    long = 1000.0 + 1 / 3  # a float with a full 17-digit repr
    meta = (hdr10 or HDR10Metadata.bt2020()).to_dict()
    meta.update(max_luminance=long, min_luminance=long / 1e7, max_cll=long, max_fall=long)
    return len(dataclasses.replace(header, hdr10=meta).to_bytes())
