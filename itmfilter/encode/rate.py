"""The metadata rate budget: what ``--max-kbps`` lets each packet of the weight track cost.

The promise (sidecar/SPEC.md section 4, "Rate control"), with ``R`` the cap in bytes per
second, ``r = R / fps`` bytes per frame and ``B = R * buffer_seconds`` the buffer:

* every window of ``n`` consecutive frames costs at most ``n * r + B`` bytes;
* the whole track costs at most ``N * r`` bytes over its ``N`` frames.

Bytes are whole packets (24-byte head and CRC included) plus, on frame 0, the track header.
This is a leaky bucket of size ``B`` draining at ``r`` per frame that starts empty and must
be empty after the last frame: a KEY may borrow up to ``B`` ahead of the allowance, and the
frames after it pay it back. Equivalently (the way :class:`RateBudget` checks it), with the
slack ``s_k = (k + 1) * r - bytes(0..k)`` and its running maximum ``m_k`` (``m_{-1} = 0``),
every frame keeps ``m_{k-1} - s_k <= B`` and the last frame ends with ``s >= 0``.
"""

from __future__ import annotations

import dataclasses

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.track.format import TrackHeader, decode_packet

MIN_DELTA_BYTES = 256
"""A delta is not even attempted with fewer bytes than this in the budget."""

PACKET_OVERHEAD_BYTES = 24
"""Bytes every packet costs on top of its payload (ITMP header and CRC; sidecar/SPEC.md)."""

PRIOR_KEY_BYTES = 256
"""Payload bytes planned for a KEY that refits only the prior (the per-shot MMR polynomial:
measured 90-180 bytes): the floor the budget keeps for every key when it can, since the
initialisation alone (17 bytes) scored 13.5 dB PU21 on a global curve where the prior-only
key is near the polynomial's quality."""

DEFAULT_BUFFER_SECONDS = 1.0
"""The buffer ``B`` in seconds of the cap: the worst 1 s window costs at most twice the cap."""


def planned_keys(shot_starts, key_interval: int, frame_count: int) -> list[int]:
    """The frames the encoder opens a key-to-key segment at: frame 0, every shot start, and
    ``key_interval`` frames after the previous key."""
    starts, keys, last = set(shot_starts), [], None
    for f in range(frame_count):
        if last is None or f in starts or f - last >= key_interval:
            keys.append(f)
            last = f
    return keys


class RateBudget:
    """The cap (``max_kbps``; None/0: unlimited) as a leaky bucket (module docstring).

    Per key-to-key segment (known ahead from the shot pre-pass), :meth:`key_budget` says
    what the KEY may cost: the segment's allowance ``n * r`` plus the slack carried from
    earlier segments, less one packet head per later frame (``per_packet``: 24 bytes plus
    e.g. a motion shift) and less what later segments will need for their cheapest KEYs
    (``min_key_bytes``) when their own allowance cannot pay for them, and at most what the
    buffer holds. ``header_bytes``: the track header, sent with frame 0 (and with every
    KEY when ``header_every_key``, as the SEI carriage does) and counted in that frame. What the KEY leaves is spread evenly over the segment's frames as tokens;
    a DELTA is offered only the tokens gathered so far (:meth:`affordable`), and never more
    than the buffer allows this frame with room kept for a following KEY. Unspent tokens
    stay in the slack and carry into the next segment.
    """

    def __init__(self, max_kbps: float | None, fps: float, shot_starts: set[int], key_interval: int,
                 frame_count: int, per_packet: int = 0, buffer_seconds: float = DEFAULT_BUFFER_SECONDS,
                 min_key_bytes: int = 0, header_bytes: int = 0, header_every_key: bool = False) -> None:
        self.limited = bool(max_kbps)
        self.per_packet = PACKET_OVERHEAD_BYTES + int(per_packet)  # what every non-key frame costs anyway
        self.per_frame = (max_kbps or 0.0) * 1000 / 8 / fps  # r
        self.buffer = (max_kbps or 0.0) * 1000 / 8 * float(buffer_seconds)  # B
        self.min_key = PACKET_OVERHEAD_BYTES + int(min_key_bytes)  # the cheapest whole KEY packet
        self.shot_starts = sorted(shot_starts)
        self.key_interval, self.frame_count = key_interval, frame_count
        self.tokens, self.per_delta_frame = 0.0, 0.0
        self.slack, self.peak = 0.0, 0.0  # s and m of the module docstring
        self.frame = -1  # the last frame recorded
        self._spendable = 0.0  # what the current segment may spend in all
        self._planned = -1  # the key frame _spendable was planned for
        self._keys = planned_keys(shot_starts, key_interval, frame_count) if self.limited else []
        # need[k]: slack that must remain when the segment opened at k ends so that every later
        # segment can at least send its cheapest KEY and a bare packet head on each other frame
        # (negative: later segments' surplus a segment may borrow, only to pay its own minimum).
        # least[k]: that minimum for the segment itself.
        self._need: dict[int, float] = {}
        self._least: dict[int, float] = {}
        need = 0.0
        bounds = self._keys + [frame_count]
        for j in range(len(self._keys) - 1, -1, -1):
            self._need[self._keys[j]] = need
            n = bounds[j + 1] - bounds[j]
            least = self.min_key + self.per_packet * (n - 1) + (header_bytes if j == 0 or header_every_key else 0)
            self._least[self._keys[j]] = least
            need += least - n * self.per_frame
        self.shortfall = need  # > 0: the cap cannot pay even the cheapest track
        # the buffer must at least hold the first frame's cheapest form (header and key)
        self.buffer = max(self.buffer, header_bytes + self.min_key - self.per_frame) if self.limited else 0.0

    def segment_frames(self, key_frame: int) -> int:
        end = min(key_frame + self.key_interval, self.frame_count)
        for s in self.shot_starts:
            if s > key_frame:
                end = min(end, s)
                break
        return max(1, end - key_frame)

    def _planned_segment(self, key_frame: int) -> int | None:
        opened = [k for k in self._keys if k <= key_frame]
        return opened[-1] if opened else None

    def window_room(self) -> float:
        """Bytes the next frame's whole packet may cost without breaking the buffer bound."""
        return self.per_frame + self.buffer - (self.peak - self.slack)

    def key_budget(self, key_frame: int, extra: int = 0) -> int | None:
        """Payload bytes the KEY opening a segment at ``key_frame`` may use (None: no cap).
        ``extra``: bytes sent with it (the track header on frame 0). Plans the segment."""
        if not self.limited:
            return None
        n = self.segment_frames(key_frame)
        self._planned = key_frame
        later_key = key_frame + n < self.frame_count
        seg = self._planned_segment(key_frame)
        need = self._need.get(seg, 0.0)
        self._spendable = self.slack + n * self.per_frame - max(0.0, need)
        if seg == key_frame:  # borrow from later segments' surplus only to pay this one's minimum
            self._spendable = max(self._spendable, min(self._least[seg], self.slack + n * self.per_frame - need))
        room = self.window_room() - (self.min_key if later_key and n == 1 else 0)
        total = min(self._spendable - self.per_packet * (n - 1), room)
        return max(0, int(total - extra - PACKET_OVERHEAD_BYTES))

    def key_sent(self, key_frame: int, nbytes: int, extra: int = 0) -> None:
        """A key packet of ``nbytes`` (plus ``extra``, e.g. the track header) opened a segment."""
        if not self.limited:
            return
        if self.frame != key_frame - 1 or self._planned != key_frame:
            self.key_budget(key_frame, extra)
        n = self.segment_frames(key_frame)
        spare = self._spendable - nbytes - extra - self.per_packet * (n - 1)
        self.tokens, self.per_delta_frame = 0.0, max(0.0, spare) / max(1, n - 1)
        self.record(key_frame, nbytes + extra)

    def next_frame(self) -> None:
        """Call once per frame after a key, before deciding its packet."""
        self.tokens += self.per_delta_frame

    def affordable(self) -> int | None:
        """Payload bytes a delta may use now (None: unlimited): the tokens, within what the
        buffer allows this frame, keeping room for a KEY that may follow."""
        if not self.limited:
            return None
        room = self.window_room() - self.per_packet - self.min_key
        return max(0, int(min(self.tokens, room)))

    def can_afford(self, nbytes: int) -> bool:
        return not self.limited or (self.affordable() or 0) >= nbytes

    def spend(self, payload_bytes: int) -> None:
        self.tokens -= payload_bytes

    def record(self, frame: int, nbytes: int) -> None:
        """Account a frame's whole packet (plus the header on frame 0) in the bucket."""
        self.frame = frame
        self.slack += self.per_frame - nbytes
        self.peak = max(self.peak, self.slack)


