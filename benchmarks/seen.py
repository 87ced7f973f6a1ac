"""What the viewer sees, per rung: the player's per-frame path on a real track, scored.

    python benchmarks/seen.py --track benchmarks/out/rate1080/track-local-master-1920x1080-10s-shot2-cap32.mp4 \
        --master benchmarks/out/rate1080/master-1920x1080-10s-shot2.mkv \
        --rungs full,guided-half,guided-quarter,guided-sixth,guided-eighth --eval-every 8

For each rung, ``itmfilter transcode TRACK -o - --rung RUNG`` (the CLI itself: the same
per-frame function, :func:`itmfilter.render.frame.hdr10_frame`, that ``play --hdr`` runs
for that rung) writes an FFV1 HDR10 stream to a scratch file; every ``--eval-every``-th
frame of it is decoded exactly (:func:`itmfilter.media.video.read_hdr_frames`) and scored
against the master (PU21-PSNR and Delta-E ITP, the mean over the frames) and against the
``full`` rung's frame (PU21-PSNR: what the rung loses of what the track carries). Also
reported: the stream's wall time a frame (decode, the rung, FFV1 encode; one process, the
machine as it is), which is not the player's real-time figure (``benchmarks/playback.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.media.video import read_hdr_frames  # noqa: E402
from itmfilter.quality.metrics import delta_e_itp, psnr_pu21  # noqa: E402


def frames_of(path: Path, every: int) -> dict:
    return {i: f for i, f in read_hdr_frames(path) if i % every == 0}


def stream(track: Path, rung: str, out: Path) -> float:
    """Seconds the CLI took to write ``track`` through ``rung`` into ``out``."""
    started = time.perf_counter()
    with open(out, "wb") as sink:
        subprocess.run([sys.executable, "-c", "from itmfilter.cli import app; app()", "transcode", str(track), "-o", "-", "--rung", rung,
                        "--quiet"], stdout=sink, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def main() -> None:
    from stills import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", type=Path, required=True, action="append", help="a track file (repeatable)")
    ap.add_argument("--master", type=Path, required=True, help="the HDR master the tracks were encoded from")
    ap.add_argument("--rungs", default="full,guided-half,guided-quarter,guided-sixth,guided-eighth")
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--out", type=Path, help="append a markdown section here")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    rungs = [r.strip() for r in args.rungs.split(",") if r.strip()]
    if "full" not in rungs:
        rungs.insert(0, "full")
    master = frames_of(args.master, args.eval_every)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for track in args.track:
            full = None
            for rung in ["full"] + [r for r in rungs if r != "full"]:
                out = Path(tmp) / f"seen-{rung}.mkv"
                seconds = stream(track, rung, out)
                seen = frames_of(out, args.eval_every)
                keys = sorted(set(seen) & set(master))
                row = {
                    "track": track.name, "rung": rung, "frames_scored": len(keys),
                    "ms_per_frame": 1000 * seconds / max(1, max(seen) + 1),
                    "pu21_psnr": statistics.mean(psnr_pu21(master[i], seen[i]) for i in keys),
                    "delta_e_itp": statistics.mean(delta_e_itp(master[i], seen[i]) for i in keys),
                }
                if rung == "full":
                    full = seen
                else:
                    row["pu21_vs_full"] = statistics.mean(psnr_pu21(full[i], seen[i]) for i in keys)
                rows.append(row)
                print(json.dumps(row), flush=True)
                out.unlink()
    for row in rows:
        base = next(r for r in rows if r["track"] == row["track"] and r["rung"] == "full")
        row["loss_db"] = base["pu21_psnr"] - row["pu21_psnr"]
    lines = [f"Machine: {machine()}; load {' / '.join(f'{v:.2f}' for v in os.getloadavg())}.", "",
             f"`python benchmarks/seen.py --master {args.master.name} --track ... --eval-every {args.eval_every}`", "",
             "| track | rung | PU21-PSNR vs master (dB) | below full (dB) | vs full (dB) | dE ITP | ms/frame (stream) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f"{r['pu21_vs_full']:.2f}" if "pu21_vs_full" in r else "-"
        lines.append(f"| {r['track']} | {r['rung']} | {r['pu21_psnr']:.2f} | {r['loss_db']:.2f} | {vs} | "
                     f"{r['delta_e_itp']:.2f} | {r['ms_per_frame']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
