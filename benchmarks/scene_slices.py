"""Would a scene residual that changes within the shot follow a moving subject? A probe.

    python benchmarks/scene_slices.py --work DIR --size 640x360 --subject --slices 0,24,12,6

A shot's scene residual (``itmfilter.model.scene``) is one image in the scene's coordinates, so it
cannot follow what moves in the scene on its own. The format already lets a shot's stream carry
one windowed scene residual after another (refinement kind 4, each replacing the last,
``sidecar/SPEC.md`` section 11.6), so an encoder could send a *slice* of the shot at a time: an
image over the window of frames ``a`` to ``a + L - 1``, built from those frames. This probe
measures what that buys, before any encoder is changed.

On each shot of ``video_rate.py``'s clip (its ``--work``; ``--subject`` for the clip with a
moving subject): the encoder's grid model (``--config``, fitted on 6 frames spread over the
shot, placed by the encoder's motion and zoom estimate), then for each ``--slices`` length ``L``
(0: one image for the whole shot from the model's 6 frames, as the encoder builds it today) the
slices' images from the slice's odd frames at each ``--scales`` and ``--qualities``, scored on
the even frames (PU21-PSNR), each with its slice's image. A slice's image is used from its
slice's first frame: the probe does not model when its bytes arrive, so it is an upper bound
on what an encoder could get at that rate.

``--object`` (the clip with a subject): an oracle of one more layer instead, an *object residual*:
one image over the subject's box, placed on each frame where the subject is (its true position,
from ``itmfilter.data.testmedia.subject_shots``: what an encoder that tracks the subject perfectly
would send, 4 bytes a frame counted for the placement), built from the odd frames' PQ differences
master - model inside the box and added on the even frames, at each ``--scales`` and
``--qualities``. It bounds what a format layer that follows a moving subject could buy.

Rate: the model's and the images' bytes over the clip's duration, one line per setting summed
over the shots (``--out``: JSON lines, the per-shot rows too). The gain-map front to compare
with is ``video_rate.py``'s on the same clip (``docs/video-rate-subject/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RECORD_BYTES = 4
"""A refinement record's length prefix in the shot's stream (its framing in packets is not counted)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="video_rate.py's --work (its master and SDR)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--subject", action="store_true", help="the clip with a moving subject (video_rate.py --subject)")
    ap.add_argument("--shots", default="0,1,2,3,4")
    ap.add_argument("--config", default="S-6bit")
    ap.add_argument("--grid-steps", type=int, default=600)
    ap.add_argument("--slices", default="0,24,12,6", help="frames a slice (0: one image for the shot)")
    ap.add_argument("--scales", default="4,8")
    ap.add_argument("--qualities", default="10,20,30,40")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--object", action="store_true", help="the object-residual oracle instead of the slices")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import scene_residual as sr  # benchmarks/scene_residual.py: the shot, its model and residual inputs

    from itmfilter.colour.transfer import eotf_inverse_st2084, eotf_st2084
    from itmfilter.encode.gridkeys import estimate_zoom, fit_frames_of, frames_window
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.model.grid import predict_pq
    from itmfilter.model.scene import (
        ScenePlan,
        SceneResidual,
        build_scene_residual,
        scene_cells,
        unpack_scene_residual,
    )
    from itmfilter.quality.metrics import psnr_pu21

    def append(row: dict) -> None:
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    w, h = (int(v) for v in args.size.split("x"))
    sr.W, sr.H = w, h  # scene_residual's helpers read the frame size from these
    master, sdr_path = sr.rate_clip(args.work, w, h, args.subject)
    slices = [int(v) for v in args.slices.split(",")]
    scales = [int(v) for v in args.scales.split(",")]
    qualities = [int(v) for v in args.qualities.split(",")]
    totals: dict[tuple, list] = {}
    subjects = _subjects(w, h) if args.object else None
    duration = 0.0
    for shot_no in (int(v) for v in args.shots.split(",")):
        frames, offsets, thumbs = sr.shot_frames(master, sdr_path, shot_no)
        n = len(frames)
        duration += n / 24
        picks = fit_frames_of(n, 6)
        want = set(frames)
        hdr = {i: x for i, x in read_hdr_frames(master) if i in want}
        sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in want}
        zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
        t0 = time.perf_counter()
        shot = sr.ShotFit([(sdr[frames[k]], hdr[frames[k]]) for k in picks], offs, picks, args.config, zoom,
                          args.grid_steps, compact=True)
        evals = list(range(0, n, 2))
        base = {k: predict_pq(shot.model, sdr[frames[k]], xy=shot.xy(k)) for k in evals}
        alone = [psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(base[k]), np.float32)) for k in evals]
        print(json.dumps({"shot": shot_no, "frames": n, "model_bytes": len(shot.fit.data),
                          "model_pu21_psnr": float(np.mean(alone)), "fit_s": round(time.perf_counter() - t0, 1)}),
              flush=True)
        totals.setdefault(("model",), []).append((len(shot.fit.data), alone))
        if args.object:
            subject = subjects[shot_no]
            target = {k: eotf_inverse_st2084(np.clip(hdr[frames[k]], 0, 10000)).astype(np.float32) for k in range(n)}
            for scale in scales:
                plan, place = _object_plan(shot, subject, sdr, target, frames, range(1, n, 2), w, h, scale)
                for quality in qualities:
                    data = plan.code(quality)
                    image = unpack_scene_residual(data)
                    nbytes, score = len(shot.fit.data) + len(data) + RECORD_BYTES + 4 * n, []
                    for k in evals:
                        pq = base[k].copy()
                        _add_object(pq, image, place(k), subject)
                        score.append(psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(np.clip(pq, 0, 1)), np.float32)))
                    append({"shot": shot_no, "object": True, "scale": scale, "quality": quality, "bytes": nbytes,
                            "kbps": nbytes * 8 / 1000 / (n / 24), "pu21_psnr": float(np.mean(score))})
                    totals.setdefault(("object", scale, quality), []).append((nbytes, score))
            continue
        for length in slices:
            ranges = [(0, n)] if length == 0 else [(a, min(n, a + length)) for a in range(0, n, length)]
            for scale in scales:
                plans = []
                for a, b in ranges:
                    built = picks if length == 0 else [k for k in range(a, b) if k % 2 == 1] or [a]
                    window = None if length == 0 else frames_window(offs, shot.centre, shot.half, shot.scales, a, b)
                    diffs, xys = shot.diffs([(sdr[frames[k]], hdr[frames[k]]) for k in built], built, scale=scale)
                    if window is None:
                        cells = scene_cells(w, h, shot.half, scale)
                    else:
                        reader = SceneResidual(np.zeros((2, 2, 3), np.float32), window)
                        xys = [np.stack([reader.local(xy[:, 0], 0), reader.local(xy[:, 1], 1)], 1) for xy in xys]
                        cells = scene_cells(w, h, (window[2] * shot.half[0], window[3] * shot.half[1]), scale)
                    plans.append((a, b, window, ScenePlan(build_scene_residual(diffs, xys, cells, 6))))
                for quality in qualities:
                    nbytes, score = len(shot.fit.data), []
                    for a, b, window, plan in plans:
                        data = plan.code(quality, window=window)
                        nbytes += len(data) + RECORD_BYTES
                        scene = unpack_scene_residual(data)
                        for k in range(a, b):
                            if k % 2:
                                continue
                            pq = np.clip(base[k] + scene.sample(shot.xy(k).reshape(-1, 2)).reshape(h, w, 3), 0, 1)
                            score.append(psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(pq), np.float32)))
                    append({"shot": shot_no, "slice": length, "scale": scale, "quality": quality, "bytes": nbytes,
                            "kbps": nbytes * 8 / 1000 / (n / 24), "pu21_psnr": float(np.mean(score))})
                    totals.setdefault((length, scale, quality), []).append((nbytes, score))
    print("\nwhole clip (mean PU21-PSNR over every scored frame):")
    rows = []
    for key, parts in totals.items():
        nbytes = sum(p[0] for p in parts)
        scores = [s for p in parts for s in p[1]]
        rows.append((nbytes * 8 / 1000 / duration, float(np.mean(scores)), key))
    for kbps, psnr, key in sorted(rows):
        setting = dict(zip(("slice", "scale", "quality"), key))  # ("object", scale, quality): the oracle's
        row = {"setting": "model alone" if key == ("model",) else setting,
               "kbps": round(kbps, 2), "pu21_psnr": round(psnr, 3)}
        print(json.dumps(row), flush=True)
        append({"clip": True, **row})


