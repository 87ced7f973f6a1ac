"""Milliseconds a frame of a real weight track costs at each rung, as the player renders it,
and without the renderer's one-BLAS-thread limit (:mod:`itmfilter.render.threads`).

    python benchmarks/frame_cost.py --track TRACK.mp4 --rungs full,guided-half,guided-quarter,guided-eighth

Frames spread over the clip (every ``--every``-th, ``--frames`` of them) are decoded once; each
rung then renders them ``--repeats`` times in turn with each arm, the arms alternating so that
both see the same minutes of the machine:

* ``player``: :func:`itmfilter.render.frame.hdr10_planes`, what ``play`` and ``transcode`` call;
* ``blas-free``: the same grid path (:mod:`itmfilter.render.gridpath`) called directly, so that
  NumPy's BLAS keeps the threads it has (the renderer before the limit).

Grid tracks only (format 1.4+: the default under ``--max-kbps``). Reports the median, the 90th
percentile and the fastest, in ms, per rung and arm, with the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", type=Path, required=True)
    ap.add_argument("--rungs", default="full,guided-eighth")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="append the table here")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args()

    import av
    from stills import machine
    from tqdm import tqdm

    from itmfilter.media.frames import code_planes
    from itmfilter.model.grid import PlacedGrid
    from itmfilter.render import gridpath
    from itmfilter.render.frame import grid_step, hdr10_planes
    from itmfilter.track.provider import FrameNetworks

    nets = FrameNetworks(args.track)
    frames = []
    with av.open(str(args.track)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % args.every == args.every // 4:
                frames.append((i, f, code_planes(f)))
            if len(frames) >= args.frames:
                break
    if not all(isinstance(nets.provider(i)[0], PlacedGrid) for i, _, _ in frames):
        raise SystemExit(f"{args.track}: not a grid track (encode with --max-kbps)")
    w, h = frames[0][1].width, frames[0][1].height

    def player(rung, i, frame, planes):
        hdr10_planes(frame, nets.provider(i)[0], rung, "cpu")

    def blas_free(rung, i, frame, planes):
        step = grid_step(rung)
        placed = nets.provider(i)[0]
        gridpath.grid_hdr10_planes(placed, planes) if step == 1 else gridpath.grid_guided_planes(placed, planes, step)

    arms = {"player": player, "blas-free": blas_free}
    times: dict = {}
    load0 = open("/proc/loadavg").read().split()[:3]
    rungs = args.rungs.split(",")
    bar = tqdm(total=(args.repeats + 1) * len(rungs) * len(arms) * len(frames), unit="frame", disable=args.quiet)
    for rep in range(args.repeats + 1):  # the first round compiles and warms: not counted
        for rung in rungs:
            for name, fn in arms.items():
                for i, frame, planes in frames:
                    t = time.perf_counter()
                    fn(rung, i, frame, planes)
                    if rep:
                        times.setdefault((rung, name), []).append(1e3 * (time.perf_counter() - t))
                    bar.update(1)
    bar.close()
    load1 = open("/proc/loadavg").read().split()[:3]
    lines = [f"\n`python benchmarks/frame_cost.py --track {args.track.name} --rungs {args.rungs}` "
             f"({w}x{h}, {len(frames)} frames x {args.repeats}; {machine()}; load average {' '.join(load0)} at start, "
             f"{' '.join(load1)} at the end)\n",
             "| rung | arm | median ms | 90th percentile ms | fastest ms |", "|---|---|---|---|---|"]
    for (rung, name), v in times.items():
        lines.append(f"| {rung} | {name} | {statistics.median(v):.1f} | {np.percentile(v, 90):.1f} | {min(v):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
