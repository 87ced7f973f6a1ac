"""Re-score the tracks a video benchmark run left in its work folder, holding each REPEAT's
set (the format's base rule) and interpolating between updates (what the player and
transcode do: ``TrackDecoder.params_interpolated``). No re-encoding.

    python benchmarks/video_rescore.py --work benchmarks/out/video1080 --master master-1920x1080-10s.mkv \
        --strategies 1,2,3 --eval-every 8 --out docs/video-interpolation.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import write_report  # noqa: E402  (benchmarks/report.py, beside this script)

from itmfilter.media.video import read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.model.inference import reconstruct_nits  # noqa: E402
from itmfilter.model.net import ITMNet  # noqa: E402
from itmfilter.track.carriage import load_track  # noqa: E402
from itmfilter.track.codec import TrackDecoder  # noqa: E402
from itmfilter.track.format import unflatten  # noqa: E402


def main() -> None:
    from stills import machine
    from video import score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--master", required=True, help="file name of the master in --work")
    ap.add_argument("--curves", default="local")
    ap.add_argument("--strategies", default="1", help="indices k of the sdr-CURVE-MASTER-sK.mp4 outputs")
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    master_path = args.work / args.master
    every = args.eval_every
    master = {i: n for i, n in read_hdr_frames(master_path) if i % every == 0}
    lines = [f"# Holding REPEATs vs interpolating between updates ({args.master})\n",
             f"Command: `python {' '.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             "| SDR | track | kbit/s | PU21-PSNR hold / interpolated | dE-ITP hold / interp. | flicker hold / interp. |",
             "|---|---|---|---|---|---|"]
    for curve in args.curves.split(","):
        for k in args.strategies.split(","):
            path = args.work / f"sdr-{curve}-{master_path.stem}-s{k}.mp4"
            track = load_track(path)
            held_dec, interp_dec = TrackDecoder(track.header), TrackDecoder(track.header)
            held, interp = {}, {}
            for i, sdr in read_sdr_frames(path):
                if i % every:
                    continue
                for out, vec in ((held, held_dec.params_at(i, track.packets)[0]),
                                 (interp, interp_dec.params_interpolated(i, track.packets)[0])):
                    net = ITMNet(track.header.config)
                    net.load_state_dict(unflatten(track.header.config, vec))
                    out[i] = reconstruct_nits(net, sdr)
            a, b = score(master, held), score(master, interp)
            seconds = len(track.packets) / (track.header.fps[0] / track.header.fps[1])
            kbps = 8 * (sum(len(v) for v in track.packets.values()) + len(track.header.to_bytes())) / 1000 / seconds
            lines.append(f"| {curve} | s{k} ({path.name}) | {kbps:.1f} | {a['pu21_psnr']:.2f} / {b['pu21_psnr']:.2f} | "
                         f"{a['delta_e_itp']:.2f} / {b['delta_e_itp']:.2f} | {a['flicker']:.3f} / {b['flicker']:.3f} |")
            print(lines[-1], flush=True)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
