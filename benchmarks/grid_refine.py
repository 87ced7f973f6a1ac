"""What a grid refinement buys (progressive grid shots, format 1.5): per shot, the KEY's grid
model and one refinement (the grid at twice the cells, polynomial and MLP held,
:func:`itmfilter.model.grid.fit_grid_refinement`) coded at several residual steps, scored as
the decoder sees them on every 4th frame of the shot.

    python benchmarks/grid_refine.py --work benchmarks/out/gridrefine --shots 0,2 --configs XXS,XXXS-d4

The clip is ``benchmarks/video_rate.py``'s (640x360, 10 s, a cut every 2 s, its ``local`` SDR,
made in ``--work`` if absent). Each shot is placed as the encoder places it (the accumulated
phase-correlation pan, the grid grown with its extent) and fitted as the encoder fits it (6
frames pooled, 600 + 400 steps; the refinement ``--refine-steps``). Prints one JSON line per model:
bytes (the grid model's, or the refinement's) and PU21-PSNR (mean over the scored frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.colour.transfer import eotf_st2084  # noqa: E402
from itmfilter.encode.gridkeys import GRID_LADDER, REFINE_STEPS, fit_frames_of, fit_segment_grid, frame_xy  # noqa: E402
from itmfilter.media.phasecorr import MotionEstimator  # noqa: E402
from itmfilter.media.video import read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.model.grid import (  # noqa: E402
    GridFitOptions,
    apply_grid_refinement,
    fit_grid_refinement,
    pack_grid_refinement,
    predict_pq,
    quantise_refinement,
)
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402
from itmfilter.track.motion import pixels_to_shift  # noqa: E402


def clip(work: Path) -> tuple[Path, Path]:
    """video_rate.py's master and ``local`` SDR (640x360, 10 s, 2 s shots), made if absent."""
    import video as video_bench

    from itmfilter.data.testmedia import make_master

    work.mkdir(parents=True, exist_ok=True)
    master = work / "master-640x360-10s-shot2.mkv"
    sdr = work / "sdr-local-master-640x360-10s-shot2.mp4"
    if not master.exists():  # as video_rate.py makes it
        make_master(master, seconds=10.0, fps=24, size=(640, 360), codec="hevc", shot_seconds=2.0, split="test", quiet=True)
    if not sdr.exists():
        video_bench.make_sdr(master, sdr, "local")
    return master, sdr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="benchmarks/out/gridrefine")
    ap.add_argument("--shots", default="0", help="0-based shots of 48 frames, comma separated")
    ap.add_argument("--configs", default="XXS", help="names of encode/gridkeys.py GRID_LADDER, comma separated")
    ap.add_argument("--refine-steps", default="300", help="Adam steps of the refinement fit, comma separated (the encoder: 300 and 150)")
    ap.add_argument("--refine-frames", type=int, default=6, help="frames of the shot the refinement is fitted on (the KEY's model: 6)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    master, sdr_path = clip(Path(args.work))
    ladder = dict(GRID_LADDER)
    for shot in (int(s) for s in args.shots.split(",")):
        start, n = 48 * shot, 48
        hdr = [x for i, x in read_hdr_frames(master, start=start) if i < start + n]
        sdr = [x for i, x in read_sdr_frames(sdr_path, start=start) if i < start + n]
        h, w = sdr[0].shape[:2]
        estimate, pos, offsets = MotionEstimator(), np.zeros(2), []
        for k, s in enumerate(sdr):
            pan = estimate(s)
            if pan is not None and k > 0:
                pos = pos + np.asarray(pixels_to_shift(pan, w, h))
            offsets.append(pos.copy())
        offsets = np.asarray(offsets)
        picks = fit_frames_of(n, 6)
        picked = [(sdr[k], hdr[k]) for k in picks]

        def score(model, centre, half) -> float:
            return statistics.mean(
                psnr_pu21(hdr[k], np.asarray(eotf_st2084(predict_pq(model, sdr[k], xy=frame_xy(h, w, offsets[k], centre, half))),
                                             np.float32)) for k in range(0, n, 4))

        for name in args.configs.split(","):
            t0 = time.perf_counter()
            fit, centre, half = fit_segment_grid(picked, offsets, picks, ladder[name], GridFitOptions())
            cfg = fit.model.config
            print(json.dumps({"shot": shot, "config": name, "grid": f"{cfg.width}x{cfg.height}x{cfg.depth}", "bytes": len(fit.data),
                              "pu21_psnr": round(score(fit.model, centre, half), 2),
                              "fit_s": round(time.perf_counter() - t0, 1)}), flush=True)
            refine_picks = fit_frames_of(n, args.refine_frames)
            xy = np.concatenate([frame_xy(h, w, offsets[k], centre, half).reshape(-1, 2) for k in refine_picks])
            for fit_steps in (int(v) for v in args.refine_steps.split(",")):
                residual = fit_grid_refinement(fit.model, np.concatenate([sdr[k].reshape(-1, 3) for k in refine_picks]),
                                               np.concatenate([hdr[k].reshape(-1, 3) for k in refine_picks]), xy,
                                               GridFitOptions(steps=fit_steps))
                for step in REFINE_STEPS:
                    data = pack_grid_refinement(*quantise_refinement(residual, step))
                    refined = apply_grid_refinement(fit.model, data)
                    print(json.dumps({"shot": shot, "config": name, "refine_fit_steps": fit_steps, "refinement_step": step,
                                      "grid": f"{refined.config.width}x{refined.config.height}x{cfg.depth}",
                                      "bytes": len(data), "pu21_psnr": round(score(refined, centre, half), 2)}), flush=True)


if __name__ == "__main__":
    main()
