"""GPU timings: reconstruction, the player's per-frame HDR10 filter per rung, adaptation.

    python benchmarks/gpu.py --out docs/gpu-benchmark.md            # on a CUDA machine
    python benchmarks/gpu.py --device cpu --sizes 480x270 --frames 8  # smoke run here

Picture: the first test-split panorama (``--panoramas FILE.npz`` from
``benchmarks/video.py --save-panoramas``, or fetched), resized to each size; SDR by
BT.2446a, 8-bit. The network: the shipped initialisation adapted to the picture (the
default options), so the timings are those of a real weight set (the cost does not depend
on the values).

- ``reconstruct ms``: :func:`itmfilter.model.inference.predict_pq`, full network on every
  pixel, host->device copy of the float SDR excluded, synchronised, median of 10.
- ``filter``: what ``itmfilter play --hdr`` does per frame: an H.264 clip of ``--frames``
  frames (a pan) is decoded with PyAV (frame threads, in the player's decode-ahead
  thread), each frame goes through
  :func:`itmfilter.render.frame.hdr10_frame` (8-bit 4:2:0 planes up to the device, R'G'B', the
  rung, PQ, 10-bit BT.2020 4:2:0 planes back) and is muxed as rawvideo into a NUT stream
  written to /dev/null: frames/s end to end (decode included) and the filter's median ms.
  mpv itself is not in the loop (the device machine has no libmpv).
- ``adapt s``: :func:`itmfilter.model.adapt.adapt` with the default options (200 steps, 2%
  samples, OHEM), median of ``--repeats``, and its PU21-PSNR against the master.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.model.adapt import AdaptOptions, adapt  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.render.ladder import RUNG_NAMES  # noqa: E402
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402
from itmfilter.model.net import resolve_device  # noqa: E402
from itmfilter.model.inference import predict_pq, reconstruct_nits  # noqa: E402
from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.model.initial import load_init  # noqa: E402


def machine(device: torch.device) -> str:
    from stills import cpu_model

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{gpu}; {cpu_model()} x {os.cpu_count()} CPUs; torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def panorama(path: Path | None) -> np.ndarray:
    if path is not None and path.exists():
        with np.load(path) as z:
            return z[sorted(z.files)[0]].astype(np.float32)
    from itmfilter.data.testmedia import _load_scenes

    return _load_scenes(None, "test", 0, True, None)[0]


def resized(hdr: np.ndarray, w: int, h: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(hdr)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy().copy()


def to_sdr(nits: np.ndarray) -> np.ndarray:
    from stills import quantise_sdr

    return quantise_sdr(get_curve("bt2446a").forward(nits))


def median_time(fn, device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_clip(path: Path, hdr_big: np.ndarray, w: int, h: int, frames: int) -> None:
    """A pan across the panorama, SDR by BT.2446a, libx264 crf 18 yuv420p BT.709."""
    from itmfilter.media.video import SdrWriter

    ph, pw, _ = hdr_big.shape
    with SdrWriter(path, w, h, 24, crf=18, preset="veryfast") as writer:
        for i in range(frames):
            x0 = int((pw - w) * i / max(1, frames - 1))
            writer.write(to_sdr(hdr_big[:h, x0:x0 + w]))


def filter_clip(path: Path, net, rung: str, device) -> tuple[float, float]:
    """(frames/s end to end, median filter ms) of decode -> hdr10_frame -> NUT."""
    import av

    from itmfilter.media.frames import DecodeAhead
    from itmfilter.render.frame import hdr10_frame

    src = av.open(str(path))
    vin = src.streams.video[0]
    vin.thread_type = "AUTO"
    sink = open(os.devnull, "wb")
    out = av.open(sink, mode="w", format="nut")
    vout = out.add_stream("rawvideo", rate=24)
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p10le"
    filter_times, n = [], 0
    t0 = time.perf_counter()
    ahead = DecodeAhead(src, [vin], vin)  # the player's decode-ahead thread
    for _, frame in ahead:
        t1 = time.perf_counter()
        vf = hdr10_frame(frame, net, rung, device)
        filter_times.append(time.perf_counter() - t1)
        vf.pts = n
        for p in vout.encode(vf):
            out.mux(p)
        n += 1
    for p in vout.encode():
        out.mux(p)
    elapsed = time.perf_counter() - t0
    ahead.close()
    out.close()
    sink.close()
    src.close()
    return n / elapsed, 1000 * statistics.median(filter_times[1:] or filter_times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rungs", default=",".join(RUNG_NAMES))
    ap.add_argument("--panoramas", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "gpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    pano = panorama(args.panoramas)
    init, _ = load_init()
    lines = ["# GPU benchmark: reconstruction, player filter, adaptation\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine(device)}\n"]
    results = {}
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        # the panorama scaled so the frame height fits, wide enough to pan
        ph, pw, _ = pano.shape
        big = resized(pano, max(w + 64, int(round(pw * h / ph))), h)
        master = big[:, :w]
        sdr = to_sdr(master)
        target = eotf_inverse_st2084(master).astype(np.float32)
        entry: dict = {}
        runs = [adapt(init, sdr, target, AdaptOptions(), device=device) for _ in range(args.repeats)]
        net = runs[-1].net.eval()
        entry["adapt_s"] = statistics.median(r.seconds for r in runs)
        entry["adapt_pu21"] = psnr_pu21(master, reconstruct_nits(net, sdr, device=device))
        entry["init_pu21"] = psnr_pu21(master, reconstruct_nits(init, sdr, device=device))
        x = torch.from_numpy(sdr).to(device)
        for precision in ("fp32", "bf16"):
            entry[f"reconstruct_ms_{precision}"] = 1000 * median_time(
                lambda: predict_pq(net, x, device=device, precision=precision), device, 10)
        clip = args.work / f"pan-{w}x{h}-{args.frames}.mp4"
        if not clip.exists():
            make_clip(clip, big, w, h, args.frames)
        for rung in args.rungs.split(","):
            fps, ms = filter_clip(clip, net, rung, device)
            entry[f"filter_{rung}"] = {"fps": fps, "filter_ms": ms}
        results[size] = entry
        print(size, json.dumps(entry), flush=True)
    lines.append("| size | adapt s (PU21 dB; init alone) | reconstruct ms fp32 / bf16 | "
                 + " | ".join(f"{r}: fps, filter ms" for r in args.rungs.split(",")) + " |")
    lines.append("|---" * (3 + len(args.rungs.split(","))) + "|")
    for size, e in results.items():
        cells = [f"{e['adapt_s']:.2f} ({e['adapt_pu21']:.2f}; {e['init_pu21']:.2f})",
                 f"{e['reconstruct_ms_fp32']:.1f} / {e['reconstruct_ms_bf16']:.1f}"]
        cells += [f"{e[f'filter_{r}']['fps']:.1f}, {e[f'filter_{r}']['filter_ms']:.1f}" for r in args.rungs.split(",")]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(device), "results": results}, indent=1))


if __name__ == "__main__":
    main()
