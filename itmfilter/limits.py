"""The largest inputs itmfilter accepts, written once (``sidecar/SPEC.md`` section 13).

Every reader checks a size against these *before* it allocates for it: a picture's
dimensions from its header before its pixels are decoded, a model config before a network
is built, a zstd frame's declared content size before it is decompressed, a frame number
before anything walks up to it. What lies beyond is refused as malformed (the input is
hostile or damaged), not attempted. A conforming decoder must accept everything within.
"""

from __future__ import annotations

from itmfilter.errors import ItmError

MIN_PICTURE_SIDE = 8
"""Pixels: the smallest width or height of a picture or video that is encoded, transcoded
or played (a 1x1 picture leaves adaptation no pixel to draw: its error is measured on
every 4th pixel each way). Readers accept smaller pictures; the commands refuse them."""

MAX_PICTURE_SIDE = 16384
"""Pixels: the largest width or height of a picture or video."""

MAX_PICTURE_PIXELS = 8192 * 8192
"""Pixels (width x height, 64 Mi = 67,108,864): 8K UHD (7680x4320, 33 Mpx) fits twice.
A float32 RGB picture this size is 768 MiB; the pipeline holds a few such arrays."""

MAX_LAYER_WIDTH = 1024
"""Features of any layer of the network (``coord_features``, ``rgb_features``, each of
``hidden``); the shipped configs use at most 64."""

MAX_HIDDEN_LAYERS = 8
"""Entries of ``hidden`` (the shipped configs have 3)."""

MAX_FOURIER_BANDS = 16
"""``fourier_bands``: band k has frequency 2^k pi, so band 16 already oscillates ~100 times
per pixel of a 2160p picture; float32 coordinates carry nothing beyond it."""

MAX_SIREN_W0 = 1e4
"""Largest ``|siren_w0|`` (the shipped configs use 10 and 30); it must be finite."""

MAX_PARAMETERS = 1 << 20
"""Values in one weight set (1,048,576; 4 MiB in float32). The shipped networks have ~9-11k."""

MAX_PACKET_BYTES = 8 << 20
"""Bytes of one track packet (or data-track sample) and of one still's weight-set blob
(8 MiB: a float32 key of :data:`MAX_PARAMETERS` values with room for its overhead)."""

MAX_DECOMPRESSED_BYTES = 8 << 20
"""Bytes one zstd payload may expand to; each payload is further bounded by the exact size
its coding and the track's model config allow, and a frame declaring more is damaged."""

MAX_HEADER_BYTES = 1 << 20
"""Bytes of a track header's JSON (the shipped headers are under 2 KiB)."""

MAX_FRAMES = 1 << 24
"""Frames in a track (16,777,216: 194 hours at 24 fps); frame numbers lie in [0, MAX_FRAMES)
and, when the header states ``frame_count``, in [0, frame_count)."""

MAX_TRACK_BYTES = 1 << 30
"""Bytes of a whole-track file (MKV attachment) or a data track (1 GiB;
a 64 kbit/s track of :data:`MAX_FRAMES` frames at 24 fps is 5.6 GB: such a video's track
is carried as a data track, read sample by sample)."""

MAX_JSON_SIDECAR_BYTES = 256 << 20
"""Bytes of a video's JSON sidecar, checked before it is read (256 MiB; parsing JSON takes
several times its size in memory; a 2-hour 64 kbit/s track is ~77 MB as JSON: longer or
denser tracks travel in the video file, as SEI or a data track)."""

MAX_STILL_SIDECAR_BYTES = 2 * MAX_PACKET_BYTES
"""Bytes of a still's JSON sidecar, checked before it is read (16 MiB: a base64 weight set
of :data:`MAX_PACKET_BYTES` with room for its fields)."""


def picture_size_problem(width: int, height: int, minimum: bool = True) -> str | None:
    """Why a ``width`` x ``height`` picture is refused, or ``None`` when it is accepted;
    ``minimum=False`` checks only the upper limits (what a reader may allocate)."""
    if minimum and min(width, height) < MIN_PICTURE_SIDE:
        return f"{width}x{height}, smaller than the minimum {MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE} pixels"
    if max(width, height) > MAX_PICTURE_SIDE:
        return f"{width}x{height}, a side above the maximum {MAX_PICTURE_SIDE} pixels"
    if width * height > MAX_PICTURE_PIXELS:
        return (f"{width}x{height} = {width * height / 1e6:.1f} Mpx, above the maximum "
                f"{MAX_PICTURE_PIXELS / 1e6:.1f} Mpx (8192x8192)")
    return None


def check_picture_size(path, width: int, height: int, minimum: bool = True) -> None:
    """Raise :class:`ItmError` naming ``path`` when :func:`picture_size_problem` finds one.
    Readers call it with the header's size, before any pixel is decoded."""
    problem = picture_size_problem(int(width), int(height), minimum)
    if problem:
        raise ItmError(path, f"the picture is {problem}",
                       f"give a picture from {MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE} to 8192x8192 pixels "
                       f"({MAX_PICTURE_PIXELS // 1_000_000} Mpx at most)")


__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "MAX_FOURIER_BANDS",
    "MAX_FRAMES",
    "MAX_HEADER_BYTES",
    "MAX_HIDDEN_LAYERS",
    "MAX_JSON_SIDECAR_BYTES",
    "MAX_LAYER_WIDTH",
    "MAX_PACKET_BYTES",
    "MAX_PARAMETERS",
    "MAX_PICTURE_PIXELS",
    "MAX_PICTURE_SIDE",
    "MAX_STILL_SIDECAR_BYTES",
    "MAX_SIREN_W0",
    "MAX_TRACK_BYTES",
    "MIN_PICTURE_SIDE",
    "check_picture_size",
    "picture_size_problem",
]