def _subjects(w: int, h: int) -> list[dict]:
    """The subjects ``video_rate.py --subject``'s test-split clip films (10 s, 2 s shots, seed 0)."""
    from itmfilter.data.testmedia import _load_scenes, camera_shots, subject_shots

    scenes = _load_scenes(None, "test", 0, True, None)
    return subject_shots(scenes, len(camera_shots(scenes, 240, (w, h), 48, 0)), (w, h), 0)


def _where(subject: dict, k: int) -> tuple[int, int]:
    """The subject's top-left corner on frame ``k`` of its shot (as ``place_subject`` rounds it)."""
    import math

    t = k / 24
    return (int(round(subject["x"] + subject["vx"] * t)),
            int(round(subject["y"] + subject["vy"] * t + subject["bob"] * math.sin(2 * math.pi * subject["hz"] * t))))


def _box_coords(subject: dict, at: tuple[int, int], w: int, h: int):
    """The frame pixels inside the subject's box at ``at`` (rows, cols) and their ``[-1, 1]``
    coordinates in the box (pixel centres; the image's corners on the box's corners)."""
    sh, sw = subject["sprite"].shape[:2]
    x, y = at
    ys, xs = np.arange(max(y, 0), min(y + sh, h)), np.arange(max(x, 0), min(x + sw, w))
    rows, cols = np.meshgrid(ys, xs, indexing="ij")
    local = np.stack([(cols - x + 0.5) / sw * 2 - 1, (rows - y + 0.5) / sh * 2 - 1], -1).astype(np.float32)
    return rows, cols, local


