"""``itmfilter transcode IN -o -``: HDR10 frames streamed into a pipe, for
``| ffmpeg -i - ...`` pipelines and players (the mpv script ``players/itmfilter.lua``).

Two stream formats, both lossless 10-bit 4:2:0 (the filter's codes exactly), with the
source's audio packets copied alongside:

- ``mkv`` (default): Matroska with FFV1. Matroska carries the colour tags (BT.2020
  primaries, PQ, BT.2020 NCL, narrow range) from the codec context, so ``ffmpeg -i -``
  and players see HDR10 without being told; FFV1 costs CPU (``docs/api-throughput.md``).
- ``nut``: NUT with rawvideo, the cheapest stream (a copy); NUT has no field
  for colour tags (checked with ffprobe and PyAV: they read back unspecified), so the
  reader must tag the frames (mpv: ``vf=format=...:gamma=pq``, ffmpeg: input options
  ``-color_primaries bt2020 -color_trc smpte2084 -colorspace bt2020nc -color_range tv``).

Frames are filtered by :func:`itmfilter.render.frame.hdr10_frame` with the network of
their presentation index (:mod:`itmfilter.track.provider`); they keep their source
timestamps, so a stream started at ``start_s`` shows the source's clock. Nothing but the
stream goes to the sink; the progress bar and notes go to stderr.

No MaxCLL/MaxFALL pre-pass is made (a pipe must start at once): the HDR10 static metadata
is the track header's, reported as an x265 fragment on stderr for the downstream encoder.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import torch
from tqdm import tqdm

from itmfilter.errors import ItmError
from itmfilter.media.frames import DecodeAhead, open_input, settled_clock, video_stream
from itmfilter.model.net import resolve_device
from itmfilter.render.frame import auto_rung, hdr10_frame, tag_hdr10
from itmfilter.render.ladder import RUNG_NAMES
from itmfilter.track.provider import FrameNetworks

STREAM_FORMATS = {"mkv": ("matroska", "ffv1"), "nut": ("nut", "rawvideo")}
"""``--format`` -> (FFmpeg muxer, video codec)."""


@dataclass
class StreamResult:
    """What :func:`stream_hdr10` wrote: ``frames`` sent, ``mode`` (``weights``/``blind``),
    ``rung`` used, ``damaged_frames`` (weights concealed or missing), ``seconds`` of wall
    time, ``closed_early`` when the reader closed the pipe before the end (a player that
    seeked or quit: not an error), ``notes`` for stderr."""

    frames: int = 0
    mode: str = ""
    rung: str = ""
    damaged_frames: int = 0
    seconds: float = 0.0
    closed_early: bool = False
    notes: list[str] = field(default_factory=list)


def _close_quietly(container) -> None:
    """Close an output whose reader has gone (its trailer cannot be written)."""
    try:
        container.close()
    except (OSError, av.error.FFmpegError):
        pass


def stream_hdr10(source: str | Path, sink, *, fmt: str = "mkv", start_s: float = 0.0, rung: str = "full",
                 device: str = "auto", precision: str = "auto", quiet: bool = False,
                 threads: int | None = None) -> StreamResult:
    """Filter ``source`` from ``start_s`` seconds (presentation time from the stream's
    start) and write an HDR10 ``fmt`` stream (:data:`STREAM_FORMATS`) into ``sink``, a
    writable binary file object (``sys.stdout.buffer``, a FIFO). ``rung``: a ladder rung
    or ``auto`` (the best that keeps up with the frame rate, timed on the first frame).
    Raises :class:`ItmError` for bad input; a reader closing the pipe ends it quietly.

    ``threads``: torch CPU threads while streaming (restored after); ``None`` leaves a core
    to the decoder, the encoder and the reader, as the player does: torch's OpenMP threads
    spin, and on a shared 2-core machine a 2-thread network call was measured 10-20x
    slower than a 1-thread one.
    """
    saved = torch.get_num_threads()
    threads = int(threads) if threads else max(1, min(saved, (os.cpu_count() or 2) - 1))
    torch.set_num_threads(threads)
    try:
        return _stream(Path(source), sink, fmt, start_s, rung, device, precision, quiet, threads)
    finally:
        torch.set_num_threads(saved)


def _stream(source: Path, sink, fmt: str, start_s: float, rung: str, device: str, precision: str,
            quiet: bool, threads: int) -> StreamResult:
    if fmt not in STREAM_FORMATS:
        raise ItmError(None, f"unknown --format {fmt!r}", f"use one of {', '.join(STREAM_FORMATS)}")
    if rung != "auto" and rung not in RUNG_NAMES:
        raise ItmError(None, f"unknown --rung {rung!r}", f"use auto or one of {', '.join(RUNG_NAMES)}")
    if start_s < 0:
        raise ItmError(None, f"--start {start_s} is negative", "give seconds from the start, >= 0")
    try:
        torch_device = resolve_device(device)
    except ValueError as exc:
        raise ItmError(None, str(exc), "use --device cpu") from None
    started = time.perf_counter()
    result = StreamResult(rung=rung)
    nets = FrameNetworks(source)
    result.mode = nets.mode
    if nets.track is None:
        result.notes.append(f"{source}: no weight track; blind mode (initialisation alone)")
    else:
        hdr10 = nets.track.header.hdr10_metadata()
        if hdr10 is not None:
            result.notes.append(f"{source}: HDR10 metadata for the encoder: x265-params {hdr10.to_x265_params()}")
    src = open_input(source)
    try:
        vin = video_stream(src, source)
        vin.thread_type = "AUTO"
        clock = settled_clock(src, vin)
        period = 1.0 / float(clock.fps)
        origin = clock.origin or 0.0
        if start_s > 0:
            src.seek(int((origin + start_s) / vin.time_base), stream=vin, backward=True)
        ain = src.streams.audio[0] if src.streams.audio else None
        muxer, codec = STREAM_FORMATS[fmt]
        try:
            out = av.open(sink, mode="w", format=muxer)
        except (av.error.FFmpegError, OSError) as exc:
            raise ItmError(None, f"cannot write a {fmt} stream to the output ({exc})", "check the pipe") from None
        vout = out.add_stream(codec, rate=clock.fps)
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = "yuv420p10le"
        vout.time_base = vin.time_base
        tag_hdr10(vout.codec_context)
        if codec == "ffv1":
            vout.codec_context.options = {"slices": "4", "level": "3"}  # slices: threaded encoding
            vout.thread_count = 0
        aout = out.add_stream_from_template(ain) if ain is not None else None
        total = vin.frames or (nets.track.header.frame_count if nets.track is not None else 0)
        skip = int(round(start_s * float(clock.fps)))
        bar = tqdm(total=max(0, total - skip) or None, unit="frame", desc=source.name, disable=quiet,
                   file=sys.stderr, leave=False)
        ahead = DecodeAhead(src, [vin] + ([ain] if ain is not None else []), vin)
        try:
            for packet, frame in ahead:
                if packet is not None:  # audio, copied through
                    if packet.pts is None or packet.dts is None:
                        continue
                    if float(packet.pts * packet.time_base) < origin + start_s - 0.05:
                        continue
                    packet.stream = aout
                    out.mux(packet)
                    continue
                if frame.pts is None:
                    continue
                if float(frame.pts * vin.time_base) - origin < start_s - period / 2:
                    continue  # decoded from the keyframe before the start
                index = clock.index(frame.pts)
                net = nets(index)
                if result.rung == "auto":
                    result.rung, _ = auto_rung(net, frame, float(clock.fps), torch_device, precision)
                hdr = tag_hdr10(hdr10_frame(frame, net, result.rung, torch_device, precision))
                if torch.get_num_threads() != threads:
                    # numba's OpenMP start-up (the fused path's first call) resets torch's count
                    torch.set_num_threads(threads)
                hdr.pts, hdr.time_base = frame.pts, vin.time_base
                for p in vout.encode(hdr):
                    out.mux(p)
                result.frames += 1
                bar.update(1)
            for p in vout.encode():
                out.mux(p)
            out.close()
        except (BrokenPipeError, ConnectionResetError):
            result.closed_early = True
        except av.error.FFmpegError as exc:
            if exc.errno == errno.EPIPE:  # from FFmpeg's own write: the reader went away
                result.closed_early = True
            else:
                raise ItmError(source, f"cannot be decoded or written after {result.frames} frames ({exc})",
                               "the file may be damaged; re-export it") from None
        finally:
            ahead.close()
            bar.close()
            if result.closed_early:
                _close_quietly(out)
    finally:
        src.close()
    result.damaged_frames = nets.damaged
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["STREAM_FORMATS", "StreamResult", "stream_hdr10"]
