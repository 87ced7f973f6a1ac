"""The metadata rate budget: what ``--max-kbps`` lets each packet of the weight track cost.

The promise (sidecar/SPEC.md section 4, "Rate control"), with ``R`` the cap in bytes per
second, ``r = R / fps`` bytes per frame and ``B = R * buffer_seconds`` the buffer:

* every window of ``n`` consecutive frames costs at most ``n * r + B`` bytes;
* the whole track costs at most ``N * r`` bytes over its ``N`` frames.

Bytes are whole packets (head and check included: 24 bytes in the long form, 6-10 in the
compact form of format 1.3) plus the track header on the frames that carry it (frame 0; in the
SEI carriage the compressed header on the KEYs :func:`itmfilter.track.carriage.sei_header_frames`
picks and an 8-byte reference on the others; in SEI each frame's whole NAL unit and its 4-byte
length, :func:`itmfilter.track.sei.sei_nal_bytes`, for which the encoder plans the packets
against the cap less :data:`itmfilter.track.sei.SEI_FRAMING_RESERVE_BYTES` a frame). This is a
leaky bucket of size ``B``
that drains ``r`` per frame (level ``l_k = max(0, l_{k-1} + s_k - r)``, never above ``B``),
starting and ending empty: a KEY may borrow up to ``B`` ahead of the allowance and the frames
after it pay it back. :func:`check_rate` verifies a track against it exactly.

Segments (key set to key set, :mod:`itmfilter.encode.segments`) are encoded independently, so
the bucket level at each segment boundary is *planned* from pass-1 information only
(:func:`plan_rate`: segment lengths, the header's size, the cheapest KEY): normally 0 (each
segment repays its own KEY), more where a segment cannot pay its cheapest form and the next
one repays it. A segment starts as if the bucket held its planned level and must end at or
below the next one, so what one segment actually spent never changes another's budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.track.format import TrackHeader, decode_packet

MIN_DELTA_BYTES = 256
"""A delta is not even attempted with fewer bytes than this in the budget."""

PACKET_OVERHEAD_BYTES = 24
"""Bytes every long-form packet costs on top of its payload (ITMP header and CRC;
sidecar/SPEC.md section 3): the default head of the planner and the budget. Compact packets
(1.3) cost :func:`itmfilter.track.format.compact_head_bytes`, passed as ``head_bytes``."""

PRIOR_KEY_BYTES = 256
"""Payload bytes planned for a KEY that refits only the prior (the per-shot MMR polynomial:
measured 90-180 bytes): the floor the plan keeps for every key when it can, since the
initialisation alone (17 bytes) scored 13.5 dB PU21 on a global curve where the prior-only
key is near the polynomial's quality."""

DEFAULT_BUFFER_SECONDS = 2.0
"""The buffer ``B`` in seconds of the cap: the worst 1 s window costs at most three times the cap.
Two seconds, not one: a shot's KEY and the look-ahead lane that brings its stream early are each
bounded by about one buffer, so with 1 s a 2 s shot spent 80-89 % of the cap and a 4 s shot about
half, the rest unspent (docs/scene-residual.md, "What does bind a long shot's spending")."""


@dataclasses.dataclass(frozen=True)
class RatePlan:
    """Pass-1 rate plan of a whole track (picklable; :func:`plan_rate`).

    ``levels[j]``: the bucket level (bytes) planned where segment ``j`` starts;
    ``levels[-1]`` is 0 (the track ends with the bucket empty). ``shortfall``: bytes by which
    even the cheapest track exceeds the cap (> 0: infeasible).
    """

    max_kbps: float
    fps: float
    buffer: float
    per_packet: int
    min_key: int
    levels: tuple[float, ...]
    shortfall: float
    head_bytes: int = PACKET_OVERHEAD_BYTES
    key_head_bytes: int = PACKET_OVERHEAD_BYTES

    @property
    def per_frame(self) -> float:
        return self.max_kbps * 1000 / 8 / self.fps


