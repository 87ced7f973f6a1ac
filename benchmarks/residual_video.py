"""Would a per-frame residual video over the grid model beat the gain map per bit at high rates?

    python benchmarks/residual_video.py --shot 2 --config S-6bit
    python benchmarks/residual_video.py --size 640x360 --subject --work DIR --shot 0 --scene none,4:30

(``--size`` / ``--subject``: another of ``video_rate.py``'s clips, made by it in ``--work``.)

A probe, not a format: nothing here is in the track. On one shot of ``video_rate.py``'s 1080p
clip (``--work``), the encoder's grid model (``--config``, fitted on 6 frames spread over the
shot, placed by the encoder's motion and zoom estimate) and, optionally, its static scene
residual (built from the same 6 frames, AV1-coded as the encoder codes it) predict every frame.
What is left, each frame's PQ difference master - prediction, is box-averaged to 1/``scale``,
mapped to 8-bit codes over its 0.01 % tails per channel and coded as a video of every frame with
libx265 (4:2:0, the gain-map track's coder and settings) at a sweep of CRFs; the decoded frames,
read back bilinearly, are added to the prediction. Every 4th frame is scored (PU21-PSNR).

The rate of a setting is its model, scene image and video bytes over the shot's duration. The
competitor on the same frames is ``video_rate.py``'s gain-map track (log2 gain of the master over
the placed SDR, 3 channels, libx265, tune psnr) at 1/2 and 1/4 of the frame over a CRF sweep: a
line per setting, then each residual-video point's margin over the gain maps' front at its rate
(interpolated in log rate, as ``video_rate.py``'s ``front_at``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

W, H, FPS = 1920, 1080, 24


def _box(x: np.ndarray, s: int) -> np.ndarray:
    h, w, c = x.shape
    return x.reshape(h // s, s, w // s, s, c).mean(axis=(1, 3)).astype(np.float32)


def _upsample(small: np.ndarray, s: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))[None]
    return F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)


def code_video(residuals: list[np.ndarray], crf: int, path: Path, tune: str = "psnr") -> tuple[int, list[np.ndarray]]:
    """Residual images -> (bytes of the coded packets, the decoded images)."""
    import av

    from itmfilter.media.video import SdrWriter, read_sdr_frames

    stack = np.stack(residuals)
    lo = np.percentile(stack.reshape(-1, 3), 0.01, axis=0).astype(np.float32)
    hi = np.percentile(stack.reshape(-1, 3), 99.99, axis=0).astype(np.float32)
    hi = np.maximum(hi, lo + 1e-4)
    h, w = residuals[0].shape[:2]
    with SdrWriter(path, w, h, FPS, codec="libx265", crf=crf, preset="medium", codec_options={"tune": tune}) as writer:
        for r in residuals:
            writer.write(np.clip((r - lo) / (hi - lo), 0, 1))
    with av.open(str(path)) as c:
        nbytes = sum(p.size for p in c.demux(c.streams.video[0]) if p.size)
    out = [frame * (hi - lo) + lo for _, frame in read_sdr_frames(path)]
    path.unlink()
    return nbytes + 12, out  # + the ranges, six binary16


def main() -> None:
    global W, H  # the clip's frame size (--size)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=2)
    ap.add_argument("--config", default="S-6bit", help="a name of itmfilter.encode.gridkeys.GRID_LADDER")
    ap.add_argument("--scene", default="none,4:30", help="static scene residuals: none or scale:quality, comma separated")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--crfs", default="22,26,30,34")
    ap.add_argument("--gain-crfs", default="21,23,25,27,29,31,33")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    ap.add_argument("--size", default=f"{W}x{H}", help="another of video_rate.py's clips in --work (made by it)")
    ap.add_argument("--subject", action="store_true", help="video_rate.py --subject's clip (a subject moving in each shot)")
    ap.add_argument("--mask", default="0", help="comma-separated SDR codes: the residual is kept only in blocks where "
                    "some pixel's largest SDR channel code reaches it (0: everywhere); the mask comes from the SDR")
    ap.add_argument("--domain", default="pq", help="pq (PQ difference), log2 (log2 gain over the prediction), or both")
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.split("x"))

    import torch

    torch.set_num_threads(args.threads)
    import scene_residual  # benchmarks/scene_residual.py
    from scene_residual import ShotFit, clip, shot_frames
    from video_rate import gainmap_track  # benchmarks/video_rate.py: the competitor

    from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
    from itmfilter.encode.gridkeys import SCENE_SOLVE_STEPS, estimate_zoom, fit_frames_of
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.model.grid import predict_pq
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual
    from itmfilter.quality import baselines
    from itmfilter.quality.metrics import psnr_pu21

    def emit(row):
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    work = args.work
    scene_residual.W, scene_residual.H = W, H  # its helpers read the frame size from these
    if (W, H) == (1920, 1080) and not args.subject:
        master, sdr_path = clip(work)
    else:
        master, sdr_path = scene_residual.rate_clip(work, W, H, args.subject)
    frames, offsets, thumbs = shot_frames(master, sdr_path, args.shot)
    n = len(frames)
    seconds = n / FPS
    picks = fit_frames_of(n, 6)
    evals = list(range(1, n, 4))
    index = {f: k for k, f in enumerate(frames)}
    sdr, hdr = {}, {}
    for (i, nits), (_, s) in zip(read_hdr_frames(master), read_sdr_frames(sdr_path)):
        if i in index:
            sdr[index[i]], hdr[index[i]] = s, nits
        elif i > frames[-1]:
            break
    zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
    t0 = time.perf_counter()
    shot = ShotFit([(sdr[k], hdr[k]) for k in picks], offs, picks, args.config, zoom)
    fit, half = shot.fit, shot.half
    xy = {k: shot.xy(k) for k in range(n)}
    base = {k: predict_pq(shot.model, sdr[k], xy=xy[k]) for k in range(n)}
    target = {k: eotf_inverse_st2084(np.clip(hdr[k], 0, 10000)).astype(np.float32) for k in range(n)}

    def score(k, pq):
        return psnr_pu21(hdr[k], np.asarray(eotf_st2084(np.clip(pq, 0, 1)), np.float32))

    alone = float(np.mean([score(k, base[k]) for k in evals]))
    head = {"shot": args.shot, "frames": n, "config": args.config, "model_bytes": len(fit.data),
            "fit_s": round(time.perf_counter() - t0, 1)}
    emit({**head, "kind": "model", "kbit_s": 8 * len(fit.data) / 1000 / seconds, "pu21_psnr": alone})

    # the competitor on the same frames
    gains, placed = [], {}
    for k in range(n):
        sdr_base = baselines.sdr_placed_bt2408(sdr[k])
        if k in evals:
            placed[k] = sdr_base
        g = np.log2((np.maximum(hdr[k], 0) + 0.5) / (np.maximum(sdr_base, 0) + 0.5))
        gains.append(_box(g, 2))
    gain_rows = []
    for scale in (2, 4):
        for crf in (int(c) for c in args.gain_crfs.split(",")):
            kbps, recon, _ = gainmap_track({3: gains}, placed, (H, W), scale, 3, "libx265", crf, work, base=2, tune="psnr")
            psnr = float(np.mean([psnr_pu21(hdr[k], recon[k]) for k in evals]))
            gain_rows.append({"kbit_s": kbps, "pu21_psnr": psnr})
            emit({**head, "kind": "gain map", "scale": scale, "crf": crf, "kbit_s": kbps, "pu21_psnr": psnr})
    del gains
    front = sorted(gain_rows, key=lambda r: r["kbit_s"])
    best, on_front = -1e9, []
    for r in front:
        if r["pu21_psnr"] > best:
            on_front.append(r)
            best = r["pu21_psnr"]

    def front_at(kbps):
        pts = [(np.log(r["kbit_s"]), r["pu21_psnr"]) for r in on_front]
        if not pts or np.log(kbps) < pts[0][0] or np.log(kbps) > pts[-1][0]:
            return None
        return float(np.interp(np.log(kbps), [p[0] for p in pts], [p[1] for p in pts]))

    for spec in args.scene.split(","):
        if spec == "none":
            scene_bytes, pred = 0, base
        else:
            s, q = (int(v) for v in spec.split(":"))
            diffs, xys = shot.diffs([(sdr[k], hdr[k]) for k in picks], picks)
            data = ScenePlan(build_scene_residual(diffs, xys, scene_cells(W, H, half, s), SCENE_SOLVE_STEPS)).code(q)
            scene = unpack_scene_residual(data)
            scene_bytes = len(data)
            pred = {k: base[k] + scene.sample(xy[k].reshape(-1, 2)).reshape(H, W, 3) for k in range(n)}
        fixed = len(fit.data) + scene_bytes
        with_scene = float(np.mean([score(k, pred[k]) for k in evals]))
        kb = 8 * fixed / 1000 / seconds
        emit({**head, "kind": "model+scene", "scene": spec, "kbit_s": kb, "pu21_psnr": with_scene,
              "vs_gain_front": None if front_at(kb) is None else with_scene - front_at(kb)})
        for scale in (int(v) for v in args.scales.split(",")):
            domains = args.domain.split(",")
            # the prediction in cd/m2 (log2 residuals) and each frame's block mask, once a scale
            lin = ({k: np.asarray(eotf_st2084(np.clip(pred[k], 0, 1)), np.float32) for k in range(n)}
                   if "log2" in domains else {})
            maxcode = [np.round(sdr[k].max(axis=2, keepdims=True) * 255) for k in range(n)]
            for domain in domains:
                for thr in (int(v) for v in args.mask.split(",")):
                    residuals = []
                    for k in range(n):
                        if domain == "log2":
                            r = np.log2((np.maximum(hdr[k], 0) + 0.5) / (lin[k] + 0.5))
                        else:
                            r = target[k] - np.clip(pred[k], 0, 1)
                        if thr:
                            keep = _box((maxcode[k] >= thr).astype(np.float32), scale)
                            residuals.append(_box(r, scale) * (keep > 0))
                        else:
                            residuals.append(_box(r, scale))
                    for crf in (int(c) for c in args.crfs.split(",")):
                        nbytes, decoded = code_video(residuals, crf, work / f"resvid-{scale}-{crf}.mp4")
                        recon = []
                        for k in evals:
                            up = _upsample(decoded[k], scale)
                            if domain == "log2":
                                out = np.clip((lin[k] + 0.5) * np.exp2(up) - 0.5, 0, 10000)
                                recon.append(psnr_pu21(hdr[k], out.astype(np.float32)))
                            else:
                                recon.append(score(k, pred[k] + up))
                        psnr = float(np.mean(recon))
                        kbps = 8 * (fixed + nbytes) / 1000 / seconds
                        ref = front_at(kbps)
                        emit({**head, "kind": "model+scene+video", "scene": spec, "scale": scale, "crf": crf,
                              "domain": domain, "mask": thr, "video_bytes": nbytes, "kbit_s": kbps, "pu21_psnr": psnr,
                              "vs_gain_front": None if ref is None else psnr - ref})


if __name__ == "__main__":
    main()
