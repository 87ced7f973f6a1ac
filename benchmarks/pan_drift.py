"""How far the grid track's frame placements are from the camera that filmed the shots.

The benchmark clips (``itmfilter.data.testmedia``) are filmed by a known camera: a pan at a
constant speed, every other shot also zooming. This films the shots of such a clip, grades
them to 8-bit SDR with the ``local`` grade, and places every frame as the encoder does: the
phase correlation's steps summed (:class:`itmfilter.media.phasecorr.MotionEstimator`), then
:func:`itmfilter.encode.gridkeys.estimate_zoom`. For each shot it prints the zoom found
against the camera's, and each placement's error against the camera's own, in pixels of
the frame at the clip's size: at frames 12, 24 and the last, and as an RMS after the shot's
mean error is removed (a constant error moves the whole scene and costs nothing).

    python benchmarks/pan_drift.py --size 1920x1080 --shots 2 --count 5
    python benchmarks/pan_drift.py --size 640x360 --shots 2 --count 5 --subject

``--subject``: each shot also films a subject that moves on its own
(:func:`itmfilter.data.testmedia.subject_shots`, as ``video_rate.py --subject``); the camera's
motion is still the truth the placements are measured against.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FPS = 24


def shot_errors(shot: dict, frames: int, size: tuple[int, int], subject: dict | None = None) -> dict:
    """Place ``shot``'s ``frames`` frames as the encoder does; the zoom and the x placement errors in pixels."""
    from itmfilter.colour.tonecurves import hdr_to_sdr_local
    from itmfilter.data.testmedia import camera_centre, camera_height, pan_view, place_subject
    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.encode.segments import _luma_thumb
    from itmfilter.media.phasecorr import MotionEstimator
    from itmfilter.track.motion import pixels_to_shift

    w, h = size
    motion, pos, measured, thumbs, truth = MotionEstimator(), np.zeros(2), [], [], []
    x0 = camera_centre(shot, 0, FPS)[0]
    scale0 = shot["height"] / h  # panorama pixels per frame-0 pixel
    for j in range(frames):
        nits = pan_view(shot["pano"], size, camera_centre(shot, j, FPS), camera_height(shot, j, frames))
        if subject is not None:
            place_subject(nits, subject, j / FPS)
        nits = np.minimum(nits, 1000.0)
        sdr = (np.round(hdr_to_sdr_local(nits) * 255) / 255).astype(np.float32)  # what an 8-bit SDR file holds
        pan = motion(sdr)
        if pan is not None and j:
            pos = pos + np.asarray(pixels_to_shift(pan, w, h))
        measured.append(pos.copy())
        thumbs.append(_luma_thumb(sdr))
        # the frame's centre in frame 0's pixel-grid units (2 / w a pixel), which the offsets are
        truth.append((camera_centre(shot, j, FPS)[0] - x0) / scale0 * 2 / w)
    measured = np.asarray(measured)
    zoom, placed = estimate_zoom(thumbs, measured)
    truth = np.asarray(truth)

    def px(offsets):
        err = (offsets[:, 0] - offsets[0, 0] - truth) * w / 2
        return err, float(np.sqrt(((err - err.mean()) ** 2).mean())), float(np.abs(offsets[:, 1] - offsets[0, 1]).max() * h / 2)

    return {"zoom": zoom * (frames - 1), "camera_zoom": shot["zoom"], "measured": px(measured), "placed": px(placed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--shots", type=float, default=2.0, help="shot length in seconds")
    ap.add_argument("--count", type=int, default=5, help="shots (from the first)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subject", action="store_true", help="a subject moving on its own in each shot")
    args = ap.parse_args()
    import torch
    from stills import machine

    from itmfilter.data.testmedia import _load_scenes, camera_shots, subject_shots

    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.split("x"))
    frames = int(round(args.shots * FPS))
    scenes = _load_scenes(None, args.split, args.seed, True, None)
    shots = camera_shots(scenes, frames * args.count, (w, h), frames, args.seed)
    subjects = subject_shots(scenes, len(shots), (w, h), args.seed) if args.subject else [None] * len(shots)
    print(f"# Placement error against the camera ({w}x{h}, {args.shots:g} s shots, {args.split} split"
          f"{', a moving subject in each shot' if args.subject else ''})\n")
    print(f"Command: `python {shlex.join(sys.argv)}`\n\nMachine: {machine()}\n")
    print("| shot | camera zoom | zoom found | correlation: px at 12 / 24 / last | RMS | y max | "
          "**placed**: px at 12 / 24 / last | **RMS** | y max | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, shot in enumerate(shots[: args.count]):
        t0 = time.perf_counter()
        r = shot_errors(shot, frames, (w, h), subjects[k])
        cells = []
        for key in ("measured", "placed"):
            err, rms, ymax = r[key]
            cells += [" / ".join(f"{err[i]:+.2f}" for i in (min(12, frames - 1), min(24, frames - 1), frames - 1)),
                      f"{rms:.2f}", f"{ymax:.2f}"]
        print(f"| {k + 1} | {-r['camera_zoom']:+.3f} | {r['zoom']:+.3f} | " + " | ".join(cells)
              + f" | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
