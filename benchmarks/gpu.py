"""GPU timings: the fused Triton kernel against the unfused torch path, reconstruction, the
player's per-frame HDR10 filter per path and rung, adaptation.

    python benchmarks/gpu.py --out docs/gpu-benchmark.md   # on a CUDA machine, ~5 min on an H100
    python benchmarks/gpu.py --dry-run                     # CPU smoke run (Triton interpreter), ~2 min on 2 cores

``--dry-run``: tiny sizes, few frames and repeats, the device the CPU, and the Triton kernel
run by Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported): every
code path of the GPU run, so the command is known to work before a GPU is lent. Its
numbers mean nothing.

Picture: the first test-split panorama (``--panoramas FILE.npz`` from
``benchmarks/video.py --save-panoramas``, or fetched), resized to each size; SDR by
BT.2446a, 8-bit. The network: the shipped initialisation adapted to the picture (the
default options), so the timings are those of a real weight set (the cost does not depend
on the values).

- ``kernel``: one frame's 8-bit SDR 4:2:0 planes (already on the device) to its HDR10
  10-bit 4:2:0 planes (left on the device), the full network, synchronised, median of
  ``--kernel-repeats``: the fused Triton kernel
  (:func:`itmfilter.render.triton_kernel.hdr10_planes`, fp16 operands) at each launch
  shape of ``--shapes`` (block pixels / warps), and the unfused torch path
  (:func:`itmfilter.colour.tensor.planes420_to_rgb`,
  :func:`itmfilter.render.ladder.apply_rung_tensor` in bf16,
  :func:`itmfilter.colour.tensor.rgb_to_planes420`). The *bandwidth floor* is the kernel's
  compulsory traffic (1.5 B in, 2 B of Y, 4 B of chroma scratch written and read back,
  1 B of chroma out: 12.5 B a pixel) over the device-to-device copy bandwidth measured
  here; ``fused vs fp32 torch`` is the largest code difference of the kernel against the
  torch path in fp32 on the same planes (a check that the GPU build computes what the
  interpreter tests check).
- ``grid``: a grid track's shot (format 1.8: :func:`grid_shot`, the largest model size with a
  scene residual), one frame's 8-bit planes on the device to its HDR10 planes on the device
  through :mod:`itmfilter.render.gridtensor`, synchronised, median of ``--kernel-repeats``;
  its largest code difference against the CPU's fused numba path on the same planes; and
  ``grid`` in the filter table: the player's per-frame path on the pan clip with that shot.
- ``reconstruct ms``: :func:`itmfilter.model.inference.predict_pq`, full network on every
  pixel, host->device copy of the float SDR excluded, synchronised, median of 10.
- ``filter``: what ``itmfilter play --hdr`` does per frame (``full@triton`` and
  ``full@torch``: the full rung through each path, then the other ``--rungs``): an H.264
  clip of ``--frames`` frames (a pan) is decoded with PyAV (frame threads, in the player's decode-ahead
  thread), each frame goes through
  :func:`itmfilter.render.frame.hdr10_frame` (8-bit 4:2:0 planes up to the device, R'G'B', the
  rung, PQ, 10-bit BT.2020 4:2:0 planes back) and is muxed as rawvideo into a NUT stream
  written to /dev/null: frames/s end to end (decode included) and the filter's median ms.
  mpv itself is not in the loop (the device machine has no libmpv).
- ``adapt s``: :func:`itmfilter.model.adapt.adapt` with the default options (1600 steps of
  512 pixels, OHEM; 20 steps in a dry run), median of ``--repeats``, and its PU21-PSNR
  against the master.
- ``transcode``: the main pass of ``itmfilter transcode`` to a file
  (:func:`itmfilter.transcode.video.write_hdr10_video`: decode, the per-frame path of the
  device, HEVC encode by ``--video-codec auto``, i.e. hevc_nvenc where it opens, with the
  HDR10 SEI, mux) over the pan clip (blind: the shipped initialisation; a track without
  MaxCLL would add a pre-pass over the reconstruction, which this leaves out), frames/s end
  to end; once with the CPU decoder and once with ``--hwaccel cuda`` (NVDEC, or its
  fallback note).
- ``encode``: ``itmfilter encode`` (:func:`itmfilter.encode.video.encode_video`, all three
  passes, default options) of a ``--encode-frames`` pan master at ``--encode-size``,
  frames/s end to end: the default ``warm`` strategy with ``--adapt-batch`` (keys of many
  segments at once), and ``frame`` (every frame fully adapted) with ``--adapt-batch`` and
  with 1 (one network at a time), so the batch's gain is measured where it is largest.
- ``adapt_batch``: :func:`itmfilter.model.adapt.adapt_batch` of ``--adapt-batch`` frames of
  the encode size with the key recipe (200 steps of 8192), frames/s, against one at a time.

Picture fallbacks: with no ``--panoramas`` file and no fetched scenes (the device machine
is offline), the built-in sample (``itmfilter/assets/sample.exr``) tiled to the size.
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
if "--dry-run" in sys.argv:
    # before anything imports triton: its standard library is built interpreted or compiled then
    os.environ["TRITON_INTERPRET"] = "1"

from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, adapt  # noqa: E402
from itmfilter.model.inference import predict_pq, reconstruct_nits  # noqa: E402
from itmfilter.model.initial import load_init  # noqa: E402
from itmfilter.model.net import resolve_device  # noqa: E402
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402


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
    try:
        from itmfilter.data.testmedia import _load_scenes

        return _load_scenes(None, "test", 0, True, None)[0]
    except Exception as exc:  # offline (the device machine): the shipped sample, tiled
        from itmfilter.data import sample_path
        from itmfilter.media.stills import read_hdr

        print(f"no test scenes ({exc}); using the built-in sample", flush=True)
        nits = read_hdr(sample_path()).nits
        return np.tile(nits, (2, 4, 1)).astype(np.float32)


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


def filter_clip(path: Path, net, rung: str, device, frame_path: str = "auto") -> tuple[float, float]:
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
        vf = hdr10_frame(frame, net, rung, device, path=frame_path)
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


def sdr_planes(sdr: np.ndarray, device) -> list[torch.Tensor]:
    """8-bit narrow-range BT.709 4:2:0 planes of SDR R'G'B' [0, 1], as tensors on ``device``."""
    from itmfilter.colour.ycbcr import rgb_to_ycbcr, subsample_chroma

    planes = subsample_chroma(rgb_to_ycbcr(sdr, "bt709", 8, False), "420")
    return [torch.from_numpy(np.ascontiguousarray(p).astype(np.uint8)).to(device) for p in planes]


