"""Shot by shot: weight tracks against gain-map tracks on the same clip, to see where a
margin over the gain map is won or lost.

    python benchmarks/per_shot.py --work benchmarks/out/rate1080 --size 1920x1080 --shots 2 \
        --tracks track-local-master-1920x1080-10s-shot2-cap16.mp4 ... \
        --gains 8:28 4:27 4:25 --out docs/per-shot-1080p.md

The master, its ``local`` SDR and the tracks are the ones ``benchmarks/video_rate.py`` left in
``--work`` (same names); each ``--gains SCALE:CRF`` is a 3-channel libx265 gain-map track coded
as that benchmark codes it (:func:`video_rate.gainmap_track`). Scored on every
``--eval-every``-th frame (PU21-PSNR), averaged per shot of ``--shots`` seconds at 24 fps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import write_report  # noqa: E402  (benchmarks/report.py, beside this script)

from itmfilter.media.video import read_hdr_frames  # noqa: E402
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402
from itmfilter.track.carriage import carried_bytes  # noqa: E402


def per_shot(scores: dict[int, float], shot_frames: int) -> list[float]:
    """Mean of ``scores`` (frame -> dB) over each shot of ``shot_frames`` frames, in order."""
    shots: dict[int, list[float]] = {}
    for i, s in scores.items():
        shots.setdefault(i // shot_frames, []).append(s)
    return [statistics.mean(shots[k]) for k in sorted(shots)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shots", type=float, default=2.0, help="shot length in seconds")
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--tracks", nargs="*", default=[], help="track files in --work")
    ap.add_argument("--gains", nargs="*", default=[], help="SCALE:CRF gain maps (3 channels, libx265)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import video as video_bench
    from stills import machine
    from video_rate import FPS, gain_frames, gainmap_track

    w, h = (int(v) for v in args.size.split("x"))
    master = args.work / f"master-{w}x{h}-{args.seconds:g}s-shot{args.shots:g}.mkv"
    sdr = args.work / f"sdr-local-{master.stem}.mp4"
    for path in (master, sdr, *(args.work / t for t in args.tracks)):
        if not path.exists():
            raise SystemExit(f"{path}: not found; run benchmarks/video_rate.py with --work {args.work} first")
    ref = {i: n for i, n in read_hdr_frames(master) if i % args.eval_every == 0}
    shot_frames = round(args.shots * FPS)
    rows = []
    for name in args.tracks:
        recon = {i: nits for i, _, nits in video_bench.reconstruct_clip(args.work / name, args.eval_every)}
        kbps = 8 * sum(carried_bytes(args.work / name)) / 1000 / args.seconds
        rows.append((name, kbps, per_shot({i: psnr_pu21(ref[i], recon[i]) for i in recon}, shot_frames)))
        print(rows[-1], flush=True)
    if args.gains:
        settings = [tuple(int(v) for v in g.split(":")) for g in args.gains]
        base = min(s for s, _ in settings)
        if any(s % base for s, _ in settings):
            raise SystemExit(f"--gains {args.gains}: each scale must be a multiple of the smallest")
        gains, placed, size = gain_frames(master, sdr, set(ref), base=base, channels=(3,))
        for scale, crf in settings:
            kbps, recon, _ = gainmap_track(gains, placed, size, scale, 3, "libx265", crf, args.work, base=base)
            rows.append((f"gain map 1/{scale}, CRF {crf}", kbps,
                         per_shot({i: psnr_pu21(ref[i], recon[i]) for i in recon}, shot_frames)))
            print(rows[-1], flush=True)
    shots = max(len(r[2]) for r in rows) if rows else 0
    lines = [f"# Shot by shot ({args.size}, {args.shots:g} s shots, `local` grade)\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             "| track | kbit/s | " + " | ".join(f"shot {k + 1}" for k in range(shots)) + " | mean |",
             "|---|---|" + "---|" * (shots + 1)]
    for name, kbps, scores in rows:
        lines.append(f"| {name} | {kbps:.2f} | " + " | ".join(f"{s:.2f}" for s in scores)
                     + f" | {statistics.mean(scores):.2f} |")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
