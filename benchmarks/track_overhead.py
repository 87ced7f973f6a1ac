"""Where a weight track's bytes go, per frame: packet heads, motion shifts, the rest of the
payloads, and headers (or header references) as the file carries them; then the same packets
re-carried in format 1.3 (compact packets, the compressed header on the KEYs
``sei_header_frames`` picks and an 8-byte reference on the other KEYs in SEI; the compressed
header on frame 0 of a data track). The weights are not touched: this measures the carriage
alone. A third row counts the motion shifts at the 4 bytes of DELTA coding 3 (binary16), which
the encoder writes since 1.3 (that rounds the shift, so it is not the carriage alone).

    python benchmarks/track_overhead.py VIDEO [VIDEO ...] [--out docs/x.md]

Rates are in kbit/s at the track's own frame rate (bytes x 8 / 1000 / seconds), as the rate
promise counts them (sidecar/SPEC.md section 4: SEI framing and UUID not included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itmfilter.track.carriage import carried_bytes, load_track, sei_header_frames  # noqa: E402
from itmfilter.track.codec import (  # noqa: E402
    DEFAULT_KEY_INTERVAL,
    HALF_MOTION_SHIFT_BYTES,
    RUN_CODINGS,
    decode_shift_run,
    shift_bytes,
)
from itmfilter.track.format import HEADER_REF_BYTES, decode_packet, encode_packet  # noqa: E402

PARTS = ("heads", "shifts", "weights", "headers")


def motion_bytes(packet) -> int:
    """Bytes of ``packet``'s payload that are motion: a DELTA coding 2/3's shift, or a shift
    run's head and binary16 pairs (DELTA coding 5/6; what follows them is stream or ahead
    bytes, counted as weights)."""
    if packet.kind == "delta" and packet.coding in RUN_CODINGS:
        return len(packet.payload) - len(decode_shift_run(packet)[1])
    return shift_bytes(packet)


def breakdown(video: Path) -> dict:
    """Bytes per part as carried and as re-carried in 1.3, with the frame count and fps."""
    track = load_track(video, check_binding=False)
    if track is None:
        raise SystemExit(f"{video}: no weight track")
    sizes = carried_bytes(video, track)
    frames = sorted(track.packets)
    # Rates are over the video's frames, not the samples: a shift run's packet covers up
    # to 255 frames that carry none.
    shown = max(len(sizes), track.header.frame_count or 0, frames[-1] + 1 if frames else 0)
    now = dict.fromkeys(PARTS, 0)
    new = dict.fromkeys(PARTS, 0)
    keys = []
    for i in frames:
        raw = track.packets[i]
        p = decode_packet(raw)
        shift = motion_bytes(p)
        for out, size in ((now, len(raw)), (new, len(encode_packet(p, compact=True)))):
            out["heads"] += size - len(p.payload)
            out["shifts"] += shift
            out["weights"] += len(p.payload) - shift
        now["headers"] += (sizes[i] if i < len(sizes) else len(raw)) - len(raw)
        if p.kind == "key":
            keys.append(i)
    interval = int(track.header.quantiser.get("key_interval", DEFAULT_KEY_INTERVAL))
    whole = len(track.header.to_compressed_bytes())
    if track.where == "SEI":
        full = sei_header_frames(keys, interval)
        new["headers"] = sum(whole if k in full else HEADER_REF_BYTES for k in keys)
    else:
        new["headers"] = whole if track.where == "data track" else len(track.header.to_bytes())
    # Coding 2 (binary32) shifts re-counted at binary16; runs and coding 3 are binary16 already.
    half = dict(new, shifts=sum(HALF_MOTION_SHIFT_BYTES if shift_bytes(p) else motion_bytes(p)
                                for p in (decode_packet(track.packets[i]) for i in frames)))
    fps = track.header.fps[0] / track.header.fps[1]
    return {"video": video.name, "where": track.where, "frames": shown, "samples": len(frames), "fps": fps,
            "keys": len(keys),
            "binary_header": len(track.header.to_bytes()), "compressed_header": whole, "as_carried": now,
            "format_1_3": new, "format_1_3_half_shift": half}


def table(rows: list[dict]) -> list[str]:
    lines = ["| file | carriage | form | " + " | ".join(f"{p} kbit/s" for p in PARTS) + " | total kbit/s | "
             "total bytes/frame | overhead bytes/frame |",
             "|---|---|---|" + "---|" * (len(PARTS) + 3)]
    for r in rows:
        seconds = r["frames"] / r["fps"]
        for form in ("as_carried", "format_1_3", "format_1_3_half_shift"):
            b = r[form]
            total = sum(b.values())
            overhead = total - b["weights"]
            lines.append(f"| {r['video']} | {r['where']} | {form.replace('_', ' ').replace('1 3', '1.3')} | "
                         + " | ".join(f"{8 * b[p] / 1000 / seconds:.2f}" for p in PARTS)
                         + f" | {8 * total / 1000 / seconds:.2f} | {total / r['frames']:.1f} | "
                         f"{overhead / r['frames']:.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None, help="write the table (markdown) here too")
    args = ap.parse_args()
    rows = [breakdown(v) for v in args.videos]
    for r in rows:
        print(r, flush=True)
    text = "\n".join(table(rows)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