def torch_path(net, planes, device, precision: str):
    """The unfused torch path with the same ends as the fused kernel: planes to planes."""
    from itmfilter.colour.tensor import planes420_to_rgb, rgb_to_planes420
    from itmfilter.render.ladder import apply_rung_tensor

    sdr = planes420_to_rgb(*planes, bits=8, full_range=False)
    pq = apply_rung_tensor(net, sdr, "full", device, precision)
    return rgb_to_planes420(pq, bits=10, full_range=False)


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy (read + write counted)."""
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    return 2 * nbytes / median_time(lambda: b.copy_(a), device, 5)


KERNEL_BYTES_PER_PIXEL = 12.5  # 1.5 in, 2 Y, 4 + 4 chroma scratch, 1 chroma out


def kernel_timings(net, sdr: np.ndarray, device, shapes, repeats: int) -> dict:
    from itmfilter.render import triton_kernel

    planes = sdr_planes(sdr, device)
    h, w, _ = sdr.shape
    out: dict = {"fused_ms": {}}
    for shape in shapes:
        block, warps, *per_sm = (int(v) for v in shape.split("/"))
        config = triton_kernel.KernelConfig(block=block, num_warps=warps,
                                            **({"programs_per_sm": per_sm[0]} if per_sm else {}))
        out["fused_ms"][shape] = 1000 * median_time(
            lambda: triton_kernel.hdr10_planes(net, *planes, precision="auto", config=config), device, repeats)
    out["fused_best_ms"] = min(out["fused_ms"].values())
    out["fused_best_shape"] = min(out["fused_ms"], key=out["fused_ms"].get)
    out["torch_ms"] = 1000 * median_time(lambda: torch_path(net, planes, device, "bf16"), device, repeats)
    bandwidth = copy_bandwidth(device, (256 << 20) if device.type == "cuda" else (16 << 20))
    out["copy_GBps"] = bandwidth / 1e9
    out["floor_ms"] = 1000 * KERNEL_BYTES_PER_PIXEL * h * w / bandwidth
    fused = triton_kernel.hdr10_planes(net, *planes)
    ref = torch_path(net, planes, device, "fp32")
    out["fused_vs_fp32_max_code_diff"] = max(int((a.int() - b.int()).abs().max()) for a, b in zip(fused, ref))
    return out


def grid_shot(h: int, w: int, seed: int = 0):
    """A format 1.8 grid shot's placed model of the largest size the encoder sends (``M``: a
    32x16x8 bilateral grid of 4 channels, a 32-wide MLP) with a scene residual at 1/4 of the
    frame, placed as a pan's frame. Its values are random: the path's cost does not depend on
    them (no branch on a value)."""
    from itmfilter.model.grid import GRID_SIZES, GridModel, PlacedGrid
    from itmfilter.model.scene import SceneResidual

    rng = np.random.default_rng(seed)
    cfg = GRID_SIZES["M"]
    mmr = np.zeros((22, 3), np.float32)
    mmr[0], mmr[1:4] = 0.05, np.eye(3, dtype=np.float32) * 0.45
    model = GridModel(cfg, mmr, rng.normal(0, 0.3, cfg.grid_shape).astype(np.float32),
                      [rng.normal(0, 0.3, s).astype(np.float32) for s in cfg.mlp_shapes()],
                      scene=SceneResidual(rng.normal(0, 0.01, (max(2, h // 4), max(2, w // 3), 3)).astype(np.float32)))
    return PlacedGrid(model, origin=(0.1, 0.0), half=(1.3, 1.05))


def grid_timings(sdr: np.ndarray, device, repeats: int) -> dict:
    """A grid shot's frame, planes to planes on the device (:mod:`itmfilter.render.gridtensor`),
    and its largest code difference against the CPU's fused numba path on the same planes."""
    from itmfilter.render.gridtensor import grid_planes_tensor

    h, w, _ = sdr.shape
    placed = grid_shot(h, w)
    planes = sdr_planes(sdr, device)
    out = {"grid_ms": 1000 * median_time(lambda: grid_planes_tensor(placed, *planes, bits=8), device, repeats)}
    try:
        from itmfilter.media.frames import Planes
        from itmfilter.render.gridpath import grid_hdr10_planes

        host = [p.cpu().numpy() for p in planes]
        ref = grid_hdr10_planes(placed, Planes(*host, bits=8, full_range=False, subsampling="420"))
        got = grid_planes_tensor(placed, *planes, bits=8)
        out["grid_vs_cpu_max_code_diff"] = max(int(np.abs(g.cpu().numpy().astype(int) - r.astype(int)).max())
                                               for g, r in zip(got, ref))
    except Exception as exc:  # numba missing on the device machine: the timing stands alone
        out["grid_vs_cpu_max_code_diff"] = f"not checked ({type(exc).__name__}: {exc})"
    return out


