"""Where a grid model's error lies: clipped SDR pixels against the rest, and what weighing the
clipped pixels down in the fit does (``GridFitOptions.clipped_weight``).

    python benchmarks/clipped_error.py --split train --size 1024x512 --grid M --weights 1 0.1

For each scene's largest picture of the split (as ``benchmarks/stills_rate.py``: bicubic to
``--size``, the ``--curve`` grade as 8-bit SDR), fits the grid model with the stills' fit
(:data:`itmfilter.encode.still_rate.STILL_FIT`) at each clipped weight and prints the model
alone: its bytes, PU21-PSNR over all pixels, over the unclipped ones and over the clipped ones
(the SDR's largest channel code >= :data:`itmfilter.model.grid.CLIPPED_CODE`), and the share
of the squared PU21 error that lies in the clipped pixels. A model followed by a residual layer
is judged by the payload (``stills_rate.py``); this says where the model alone spends itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from stills_rate import commit, machine, pictures, sdr_of  # noqa: E402

from itmfilter.encode.still_rate import STILL_FIT  # noqa: E402
from itmfilter.model.grid import CLIPPED_CODE, GRID_SIZES, fit_grid_model, predict_nits  # noqa: E402
from itmfilter.model.residual import highlight_mask  # noqa: E402
from itmfilter.quality.metrics import pu21_encode  # noqa: E402


def _psnr(se: np.ndarray) -> float:
    return float(10 * np.log10(256.0 ** 2 / max(float(se.mean()), 1e-12))) if se.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="train", choices=("train", "val", "test"))
    ap.add_argument("--size", default="1024x512")
    ap.add_argument("--curve", default="local")
    ap.add_argument("--grid", default="M", choices=sorted(GRID_SIZES))
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    print(f"Machine: {machine()}, commit {commit()}; grid {args.grid}, `{args.curve}` grade, {args.split} split, {w}x{h}\n")
    print("| picture | clipped pixels | weight | bytes | PU21-PSNR | unclipped | clipped | error share in clipped |")
    print("|---|---|---|---|---|---|---|---|")
    pics = pictures(args.split, (w, h))
    for name, hdr in tqdm(pics, unit="picture", disable=args.quiet, file=sys.stderr):
        sdr = sdr_of(hdr, args.curve)
        clipped = highlight_mask(sdr, CLIPPED_CODE)
        ref = pu21_encode(np.clip(hdr, 0, 1e4).astype(np.float64))
        for weight in args.weights:
            fit = fit_grid_model(sdr, hdr, GRID_SIZES[args.grid], dataclasses.replace(STILL_FIT, clipped_weight=weight))
            out = pu21_encode(np.clip(predict_nits(fit.model, sdr), 0, 1e4).astype(np.float64))
            se = ((ref - out) ** 2).mean(-1)
            share = float(se[clipped].sum() / max(float(se.sum()), 1e-12))
            print(f"| {name} | {clipped.mean():.1%} | {weight:g} | {len(fit.data)} | {_psnr(se):.2f} | "
                  f"{_psnr(se[~clipped]):.2f} | {_psnr(se[clipped]):.2f} | {share:.0%} |", flush=True)


if __name__ == "__main__":
    main()
