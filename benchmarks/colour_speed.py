"""Speed of the exact colour conversions on one 1920x1080 frame, as the video IO uses them, and
of the encoder's and transcoder's running MaxCLL / MaxFALL.

    python benchmarks/colour_speed.py            # table of median / min ms over 5 runs
    python benchmarks/colour_speed.py --repeat 9

Inputs mirror ``itmfilter.media.video``: float32 R'G'B' in, 10-bit BT.2020 codes, 4:2:0
uint16 chroma planes from the decoder, float32 codes into ``ycbcr_to_rgb``. The float64
rows show the exact reference path for comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itmfilter.colour.hdr10 import LightLevelAccumulator  # noqa: E402
from itmfilter.colour.transfer import eotf_bt1886, eotf_inverse_st2084, eotf_st2084  # noqa: E402
from itmfilter.colour.ycbcr import (  # noqa: E402
    rgb_to_ycbcr,
    subsample_chroma,
    upsample_chroma,
    ycbcr_to_rgb,
)

H, W = 1080, 1920


def machine() -> str:
    from stills import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} CPUs, numpy {np.__version__}, Python {platform.python_version()}"


def time_ms(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up: page faults of the first allocation, lazy imports
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs), min(runs)


def cases():
    rng = np.random.default_rng(0)
    rgb32 = rng.uniform(0.0, 1.0, (H, W, 3)).astype(np.float32)
    rgb64 = rgb32.astype(np.float64)
    codes = rgb_to_ycbcr(rgb64, "bt2020nc", 10)
    y, cb, cr = subsample_chroma(codes, "420")
    codes32 = codes.astype(np.float32)
    nits32 = rng.uniform(0.0, 10000.0, (H, W, 3)).astype(np.float32)
    y32 = y.astype(np.float32)
    return [
        ("rgb_to_ycbcr", "float32 R'G'B' -> 10-bit bt2020nc", lambda: rgb_to_ycbcr(rgb32, "bt2020nc", 10)),
        ("rgb_to_ycbcr", "float64 R'G'B' -> 10-bit bt2020nc", lambda: rgb_to_ycbcr(rgb64, "bt2020nc", 10)),
        ("subsample_chroma", "uint16 codes, 4:2:0", lambda: subsample_chroma(codes, "420")),
        ("upsample_chroma", "float32 luma + uint16 chroma, 4:2:0", lambda: upsample_chroma(y32, cb, cr, "420")),
        ("ycbcr_to_rgb", "float32 codes -> float32", lambda: ycbcr_to_rgb(codes32, "bt2020nc", 10, dtype=np.float32)),
        ("ycbcr_to_rgb", "uint16 codes -> float64", lambda: ycbcr_to_rgb(codes, "bt2020nc", 10)),
        ("eotf_st2084", "float32", lambda: eotf_st2084(rgb32)),
        ("eotf_st2084", "float64", lambda: eotf_st2084(rgb64)),
        ("eotf_inverse_st2084", "float32", lambda: eotf_inverse_st2084(nits32)),
        ("eotf_bt1886", "float32", lambda: eotf_bt1886(rgb32)),
        ("LightLevelAccumulator.add", "float32 nits (MaxCLL / MaxFALL)", lambda: LightLevelAccumulator().add(nits32)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per function (median reported)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"frame {W}x{H}, median and min of {args.repeat} runs\n")
    print("| function | input | median ms | min ms |")
    print("|---|---|---:|---:|")
    for name, what, fn in cases():
        med, low = time_ms(fn, args.repeat)
        print(f"| `{name}` | {what} | {med:.1f} | {low:.1f} |", flush=True)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
