"""Is a grid shot's error static in its scene? A scene residual against each frame's own residual.

    python benchmarks/residual_oracle.py --shot 2 --config M

The clip is ``benchmarks/video_rate.py``'s at 1080p (a test-split master, 10 s at 24 fps, a cut
every 2 s, the ``local`` grade's SDR; ``--work`` holds or receives them). One shot gets the
encoder's grid model (``--config``, fitted on 6 frames spread over it, placed by the encoder's
phase correlation and zoom estimate). Every 4th frame from the second that is not a fit frame
is then scored (PU21-PSNR) with, each uncoded (no AV1, no 8-bit codes):

* the model alone;
* a *static* scene residual at 1/2, 1/4 and 1/8 of the scene (``build_scene_residual`` as the
  encoder builds it, from the 6 fit frames; at 1/4 also from every 2nd frame of the shot),
  read at each frame's placement;
* an *oracle*: the frame's own PQ difference master - model, box-averaged to 1/2, 1/4 and 1/8
  of the frame and read back bilinearly, the best a per-frame residual (a gain-map-like video
  layer over the model) of that resolution could do before coding.

Where the static residual is close to the oracle at one resolution, nothing that changes within
the shot is worth sending at that resolution; the gap between resolutions is what finer images
would buy before their coding costs. One line per setting: its mean and its per-frame scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

W, H, FPS = 1920, 1080, 24


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=2)
    ap.add_argument("--config", default="M", help="a name of itmfilter.encode.gridkeys.GRID_LADDER")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from scene_residual import ShotFit, clip, shot_frames  # benchmarks/scene_residual.py: the clip, the shot, its fit

    from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
    from itmfilter.encode.gridkeys import SCENE_SOLVE_STEPS, estimate_zoom
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.model.grid import predict_pq
    from itmfilter.model.scene import SceneResidual, build_scene_residual, scene_cells
    from itmfilter.quality.metrics import psnr_pu21

    master, sdr_path = clip(args.work)
    frames, offsets, thumbs = shot_frames(master, sdr_path, args.shot)
    n = len(frames)
    picks = sorted(set(np.linspace(0, n - 1, 6).round().astype(int).tolist()))
    dense = list(range(0, n, 2))
    evals = [k for k in range(1, n, 4) if k not in picks]
    want = {frames[k] for k in set(picks) | set(dense) | set(evals)}
    hdr = {i: x for i, x in read_hdr_frames(master) if i in want}
    sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in want}
    zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
    shot = ShotFit([(sdr[frames[k]], hdr[frames[k]]) for k in picks], offs, picks, args.config, zoom)
    fit, model, half, xy_of = shot.fit, shot.model, shot.half, shot.xy
    print(json.dumps({"shot": args.shot, "frames": n, "zoom": zoom, "model_bytes": len(fit.data),
                      "config": args.config, "scored": evals}), flush=True)

    def target(k):
        return eotf_inverse_st2084(np.clip(hdr[frames[k]], 0, 10000)).astype(np.float32)

    base = {k: predict_pq(model, sdr[frames[k]], xy=xy_of(k)) for k in evals}

    def score(k, pq):
        return psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(np.clip(pq, 0, 1)), np.float32))

    def static(build, scale):  # as the encoder builds it
        diffs, xys = shot.diffs([(sdr[frames[k]], hdr[frames[k]]) for k in build], build)
        image = build_scene_residual(diffs, xys, scene_cells(W, H, half, scale), SCENE_SOLVE_STEPS)
        return SceneResidual(np.ascontiguousarray(np.asarray(image, np.float32)))

    def with_static(k, residual):
        return base[k] + residual.sample(xy_of(k).reshape(-1, 2)).reshape(H, W, 3)

    def oracle(k, s):
        t = torch.from_numpy(target(k) - base[k]).permute(2, 0, 1)[None]
        up = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(t, s), size=(H, W), mode="bilinear",
                                             align_corners=False)
        return base[k] + up[0].permute(1, 2, 0).numpy()

    rows = {"model alone": [score(k, base[k]) for k in evals]}
    for s in (2, 4, 8):
        residual = static(picks, s)
        rows[f"static 1/{s}, 6 frames"] = [score(k, with_static(k, residual)) for k in evals]
    residual = static(dense, 4)
    rows[f"static 1/4, {len(dense)} frames"] = [score(k, with_static(k, residual)) for k in evals]
    for s in (2, 4, 8):
        rows[f"oracle 1/{s}"] = [score(k, oracle(k, s)) for k in evals]
    for name, values in rows.items():
        print(json.dumps({"setting": name, "pu21_psnr": float(np.mean(values)),
                          "per_frame": [round(v, 2) for v in values]}), flush=True)


if __name__ == "__main__":
    main()
