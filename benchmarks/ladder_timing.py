"""Per-rung filter time of the player's per-frame path, on this CPU.

    python benchmarks/ladder_timing.py --out docs/ladder-timing.md

For each size and rung: milliseconds of :func:`itmfilter.render.frame.hdr10_frame` (decoded SDR
4:2:0 frame in, HDR10 yuv420p10le frame out: colour conversions, the network, the gain
map and PQ all included; decoding excluded) through the exact numpy/torch path and the
fused numba path, median of ``--repeats`` after a warm-up. The network is the blind
initialisation (a track's sets cost the same). The picture: BT.2446a SDR of the first
test-split panorama, resized.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.render.ladder import RUNG_NAMES  # noqa: E402
from itmfilter.render.frame import hdr10_frame  # noqa: E402
from itmfilter.model.initial import load_init  # noqa: E402


def quality_rows(pano) -> list[str]:
    from gpu import resized
    from stills import quantise_sdr

    from itmfilter.model.adapt import AdaptOptions, adapt
    from itmfilter.colour.transfer import eotf_inverse_st2084
    from itmfilter.render.ladder import measure_rung_costs
    from itmfilter.colour.tonecurves import get_curve

    init, _ = load_init()
    master = resized(pano, 1920, 1080)
    rows = ["| SDR | low-resolution map | " + " | ".join(RUNG_NAMES) + " |", "|---" * (len(RUNG_NAMES) + 2) + "|"]
    for curve in ("bt2446a", "local"):
        sdr = quantise_sdr(get_curve(curve).forward(master))
        net = adapt(init, sdr, eotf_inverse_st2084(master).astype(np.float32), AdaptOptions()).net
        for gain in ("rgb", "prior"):
            costs = measure_rung_costs(net, sdr, master, precision="fp32", gain=gain)
            rows.append(f"| {curve} | {gain} | " + " | ".join(
                f"{c['psnr_vs_full']:.1f} / {c['psnr_vs_ref']:.2f}" for c in costs.values()) + " |")
            print(rows[-1], flush=True)
    return rows


def quality_only(pano) -> None:
    print("\n".join(quality_rows(pano)))


def main() -> None:
    import av

    from gpu import panorama, resized, to_sdr
    from stills import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--panoramas", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quality", action="store_true",
                    help="also each rung's PU21-PSNR against the full network and the master (1080p)")
    args = ap.parse_args()
    net, _ = load_init(name="blind")
    pano = panorama(args.panoramas)
    lines = ["# Per-rung filter time of the player (ms per frame, decode excluded)\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             "| size | rung | exact path ms | fused path ms |", "|---|---|---|---|"]
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        sdr = to_sdr(resized(pano, w, h))
        frame = av.VideoFrame.from_ndarray(np.round(sdr * 255).astype(np.uint8), format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709")
        for rung in reversed(RUNG_NAMES):
            cells = []
            for path in ("exact", "fused"):
                if path == "fused" and rung == "full":
                    cells.append("(exact path)")
                    continue
                hdr10_frame(frame, net, rung, "cpu", path=path)
                runs = []
                for _ in range(args.repeats if not (rung == "full" and h > 1500) else 1):
                    t = time.perf_counter()
                    hdr10_frame(frame, net, rung, "cpu", path=path)
                    runs.append(time.perf_counter() - t)
                cells.append(f"{1000 * statistics.median(runs):.1f}")
            lines.append(f"| {size} | {rung} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    if args.quality:
        lines += ["", "PU21-PSNR dB of each rung against the full network / against the master (1080p, the"
                  " network adapted to the picture with the default options, fp32, exact path):", ""]
        lines += quality_rows(pano)
    text = "\n".join(lines) + f"\n\ntorch threads: {torch.get_num_threads()}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
