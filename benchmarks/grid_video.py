"""Grid models per shot as a video track: rate and PU21-PSNR against the gain-map front.

    python benchmarks/grid_video.py --curves local,bt2446a --configs S,M --threads 1 \\
        --out docs/grid-video.md

The clip is benchmarks/video_rate.py's (a test-split master, 640x360, 10 s at 24 fps, a cut
every 2 s, made by the test-media maker; the SDR made by ``video.make_sdr``, libx264 crf 18,
for the grades ``local`` and ``bt2446a``); the frames are scored as there (every
``--eval-every``-th frame, PU21-PSNR and dE-ITP against the master), so the numbers compare
with the gain-map front stored in docs/video-rate.json.

Per shot (the encoder's shot detector on the master, :class:`itmfilter.encode.shots.ShotDetector`
at the encoder's threshold) one grid model (:mod:`itmfilter.model.grid`: MMR3 polynomial + a
small MLP fed by a bilateral grid) is fitted on ``--fit-frames`` frames spread over the shot.
The grid lives in the shot's scene coordinates: each frame's pixel-grid coordinates are moved
by the camera's accumulated global translation since the shot's first frame (the encoder's
phase-correlation estimate on the SDR, :class:`itmfilter.media.phasecorr.MotionEstimator`,
reset at each shot), and the union of the moved frames is mapped onto the grid's [-1, 1]
square, whose width and height in cells grow with that extent (same cell size as the named
config on one frame). Every scored frame is then predicted by the decoder
(:func:`itmfilter.model.grid.predict_nits` with those coordinates), from the packed bytes.

Rates (kbit/s over the clip), three ways:

* ``model``: the packed grid models alone (``pack_grid_model`` bytes);
* ``track, shifts in key``: + a 24-byte packet head per shot, the shot's extent (8 bytes) and
  every frame's shift in the key (4 bytes a frame: two int16 quarter pixels), and a 1000-byte
  track header once (the current header is ~1 KB of JSON);
* ``track, shift packets``: as today's track carries motion: + a 24-byte head and 8-byte shift
  per non-key frame instead of the 4 bytes in the key.

The gain-map front (best gain-map track at or below each rate) is read from
docs/video-rate.json (``--gain-json``), measured on the same clip, SDR and frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.data.testmedia import make_master  # noqa: E402
from itmfilter.encode.shots import ShotDetector  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions  # noqa: E402
from itmfilter.media.phasecorr import MotionEstimator  # noqa: E402
from itmfilter.media.video import read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.model.grid import (  # noqa: E402
    GRID_SIZES,
    GridConfig,
    GridFitOptions,
    fit_grid_model_pixels,
)
from itmfilter.model.net import pixel_grid  # noqa: E402
from itmfilter.quality.metrics import delta_e_itp, psnr_pu21  # noqa: E402
from itmfilter.track.motion import pixels_to_shift  # noqa: E402

FPS = 24
PACKET_BYTES = 24  # packet head + CRC-32 (track/format.py PACKET_OVERHEAD)
SHIFT_BYTES = 8  # a SHIFT packet's payload
HEADER_BYTES = 1000  # the track header, once
RES_LO, RES_HI = -2.0, 2.0  # log2 range coded by the residual layer


def load_clip(master: Path, sdr_path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """All frames: master cd/m2 and SDR R'G'B', in presentation order."""
    hdr = [n for _, n in read_hdr_frames(master)]
    sdr = [s for _, s in read_sdr_frames(sdr_path)]
    return hdr, sdr[: len(hdr)]


def shots_and_motion(hdr: list[np.ndarray], sdr: list[np.ndarray], threshold: float) -> list[tuple[list[int], np.ndarray]]:
    """Shots (the encoder's detector on the master) and, per shot, each frame's accumulated
    displacement in pixels since the shot's first frame (``(n, 2)``: the camera's global
    translation by phase correlation on the SDR; a frame without a confident estimate adds 0)."""
    detect, motion = ShotDetector(threshold), MotionEstimator()
    shots: list[tuple[list[int], list]] = []
    for i, (nits, s) in enumerate(zip(hdr, sdr)):
        if detect(nits):
            motion.reset()
            shots.append(([], []))
            pos = np.zeros(2)
        v = motion(s)
        if v is not None:
            pos = pos + np.asarray(v, dtype=np.float64)
        shots[-1][0].append(i)
        shots[-1][1].append(pos.copy())
    return [(frames, np.asarray(p)) for frames, p in shots]


