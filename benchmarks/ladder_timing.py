"""Per-rung filter time and quality of the player's per-frame path, on this CPU.

    python benchmarks/ladder_timing.py --quality --out docs/ladder-timing.md

Timing: for each size and rung, milliseconds of :func:`itmfilter.render.frame.hdr10_frame`
(decoded SDR 4:2:0 frame in, HDR10 yuv420p10le frame out: colour conversions, the
network, the gain map / residual / guided fit and PQ all included; decoding excluded)
through the fused numba path (the ``full`` rung through the exact path, which is what
the CPU player runs for it), the fastest and the median of ``--repeats`` after a
warm-up; ``--exact`` also times the exact numpy/torch path. The network is the blind
initialisation (a track's sets cost the same). The picture: BT.2446a SDR of the first
test-split panorama, resized.

Quality (``--quality``): at each of ``--quality-sizes``, for the global ``bt2446a`` curve
and the spatially varying ``local`` grade, the default network adapted to the picture
(default options), then each rung's PU21-PSNR against the full network and against the
master (fp32, exact path; the fused path gives the same codes within 1). The plain
rungs are shown in the ``prior`` mode (what the default network's rungs use) and in the
``rgb`` gain mode (what ``play --gain auto`` may choose for them on a spatially varying
grade); the guided rungs have one mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.model.initial import load_init  # noqa: E402
from itmfilter.render import fastpath  # noqa: E402
from itmfilter.render.frame import hdr10_frame  # noqa: E402
from itmfilter.render.ladder import RUNG_NAMES, get_rung  # noqa: E402


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def refine_rows(pano, sizes: list[tuple[int, int]], shares: list[float]) -> list[str]:
    """PU21-PSNR against the master of each guided rung per share of refined blocks, on the
    spatially varying ``local`` grade (the same adapted network as :func:`quality_rows`)."""
    from gpu import resized
    from stills import quantise_sdr

    from itmfilter.colour.tonecurves import get_curve
    from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
    from itmfilter.model.adapt import AdaptOptions, adapt
    from itmfilter.quality.metrics import psnr_pu21
    from itmfilter.render import ladder

    init, _ = load_init()
    guided = [name for name in RUNG_NAMES if get_rung(name).guided]
    rows = ["| size | rung | full | " + " | ".join(f"{100 * v:g} %" for v in shares) + " |",
            "|---" * (len(shares) + 3) + "|"]
    saved = ladder.GUIDED_REFINE_SHARES.copy(), ladder.GUIDED_REFINE_SHARE
    try:
        for w, h in sizes:
            master = resized(pano, w, h)
            sdr = quantise_sdr(get_curve("local").forward(master))
            torch.manual_seed(0)
            net = adapt(init, sdr, eotf_inverse_st2084(master).astype(np.float32), AdaptOptions()).net
            full = psnr_pu21(master, eotf_st2084(ladder.apply_rung(net, sdr, "full", precision="fp32")))
            for name in guided:
                cells = []
                for share in shares:
                    ladder.GUIDED_REFINE_SHARES.clear()
                    ladder.GUIDED_REFINE_SHARE = share
                    pq = ladder.apply_rung(net, sdr, name, precision="fp32")
                    cells.append(f"{psnr_pu21(master, eotf_st2084(pq)):.2f}")
                rows.append(f"| {w}x{h} | {name} | {full:.2f} | " + " | ".join(cells) + " |")
                print(rows[-1], flush=True)
    finally:
        ladder.GUIDED_REFINE_SHARES.update(saved[0])
        ladder.GUIDED_REFINE_SHARE = saved[1]
    return rows


def quality_rows(pano, sizes: list[tuple[int, int]]) -> list[str]:
    from gpu import resized
    from stills import quantise_sdr

    from itmfilter.colour.tonecurves import get_curve
    from itmfilter.colour.transfer import eotf_inverse_st2084
    from itmfilter.model.adapt import AdaptOptions, adapt
    from itmfilter.render.ladder import measure_rung_costs

    init, _ = load_init()
    plain = [name for name in RUNG_NAMES if name != "full" and not get_rung(name).guided]
    rows = ["| size | SDR | mode | " + " | ".join(RUNG_NAMES) + " |", "|---" * (len(RUNG_NAMES) + 3) + "|"]
    for w, h in sizes:
        master = resized(pano, w, h)
        for curve in ("bt2446a", "local"):
            sdr = quantise_sdr(get_curve(curve).forward(master))
            torch.manual_seed(0)
            net = adapt(init, sdr, eotf_inverse_st2084(master).astype(np.float32), AdaptOptions()).net
            for gain, names in (("prior", RUNG_NAMES), ("rgb", plain)):
                costs = measure_rung_costs(net, sdr, master, names, precision="fp32", gain=gain)
                cells = [f"{costs[n]['psnr_vs_full']:.1f} / {costs[n]['psnr_vs_ref']:.2f}" if n in costs else "-"
                         for n in RUNG_NAMES]
                rows.append(f"| {w}x{h} | {curve} | {gain if gain == 'rgb' else 'prior / guided'} | "
                            + " | ".join(cells) + " |")
                print(rows[-1], flush=True)
    return rows


def _ms(fn, repeats: int) -> tuple[float, float]:
    fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return 1000 * min(runs), 1000 * statistics.median(runs)


def main() -> None:
    import av
    from gpu import panorama, resized, to_sdr
    from stills import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x360,1920x1080,3840x2160")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--exact", action="store_true", help="also time the exact numpy/torch path")
    ap.add_argument("--panoramas", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quality", action="store_true",
                    help="also each rung's PU21-PSNR against the full network and the master")
    ap.add_argument("--quality-sizes", default="640x360,1920x1080,3840x2160")
    ap.add_argument("--refine-shares", default=None,
                    help="comma list of refined-block shares (e.g. 0,0.01,0.02,0.03): each guided rung's "
                         "PU21-PSNR per share on the local grade at --quality-sizes, instead of the timing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net, _ = load_init(name="blind")
    pano = panorama(args.panoramas)
    if args.refine_shares:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.quality_sizes.split(",")]
        shares = [float(v) for v in args.refine_shares.split(",")]
        text = "\n".join([f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
                          "PU21-PSNR dB against the master, local grade, per share of refined blocks:\n"]
                         + refine_rows(pano, sizes, shares)) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    lines = ["# Per-rung filter time of the player (ms per frame, decode excluded) and quality\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             f"Load average (1/5/15 min) at the start: {load_average()}\n",
             "| size | rung | fused path ms (fastest / median) |" + (" exact path ms (median) |" if args.exact else ""),
             "|---|---|---|" + ("---|" if args.exact else "")]
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        sdr = to_sdr(resized(pano, w, h))
        frame = av.VideoFrame.from_ndarray(np.round(sdr * 255).astype(np.uint8), format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709")
        for rung in reversed(RUNG_NAMES):
            repeats = args.repeats if not (rung == "full" and h > 1500) else 1
            # the full rung is fused too where the network allows it (fastpath.supports_full)
            exact_full = rung == "full" and not fastpath.supports_full(net)
            path = "exact" if exact_full else "fused"
            fastest, median = _ms(lambda: hdr10_frame(frame, net, rung, "cpu", path=path), repeats)
            cells = [f"{fastest:.1f} / {median:.1f}" + (" (exact path)" if exact_full else "")]
            if args.exact:
                cells.append(f"{_ms(lambda: hdr10_frame(frame, net, rung, 'cpu', path='exact'), repeats)[1]:.1f}"
                             if rung != "full" else "(left)")
            lines.append(f"| {size} | {rung} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines.append(f"\nLoad average after the timing: {load_average()}")
    if args.quality:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.quality_sizes.split(",")]
        lines += ["", "PU21-PSNR dB of each rung against the full network / against the master (the"
                  " network adapted to the picture with the default options, fp32, exact path):", ""]
        lines += quality_rows(pano, sizes)
        lines.append(f"\nLoad average at the end: {load_average()}")
    text = "\n".join(lines) + f"\n\ntorch threads: {torch.get_num_threads()}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