def transcode_timing(clip: Path, out: Path, device, hwaccel: str, path: str = "auto") -> dict:
    """frames/s of a transcode's main pass (module docstring), and its notes. ``path``:
    ``auto`` as transcode picks it (``triton`` in a dry run: the GPU's path, interpreted)."""
    from itmfilter.colour.hdr10 import HDR10Metadata
    from itmfilter.media.video import probe_video
    from itmfilter.track.provider import FrameNetworks
    from itmfilter.transcode.video import frame_path, hevc_encoder_for, write_hdr10_video

    codec, note = hevc_encoder_for("auto", device)
    notes = [note] if note else []
    info = probe_video(clip)
    meta = HDR10Metadata.bt2020(1000.0).with_light_levels(1000.0, 400.0)
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    frames = write_hdr10_video(clip, out, FrameNetworks(clip), info, meta, device=device,
                               path=frame_path(path, device), codec=codec, hwaccel=hwaccel, notes=notes)
    seconds = time.perf_counter() - t0
    return {"fps": frames / seconds, "frames": frames, "codec": codec, "notes": notes}


def make_master(path: Path, hdr_big: np.ndarray, w: int, h: int, frames: int) -> None:
    """A pan across the panorama as an HDR10 HEVC master (light levels given: no second pass)."""
    from itmfilter.data.testmedia import make_master_from_arrays

    pw = hdr_big.shape[1]
    make_master_from_arrays(path, (hdr_big[:h, int((pw - w) * i / max(1, frames - 1)):][:, :w] for i in range(frames)),
                            fps=24, codec="hevc", peak_nits=1000.0, light_levels=(1000.0, 400.0), preset="veryfast")


