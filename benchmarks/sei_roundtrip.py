"""Which containers and tools keep the weights: ``itmfilter encode`` with the default SEI
carriage, then the ffmpeg CLI (``-c copy`` to MKV/MOV/MPEG-TS and back, HLS, a cut at a
keyframe, the concat demuxer, a re-encode), then ``itmfilter transcode`` of each result,
scored (PU21-PSNR, mean over the frames the file has) against the master's frames. Beside
it: the same track as an MP4 data track, through the same ``-c copy`` to MKV, and the bytes
each carriage adds per frame.

    python benchmarks/sei_roundtrip.py --out docs/sei-roundtrip.md

The master is synthetic (a pan across a generated HDR scene with a cut at frame 30), the SDR
a bt2446a grade encoded with libx264 (B-frames, a keyframe every 12 frames, so that cuts land
between the track's keys at 0, 24 and the shot start 30).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.data.testmedia import make_master_from_arrays  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.media.video import SdrWriter, read_hdr_frames  # noqa: E402
from itmfilter.quality.metrics import psnr_pu21  # noqa: E402
from itmfilter.track.carriage import load_track  # noqa: E402
from itmfilter.transcode.video import TranscodeJob, transcode_one  # noqa: E402


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True, timeout=600)


def frames(w: int, h: int, n: int, shot: int):
    yy, xx = np.mgrid[0:h, 0:w + 2 * n].astype(np.float32)
    a = np.stack([np.sin(xx / 23) ** 2, np.cos(yy / 17) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 31)], -1) * 350 + 2
    b = np.stack([1 - yy / h, (xx / xx.max()) ** 2, 0.3 + 0 * xx], -1) * 150 + 1
    for i in range(n):
        f = np.ascontiguousarray((a if i < shot else b)[:, 2 * i:2 * i + w]).copy()
        f[h // 5:h // 5 + h // 6, w // 10 + i:w // 10 + i + w // 8] = 950.0
        yield f.astype(np.float32)


def video_bytes(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(p.size for p in c.demux(video=0))


def keyframe_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return sorted(float(p.pts * p.time_base) for p in c.demux(video=0) if p.size and p.is_keyframe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256x144")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="Keep the files here (default: a temporary folder).")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    n, fps, gop, shot = args.frames, 24, 12, 30
    work = args.work or Path(tempfile.mkdtemp(prefix="sei-roundtrip-"))
    work.mkdir(parents=True, exist_ok=True)

    master = work / "master.mkv"
    make_master_from_arrays(master, frames(w, h, n, shot), fps=fps, codec="hevc", peak_nits=1000)
    truth = [x for _, x in read_hdr_frames(master)]
    grade = work / "grade.mp4"
    curve = get_curve("bt2446a")
    with SdrWriter(grade, w, h, fps, preset="medium", crf=18,
                   codec_options={"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}) as writer:
        for x in truth:
            writer.write(curve.forward(x))
    options = VideoEncodeOptions(first_steps=100, warm_steps=20, key_seconds=1.0)
    sei = work / "sdr.mp4"
    report = encode_video(master, sei, grade=grade, options=options, quiet=True)
    data = work / "sdr-track.mp4"
    encode_video(master, data, grade=grade, options=VideoEncodeOptions(**{**options.__dict__, "sidecar": "track"}), quiet=True)
    reference = load_track(sei)

    def run(label: str, path: Path, original_frames: list[int], how: str) -> dict:
        out = work / f"{path.name}.hdr10.mkv"
        result = transcode_one(TranscodeJob(str(path), str(out), preset="medium", quiet=True))
        if result.status != "done":
            raise SystemExit(f"{label}: {result.error}")
        got = [x for _, x in read_hdr_frames(out)]
        assert len(got) == len(original_frames), (label, len(got), len(original_frames))
        psnr = float(np.mean([psnr_pu21(truth[f], g) for f, g in zip(original_frames, got)]))
        track = load_track(path)
        same = track is not None and all(
            track.locate(i) is not None and track.locate(i)[0].packets.get(track.locate(i)[1]) == reference.packets[f]
            for i, f in enumerate(original_frames))
        return {"label": label, "how": how, "where": track.where if track else "none", "frames": result.frames,
                "blind": result.blind_frames if track else result.frames, "damaged": result.damaged_frames,
                "packets": "all identical" if same else ("none" if track is None else "differ"), "psnr": psnr}

    all_frames = list(range(n))
    rows = [run("original (SEI in MP4)", sei, all_frames, "itmfilter encode -o sdr.mp4")]
    for ext in (".mkv", ".mov", ".ts"):
        there = work / f"sdr{ext}"
        ffmpeg("-i", str(sei), "-map", "0", "-c", "copy", str(there))
        rows.append(run(f"MP4 -> {ext[1:].upper()}", there, all_frames, f"ffmpeg -i sdr.mp4 -map 0 -c copy sdr{ext}"))
        back = work / f"back-from-{ext[1:]}.mp4"
        ffmpeg("-i", str(there), "-map", "0", "-c", "copy", str(back))
        rows.append(run(f"MP4 -> {ext[1:].upper()} -> MP4", back, all_frames, f"ffmpeg -i sdr{ext} -map 0 -c copy back.mp4"))
    hls = work / "hls" / "sdr.m3u8"
    hls.parent.mkdir(exist_ok=True)
    ffmpeg("-i", str(sei), "-map", "0", "-c", "copy", "-f", "hls", "-hls_time", "0.5", "-hls_playlist_type", "vod", str(hls))
    rows.append(run("HLS (.m3u8 of .ts segments)", hls, all_frames, "ffmpeg -i sdr.mp4 -c copy -f hls -hls_time 0.5 sdr.m3u8"))
    times = keyframe_times(sei)
    t12 = next(t for t in times if abs(t - 12 / fps) < 1e-3)
    t24 = next(t for t in times if abs(t - 24 / fps) < 1e-3)
    cut12, cut24 = work / "from12.mp4", work / "from24.mp4"
    ffmpeg("-ss", f"{t12:.6f}", "-i", str(sei), "-map", "0", "-c", "copy", str(cut12))
    ffmpeg("-ss", f"{t24:.6f}", "-i", str(sei), "-map", "0", "-c", "copy", str(cut24))
    rows.append(run("cut at the keyframe of frame 12 (track key at 24)", cut12, list(range(12, n)),
                    "ffmpeg -ss 0.5 -i sdr.mp4 -c copy cut.mp4"))
    rows.append(run("cut at the keyframe of frame 24 (a track key)", cut24, list(range(24, n)),
                    "ffmpeg -ss 1.0 -i sdr.mp4 -c copy cut.mp4"))
    (work / "list.txt").write_text(f"file '{cut12.name}'\nfile '{cut24.name}'\n")
    joined = work / "joined.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(work / "list.txt"), "-c", "copy", str(joined))
    rows.append(run("concat of the two cuts", joined, list(range(12, n)) + list(range(24, n)),
                    "ffmpeg -f concat -i list.txt -c copy joined.mp4"))
    reenc = work / "reencoded.mp4"
    ffmpeg("-i", str(sei), "-c:v", "libx264", "-preset", "medium", "-crf", "18", str(reenc))
    rows.append(run("re-encoded (libx264, SEI not passed on)", reenc, all_frames, "ffmpeg -i sdr.mp4 -c:v libx264 re.mp4"))
    rows.append(run("data track, MP4 (for comparison)", data, all_frames, "itmfilter encode --sidecar track"))
    data_mkv = work / "sdr-track.mkv"
    ffmpeg("-i", str(data), "-map", "0:v", "-c", "copy", str(data_mkv))
    rows.append(run("data track, MP4 -> MKV", data_mkv, all_frames, "ffmpeg -i sdr-track.mp4 -map 0:v -c copy sdr.mkv"))

    payload = sum(len(v) for v in reference.packets.values())
    keys = sum(1 for v in reference.packets.values() if v[5] == 1)
    header = len(reference.header.to_bytes())
    sei_growth = video_bytes(sei) - video_bytes(grade)
    sei_over = (sei_growth - payload - keys * header) / n
    data_growth = data.stat().st_size - grade.stat().st_size
    data_over = (data_growth - payload - header) / n
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    lines = [
        "# Weights through the real tools: SEI carriage round trips",
        "",
        f"`python benchmarks/sei_roundtrip.py --size {args.size} --frames {n}` on {machine} "
        f"(ffmpeg CLI {subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split()[2]}).",
        f"Master: {w}x{h}, {n} frames at {fps} fps, synthetic pan with a cut at frame {shot}; SDR: bt2446a grade, "
        f"libx264 with B-frames, keyframe every {gop} frames; weights: `itmfilter encode` defaults except "
        "`first_steps` 100, `warm_steps` 20, `key_seconds` 1 (track keys at 0, 24, 30). Each file is transcoded with "
        "`itmfilter transcode` (x265 medium, crf 16) and scored against the master's frames it holds "
        "(PU21-PSNR, dB, mean over frames).",
        "",
        "| file | made by | weights found | packets vs original | frames | blind | PU21-PSNR | vs original |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    base = rows[0]["psnr"]
    for r in rows:
        lines.append(f"| {r['label']} | `{r['how']}` | {r['where']} | {r['packets']} | {r['frames']} | {r['blind']} | "
                     f"{r['psnr']:.2f} | {r['psnr'] - base:+.2f} |")
    lines += [
        "",
        "Cuts and concatenations hold other frames than the original, so their PSNR is over those frames "
        "(frames waiting for a key are reconstructed blind and counted in `blind`).",
        "",
        "## Bytes per frame",
        "",
        f"Weights: {payload} bytes of packets over {n} frames ({payload / n:.0f} B/frame), {keys} keys, header {header} B.",
        "",
        "| carriage | what grows | growth | of which packets + headers | overhead per frame |",
        "|---|---|---:|---:|---:|",
        f"| SEI (header at each of the {keys} keys) | video stream bytes | {sei_growth} | {payload + keys * header} | "
        f"{sei_over:.1f} B |",
        f"| MP4 data track (header once) | file size | {data_growth} | {payload + header} | {data_over:.1f} B |",
        "",
        f"The SEI form repeats the {header}-byte header at every key: {keys * header / n:.1f} B/frame here "
        f"({header * 8 / 4 / 1000:.2f} kbit/s at the default 4 s key interval).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    del report


if __name__ == "__main__":
    main()
