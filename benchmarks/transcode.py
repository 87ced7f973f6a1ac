"""Batch transcode end to end: master -> ``itmfilter encode`` -> ``itmfilter transcode`` ->
HEVC Main10 HDR10 file, scored against the master (issue 5's measurement).

For one master and one SDR grade or tone curve: encode with the shipped defaults, transcode
(x265, the CLI's defaults: crf 16, preset medium), then decode the HDR10 file through PyAV
and score every ``--every``-th frame against the master: PU21-PSNR, Delta-E ITP (BT.2124),
flicker. Beside it, on the same frames: the reconstruction before the HEVC encode (the
network alone, so the codec's share is visible) and the per-frame MMR3 polynomial. Reports
transcode frames/s (reconstruction + x265) and encode frames/s, with the machine.

    python benchmarks/transcode.py --master benchmarks/out/video1080/master-1920x1080-10s.mkv \
        --grade benchmarks/out/video1080/sdr-local-master-1920x1080-10s.mp4 --out docs/transcode-benchmark.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import write_report  # noqa: E402  (benchmarks/report.py, beside this script)
from video import score  # noqa: E402  (the video benchmark's PU21 / dE-ITP / flicker over scored frames)

from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.media.video import probe_video, read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.quality import baselines  # noqa: E402
from itmfilter.transcode.video import FrameNetworks, TranscodeJob, transcode_one  # noqa: E402


def ffprobe_tags(path: Path) -> str:
    try:
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name,profile,pix_fmt,color_transfer,color_primaries,color_space:frame_side_data=side_data_type",
             "-read_intervals", "%+#1", "-of", "compact", str(path)],
            capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"(ffprobe failed: {exc})"
    return " ".join(line.strip() for line in out.splitlines() if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--master", type=Path, required=True)
    ap.add_argument("--grade", type=Path, default=None, help="SDR grade video (default: --tm curve)")
    ap.add_argument("--tm", default="bt2446a")
    ap.add_argument("--every", type=int, default=8, help="score every Nth frame")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "transcode")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from stills import machine

    args.work.mkdir(parents=True, exist_ok=True)
    label = args.grade.stem if args.grade else args.tm
    sdr = args.work / f"sdr-{label}.mp4"
    hdr10 = args.work / f"hdr10-{label}.mkv"
    for p in (sdr, hdr10):
        p.unlink(missing_ok=True)
    print(f"encode {args.master} -> {sdr}", flush=True)
    t = time.perf_counter()
    report = encode_video(args.master, sdr, grade=args.grade, options=VideoEncodeOptions(tm=args.tm),
                          device=args.device)
    encode_s = time.perf_counter() - t
    print(f"transcode {sdr} -> {hdr10}", flush=True)
    result = transcode_one(TranscodeJob(str(sdr), str(hdr10), device=args.device, quiet=False))
    if result.status != "done":
        raise SystemExit(f"transcode failed: {result.error}")

    master = {i: n for i, n in read_hdr_frames(args.master) if i % args.every == 0}
    decoded = {i: n for i, n in read_hdr_frames(hdr10) if i % args.every == 0}
    nets = FrameNetworks(sdr)
    from itmfilter.model.inference import reconstruct_nits
    from itmfilter.model.net import resolve_device

    device = resolve_device(args.device)
    direct, poly = {}, {}
    for i, s in read_sdr_frames(sdr):
        if i % args.every:
            continue
        direct[i] = reconstruct_nits(nets(i), s, device=device, precision="auto")
        poly[i] = baselines.apply_mmr(baselines.fit_mmr(s, master[i]), s).astype(np.float32)
    rows = [
        ("transcoded HDR10 file (reconstruction + x265 crf 16 Main10), decoded", score(master, decoded)),
        ("reconstruction before the HEVC encode", score(master, direct)),
        ("per-frame MMR3 polynomial (oracle fit)", score(master, poly)),
    ]
    info = probe_video(args.master)
    lines = [
        f"# Transcode benchmark ({info.width}x{info.height}, {len(master) * args.every} frames, SDR: {label})\n",
        f"Command: `python {' '.join(sys.argv)}`\n",
        f"Machine: {machine()}\n",
        f"Encode (shipped defaults, {report.kbit_per_s:.1f} kbit/s of weights, packets {report.packets}): "
        f"{report.frames / encode_s:.2f} frames/s end to end ({encode_s:.0f} s).\n",
        f"Transcode: {result.frames} frames in {result.seconds:.1f} s = **{result.fps:.2f} frames/s** "
        f"(weights decoded, network per frame at precision auto, x265 crf 16 preset medium, one file).\n",
        f"Output stream (ffprobe): `{ffprobe_tags(hdr10)}`\n",
        f"Scored on every {args.every}th frame against the master:\n",
        "| what | PU21-PSNR | dE-ITP | flicker (PU) |",
        "|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(f"| {name} | {s['pu21_psnr']:.2f} | {s['delta_e_itp']:.2f} | {s['flicker']:.3f} |")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