def _object_plan(shot, subject, sdr, target, frames, build, w, h, scale):
    """The object image (a ScenePlan) from frames ``build``' differences master - model in the
    subject's box, and the placement function ``k -> corner``."""
    from itmfilter.model.grid import predict_pq
    from itmfilter.model.scene import ScenePlan, build_scene_residual

    sh, sw = subject["sprite"].shape[:2]
    diffs, xys = [], []
    for k in build:
        rows, cols, local = _box_coords(subject, _where(subject, k), w, h)
        if rows.size == 0:
            continue
        pq = predict_pq(shot.model, sdr[frames[k]], xy=shot.xy(k))
        diffs.append((target[k] - pq)[rows, cols].reshape(-1, 3))
        xys.append(local.reshape(-1, 2))
    cells = (max(2, sw // scale + 1), max(2, sh // scale + 1))
    return ScenePlan(build_scene_residual(diffs, xys, cells, 6)), (lambda k: _where(subject, k))


def _add_object(pq: np.ndarray, image, at, subject) -> None:
    """Add the decoded object image to ``pq`` ``(h, w, 3)`` in the subject's box at ``at``."""
    h, w = pq.shape[:2]
    rows, cols, local = _box_coords(subject, at, w, h)
    if rows.size:
        pq[rows, cols] += image.sample(local.reshape(-1, 2)).reshape(rows.shape + (3,))


if __name__ == "__main__":
    main()
