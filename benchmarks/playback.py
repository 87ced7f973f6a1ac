"""Playback benchmark: real-time `itmfilter play --hdr` through mpv (vo=null), per rung.

    python benchmarks/playback.py --out docs/playback-benchmark.md
    python benchmarks/ladder_timing.py        # per-rung filter ms at 1080p/2160p (1 and 2 threads)

Makes 3 s SDR clips (libx264, BT.709) at each size, encodes no track (blind mode: the same
network cost as a track's), plays them with vo=null in real time and reports frames shown,
dropped (mpv's counters + frames the producer skipped) and filter fps, per rung.

With ``--real``, each size instead gets a real encoded clip: a test-split HDR master with
motion and 2 s shots (itmfilter.data.testmedia.make_master), graded with the spatially
varying ``local`` curve and encoded with its weight track (``encode_video``, default options),
then played with that track as ``itmfilter play --hdr`` plays it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.media.video import SdrWriter  # noqa: E402
from itmfilter.player.mpv import play  # noqa: E402
from itmfilter.transcode.video import FrameNetworks  # noqa: E402


def make_clip(path: Path, w: int, h: int, n: int = 72) -> None:
    if path.exists():
        return
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with SdrWriter(path, w, h, 24, preset="ultrafast", crf=20) as writer:
        for i in range(n):
            writer.write(np.stack([((xx / 4 + 5 * i) % 256) / 255, ((yy / 3) % 256) / 255, (((xx + yy) / 6 + 7 * i) % 256) / 255], -1))


def real_clip(work: Path, w: int, h: int, seconds: float) -> Path:
    """A real encoded clip (see the module docstring), made once per size and length."""
    from itmfilter.data.testmedia import make_master
    from itmfilter.encode.video import VideoEncodeOptions, encode_video

    clip = work / f"real-{w}x{h}-{seconds:g}s-local.mp4"
    if not clip.exists():
        master = work / f"master-{w}x{h}-{seconds:g}s.mkv"
        if not master.exists():
            make_master(master, seconds=seconds, fps=24, size=(w, h), codec="hevc", shot_seconds=2.0,
                        split="test", quiet=True)
        encode_video(master, clip, options=VideoEncodeOptions(tm="local"), quiet=False)
    return clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1920x1080,960x540")
    ap.add_argument("--rungs", default="auto,quarter,eighth")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "playback")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fused-threads", default="default",
                    help="comma list of fused-pass thread counts to compare (default: numba's)")
    ap.add_argument("--threads", default="default",
                    help="comma list of torch thread counts for the network (default: play()'s own choice)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--real", action="store_true",
                    help="play a real encoded clip with its weight track (local grade, 2 s shots) instead of a blind one")
    args = ap.parse_args()
    from stills import machine

    args.work.mkdir(parents=True, exist_ok=True)
    kind = "real encoded clips with their weight tracks" if args.real else "blind clips"
    lines = [f"# Playback benchmark (real time, mpv vo=null, {args.seconds:g} s at 24 fps, {kind})\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             "| size | rung asked | torch threads | fused threads | rung used | shown | dropped | filter fps |",
             "|---|---|---|---|---|---|---|---|"]
    timed: list[str] = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        if args.real:
            clip = real_clip(args.work, w, h, args.seconds)
        else:
            clip = args.work / f"clip-{size}-{args.seconds:g}s.mp4"
            make_clip(clip, w, h, n=int(round(24 * args.seconds)))
        for rung in args.rungs.split(","):
            for tt in args.threads.split(","):
                for ft in args.fused_threads.split(","):
                    n = None if ft == "default" else int(ft)
                    t = None if tt == "default" else int(tt)
                    provider = FrameNetworks(clip).provider if args.real else None
                    st = play(clip, hdr=True, vo="null", rung=rung, quiet=True, fused_threads=n, threads=t,
                              weights_provider=provider)
                    lines.append(f"| {size} | {rung} | {tt} | {ft} | {st.rung} | {st.frames_shown} | "
                                 f"{st.frames_dropped} | {st.fps:.1f} |")
                    print(lines[-1], flush=True)
                    if st.rung_timings:  # auto: its first-frame timing of each rung (fastest of 3)
                        timed.append(f"{size}: " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in st.rung_timings.items()))
    if timed:
        lines += ["", "`auto`'s first-frame timings (ms, fastest of 3):", ""] + [f"- {t}" for t in timed]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