def encode_timing(master: Path, out_dir: Path, device, strategy: str, adapt_batch: int, steps: int | None,
                  fits_on_device: bool = False) -> dict:
    """frames/s of ``itmfilter encode`` (all passes) with ``strategy`` and ``adapt_batch``
    (``fits_on_device``: a grid track's fits on the device too, not the CPU)."""
    from itmfilter.encode.video import VideoEncodeOptions, encode_video

    out = out_dir / f"enc-{strategy}-{adapt_batch}{'-fits' if fits_on_device else ''}.mp4"
    if out.exists():
        out.unlink()
    options = VideoEncodeOptions(strategy=strategy, adapt_batch=adapt_batch, grid_fits_on_device=fits_on_device,
                                 **({"first_steps": steps, "warm_steps": min(steps, 60), "grid_steps": steps}
                                    if steps else {}))
    t0 = time.perf_counter()
    report = encode_video(master, out, options=options, device=str(device.type), quiet=True)
    seconds = time.perf_counter() - t0
    return {"fps": report.frames / seconds, "frames": report.frames, "kbps": report.kbit_per_s,
            "packets": report.packets}


def adapt_batch_timing(sdrs, targets, init, device, batch: int, steps: int) -> dict:
    """frames/s of the key recipe, ``batch`` frames at once against one at a time."""
    from dataclasses import replace

    from itmfilter.model.adapt import RECIPE_200x8192, adapt_batch

    options = replace(RECIPE_200x8192, steps=steps)
    sync(device)
    t0 = time.perf_counter()
    alone = [adapt(init, s, t, options, device=device) for s, t in zip(sdrs, targets)]
    sync(device)
    t1 = time.perf_counter()
    together = adapt_batch(init, sdrs, targets, options, device=device)
    sync(device)
    t2 = time.perf_counter()
    diff = max(float((p - q).abs().max()) for a, b in zip(alone, together)
               for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    return {"batch": batch, "sequential_fps": batch / (t1 - t0), "batched_fps": batch / (t2 - t1),
            "max_weight_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="adaptation repeats")
    ap.add_argument("--kernel-repeats", type=int, default=20)
    ap.add_argument("--shapes", default="128/4,256/8,64/4,512/8",
                    help="fused kernel launch shapes to time, block pixels/warps[/programs per SM, default 4]")
    ap.add_argument("--kernel-only", action="store_true",
                    help="time the fused kernel's launch shapes at each size and stop")
    ap.add_argument("--rungs", default="half,quarter", help="rungs besides full, through the torch path")
    ap.add_argument("--encode-size", default="1920x1080")
    ap.add_argument("--encode-frames", type=int, default=48)
    ap.add_argument("--adapt-batch", type=int, default=16, help="networks adapted at once in the encode timings")
    ap.add_argument("--encode-fits-on-device", action="store_true",
                    help="also time the default encode with its grid fits on the device (242 s against 189 s "
                         "on the CPU's 16 threads on an H200, 48 frames of 1080p)")
    ap.add_argument("--panoramas", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "gpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU smoke run of every step: tiny sizes, Triton's interpreter")
    args = ap.parse_args()
    if args.dry_run:
        args.device, args.sizes, args.frames, args.repeats = "cpu", "64x36,48x34", 3, 1
        args.kernel_repeats, args.shapes, args.rungs = 1, "512/4", "half"
        args.encode_size, args.encode_frames, args.adapt_batch = "64x36", 4, 2
    device = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    pano = panorama(args.panoramas)
    init, _ = load_init()
    rungs = [r for r in args.rungs.split(",") if r]
    lines = ["# GPU benchmark: fused kernel, reconstruction, player filter, adaptation\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine(device)}\n"]
    results = {}
    t_start = time.perf_counter()
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        # the panorama scaled so the frame height fits, wide enough to pan
        ph, pw, _ = pano.shape
        big = resized(pano, max(w + 64, int(round(pw * h / ph))), h)
        master = big[:, :w]
        sdr = to_sdr(master)
        target = eotf_inverse_st2084(master).astype(np.float32)
        entry: dict = {}
        options = AdaptOptions(steps=20) if args.dry_run else AdaptOptions()
        runs = [adapt(init, sdr, target, options, device=device) for _ in range(args.repeats)]
        net = runs[-1].net.eval()
        entry["adapt_s"] = statistics.median(r.seconds for r in runs)
        entry["adapt_pu21"] = psnr_pu21(master, reconstruct_nits(net, sdr, device=device))
        entry["init_pu21"] = psnr_pu21(master, reconstruct_nits(init, sdr, device=device))
        entry["kernel"] = kernel_timings(net, sdr, device, args.shapes.split(","), args.kernel_repeats)
        print(size, "kernel", json.dumps(entry["kernel"]), flush=True)
        if args.kernel_only:
            continue
        entry["grid"] = grid_timings(sdr, device, args.kernel_repeats)
        print(size, "grid", json.dumps(entry["grid"]), flush=True)
        x = torch.from_numpy(sdr).to(device)
        for precision in ("fp32", "bf16"):
            entry[f"reconstruct_ms_{precision}"] = 1000 * median_time(
                lambda: predict_pq(net, x, device=device, precision=precision), device, 10)
        clip = args.work / f"pan-{w}x{h}-{args.frames}.mp4"
        if not clip.exists():
            make_clip(clip, big, w, h, args.frames)
        for name, rung, path in [("full@triton", "full", "triton"), ("full@torch", "full", "torch")] + [
                (r, r, "auto") for r in rungs]:
            fps, ms = filter_clip(clip, net, rung, device, path)
            entry[f"filter_{name}"] = {"fps": fps, "filter_ms": ms}
        fps, ms = filter_clip(clip, grid_shot(h, w), "full", device, "auto")  # a grid track's shot
        entry["filter_grid"] = {"fps": fps, "filter_ms": ms}
        for hwaccel in ("none", "cuda"):
            try:
                entry[f"transcode_{hwaccel}"] = transcode_timing(clip, args.work / f"transcode-{w}x{h}.mkv", device,
                                                                 hwaccel, "triton" if args.dry_run else "auto")
            except Exception as exc:  # a failure of one measurement is a result, not the end of the run
                entry[f"transcode_{hwaccel}"] = {"error": f"{type(exc).__name__}: {exc}"}
        results[size] = entry
        print(size, json.dumps(entry, default=str), f"({time.perf_counter() - t_start:.0f} s so far)", flush=True)
    if args.kernel_only:
        return
    # encode side: itmfilter encode end to end, and batched adaptation
    ew, eh = (int(v) for v in args.encode_size.split("x"))
    ph, pw, _ = pano.shape
    ebig = resized(pano, max(ew + 64, int(round(pw * eh / ph))), eh)
    master_clip = args.work / f"master-{ew}x{eh}-{args.encode_frames}.mkv"
    if not master_clip.exists():
        make_master(master_clip, ebig, ew, eh, args.encode_frames)
    steps = 20 if args.dry_run else None
    encode: dict = {}
    rows = [("warm", args.adapt_batch, False), ("frame", args.adapt_batch, False), ("frame", 1, False)]
    if args.encode_fits_on_device:
        rows.insert(1, ("warm", args.adapt_batch, True))
    for strategy, batch, fits in rows:
        name = f"{strategy}, adapt-batch {batch}" + (", grid fits on the device" if fits else "")
        try:
            encode[name] = encode_timing(master_clip, args.work, device, strategy, batch, steps, fits)
        except Exception as exc:
            encode[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print("encode", name, json.dumps(encode[name], default=str),
              f"({time.perf_counter() - t_start:.0f} s so far)", flush=True)
    n = args.adapt_batch
    frames = [ebig[:, 8 * i:8 * i + ew] for i in range(n)]
    batched = adapt_batch_timing([to_sdr(f) for f in frames],
                                 [eotf_inverse_st2084(f).astype(np.float32) for f in frames], init, device, n,
                                 steps or 200)
    print("adapt_batch", json.dumps(batched), flush=True)
    shapes = args.shapes.split(",")
    lines.append("## The fused kernel (planes to planes on the device, full network)\n")
    lines.append("| size | fused ms, best | " + " | ".join(f"fused ms {s}" for s in shapes)
                 + " | torch path ms (bf16) | bandwidth floor ms | fused vs fp32 torch, max code diff |")
    lines.append("|---" * (5 + len(shapes)) + "|")
    for size, e in results.items():
        k = e["kernel"]
        cells = [f"{k['fused_best_ms']:.3f}"] + [f"{k['fused_ms'][s]:.3f}" for s in shapes]
        cells += [f"{k['torch_ms']:.2f}", f"{k['floor_ms']:.3f} ({k['copy_GBps']:.0f} GB/s copy)",
                  str(k["fused_vs_fp32_max_code_diff"])]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines.append("\n## A grid shot's frame (format 1.8, size M with a scene residual; planes to planes on the device)\n")
    lines.append("| size | torch path ms | max code diff against the CPU's fused path |")
    lines.append("|---|---|---|")
    for size, e in results.items():
        g = e["grid"]
        lines.append(f"| {size} | {g['grid_ms']:.2f} | {g['grid_vs_cpu_max_code_diff']} |")
    names = ["full@triton", "full@torch"] + rungs + ["grid"]
    lines.append("\n## Adaptation, reconstruction, player filter (decode + filter + mux, end to end)\n")
    lines.append("| size | adapt s (PU21 dB; init alone) | reconstruct ms fp32 / bf16 | "
                 + " | ".join(f"{n}: fps, filter ms" for n in names) + " |")
    lines.append("|---" * (3 + len(names)) + "|")
    for size, e in results.items():
        cells = [f"{e['adapt_s']:.2f} ({e['adapt_pu21']:.2f}; {e['init_pu21']:.2f})",
                 f"{e['reconstruct_ms_fp32']:.1f} / {e['reconstruct_ms_bf16']:.1f}"]
        cells += [f"{e[f'filter_{n}']['fps']:.1f}, {e[f'filter_{n}']['filter_ms']:.1f}" for n in names]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines.append("\n## Transcode to a file (main pass: decode, per-frame path, HEVC encode, mux)\n")
    lines.append("| size | CPU decoder: fps (encoder) | --hwaccel cuda: fps (note) |")
    lines.append("|---|---|---|")
    for size, e in results.items():
        cells = []
        for hw in ("none", "cuda"):
            t = e[f"transcode_{hw}"]
            cells.append(t["error"] if "error" in t else f"{t['fps']:.1f} ({t['codec']}{'; ' + '; '.join(t['notes']) if t['notes'] else ''})")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines.append(f"\n## Encode at {args.encode_size}, {args.encode_frames} frames (itmfilter encode, all passes)\n")
    lines.append("| strategy | frames/s | kbit/s | packets |")
    lines.append("|---|---|---|---|")
    for name, e in encode.items():
        if "error" in e:
            lines.append(f"| {name} | {e['error']} | | |")
        else:
            lines.append(f"| {name} | {e['fps']:.2f} | {e['kbps']:.1f} | {e['packets']} |")
    lines.append(f"\nBatched adaptation, key recipe ({steps or 200} steps of 8192), {n} frames of {args.encode_size}: "
                 f"{batched['batched_fps']:.2f} frames/s at once, {batched['sequential_fps']:.2f} one at a time "
                 f"(largest weight difference {batched['max_weight_diff']:.1e}).")
    lines.append(f"\nTotal {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(device), "results": results,
                                                            "encode": encode, "adapt_batch": batched},
                                                           indent=1, default=str))


if __name__ == "__main__":
    main()
