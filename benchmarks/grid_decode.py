"""Grid shots' frames in the player: each rung of a grid track's ladder, time and quality.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/grid_decode.py --sizes 640x360,1920x1080 --models S,M

For each size the built-in picture, resized, is graded to SDR (``--curve``, default the
spatially varying ``local``), and a grid model of each of ``--models`` is fitted to it
(:func:`itmfilter.model.grid.fit_grid_model`, default options), placed as a KEY places it.
Each rung of :data:`itmfilter.render.ladder.GRID_LADDER` then runs through the player's
per-frame path (:func:`itmfilter.render.frame.hdr10_planes` on the 4:2:0 SDR frame: the fused
CPU path, :mod:`itmfilter.render.gridpath`): milliseconds (fastest of ``--repeats`` after a
warm-up), and PU21-PSNR of the HDR10 output (decoded back to cd/m2, chroma replicated) against
the master and against the model on every pixel (``full``). ``normative ms``: the NumPy
decoder of the SPEC (``path="exact"``), once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_st2084  # noqa: E402
from itmfilter.colour.ycbcr import ycbcr_to_rgb  # noqa: E402
from itmfilter.model.grid import GRID_SIZES, GridFitOptions, PlacedGrid, fit_grid_model  # noqa: E402
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402
from itmfilter.render.frame import hdr10_planes  # noqa: E402
from itmfilter.render.ladder import GRID_LADDER  # noqa: E402


def planes_to_nits(planes) -> np.ndarray:
    """HDR10 10-bit 4:2:0 planes -> ``(H, W, 3)`` BT.2020 cd/m2 (chroma replicated 2 x 2)."""
    y, cb, cr = planes
    h, w = y.shape
    up = [np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w] for c in (cb, cr)]
    rgb = ycbcr_to_rgb(np.stack([y, *up], -1).astype(np.float64), "bt2020nc", 10, False)
    return eotf_st2084(np.clip(rgb, 0.0, 1.0))


def main() -> None:
    from gpu import panorama, resized
    from stills import machine, quantise_sdr

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x360,1920x1080")
    ap.add_argument("--models", default="S")
    ap.add_argument("--curve", default="local")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"Machine: {machine()}, load average {os.getloadavg()[0]:.2f} at the start\n")
    print("| model | size | rung | ms | PU21 vs master | PU21 vs full | normative ms |\n|---|---|---|---|---|---|---|",
          flush=True)
    pano = panorama(None)
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        master = resized(pano, w, h)
        sdr = quantise_sdr(get_curve(args.curve).forward(master)).astype(np.float32)
        frame = av.VideoFrame.from_ndarray(np.round(sdr * 255).astype(np.uint8), format="rgb24").reformat(
            format="yuv420p")
        for name in args.models.split(","):
            model = fit_grid_model(sdr, master, GRID_SIZES[name], GridFitOptions()).model
            placed = PlacedGrid(model, origin=(0.0, 0.0), half=(1.0, 1.0))
            full = planes_to_nits(hdr10_planes(frame, placed, "full", "cpu"))
            for rung in GRID_LADDER:
                out = hdr10_planes(frame, placed, rung, "cpu")  # compiles and warms up
                runs = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    hdr10_planes(frame, placed, rung, "cpu")
                    runs.append(time.perf_counter() - t)
                nits = planes_to_nits(out)
                normative = ""
                if rung == "full":
                    t = time.perf_counter()
                    hdr10_planes(frame, placed, "full", "cpu", path="exact")
                    normative = f"{1000 * (time.perf_counter() - t):.0f}"
                vs_full = "-" if rung == "full" else f"{psnr_pu21(full, nits):.2f}"
                print(f"| {name} | {size} | {rung} | {1000 * min(runs):.1f} | {psnr_pu21(master, nits):.2f} | "
                      f"{vs_full} | {normative} |", flush=True)


if __name__ == "__main__":
    main()
