"""Video benchmark: bitrate of the weight track against quality, beside the baselines.

    python benchmarks/video.py --seconds 5 --size 1920x1080 --out docs/video-benchmark.md

A master is made by the test-media maker from test-split scenes (pans with cuts, PQ
BT.2020 10-bit HEVC). For each SDR operator (a global curve and the spatially varying
``local``), the clip is encoded with each strategy; every ``--eval-every``-th frame of the
reconstruction (decoded SDR + decoded track, as a player sees them) is scored against the
master. Baselines on the same frames: the per-frame MMR polynomial (264 B/frame) and a
gain-map track (log2 luminance gain at 1/4 resolution coded as a low-resolution H.264
stream at several CRFs). Flicker: mean |frame-to-frame change of the per-pixel PU value
of the reconstruction minus the master's own change| (``metrics.flicker_relative``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.colour.transfer import eotf_st2084  # noqa: E402
from itmfilter.data.testmedia import make_master  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.media.video import SdrWriter, probe_video, read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.model.inference import reconstruct_nits  # noqa: E402
from itmfilter.model.net import ITMNet  # noqa: E402
from itmfilter.quality import baselines  # noqa: E402
from itmfilter.quality.metrics import delta_e_itp, flicker_relative, psnr_pu21  # noqa: E402
from itmfilter.track.carriage import load_track  # noqa: E402
from itmfilter.track.codec import TrackDecoder  # noqa: E402
from itmfilter.track.format import unflatten  # noqa: E402

DEVICE = "cpu"  # set from --device in main()

C30 = dict(strategy="warm", warm_steps=30, warm_params="coord")
"""Earlier warm-frame recipe: 30 steps on the coordinate layer only."""

STRATEGIES = {
    "per-frame full adaptation": dict(strategy="frame", max_kbps=None),
    "default: motion, 60 warm steps on coord layer + head, cap 64 kbit/s": dict(strategy="warm"),
    "warm all layers, lr 1e-3, refresh 1.3, no cap (the first default)": dict(C30, warm_params="all", warm_lr=1e-3, refresh_ratio=1.3, max_kbps=None, motion=False),
    "warm all layers, lr 1e-3, refresh 1.3, cap 64 kbit/s": dict(C30, warm_params="all", warm_lr=1e-3, refresh_ratio=1.3, max_kbps=64.0, motion=False),
    "warm coord layer, no cap": dict(C30, max_kbps=None),
    "warm coord layer, cap 128 kbit/s": dict(C30, max_kbps=128.0),
    "default: warm coord layer, cap 64 kbit/s": dict(C30, max_kbps=64.0),  # an earlier default (with motion)
    "default without motion compensation": dict(C30, max_kbps=64.0, motion=False),  # an earlier default
    "cap 64 kbit/s, refresh 1.05": dict(C30, max_kbps=64.0, refresh_ratio=1.05),
    "cap 64 kbit/s, refresh 1.02": dict(C30, max_kbps=64.0, refresh_ratio=1.02),
    "cap 64 kbit/s, warm coord layer + head": dict(C30, max_kbps=64.0, warm_params="coord+head"),
    "cap 64 kbit/s, warm all layers": dict(C30, max_kbps=64.0, warm_params="all"),
    "cap 64 kbit/s, 60 warm steps": dict(C30, max_kbps=64.0, warm_steps=60),
    "cap 64 kbit/s, 60 warm steps, coord layer + head": dict(C30, max_kbps=64.0, warm_steps=60, warm_params="coord+head"),
    "cap 64 kbit/s, delta step 1/128": dict(C30, max_kbps=64.0, delta_step=1 / 128),
    "warm coord layer, cap 32 kbit/s": dict(C30, max_kbps=32.0),
    "default, cap 32 kbit/s": dict(strategy="warm", max_kbps=32.0),
    "default, cap 128 kbit/s": dict(strategy="warm", max_kbps=128.0),
    "default without motion compensation, 60 warm steps on coord layer + head": dict(strategy="warm", motion=False),
}


def make_sdr(master: Path, out: Path, curve: str) -> None:
    """The SDR video once per curve (libx264 crf 18, as encode's own pass 1); every
    strategy then encodes with it as the grade, so they share identical SDR pixels."""
    from itmfilter.colour.tonecurves import get_curve

    if out.exists():
        return
    info = probe_video(master)
    with SdrWriter(out, info.width, info.height, info.fps, crf=18, preset="medium") as writer:
        for _, nits in read_hdr_frames(master):
            writer.write(get_curve(curve).forward(nits))


def reconstruct_clip(sdr_path: Path, every: int):
    track = load_track(sdr_path)
    dec = TrackDecoder(track.header)
    for i, sdr in read_sdr_frames(sdr_path):
        if i % every:
            continue
        vec, _ = dec.params_interpolated(i, track.packets)  # as the player and transcode do
        if not isinstance(vec, np.ndarray):  # a grid shot's frame (format 1.4): its placed grid model
            yield i, sdr, np.asarray(eotf_st2084(vec.predict_pq(sdr)), dtype=np.float32)
            continue
        net = ITMNet(track.header.config)
        net.load_state_dict(unflatten(track.header.config, vec))
        yield i, sdr, reconstruct_nits(net, sdr, device=DEVICE)


def score(master_frames: dict, recon: dict) -> dict:
    keys = sorted(recon)
    return {
        "pu21_psnr": statistics.mean(psnr_pu21(master_frames[i], recon[i]) for i in keys),
        "delta_e_itp": statistics.mean(delta_e_itp(master_frames[i], recon[i]) for i in keys),
        "flicker": flicker_relative([master_frames[i] for i in keys], [recon[i] for i in keys]),
    }


def gainmap_track(sdr_frames: dict, master_frames: dict, fps: int, crf: int, work: Path) -> tuple[float, dict]:
    """Per-frame luminance log2 gain at 1/4 resolution as an 8-bit H.264 stream."""
    keys = sorted(master_frames)
    h, w, _ = master_frames[keys[0]].shape
    gh, gw = (h // 4) // 2 * 2, (w // 4) // 2 * 2
    lo, hi = -2.0, 4.0  # log2 gain range over the SDR placed at 203 cd/m2
    path = work / f"gain-crf{crf}.mp4"
    placed = {i: baselines.sdr_placed_bt2408(sdr_frames[i]) for i in keys}

    from itmfilter.colour.primaries import luminance

    def lum(x):
        return luminance(x, primaries="bt2020")

    with SdrWriter(path, gw, gh, fps, crf=crf, preset="medium") as writer:
        for i in keys:
            g = np.log2((lum(master_frames[i]) + 0.5) / (lum(placed[i]) + 0.5))
            small = g[: gh * 4, : gw * 4].reshape(gh, 4, gw, 4).mean(axis=(1, 3))
            v = np.clip((small - lo) / (hi - lo), 0, 1)
            writer.write(np.repeat(v[..., None], 3, axis=-1).astype(np.float32))
    nbytes = path.stat().st_size
    recon = {}
    import torch
    import torch.nn.functional as F

    for (i, frame) in zip(keys, (f for _, f in read_sdr_frames(path))):
        g = frame[..., 0] * (hi - lo) + lo
        up = F.interpolate(torch.from_numpy(g)[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        recon[i] = placed[i] * (2.0 ** up)[..., None]
    seconds = len(keys) / fps
    return 8 * nbytes / 1000 / seconds, recon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--curves", default="bt2446a,local")
    ap.add_argument("--strategies", default=";".join(STRATEGIES), help="labels separated by ;")
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "video")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="auto", help="for adaptation and reconstruction")
    ap.add_argument("--panoramas", type=Path, default=None,
                    help="film the master from these arrays (.npz, from --save-panoramas) instead of fetching")
    ap.add_argument("--save-panoramas", type=Path, default=None,
                    help="save the test split's panoramas (float16 .npz) for a machine without network, then exit")
    args = ap.parse_args()
    global DEVICE
    from itmfilter.model.net import resolve_device

    DEVICE = resolve_device(args.device)
    if args.save_panoramas:
        from itmfilter.data.testmedia import _load_scenes

        arrays = _load_scenes(None, "test", 0, True, None)
        np.savez_compressed(args.save_panoramas, **{f"p{k}": a.astype(np.float16) for k, a in enumerate(arrays)})
        return
    w, h = (int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    master = args.work / f"master-{w}x{h}-{args.seconds:g}s.mkv"
    if not master.exists():
        scenes = None
        if args.panoramas:
            with np.load(args.panoramas) as z:
                scenes = [z[k].astype(np.float32) for k in sorted(z.files, key=lambda k: int(k[1:]))]
        make_master(master, seconds=args.seconds, fps=24, size=(w, h), codec="hevc", shot_seconds=4.0,
                    split="test", scenes=scenes)
    master_frames = {i: n for i, n in read_hdr_frames(master) if i % args.eval_every == 0}
    fps = 24
    lines = [f"# Video benchmark ({w}x{h}, {args.seconds:g} s at 24 fps, test-split scenes)\n",
             f"Command: `python {' '.join(sys.argv)}`\n"]
    from stills import machine

    lines.append(f"Machine: {machine()}\n")
    lines.append(f"Scored on every {args.eval_every}th frame; kbit/s = weight-track bytes (header included) over the clip. "
                 "adapt fps = frames per second of `encode_video` with the SDR given (passes 2-3). The gain-map track codes "
                 f"only the scored frames (1/{args.eval_every} of the frame rate), which flatters its bitrate.\n")
    results = {}
    for curve in args.curves.split(","):
        lines.append(f"\n## SDR by `{curve}`\n")
        lines.append("| method | metadata kbit/s | PU21-PSNR | dE-ITP | flicker (PU) | adapt fps | packets |\n|---|---|---|---|---|---|---|")
        sdr_frames = None
        sdr_plain = args.work / f"sdr-{curve}-{master.stem}.mp4"
        make_sdr(master, sdr_plain, curve)
        for k, label in enumerate(args.strategies.split(";")):
            opts = VideoEncodeOptions(tm=curve, **STRATEGIES[label])
            out = args.work / f"sdr-{curve}-{master.stem}-s{k}.mp4"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            report = encode_video(master, out, grade=sdr_plain, options=opts, device=str(DEVICE), quiet=True)
            enc_fps = report.frames / (time.perf_counter() - t0)
            recon, sdr_frames = {}, {}
            for i, sdr, nits in reconstruct_clip(out, args.eval_every):
                recon[i], sdr_frames[i] = nits, sdr
            s = score(master_frames, recon)
            results[(curve, label)] = {"kbit_s": report.kbit_per_s, **s, "encode_fps": enc_fps, "packets": report.packets}
            lines.append(f"| {label} | {report.kbit_per_s:.1f} | {s['pu21_psnr']:.2f} | {s['delta_e_itp']:.2f} | {s['flicker']:.3f} | {enc_fps:.2f} | {report.packets} |")
            print(lines[-1], flush=True)
        poly = {i: baselines.apply_mmr(baselines.fit_mmr(sdr_frames[i], master_frames[i]), sdr_frames[i]) for i in sdr_frames}
        s = score(master_frames, poly)
        lines.append(f"| per-frame MMR3 polynomial | {8 * 264 * fps / 1000:.1f} | {s['pu21_psnr']:.2f} | {s['delta_e_itp']:.2f} | {s['flicker']:.3f} | | |")
        print(lines[-1], flush=True)
        for crf in (40, 30, 20):
            kbps, recon = gainmap_track(sdr_frames, master_frames, fps // args.eval_every or 1, crf, args.work)
            s = score(master_frames, recon)
            lines.append(f"| gain-map track 1/4, H.264 crf {crf} | {kbps:.1f} | {s['pu21_psnr']:.2f} | {s['delta_e_itp']:.2f} | {s['flicker']:.3f} | | |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in results.items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
