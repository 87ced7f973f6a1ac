"""The frame-filter API's throughput against ``itmfilter transcode`` on the same file.

One SDR video with a weight track (``--input``, or a synthetic camera pan encoded here at
``--size`` with fast encoder settings) is run through, in interleaved rounds (the best of
``--rounds`` is kept, since the machine may be shared):

- ``api``: a PyAV decode loop calling ``Weights.filter(frame)`` (decode + network + exact
  Y'CbCr -> tagged HDR10 ``av.VideoFrame``; nothing encoded), at each rung of ``--rungs``;
- ``pipe``: ``transcode IN -o -`` as a library call (``stream_hdr10``) into /dev/null:
  the same filter plus muxing, NUT (rawvideo) and Matroska (FFV1), rung full;
- ``transcode``: ``itmfilter transcode IN -o out.mkv`` as a library call
  (``transcode_one``): decode, the network at full resolution, x265 (CLI defaults: crf 16,
  preset medium) and, when the header has no MaxCLL, a first pass.

and, alone, the cost of writing the pipe's stream formats at ``--stream-size`` (the filter's
10-bit output of a smooth moving pattern, encoded by the codecs and settings of
:data:`itmfilter.transcode.stream.STREAM_FORMATS` into memory).

All at ``--threads`` torch threads (the API leaves torch's threads to its caller; the pipe
and the player use cores - 1), and the API's full rung once more at 2 threads beside it.

    python benchmarks/api_throughput.py --size 640x360 --frames 24 --out docs/api-throughput.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import av  # noqa: E402

import itmfilter  # noqa: E402
from itmfilter.transcode.stream import stream_hdr10  # noqa: E402
from itmfilter.transcode.video import TranscodeJob, transcode_one  # noqa: E402


def make_input(work: Path, width: int, height: int, frames: int) -> Path:
    """A camera pan (4 px a frame) across a synthetic HDR panorama with a clipped highlight,
    encoded with the weight track at fast settings (the throughput does not depend on how
    well the weights were fitted)."""
    from itmfilter.data.testmedia import make_master_from_arrays
    from itmfilter.encode.video import VideoEncodeOptions, encode_video

    sdr = work / f"sdr-{width}x{height}-{frames}.mp4"
    if sdr.exists():
        return sdr
    yy, xx = np.mgrid[0:height, 0 : width + 4 * frames].astype(np.float32)
    pano = np.stack([np.sin(xx / 37) ** 2, np.cos(yy / 23) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 41)], -1) * 300 + 2
    pano[height // 3 : height // 2, width // 3 : width // 2] = 950.0
    views = [np.ascontiguousarray(pano[:, 4 * i : 4 * i + width]) for i in range(frames)]
    master = make_master_from_arrays(work / f"master-{width}x{height}-{frames}.mkv", views, fps=24, codec="hevc")
    encode_video(master, sdr, options=VideoEncodeOptions(first_steps=40, warm_steps=5, preset="ultrafast"),
                 quiet=True)
    return sdr


def run_api(sdr: Path, rung: str, threads: int) -> tuple[int, float]:
    weights = itmfilter.open_weights(sdr, device="cpu", rung=rung)
    with av.open(str(sdr)) as src:  # warm-up, untimed: the fused path's JIT and numba's OpenMP start-up,
        weights.filter(next(src.decode(video=0)))
    torch.set_num_threads(threads)  # which resets torch's thread count
    started, n = time.perf_counter(), 0
    with av.open(str(sdr)) as src:
        for frame in src.decode(video=0):
            weights.filter(frame)
            n += 1
    return n, time.perf_counter() - started


def run_pipe(sdr: Path, fmt: str, threads: int) -> tuple[int, float]:
    with open(os.devnull, "wb") as sink:
        res = stream_hdr10(sdr, sink, fmt=fmt, device="cpu", quiet=True, threads=threads)
    return res.frames, res.seconds


def run_transcode(sdr: Path, work: Path, threads: int) -> tuple[int, float]:
    torch.set_num_threads(threads)
    out = work / "transcoded.mkv"
    out.unlink(missing_ok=True)
    res = transcode_one(TranscodeJob(str(sdr), str(out), device="cpu"))
    assert res.status == "done", res.error
    return res.frames, res.seconds


def stream_cost(width: int, height: int, frames: int = 10) -> dict[str, float]:
    """ms a frame to encode and mux yuv420p10le frames in each ``--format`` of ``transcode -o -``."""
    import io

    from itmfilter.render.frame import tag_hdr10
    from itmfilter.transcode.stream import STREAM_FORMATS

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pictures = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p10le")
        for k, plane in enumerate(frame.planes):
            view = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
            h, w = plane.height, plane.width
            view[:, :w] = 300 + 200 * np.sin((xx[:h, :w] + 7 * i) / 50) * np.cos(yy[:h, :w] / 40) + 30 * k
        frame.pts = i
        pictures.append(tag_hdr10(frame))
    out = {}
    for name, (muxer, codec) in STREAM_FORMATS.items():
        container = av.open(io.BytesIO(), "w", format=muxer)
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        if codec == "ffv1":
            stream.codec_context.options = {"slices": "4", "level": "3"}
            stream.thread_count = 0
        started = time.perf_counter()
        for frame in pictures:
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        out[name] = 1000 * (time.perf_counter() - started) / frames
        container.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=None, help="an SDR video with weights (default: made here)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rungs", default="full,eighth")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--stream-size", default="1920x1080")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "api")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from stills import machine

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    sdr = args.input or make_input(args.work, width, height, args.frames)
    cases = {f"api filter, rung {r}": (lambda r=r: run_api(sdr, r, args.threads)) for r in args.rungs.split(",")}
    if args.threads != 2:
        cases["api filter, rung full, 2 torch threads"] = lambda: run_api(sdr, "full", 2)
    cases["transcode -o - (NUT rawvideo), rung full"] = lambda: run_pipe(sdr, "nut", args.threads)
    cases["transcode -o - (Matroska FFV1), rung full"] = lambda: run_pipe(sdr, "mkv", args.threads)
    cases["transcode -o out.mkv (x265 crf 16 medium)"] = lambda: run_transcode(sdr, args.work, args.threads)
    best: dict[str, tuple[int, float]] = {}
    for round_ in range(args.rounds):
        for name, case in cases.items():
            frames, seconds = case()
            print(f"round {round_ + 1}: {name}: {frames} frames in {seconds:.2f} s = {frames / seconds:.2f} frames/s",
                  flush=True)
            if name not in best or seconds < best[name][1]:
                best[name] = (frames, seconds)
    weights = itmfilter.open_weights(sdr, device="cpu")
    torch.set_num_threads(args.threads)  # what every case ran at, for machine()
    lines = [f"# Frame-filter API throughput against `itmfilter transcode` ({weights.width}x{weights.height}, "
             f"{best[next(iter(best))][0]} frames, {weights.mode}: {weights.carriage})", "",
             "Command: `python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]) + "`", "",
             f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end", "",
             f"Best of {args.rounds} interleaved rounds, wall time, decoding included:", "",
             "| path | frames/s | ms a frame |", "|---|---:|---:|"]
    for name, (frames, seconds) in best.items():
        lines.append(f"| {name} | {frames / seconds:.2f} | {1000 * seconds / frames:.0f} |")
    sw, sh = (int(v) for v in args.stream_size.lower().split("x"))
    cost = stream_cost(sw, sh)
    lines += ["", f"Writing the pipe's stream alone, {sw}x{sh} 10-bit 4:2:0, ms a frame: "
              + ", ".join(f"`--format {name}` {ms:.1f}" for name, ms in cost.items()) + "."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
