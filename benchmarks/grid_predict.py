"""Speed of the normative grid decoder (:meth:`itmfilter.model.grid.PlacedGrid.predict_pq`, the
float32 NumPy decoder of sidecar/SPEC.md that ``itmfilter transcode`` runs on a CPU and the
encoder scores its candidates with) on the frames of a real grid track.

    python benchmarks/grid_predict.py TRACK.mp4 [--every 24] [--save out.npy]

Every ``--every``-th frame of TRACK (an SDR video carrying a grid track, e.g. a capped encode
of the 1080p benchmark clip) is decoded through its placed model (scene residual included);
prints seconds a frame (mean over those frames, the model's own time only). ``--save`` keeps
the PQ frames, so two commits' outputs can be compared bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from stills import machine  # benchmarks/stills.py

    from itmfilter.media.video import read_sdr_frames
    from itmfilter.model.grid import PlacedGrid
    from itmfilter.track.provider import FrameNetworks

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("track", type=Path)
    ap.add_argument("--every", type=int, default=24)
    ap.add_argument("--save", type=Path, default=None)
    args = ap.parse_args()
    nets = FrameNetworks(args.track)
    outs, seconds = [], []
    for index, sdr in read_sdr_frames(args.track):
        if index % args.every:
            continue
        placed = nets(index)
        if not isinstance(placed, PlacedGrid):
            raise SystemExit(f"{args.track}: frame {index} is not a grid shot's frame")
        frame = np.asarray(sdr, np.float32)
        t0 = time.perf_counter()
        outs.append(placed.predict_pq(frame))
        seconds.append(time.perf_counter() - t0)
    h, w = outs[0].shape[:2]
    print(f"machine: {machine()}")
    print(f"{args.track.name}: {len(outs)} frames of {w}x{h}, {np.mean(seconds):.3f} s a frame "
          f"(min {np.min(seconds):.3f}, max {np.max(seconds):.3f})")
    if args.save:
        np.save(args.save, np.stack(outs))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
