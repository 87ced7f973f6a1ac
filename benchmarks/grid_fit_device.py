"""A grid shot's fit on the CPU and on CUDA: seconds, bytes and PU21-PSNR of each, then (with
``--encode``) a small capped grid encode end to end on the device.

    python benchmarks/grid_fit_device.py --steps 300 --encode

The fit is the encoder's (:func:`itmfilter.encode.gridkeys.fit_segment_grid`: M-48x24, compact,
four starts, clipped pixels at 0.3) on six 1080p frames of a pan over the built-in sample tiled
to the frame (the device machine is offline), ``--steps`` Adam steps (the encoder's 1800) and
two thirds as many for the MLP's fine-tune. The CPU fit uses every core torch is given. The CUDA
fit draws the same initial weights and batches, so the two differ only by the devices'
arithmetic; both are scored on a seventh frame between two fit frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pan_frames(w: int, h: int, count: int, step: int) -> list[np.ndarray]:
    """``count`` frames of ``w x h`` panning ``step`` pixels a frame over the built-in sample,
    tiled and scaled to the frames' height."""
    from itmfilter.data import sample_path
    from itmfilter.media.stills import read_hdr

    nits = read_hdr(sample_path()).nits.astype(np.float32)
    rows = np.linspace(0, nits.shape[0] - 1, h).round().astype(int)
    scaled = nits[rows][:, np.linspace(0, nits.shape[1] - 1, int(nits.shape[1] * h / nits.shape[0])).round().astype(int)]
    wide = np.concatenate([scaled] * (-(-(w + step * count) // scaled.shape[1])), axis=1)
    return [wide[:, k * step:k * step + w] for k in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--encode", action="store_true", help="then a 2 s 320x180 capped grid encode on the last device")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from itmfilter.colour.tonecurves import get_curve
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.gridkeys import GRID_LADDER, SCENE_CLIPPED_WEIGHT, fit_segment_grid, frame_xy
    from itmfilter.model.grid import GridFitOptions, predict_pq
    from itmfilter.quality.metrics import psnr_pu21

    w, h = (int(v) for v in args.size.split("x"))
    step = w // 64
    masters = pan_frames(w, h, 7, step)
    curve = get_curve("local")
    sdrs = [(np.round(np.clip(curve.forward(m), 0, 1) * 255) / 255).astype(np.float32) for m in masters]
    picks = [0, 2, 3, 4, 5, 6]  # frame 1 is scored
    offsets = np.array([[2.0 * k * step / w, 0.0] for k in range(7)])  # grid units: 2 a frame width
    picked = [(sdrs[k], masters[k]) for k in picks]
    config = dict(GRID_LADDER)["M-48x24"]
    options = GridFitOptions(steps=args.steps, finetune_steps=2 * args.steps // 3, compact=True, starts=4,
                             trial_steps=args.steps // 8, clipped_weight=SCENE_CLIPPED_WEIGHT)
    rows = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipped", flush=True)
            continue
        device = torch.device(name) if name != "cpu" else None
        t0 = time.perf_counter()
        fit, centre, half = fit_segment_grid(picked, offsets, picks, config, options, device=device)
        seconds = time.perf_counter() - t0
        xy = frame_xy(h, w, offsets[1], centre, half)
        score = psnr_pu21(masters[1], np.asarray(eotf_st2084(predict_pq(fit.model, sdrs[1], xy=xy)), np.float32))
        row = {"device": torch.cuda.get_device_name() if name == "cuda" else f"cpu x {torch.get_num_threads()} threads",
               "size": args.size, "steps": args.steps, "fit_s": round(seconds, 2), "bytes": len(fit.data),
               "pu21_psnr": round(float(score), 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.encode:
        from itmfilter.data.testmedia import make_master_from_arrays
        from itmfilter.encode.video import VideoEncodeOptions, encode_video
        from itmfilter.track.provider import FrameNetworks

        with tempfile.TemporaryDirectory() as tmp:
            master = Path(tmp) / "pan.mkv"
            small = pan_frames(320, 180, 48, 4)
            make_master_from_arrays(master, iter(small), fps=24, codec="hevc", peak_nits=1000)
            name = args.devices.split(",")[-1]
            t0 = time.perf_counter()
            report = encode_video(master, Path(tmp) / "sdr.mp4", device=name, quiet=True,
                                  options=VideoEncodeOptions(preset="ultrafast", model="grid", max_kbps=32, grid_steps=150,
                                                             search="fast", grid_fits_on_device=True))
            nets = FrameNetworks(Path(tmp) / "sdr.mp4")
            ok = all(nets(i) is not None for i in range(report.frames)) and nets.damaged == 0
            row = {"encode_device": name, "frames": report.frames, "kbit_s": round(report.kbit_per_s, 2),
                   "keys": report.keys, "notes": report.notes, "seconds": round(time.perf_counter() - t0, 1),
                   "decodes": ok}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
