"""Grid shots' frame time in the player: the fused CPU path against the normative decoder.

    python benchmarks/grid_decode.py --sizes 640x360,1920x1080 --models S,M

A random grid model of each size (the tests' recipe: a plausible polynomial, a random grid and
MLP), placed with a pan, on a synthetic 4:2:0 frame; ``hdr10_planes`` on the default (fused)
path, fastest of ``--repeats``, and on ``path="exact"`` (the NumPy decoder of the SPEC), once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_gridpath import _frame, _model  # noqa: E402

from itmfilter.model.grid import GRID_SIZES, PlacedGrid  # noqa: E402
from itmfilter.render.frame import hdr10_planes  # noqa: E402


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from stills import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x360,1920x1080")
    ap.add_argument("--models", default="S,M")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"Machine: {machine()}\n\n| model | size | fused ms | normative ms |\n|---|---|---|---|")
    for name in args.models.split(","):
        placed = PlacedGrid(_model(GRID_SIZES[name], 3), origin=(0.1, 0.0), half=(1.2, 1.1))
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            frame = _frame(h, w, "yuv420p")
            hdr10_planes(frame, placed, "full", "cpu")  # compiles and warms up
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                hdr10_planes(frame, placed, "full", "cpu")
                runs.append(time.perf_counter() - t)
            t = time.perf_counter()
            hdr10_planes(frame, placed, "full", "cpu", path="exact")
            exact = time.perf_counter() - t
            print(f"| {name} | {size} | {1000 * min(runs):.1f} | {1000 * exact:.0f} |", flush=True)


if __name__ == "__main__":
    main()