def shot_frame(config: GridConfig, disp: np.ndarray, width: int, height: int) -> tuple[GridConfig, np.ndarray, np.ndarray]:
    """The shot's grid (cells grown with its extent) and the affine map of scene coordinates
    onto it: ``xy_grid = (xy + shift_t - centre) / half``."""
    shifts = np.array([pixels_to_shift(d, width, height) for d in disp])
    lo, hi = shifts.min(0), shifts.max(0)
    centre = (lo + hi) / 2
    half = 1 + (hi - lo) / 2
    cfg = replace(config, width=int(round((config.width - 1) * half[0])) + 1,
                  height=int(round((config.height - 1) * half[1])) + 1)
    return cfg, centre, half


def frame_xy(width: int, height: int, shift: np.ndarray, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    base = pixel_grid(height, width).numpy()
    return ((base + shift - centre) / half).astype(np.float32)


def run_config(name: str, config: GridConfig, hdr, sdr, shots, scored, fit_frames: int, opts: GridFitOptions,
               placements: list | None = None) -> dict:
    """Fit and score one config over the clip; ``placements`` (if a list) receives, per shot,
    ``(frames, model, shifts, centre, half)`` for the residual layer."""
    h, w = hdr[0].shape[:2]
    model_bytes, seconds, psnr, dei, per_shot = 0, 0.0, {}, {}, []
    for frames, disp in shots:
        cfg, centre, half = shot_frame(config, disp, w, h)
        pick = sorted(set(np.linspace(0, len(frames) - 1, min(fit_frames, len(frames))).round().astype(int).tolist()))
        shifts = [np.asarray(pixels_to_shift(d, w, h)) for d in disp]
        rgb = np.concatenate([sdr[frames[k]].reshape(-1, 3) for k in pick])
        nits = np.concatenate([hdr[frames[k]].reshape(-1, 3) for k in pick])
        xy = np.concatenate([frame_xy(w, h, shifts[k], centre, half).reshape(-1, 2) for k in pick])
        fit = fit_grid_model_pixels(rgb, nits, xy, cfg, opts)
        seconds += fit.seconds
        if placements is not None:
            placements.append((frames, fit.model, shifts, centre, half))
        model_bytes += len(fit.data)
        shot_scores = []
        for k, i in enumerate(frames):
            if i not in scored:
                continue
            recon = predict_nits_at(fit.model, sdr[i], frame_xy(w, h, shifts[k], centre, half))
            psnr[i] = psnr_pu21(hdr[i], recon)
            dei[i] = delta_e_itp(hdr[i], recon)
            shot_scores.append(psnr[i])
        per_shot.append({"frames": len(frames), "grid": f"{cfg.width}x{cfg.height}x{cfg.depth}", "bytes": len(fit.data),
                         "pu21_psnr": statistics.mean(shot_scores), "fit_s": fit.seconds})
    n = len(hdr)
    secs = n / FPS
    keys = len(shots)
    in_key = model_bytes + keys * (PACKET_BYTES + 8) + 4 * (n - keys) + HEADER_BYTES
    packets = model_bytes + keys * (PACKET_BYTES + 8) + (n - keys) * (PACKET_BYTES + SHIFT_BYTES) + HEADER_BYTES
    return {"config": name, "grid": config.__dict__, "fit_frames": fit_frames, "steps": opts.steps,
            "model_kbit_s": 8 * model_bytes / 1000 / secs, "key_kbit_s": 8 * in_key / 1000 / secs,
            "packets_kbit_s": 8 * packets / 1000 / secs,
            "pu21_psnr": statistics.mean(psnr.values()), "delta_e_itp": statistics.mean(dei.values()),
            "fit_s": seconds, "shots": per_shot}


def predict_nits_at(model, sdr: np.ndarray, xy: np.ndarray) -> np.ndarray:
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.model.grid import predict_pq

    return np.asarray(eotf_st2084(predict_pq(model, sdr, xy=xy)), dtype=np.float32)


def residual_layer(placements: list, hdr, sdr, scored, scales: list[int], crfs: list[int], threshold: int,
                   codec: str, work: Path) -> list[dict]:
    """A gain map over the grid model: every frame's log2 of master over the model's
    prediction (per RGB channel, +0.5 cd/m2 on both), block-averaged at 1/``scale``, set to 0
    outside blocks holding an SDR pixel at or above ``threshold`` (8-bit code of the largest
    channel; 0: everywhere), coded as an 8-bit 4:2:0 video over [RES_LO, RES_HI] at 24 fps
    (``codec``, each CRF). Returns per (scale, crf): kbit/s of its packets and the scores of
    model x 2^residual on the scored frames."""
    import av
    import torch
    import torch.nn.functional as F

    from itmfilter.media.video import SdrWriter

    h, w = hdr[0].shape[:2]
    preds = {}
    for frames, model, shifts, centre, half in placements:
        for k, i in enumerate(frames):
            preds[i] = predict_nits_at(model, sdr[i], frame_xy(w, h, shifts[k], centre, half))
    rows = []
    for scale in scales:
        gh, gw = -(-h // (2 * scale)) * 2, -(-w // (2 * scale)) * 2
        maps = []
        for i in range(len(hdr)):
            g = np.log2((np.maximum(hdr[i], 0) + 0.5) / (np.maximum(preds[i], 0) + 0.5))
            m = (np.round(sdr[i].max(-1) * 255) >= threshold).astype(np.float32)[..., None]
            pad = ((0, gh * scale - h), (0, gw * scale - w), (0, 0))
            g, m = np.pad(g, pad, mode="edge"), np.pad(m, pad, mode="edge")
            small = g.reshape(gh, scale, gw, scale, 3).mean(axis=(1, 3))
            keep = m.reshape(gh, scale, gw, scale, 1).max(axis=(1, 3))
            maps.append(np.clip((small * keep - RES_LO) / (RES_HI - RES_LO), 0, 1).astype(np.float32))
        for crf in crfs:
            path = work / f"res-{scale}-{codec}-crf{crf}.mp4"
            with SdrWriter(path, gw, gh, FPS, codec=codec, crf=crf, preset="medium") as writer:
                for v in maps:
                    writer.write(v)
            with av.open(str(path)) as c:
                nbytes = sum(p.size for p in c.demux(c.streams.video[0]) if p.size)
            psnr, dei = [], []
            for i, frame in read_sdr_frames(path):
                if i not in scored:
                    continue
                g = frame * (RES_HI - RES_LO) + RES_LO
                t = torch.from_numpy(np.ascontiguousarray(g.transpose(2, 0, 1)))[None]
                up = F.interpolate(t, size=(gh * scale, gw * scale), mode="bilinear", align_corners=False)[0].numpy()
                recon = preds[i] * 2.0 ** up.transpose(1, 2, 0)[:h, :w]
                psnr.append(psnr_pu21(hdr[i], recon))
                dei.append(delta_e_itp(hdr[i], recon))
            path.unlink()
            rows.append({"scale": scale, "crf": crf, "codec": codec, "threshold": threshold,
                         "kbit_s": 8 * nbytes / 1000 / (len(hdr) / FPS),
                         "pu21_psnr": statistics.mean(psnr), "delta_e_itp": statistics.mean(dei)})
    return rows


def shot_residual(placements: list, shots, hdr, sdr, scored, scales: list[int], qualities: list[int],
                  threshold: int, source: set[int]) -> list[dict]:
    """A gain image over the grid model per SHOT, in the shot's scene coordinates (one AVIF
    still a shot instead of a video): every ``source`` frame's log2 of master over the model
    (per RGB channel, +0.5 cd/m2 on both, pixels whose SDR's largest channel is at or above
    ``threshold`` as an 8-bit code) is averaged into 1/``scale`` cells of the shot's pan
    extent (each pixel placed by the camera's accumulated displacement), quantised to 8 bits
    over its range and coded as AVIF 4:4:4 at each quality; every scored frame then reads it
    back bilinearly at its own scene positions. Returns per (scale, quality): kbit/s of the
    images (+ an 8-byte head a shot) and the scores."""
    import io

    from PIL import Image

    h, w = hdr[0].shape[:2]
    k = 0.5
    rows = []
    preds = {}
    for (frames, model, shifts, centre, half), (_, disp) in zip(placements, shots):
        for j, i in enumerate(frames):
            if i in scored or i in source:
                preds[i] = predict_nits_at(model, sdr[i], frame_xy(w, h, shifts[j], centre, half))
    for scale in scales:
        for quality in qualities:
            nbytes, psnr, dei = 0, [], []
            for (frames, _, _, _, _), (_, disp) in zip(placements, shots):
                lo = disp.min(0)
                ext_w, ext_h = w + disp[:, 0].max() - lo[0], h + disp[:, 1].max() - lo[1]
                cw, ch = int(np.ceil(ext_w / scale)) + 1, int(np.ceil(ext_h / scale)) + 1
                num, den = np.zeros((ch * cw, 3)), np.zeros(ch * cw)
                jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
                for j, i in enumerate(frames):
                    if i not in source:
                        continue
                    mask = (np.round(sdr[i].max(-1) * 255) >= threshold).ravel()
                    gx = ((jj + disp[j, 0] - lo[0]) / scale).astype(int).ravel()
                    gy = ((ii + disp[j, 1] - lo[1]) / scale).astype(int).ravel()
                    cell = (np.clip(gy, 0, ch - 1) * cw + np.clip(gx, 0, cw - 1))[mask]
                    g = np.log2((np.maximum(hdr[i], 0) + k) / (np.maximum(preds[i], 0) + k)).reshape(-1, 3)[mask]
                    for c in range(3):
                        num[:, c] += np.bincount(cell, g[:, c], minlength=ch * cw)
                    den += np.bincount(cell, minlength=ch * cw)
                gain = np.where(den[:, None] > 0, num / np.maximum(den, 1)[:, None], 0.0).reshape(ch, cw, 3)
                g0, g1 = float(np.float16(gain.min())), float(np.float16(max(gain.max(), gain.min() + 1e-3)))
                codes = np.round((gain - g0) / (g1 - g0) * 255).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(codes, "RGB").save(buf, format="AVIF", quality=quality, speed=6, subsampling="4:4:4")
                nbytes += len(buf.getvalue()) + 8
                back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
                back = np.float32(g0) + back * np.float32((g1 - g0) / 255)
                for j, i in enumerate(frames):
                    if i not in scored:
                        continue
                    u = np.clip((jj + disp[j, 0] - lo[0]) / scale - 0.5, 0, cw - 1)
                    v = np.clip((ii + disp[j, 1] - lo[1]) / scale - 0.5, 0, ch - 1)
                    x0, y0 = np.minimum(u.astype(int), cw - 2), np.minimum(v.astype(int), ch - 2)
                    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
                    r = (back[y0, x0] * (1 - fx) + back[y0, x0 + 1] * fx) * (1 - fy) + \
                        (back[y0 + 1, x0] * (1 - fx) + back[y0 + 1, x0 + 1] * fx) * fy
                    mask = (np.round(sdr[i].max(-1) * 255) >= threshold)[..., None]
                    recon = np.where(mask, (np.maximum(preds[i], 0) + k) * np.exp2(r) - k, preds[i]).astype(np.float32)
                    psnr.append(psnr_pu21(hdr[i], recon))
                    dei.append(delta_e_itp(hdr[i], recon))
            rows.append({"scale": scale, "quality": quality, "codec": "avif per shot", "crf": quality,
                         "threshold": threshold, "kbit_s": 8 * nbytes / 1000 / (len(hdr) / FPS),
                         "pu21_psnr": statistics.mean(psnr), "delta_e_itp": statistics.mean(dei)})
    return rows


def still_fit(nits: np.ndarray, sdr: np.ndarray, config: GridConfig, opts: GridFitOptions) -> dict:
    """One frame fitted alone (the still encoder's fit): bytes, PU21-PSNR, and how its squared
    PU21 error splits between SDR-clipped pixels (largest channel at 8-bit code 254 or more)
    and the rest."""
    from itmfilter.model.grid import fit_grid_model, predict_nits
    from itmfilter.quality.metrics import pu21_encode

    fit = fit_grid_model(sdr, nits, config, opts)
    recon = predict_nits(fit.model, sdr)
    err = ((pu21_encode(np.maximum(nits, 0.005)) - pu21_encode(np.maximum(recon, 0.005))) ** 2).mean(-1)
    clipped = np.round(sdr.max(-1) * 255) >= 254
    return {"bytes": len(fit.data), "pu21_psnr": psnr_pu21(nits, recon), "clipped_pixels": float(clipped.mean()),
            "clipped_error_share": float(err[clipped].sum() / err.sum())}


def best_gain(gains: list[dict], kbps: float) -> dict | None:
    fits = [g for g in gains if g["kbit_s"] <= kbps]
    return max(fits, key=lambda g: g["pu21_psnr"]) if fits else None


def parse_config(text: str, named: dict[str, GridConfig] = GRID_SIZES) -> tuple[str, GridConfig]:
    """``S`` (a config of ``named``) or ``S:width=24/depth=12/grid_bits=6`` (one changed)."""
    name, _, rest = text.partition(":")
    cfg = named[name]
    for item in filter(None, rest.split("/")):
        k, v = item.split("=")
        cfg = replace(cfg, **{k: int(v)})
    return text, cfg


def _gain(g: dict | None) -> str:
    return f"{g['pu21_psnr']:.2f} ({g['kbit_s']:.1f}, 1/{g['scale']} {g['codec']} crf {g['crf']})" if g else "none fits"


def tables(rows: list[dict]) -> list[str]:
    """Markdown: the grid models per config, then the residual layers over them."""
    out = ["| grade | config | grids per shot | fit frames | model kbit/s | track kbit/s (shifts in key) | track kbit/s "
           "(shift packets) | PU21-PSNR | dE-ITP | per shot PU21-PSNR | best gain map at <= track (shifts in key) "
           "| grid - gain map |", "|" + "---|" * 12]
    for r in rows:
        g = r["gain_at_key_kbit_s"]
        per_shot = " / ".join(f"{s['pu21_psnr']:.1f}" for s in r["shots"])
        out.append(f"| {r['curve']} | {r['config']} | {r['shots'][0]['grid']} .. | {r['fit_frames']} | "
                   f"{r['model_kbit_s']:.2f} | {r['key_kbit_s']:.2f} | {r['packets_kbit_s']:.2f} | {r['pu21_psnr']:.2f} | "
                   f"{r['delta_e_itp']:.2f} | {per_shot} | {_gain(g)} | "
                   + (f"{r['pu21_psnr'] - g['pu21_psnr']:+.2f} dB |" if g else "|"))
    res = [(r, x) for r in rows for x in r.get("residual", [])]
    if res:
        out += ["", "| grade | config | residual 1/scale | codec crf | residual kbit/s | total kbit/s (key + residual) | "
                "PU21-PSNR | dE-ITP | best gain map at <= total | model+residual - gain map |", "|" + "---|" * 10]
        for r, x in res:
            g = x["gain_at_total"]
            out.append(f"| {r['curve']} | {r['config']} | 1/{x['scale']} | {x['codec']} {x['crf']} | {x['kbit_s']:.2f} | "
                       f"{x['total_kbit_s']:.2f} | {x['pu21_psnr']:.2f} | {x['delta_e_itp']:.2f} | {_gain(g)} | "
                       + (f"{x['pu21_psnr'] - g['pu21_psnr']:+.2f} dB |" if g else "|"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shots", type=float, default=2.0)
    ap.add_argument("--curves", default="local")
    ap.add_argument("--configs", default="XS,S,M",
                    help="names from model.grid.GRID_SIZES, each optionally changed: 'S:depth=12/grid_bits=6'; ';' between")
    ap.add_argument("--fit-frames", default="8", help="frames per shot the model is fitted on, comma separated")
    ap.add_argument("--steps", type=int, default=GridFitOptions.steps)
    ap.add_argument("--finetune-steps", type=int, default=GridFitOptions.finetune_steps)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--residual-scales", default="", help="residual layer over the model at these 1/scale, e.g. 4,8")
    ap.add_argument("--residual-crfs", default="24,34,44")
    ap.add_argument("--residual-codec", default="libx265", help="libx264, libx265, or 'avif': one still a shot")
    ap.add_argument("--residual-threshold", type=int, default=0,
                    help="code the residual only in blocks with an SDR pixel at or above this 8-bit code (0: everywhere)")
    ap.add_argument("--gain-json", type=Path, default=ROOT / "docs" / "video-rate.json")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="append every result row here (JSON lines)")
    ap.add_argument("--still-frames", default="",
                    help="instead: fit each named config on each of these frames alone (a still fit) and report its "
                         "PU21-PSNR and the share of its squared PU21 error in SDR-clipped pixels, e.g. 72,168")
    ap.add_argument("--tables", type=Path, nargs="*", default=None,
                    help="print markdown tables of these --json files (rows from earlier runs) and exit")
    args = ap.parse_args()
    if args.tables:
        print("\n".join(tables([json.loads(line) for path in args.tables for line in path.read_text().splitlines()])))
        return
    import torch

    torch.set_num_threads(args.threads)
    import video as video_bench  # benchmarks/video.py: the SDR pass

    w, h = (int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    master = args.work / f"master-{w}x{h}-{args.seconds:g}s-shot{args.shots:g}.mkv"
    if not master.exists():
        make_master(master, seconds=args.seconds, fps=FPS, size=(w, h), codec="hevc", shot_seconds=args.shots,
                    split="test", quiet=True)
    gains_all = json.loads(args.gain_json.read_text()) if args.gain_json.exists() else {}
    opts = GridFitOptions(steps=args.steps, finetune_steps=args.finetune_steps)
    configs = [parse_config(c) for c in args.configs.split(";") if c]
    for curve in args.curves.split(","):
        sdr_path = args.work / f"sdr-{curve}-{master.stem}.mp4"
        video_bench.make_sdr(master, sdr_path, curve)
        hdr, sdr = load_clip(master, sdr_path)
        if args.still_frames:
            for i in (int(v) for v in args.still_frames.split(",")):
                for name, cfg in configs:
                    print(json.dumps(dict(still_fit(hdr[i], sdr[i], cfg, opts), curve=curve, frame=i, config=name)), flush=True)
            continue
        shots = shots_and_motion(hdr, sdr, VideoEncodeOptions.shot_threshold)
        scored = set(range(0, len(hdr), args.eval_every))
        gains = gains_all.get(f"{args.shots:g}s shots, {curve}", {}).get("gain", [])
        print(f"== {curve}: {len(hdr)} frames, shots {[len(f) for f, _ in shots]}, "
              f"pan {[np.round(d[-1], 1).tolist() for _, d in shots]} px", flush=True)
        for fit_frames in (int(v) for v in args.fit_frames.split(",")):
            for name, cfg in configs:
                t0 = time.perf_counter()
                placements: list = []
                row = run_config(name, cfg, hdr, sdr, shots, scored, fit_frames, opts, placements)
                row["curve"] = curve
                if args.residual_scales:
                    scales = [int(v) for v in args.residual_scales.split(",")]
                    crfs = [int(v) for v in args.residual_crfs.split(",")]
                    # the image is built from frames between the scored ones, so no scored frame is in it
                    source = {i + args.eval_every // 2 for i in scored if i + args.eval_every // 2 < len(hdr)}
                    row["residual"] = shot_residual(placements, shots, hdr, sdr, scored, scales, crfs,
                                                    args.residual_threshold, source) if args.residual_codec == "avif" else \
                        residual_layer(placements, hdr, sdr, scored, scales, crfs, args.residual_threshold,
                                       args.residual_codec, args.work)
                    for r in row["residual"]:
                        r["total_kbit_s"] = row["key_kbit_s"] + r["kbit_s"]
                        g = best_gain(gains, r["total_kbit_s"])
                        r["gain_at_total"] = g and {k: g[k] for k in ("kbit_s", "pu21_psnr", "scale", "channels", "codec", "crf")}
                row["wall_s"] = time.perf_counter() - t0
                for rate in ("model_kbit_s", "key_kbit_s", "packets_kbit_s"):
                    g = best_gain(gains, row[rate])
                    row[f"gain_at_{rate}"] = g and {k: g[k] for k in ("kbit_s", "pu21_psnr", "scale", "channels", "codec", "crf")}
                print(json.dumps(row), flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
