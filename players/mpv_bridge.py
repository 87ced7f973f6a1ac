"""Play an SDR video as HDR10 with mpv: a runnable example of :func:`itmfilter.player.mpv.play`.

    python players/mpv_bridge.py clip.mp4 --hdr                 # window, HDR passthrough
    python players/mpv_bridge.py clip.mp4 --hdr --vo null       # headless, prints stats
    python players/mpv_bridge.py clip.mp4 --hdr --output rec.mkv --rung full

The importable code lives in ``itmfilter/player/mpv.py``; see players/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from itmfilter.errors import ItmError
    from itmfilter.render.ladder import RUNG_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="SDR video file (BT.709)")
    parser.add_argument("--hdr", action="store_true", help="reconstruct HDR10 frame by frame")
    parser.add_argument("--vo", default="gpu", choices=["gpu", "gpu-next", "null", "image"])
    parser.add_argument("--output", help="record what mpv is given into this file (.mkv)")
    parser.add_argument("--image-dir", help="folder for --vo image PNGs")
    parser.add_argument("--rung", default="auto", choices=["auto", *RUNG_NAMES])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--mpv-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="an mpv option, repeatable (e.g. gpu-sw=yes)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from itmfilter.player.mpv import parse_mpv_options, play

    try:
        stats = play(args.video, hdr=args.hdr, vo=args.vo, output=args.output,
                     image_dir=args.image_dir, rung=args.rung, threads=args.threads,
                     mpv_options=parse_mpv_options(args.mpv_opt), quiet=args.quiet,
                     on_note=lambda text: print(f"note: {text}", file=sys.stderr))
    except ItmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in dataclasses.asdict(stats).items()
               if k not in ("video_params", "video_out_params")}
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
