"""Batched adaptation (:func:`itmfilter.model.adapt.adapt_batch`) against adapting the
frames one after the other (:func:`itmfilter.model.adapt.adapt`): frames/s, and how far
the weights are apart.

    python benchmarks/adapt_batch.py --threads 1 --size 640x360 --batches 1,4,8 [--out docs/....md]
    python benchmarks/adapt_batch.py --device cuda --size 1920x1080 --batches 1,8,16,32   # on a GPU

Frames: a pan across the first test panorama (the built-in sample, tiled, when offline),
SDR by BT.2446a, 8-bit. Recipes: ``key`` is what the video encoder adapts a key frame
with (``RECIPE_200x8192``, 200 steps of 8192 pixels), ``default`` the stills recipe with
``--default-steps`` steps (1600 in full; fewer keep the run short, the per-step cost is
the same). Each round times the sequential and the batched run of the same frames back
to back (the shared machine drifts), ``--rounds`` rounds, min reported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu import machine, panorama, resized, sync, to_sdr  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py, beside this script)

from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, RECIPE_200x8192, adapt, adapt_batch  # noqa: E402
from itmfilter.model.initial import load_init  # noqa: E402
from itmfilter.model.net import resolve_device  # noqa: E402


def pan_frames(w: int, h: int, n: int, panoramas: Path | None):
    pano = panorama(panoramas)
    ph, pw, _ = pano.shape
    big = resized(pano, max(w + 8 * n, int(round(pw * h / ph))), h)
    frames = [np.ascontiguousarray(big[:, 8 * i:8 * i + w]) for i in range(n)]
    return [to_sdr(f) for f in frames], [eotf_inverse_st2084(f).astype(np.float32) for f in frames]


def max_weight_diff(a, b) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--recipes", default="key,default")
    ap.add_argument("--default-steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--panoramas", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    w, h = (int(v) for v in args.size.split("x"))
    batches = [int(b) for b in args.batches.split(",")]
    sdrs, targets = pan_frames(w, h, max(batches), args.panoramas)
    init, _ = load_init()
    recipes = {"key": replace(RECIPE_200x8192, steps=200), "default": AdaptOptions(steps=args.default_steps)}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = ["# Batched adaptation against one frame at a time\n",
             f"Command: `python {' '.join(sys.argv)}`\n",
             f"Machine: {machine(device)}; torch threads {args.threads}; commit {commit}; "
             f"load average before: {os.getloadavg()[0]:.1f}\n",
             "| recipe | frames B | sequential s (frames/s) | batched s (frames/s) | speed-up | max weight diff |",
             "|---|---|---|---|---|---|"]
    for name in args.recipes.split(","):
        options = recipes[name]
        for b in batches:
            seq_t, bat_t = [], []
            for _ in range(args.rounds):
                sync(device)
                t0 = time.perf_counter()
                seq = [adapt(init, s, t, options, device=device) for s, t in zip(sdrs[:b], targets[:b])]
                sync(device)
                t1 = time.perf_counter()
                bat = adapt_batch(init, sdrs[:b], targets[:b], options, device=device)
                sync(device)
                t2 = time.perf_counter()
                seq_t.append(t1 - t0)
                bat_t.append(t2 - t1)
            diff = max(max_weight_diff(x, y) for x, y in zip(seq, bat))
            s, t = min(seq_t), min(bat_t)
            row = (f"| {name} ({options.steps} x {options.batch_size}) | {b} | {s:.2f} ({b / s:.2f}) | "
                   f"{t:.2f} ({b / t:.2f}) | {s / t:.2f}x | {diff:.1e} |")
            print(row, flush=True)
            lines.append(row)
    lines.append(f"\nLoad average after: {os.getloadavg()[0]:.1f}.")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
