"""Scores a coded track (SDR + weight track, as ``benchmarks/video_rate.py`` writes it) at a
denser frame sampling than the rate benchmark's ``--eval-every``: the mean PU21-PSNR and
Delta-E ITP of every ``--every``-th frame against the master, and beside them the mean PU21-PSNR
of the frames the rate benchmark samples.

    python benchmarks/rescore_track.py TRACK.mp4 MASTER.mkv --every 2 --rate-every 8 --out scores.json

With ``--rate-json RUN.json --rate-out ROW.json`` it also writes the rate benchmark's result
(``RUN.json``, the run that coded TRACK) with the track's row re-scored at the denser sampling,
for ``benchmarks/video_rate.py --merge`` beside gain-map tracks scored the same way.

The rate benchmark samples every 8th frame, and with 2 s shots at 24 fps that lands on every
shot's first frame: a frame decoded before its shot's scene image arrives weighs a sixth of its
shot's score there, against one 48th of the shot's frames. This shows what the sampling does to
one track's score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import av
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import video as video_bench  # noqa: E402  (benchmarks/video.py: the player's reconstruction)

from itmfilter.media.video import read_hdr_frames  # noqa: E402
from itmfilter.quality.metrics import delta_e_itp, psnr_pu21  # noqa: E402


def _score(args) -> tuple[dict, dict[int, float]]:
    """Decodes and scores the track: (summary, PU21-PSNR per scored frame); writes --out."""
    masters = read_hdr_frames(args.master)
    scores: dict[int, float] = {}
    itp: dict[int, float] = {}
    with av.open(str(args.track)) as container:  # the container's frame count, for the bar's ETA
        frames = container.streams.video[0].frames
    total = -(-frames // args.every) if frames else None
    bar = tqdm(video_bench.reconstruct_clip(args.track, args.every), total=total, unit="frame", disable=args.quiet)
    for i, _, nits in bar:
        # both in display order: the master's unscored frames are skipped, and a master shorter
        # than the track stops the run rather than scoring against a stale frame
        master = next(n for j, n in masters if j == i)
        scores[i] = psnr_pu21(master, nits)
        itp[i] = delta_e_itp(master, nits)
    sampled = [s for i, s in scores.items() if i % args.rate_every == 0]
    summary = {"every": args.every, "frames": len(scores), "pu21_psnr": statistics.mean(scores.values()),
               "delta_e_itp": statistics.mean(itp.values()),
               "rate_every": args.rate_every, "pu21_psnr_rate_sampling": statistics.mean(sampled)}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({**summary, "per_frame": scores}, indent=1) + "\n")
    return summary, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("track", type=Path)
    ap.add_argument("master", type=Path)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--rate-every", type=int, default=8)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--scores", type=Path, help="a previous --out of this track, used instead of decoding it again")
    ap.add_argument("--rate-json", type=Path, help="the rate benchmark's .json of the run that coded TRACK")
    ap.add_argument("--rate-out", type=Path, help="with --rate-json: that result, its track row re-scored, written here")
    args = ap.parse_args()
    if args.scores:  # a previous --out of this track: its scores, not decoded again
        previous = json.loads(args.scores.read_text())
        if previous["every"] != args.every or "delta_e_itp" not in previous:
            raise SystemExit(f"{args.scores}: scored every {previous['every']} frames or without Delta-E ITP; "
                             f"run without --scores")
        summary = {k: v for k, v in previous.items() if k != "per_frame"}
        scores = {int(k): v for k, v in previous["per_frame"].items()}
    else:
        summary, scores = _score(args)
    if args.rate_json and args.rate_out:
        results = json.loads(args.rate_json.read_text())
        rows = [row for clip in results.values() for row in clip["mlp"]
                if args.track.name.endswith(f"-cap{row['cap']:g}.mp4")]
        if len(rows) != 1:
            raise SystemExit(f"{args.rate_json}: no single track row whose cap names {args.track.name}")
        rows[0].update(pu21_psnr=summary["pu21_psnr"], delta_e_itp=summary["delta_e_itp"], per_frame=scores,
                       eval_every=args.every)
        args.rate_out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
