"""Batch transcode as Ray tasks: :func:`itmfilter.transcode.video.transcode_one` (a pure
function of a picklable :class:`TranscodeJob`) mapped over the jobs on a Ray cluster, one
bar over the files. The workers read the sources and write the outputs at the paths in
the jobs (shared storage on a real cluster); every write is atomic, so a task Ray re-runs
after its worker died starts clean, and finished outputs are skipped on a re-run.

A file longer than ``split_frames`` is cut into parts at key sets of its weight track
(each part at least ``split_frames`` long, so every part starts where a decoder can
start); each part is a task writing an HEVC file of its frames, and the driver joins the
parts (stream copy, timestamps shifted) with the source's audio and subtitles. The parts
are separate x265 encodes, so the joined file is not the bytes of a whole-file encode;
its frames, timing and HDR10 metadata are the same.
"""

from __future__ import annotations

import heapq
import os
import shutil
from dataclasses import replace
from pathlib import Path

import av

from itmfilter.cluster import connect, run_tasks
from itmfilter.media.atomic import atomic_output
from itmfilter.progress import progress_bar
from itmfilter.track.carriage import load_track
from itmfilter.track.format import decode_packet
from itmfilter.transcode.video import TranscodeJob, TranscodeResult, transcode_one

DEFAULT_SPLIT_FRAMES = 1440
"""Files longer than this (60 s at 24 fps) are transcoded in parts of at least this many frames."""


def transcode_task(job: TranscodeJob) -> TranscodeResult:
    """One file on a worker, with one torch thread (a task holds one CPU)."""
    import torch

    torch.set_num_threads(1)
    return transcode_one(job)


def part_starts(source: str | os.PathLike, split_frames: int) -> list[int]:
    """Where the parts of ``source`` start: key frames of its track at least
    ``split_frames`` apart (``[0]``: one part; no track or a short file)."""
    if split_frames < 1:
        return [0]
    try:
        track = load_track(source)
    except Exception:  # an unreadable file is transcode_one's to report
        return [0]
    if track is None:
        return [0]
    keys = sorted(i for i, raw in track.packets.items() if decode_packet(raw).kind == "key")
    last = max(track.packets, default=0)
    starts = [0]
    for k in keys:
        if k - starts[-1] >= split_frames and last + 1 - k >= split_frames // 2:
            starts.append(k)
    return starts


def _part_jobs(job: TranscodeJob, starts: list[int], folder: Path) -> list[TranscodeJob]:
    ends = starts[1:] + [None]
    # MP4 parts: they keep every decode timestamp (MKV leaves the first ones unset)
    return [replace(job, output=os.fspath(folder / f"part-{i:05d}.mp4"), start=a, end=b, quiet=True)
            for i, (a, b) in enumerate(zip(starts, ends))]


def join_parts(parts: list[str], source: str | os.PathLike, output: str | os.PathLike) -> None:
    """``output``: the parts' video streams back to back (each shifted to its first frame's
    time) with the audio and subtitles of ``source``, by stream copy, atomically."""
    with atomic_output(output, inputs=[source]) as tmp, av.open(str(tmp), "w") as dst:
        inputs = [av.open(p) for p in parts]
        src = av.open(str(source))
        try:
            vin = inputs[0].streams.video[0]
            vout = dst.add_stream_from_template(vin)
            others = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("audio", "subtitle")}

            def video():
                offset = 0  # in the video time base: where the next part starts
                clock = float("-inf")  # merge key: the latest decode time seen (MKV leaves some dts unset)
                for part in inputs:
                    stream = part.streams.video[0]
                    end = offset
                    for pkt in part.demux(stream):
                        if pkt.pts is None and pkt.dts is None:
                            continue  # the demuxer's end-of-stream packet
                        if pkt.pts is not None:
                            pkt.pts += offset
                            end = max(end, pkt.pts + (pkt.duration or 0))
                        if pkt.dts is not None:
                            pkt.dts += offset
                            clock = max(clock, float(pkt.dts * vin.time_base))
                        pkt.stream = vout
                        yield clock, pkt
                    offset = end

            def rest():
                if not others:  # demux([]) would read every stream
                    return
                for pkt in src.demux([s for s in src.streams if s.index in others]):
                    if pkt.dts is None:
                        continue
                    out_stream = others[pkt.stream.index]
                    seconds = float(pkt.dts * pkt.stream.time_base)
                    pkt.stream = out_stream
                    yield seconds, pkt

            for _, pkt in heapq.merge(video(), rest(), key=lambda item: item[0]):
                dst.mux(pkt)
        finally:
            for c in inputs:
                c.close()
            src.close()


def transcode_many_ray(jobs: list[TranscodeJob], *, address: str | None = None, quiet: bool = False,
                       split_frames: int = DEFAULT_SPLIT_FRAMES) -> list[TranscodeResult]:
    """Run ``jobs`` on the Ray cluster at ``address`` (:func:`itmfilter.cluster.connect`),
    long files in parts (module docstring); results in the order of ``jobs``."""
    jobs = [replace(j, quiet=True) for j in jobs]  # the workers' bars would not reach this terminal
    tasks: list[TranscodeJob] = []
    parts_of: dict[str, list[TranscodeJob]] = {}
    for job in jobs:
        starts = [0] if job.output.endswith(".exr") or Path(job.output).exists() else part_starts(job.source, split_frames)
        if len(starts) == 1:
            tasks.append(job)
            continue
        folder = Path(job.output).parent / f".{Path(job.output).name}.itm-parts"
        folder.mkdir(parents=True, exist_ok=True)
        parts_of[job.output] = _part_jobs(job, starts, folder)
        tasks += parts_of[job.output]
    results: dict[str, TranscodeResult] = {}
    with progress_bar(len(tasks), unit="task", desc="transcode on Ray", quiet=quiet) as bar, connect(address):
        for job, result in run_tasks(transcode_task, tasks):
            results[job.output] = result
            bar.update(1)
            bar.set_postfix(frames=sum(r.frames for r in results.values()))
    out = []
    for job in jobs:
        parts = parts_of.get(job.output)
        if parts is None:
            out.append(results[job.output])
            continue
        done = [results[p.output] for p in parts]
        merged = TranscodeResult(job.source, job.output, "failed", frames=sum(r.frames for r in done),
                                 seconds=sum(r.seconds for r in done), mode=done[0].mode,
                                 damaged_frames=sum(r.damaged_frames for r in done),
                                 notes=[n for r in done for n in r.notes])
        failed = [r for r in done if r.status == "failed"]
        if failed:
            merged.error = failed[0].error  # finished parts stay for a re-run (skipped then)
        else:
            join_parts([p.output for p in parts], job.source, job.output)
            shutil.rmtree(Path(parts[0].output).parent, ignore_errors=True)
            merged.status = "done"
            merged.notes.append(f"{job.source}: transcoded in {len(parts)} parts")
        out.append(merged)
    return out