def run_frames_bytes(frames: int, head_bytes: int, run_frames: int, framing: int = 0, shifts: bool = True) -> int:
    """The least ``frames`` consecutive non-key frames of a grid shot cost as shift runs (DELTA
    coding 5, sidecar/SPEC.md section 4) of at most ``run_frames`` frames, counted as the
    budget counts them: each run one packet (``head_bytes``, the run's 2-byte head and, with
    ``shifts``, 4 bytes a frame), each frame it covers ``-framing`` (the per-sample framing the
    plan reserved for every frame, :data:`itmfilter.track.sei.SEI_FRAMING_RESERVE_BYTES` in SEI,
    that a frame without a sample does not spend). Negative when the framing saved exceeds the
    runs' bytes."""
    if frames <= 0:
        return 0
    runs = -(-frames // max(1, run_frames))
    return runs * (int(head_bytes) + 2) + (4 * frames if shifts else 0) - int(framing) * (frames - runs)


def plan_rate(max_kbps: float, fps: float, segment_frames: Sequence[int], *, per_packet: int = 0,
              min_key_bytes: int = 0, header_bytes: int = 0, header_every_key: bool = False,
              buffer_seconds: float = DEFAULT_BUFFER_SECONDS, bare_key_bytes: int | None = None,
              head_bytes: int = PACKET_OVERHEAD_BYTES, key_head_bytes: int | None = None,
              segment_headers: Sequence[int] | None = None, nonkey_bytes=None,
              key_buffer: float | None = None) -> RatePlan:
    """Plan the bucket level at every segment boundary. Segment ``j`` (``segment_frames[j]``
    frames, opening with a KEY) costs at least its cheapest KEY (``min_key_bytes`` of payload
    plus the key's head, ``key_head_bytes``, default ``head_bytes``), the header bytes sent with
    that KEY, and a head of ``head_bytes + per_packet`` bytes on every other frame (or, when
    given, ``nonkey_bytes(n - 1)`` for them all: shift runs, :func:`run_frames_bytes`); what it
    cannot pay from its own ``n * r`` is carried as a level the next segment repays.

    The header bytes of segment ``j`` are ``segment_headers[j]`` when given (the SEI carriage:
    the compressed header on some KEYs, a reference on the others), else ``header_bytes`` on
    the first segment or, ``header_every_key``, on all. ``B`` is raised, if need be, to hold the
    largest header and the barest KEY (``bare_key_bytes``, default ``min_key_bytes``: the
    initialisation alone) in one frame; a plan where some KEY's cheapest form does not fit
    what the bucket holds at its start is infeasible too. ``key_buffer``: a larger bucket that
    KEYs may borrow from (bytes; shift-run tracks in SEI, whose segments count the carried
    bytes against the cap's own ``B``, :mod:`itmfilter.encode.segments`), for that check only."""
    r = max_kbps * 1000 / 8 / fps
    key_head = head_bytes if key_head_bytes is None else int(key_head_bytes)
    min_key = key_head + int(min_key_bytes)
    bare = key_head + int(min_key_bytes if bare_key_bytes is None else bare_key_bytes)
    head = int(head_bytes) + int(per_packet)
    if segment_headers is None:
        segment_headers = [header_bytes if j == 0 or header_every_key else 0 for j in range(len(segment_frames))]
    if len(segment_headers) != len(segment_frames):
        raise ValueError(f"{len(segment_headers)} segment headers for {len(segment_frames)} segments")
    largest = max(segment_headers, default=header_bytes)
    buffer = max(max_kbps * 1000 / 8 * float(buffer_seconds), largest + bare - r)
    levels, level, over = [0.0], 0.0, 0.0
    for n, header in zip(segment_frames, segment_headers):
        over = max(over, level + header + min_key - r - max(buffer, key_buffer or 0.0))  # this KEY must fit the bucket
        rest = head * (n - 1) if nonkey_bytes is None else nonkey_bytes(n - 1)
        level = max(0.0, level + min_key + rest + header - n * r)
        levels.append(level)
    shortfall = max(levels[-1], over)
    levels[-1] = 0.0
    return RatePlan(float(max_kbps), float(fps), buffer, int(per_packet), min_key, tuple(levels), shortfall,
                    int(head_bytes), key_head)


AHEAD_MIN_BYTES = 64
"""A segment is offered no ahead bytes below this (a few bytes gain nothing for their heads)."""
AHEAD_SLACK = 0.02
"""Share of a planned lane the receiving segment leaves unused (plus 16 bytes): the lane is
simulated with incompressible placeholder bytes, and in SEI real bytes may need a little more
emulation prevention than those did."""


def plan_ahead(plan: RatePlan, segment_frames: Sequence[int], opens_shot: Sequence[bool], nonkey_bytes,
               lane_packet_bytes: int, lane_frames: int) -> tuple[int, ...]:
    """Ahead bytes per segment (the look-ahead, sidecar/SPEC.md section 4, DELTA coding 6):
    segment ``j`` that opens a shot may receive, besides its KEY, up to ``aheads[j]`` bytes of
    its refinement stream carried by the tail of segment ``j - 1`` (a lane of DELTA coding 6
    packets), so they serve all of its frames instead of arriving over them. The lane is what
    segment ``j - 1`` can send after the largest KEY its budget allows and the bare runs of its
    other frames (``nonkey_bytes(n - 1)``), less the heads of the packets the lane travels in
    (one per ``lane_frames`` frames, ``lane_packet_bytes`` each beyond a bare run's), at most
    ``B``, less :data:`AHEAD_SLACK`; half of that where segment ``j - 1`` itself received
    nothing ahead (the first shot), whose own later stream would otherwise get nothing. The
    rate promise is unchanged: the lane's bytes are counted in the frames that carry them, so
    every window still holds (the sender reserves them in its tail,
    :func:`itmfilter.encode.segments._grid_run_packets`, :func:`lane_bytes` of them)."""
    r, buffer = plan.per_frame, plan.buffer
    aheads = [0] * len(segment_frames)
    for j in range(1, len(segment_frames)):
        if not opens_shot[j]:
            continue
        n = segment_frames[j - 1]
        allowance = n * r + plan.levels[j] - plan.levels[j - 1]
        rest = nonkey_bytes(n - 1)
        key_cap = min(allowance - rest, r + buffer - plan.levels[j - 1])
        packets = -(-(n - 1) // max(1, lane_frames))
        spare = allowance - key_cap - rest - packets * lane_packet_bytes
        if not aheads[j - 1]:  # a sender that received nothing ahead keeps half for its own stream
            spare /= 2
        ahead = int(min(buffer, spare) / (1 + AHEAD_SLACK)) - 17
        aheads[j] = ahead if ahead >= AHEAD_MIN_BYTES else 0
    return tuple(aheads)


def lane_bytes(ahead: int) -> int:
    """Bytes a sender reserves in its tail for a receiver planned ``ahead`` bytes
    (:func:`plan_ahead`): those, :data:`AHEAD_SLACK` of them and 16 more."""
    return 0 if ahead <= 0 else int(ahead + -(-ahead * AHEAD_SLACK // 1) + 16)


class RateBudget:
    """One segment's budget under the cap (``max_kbps``; None/0: unlimited).

    The segment runs from its KEY to ``frame_count`` (or ``key_interval`` frames, or the
    next of ``shot_starts``). It starts as if the bucket held ``start_level`` and must end
    with it at most ``end_level`` (from :func:`plan_rate`; both 0 for a lone segment), so it
    may spend ``n * r + end_level - start_level``. :meth:`key_budget` says what the KEY may
    cost: that, less one head (``24 + per_packet``) per later frame and ``extra`` (the
    header), and at most what the bucket holds. What the KEY leaves is spread evenly over the
    segment's frames as tokens; a DELTA is offered only the tokens gathered so far
    (:meth:`affordable`), never more than the bucket allows this frame. Every packet is
    accounted with :meth:`record` (the KEY's by :meth:`key_sent`).
    """

    def __init__(self, max_kbps: float | None, fps: float, shot_starts: set[int], key_interval: int,
                 frame_count: int, per_packet: int = 0, buffer_seconds: float = DEFAULT_BUFFER_SECONDS,
                 start_level: float = 0.0, end_level: float = 0.0, buffer: float | None = None,
                 head_bytes: int = PACKET_OVERHEAD_BYTES, key_head_bytes: int | None = None) -> None:
        self.limited = bool(max_kbps)
        self.per_packet = int(head_bytes) + int(per_packet)  # what every non-key frame costs anyway
        self.key_head = int(head_bytes if key_head_bytes is None else key_head_bytes)
        self.per_frame = (max_kbps or 0.0) * 1000 / 8 / fps  # r
        self.buffer = buffer if buffer is not None else (max_kbps or 0.0) * 1000 / 8 * float(buffer_seconds)
        self.shot_starts = sorted(shot_starts)
        self.key_interval, self.frame_count = key_interval, frame_count
        self.start_level, self.end_level = float(start_level), float(end_level)
        self.tokens, self.per_delta_frame = 0.0, 0.0
        self.level = float(start_level)  # the bucket, as if the earlier segments spent all they were planned
        self._end: int | None = None  # the segment's end (exclusive), known once its KEY is sent
        self._last = 0  # the last frame accounted

    @classmethod
    def for_segment(cls, plan: RatePlan | None, index: int, start: int, end: int, key_interval: int) -> "RateBudget":
        """The budget of segment ``index`` (frames ``start`` to ``end``) under ``plan``."""
        if plan is None:
            return cls(None, 24.0, set(), key_interval, 0)
        return cls(plan.max_kbps, plan.fps, {end}, key_interval, end, per_packet=plan.per_packet,
                   start_level=plan.levels[index], end_level=plan.levels[index + 1], buffer=plan.buffer,
                   head_bytes=plan.head_bytes, key_head_bytes=plan.key_head_bytes)

    def segment_frames(self, key_frame: int) -> int:
        end = min(key_frame + self.key_interval, self.frame_count)
        for s in self.shot_starts:
            if s > key_frame:
                end = min(end, s)
                break
        return max(1, end - key_frame)

    def room(self) -> float:
        """Bytes the next frame's whole packet may cost with the bucket staying within ``B``
        and, after the KEY, still able to drain to ``end_level`` by the segment's end while
        every later frame sends at least its head: the next segment is planned to start at
        that level. (Without the second bound, tokens saved over a stretch of shifts could be
        spent on the last frames, leaving the bucket near ``B`` where the next KEY borrows up
        to ``B`` again: measured 87-308 B over ``n * r + B`` at the 6 s shot start of the
        640x360 benchmark clip at 8 and 16 kbit/s.)"""
        room = self.per_frame + self.buffer - self.level
        if self._end is not None:
            after = max(0, self._end - self._last - 2)  # frames after the next one
            room = min(room, self.end_level + after * (self.per_frame - self.per_packet) + self.per_frame - self.level)
        return room

    def _allowance(self, key_frame: int) -> float:
        return self.segment_frames(key_frame) * self.per_frame + self.end_level - self.start_level

    def key_budget(self, key_frame: int, extra: int = 0) -> int | None:
        """Payload bytes the KEY opening the segment at ``key_frame`` may use (None: no cap).
        ``extra``: bytes sent with it (the track header)."""
        if not self.limited:
            return None
        n = self.segment_frames(key_frame)
        total = min(self._allowance(key_frame) - self.per_packet * (n - 1), self.room())
        return max(0, int(total - extra - self.key_head))

    def key_sent(self, key_frame: int, nbytes: int, extra: int = 0) -> None:
        """A key packet of ``nbytes`` (plus ``extra``, e.g. the track header) opened the segment."""
        if not self.limited:
            return
        n = self.segment_frames(key_frame)
        spare = self._allowance(key_frame) - nbytes - extra - self.per_packet * (n - 1)
        self.tokens, self.per_delta_frame = 0.0, max(0.0, spare) / max(1, n - 1)
        self._end = key_frame + n
        self.record(key_frame, nbytes + extra)

    def release(self) -> None:
        """Offer every token the KEY left for the segment's later frames now, not spread evenly:
        for a payload worth more the sooner it arrives (a grid refinement), paced by the
        bucket's :meth:`room` alone. The segment's total stays within its allowance."""
        if self._end is None:
            return
        later = max(0, self._end - self._last - 1)
        self.tokens += self.per_delta_frame * later
        self.per_delta_frame = 0.0

    def next_frame(self) -> None:
        """Call once per frame after a key, before deciding its packet."""
        self.tokens += self.per_delta_frame

    def affordable(self) -> int | None:
        """Payload bytes a delta may use now (None: unlimited): the tokens, within what the
        bucket allows this frame."""
        if not self.limited:
            return None
        return max(0, int(min(self.tokens, self.room() - self.per_packet)))

    def can_afford(self, nbytes: int) -> bool:
        return not self.limited or (self.affordable() or 0) >= nbytes

    def spend(self, payload_bytes: int) -> None:
        self.tokens -= payload_bytes

    def record(self, frame: int, nbytes: int) -> None:
        """Account a frame's whole packet (plus a header sent with it) in the bucket."""
        self.level = max(0.0, self.level + nbytes - self.per_frame)
        self._last = frame


def carried_sizes(packets: list[bytes], header_bytes: int, header_every_key: bool = False,
                  header_sizes: dict[int, int] | None = None) -> list[int]:
    """Bytes per frame as the rate promise counts them: each packet, plus the header on the
    first frame and, when ``header_every_key``, on every KEY; or, when ``header_sizes`` is
    given (``{frame index: bytes sent before its packet}``, the SEI carriage's compressed
    headers and references), exactly those."""
    sizes = []
    for k, raw in enumerate(packets):
        if header_sizes is not None:
            sizes.append(len(raw) + header_sizes.get(k, 0))
            continue
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


def check_rate(sizes: list[int], max_kbps: float, fps: float, buffer_seconds: float = DEFAULT_BUFFER_SECONDS,
               buffer: float | None = None) -> list[str]:
    """What breaks the promise for per-frame byte counts ``sizes`` (headers included): an
    empty list when the whole track is within ``N * r`` and every window of ``n`` frames
    within ``n * r + B`` (checked exactly, over all windows, in slack form: ``s_k = (k+1) r -
    bytes(0..k)`` and its running maximum ``m``; a window ending at ``k`` exceeds its bound by
    ``m_{k-1} - s_k - B``). ``buffer``: ``B`` in bytes, else ``max_kbps * buffer_seconds``."""
    r = max_kbps * 1000 / 8 / fps
    b = buffer if buffer is not None else max_kbps * 1000 / 8 * buffer_seconds
    problems, slack, peak = [], 0.0, 0.0
    for k, s in enumerate(sizes):
        slack += r - s
        if peak - slack > b + 1e-6:
            problems.append(f"frame {k}: a window ending here costs {peak - slack - b:.0f} B over n*r + B")
        peak = max(peak, slack)
    if slack < -1e-6:
        problems.append(f"whole track: {-slack:.0f} B over N*r")
    return problems


def final_header_bytes(header: TrackHeader, hdr10: HDR10Metadata | None, compressed: bool = False) -> int:
    """Bytes the header will have once the master's HDR10 metadata is in it (MaxCLL/MaxFALL
    are only known at the end): the rate budget reserves this, not the early header's size.
    Values are written as JSON floats, so the longest plausible ones are assumed, with digits
    that do not repeat (zstd would shrink a repeating one). ``compressed``: the size of
    :meth:`TrackHeader.to_compressed_bytes`, plus :data:`COMPRESSED_HEADER_MARGIN`."""
    long = 1000.0 + 0.12345678901234  # a float with a full 17-digit repr
    meta = (hdr10 or HDR10Metadata.bt2020()).to_dict()
    meta.update(max_luminance=long, min_luminance=(long - 0.75) / 1e7, max_cll=long - 0.25, max_fall=long - 0.5)
    final = dataclasses.replace(header, hdr10=meta)
    if compressed:
        return len(final.to_compressed_bytes()) + COMPRESSED_HEADER_MARGIN
    return len(final.to_bytes())


COMPRESSED_HEADER_MARGIN = 16
"""Bytes reserved beyond the compressed size of the longest plausible final header, whose real
values compress differently; the encoder reports a header that outgrows it
(``VideoEncodeReport.notes``) and the rate tests would fail on one."""
