"""Sequential decoding speed of a weight track, as play and transcode read it.

    python benchmarks/track_decode.py --frames 20000

A synthetic default-config track (a key every 96 frames, a delta every 3rd frame, repeats
between) is decoded frame by frame with ``TrackDecoder.params_at`` and
``params_interpolated``; prints seconds and microseconds per frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itmfilter.model.net import CONFIGS  # noqa: E402
from itmfilter.track.codec import TrackDecoder, TrackEncoder  # noqa: E402
from itmfilter.track.format import TrackHeader, encode_packet, param_count  # noqa: E402


def main() -> None:
    from stills import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    args = ap.parse_args()
    cfg = CONFIGS["default"]
    header = TrackHeader(config=cfg, fps=(24, 1), frame_count=args.frames, width=1920, height=1080)
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.1, param_count(cfg)).astype(np.float32)
    enc = TrackEncoder(header, key_interval=96, key_dtype="int8", delta_step=1 / 64)
    for f in range(args.frames):
        if f % 3 == 0:
            params = params + rng.normal(0, 1e-3, params.shape).astype(np.float32)
        enc.add(f, params)
    packets = {p.frame: encode_packet(p) for p in enc.packets}
    print(f"Machine: {machine()}")
    for name in ("params_at", "params_interpolated"):
        dec = TrackDecoder(enc.header)
        fn = getattr(dec, name)
        t = time.perf_counter()
        for f in range(args.frames):
            fn(f, packets)
        s = time.perf_counter() - t
        print(f"{name}: {args.frames} frames in {s:.2f} s ({1e6 * s / args.frames:.0f} us/frame)")


if __name__ == "__main__":
    main()