def carried_sizes(packets: list[bytes], header_bytes: int, header_every_key: bool = False) -> list[int]:
    """Bytes per frame as the rate promise counts them: each packet, plus the header on the
    first frame and, when ``header_every_key`` (the SEI carriage), on every KEY."""
    sizes = []
    for k, raw in enumerate(packets):
        with_header = k == 0 or (header_every_key and decode_packet(raw).kind == "key")
        sizes.append(len(raw) + (header_bytes if with_header else 0))
    return sizes


def window_bytes(sizes: list[int], window: int) -> int:
    """The largest sum of ``window`` consecutive entries of ``sizes`` (bytes per frame)."""
    if not sizes:
        return 0
    window = max(1, min(window, len(sizes)))
    run = best = sum(sizes[:window])
    for i in range(window, len(sizes)):
        run += sizes[i] - sizes[i - window]
        best = max(best, run)
    return best


def check_rate(sizes: list[int], max_kbps: float, fps: float, buffer_seconds: float = DEFAULT_BUFFER_SECONDS) -> list[str]:
    """What breaks the promise for per-frame byte counts ``sizes`` (frame 0 with the header):
    an empty list when the whole track is within ``N * r`` and every window of ``n`` frames
    within ``n * r + B`` (checked as the bucket of the module docstring, exactly)."""
    r, b = max_kbps * 1000 / 8 / fps, max_kbps * 1000 / 8 * buffer_seconds
    problems, slack, peak = [], 0.0, 0.0
    for k, s in enumerate(sizes):
        slack += r - s
        if peak - slack > b + 1e-6:
            problems.append(f"frame {k}: a window ending here costs {peak - slack - b:.0f} B over n*r + B")
        peak = max(peak, slack)
    if slack < -1e-6:
        problems.append(f"whole track: {-slack:.0f} B over N*r")
    return problems


def final_header_bytes(header: TrackHeader, hdr10: HDR10Metadata | None) -> int:
    """Bytes the header will have once the master's HDR10 metadata is in it (MaxCLL/MaxFALL
    are only known at the end): the rate budget reserves this, not the early header's size.
    Values are written as JSON floats, so the longest plausible ones are assumed."""
    long = 1000.0 + 1 / 3  # a float with a full 17-digit repr
    meta = (hdr10 or HDR10Metadata.bt2020()).to_dict()
    meta.update(max_luminance=long, min_luminance=long / 1e7, max_cll=long, max_fall=long)
    return len(dataclasses.replace(header, hdr10=meta).to_bytes())
