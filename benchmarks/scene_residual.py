"""The scene residual of one grid shot, per setting: bytes and PU21-PSNR on frames it was not built from.

    python benchmarks/scene_residual.py --shot 0 --out docs/scene-residual/shot0.json
    python benchmarks/scene_residual.py --shot 1 --zoom none,auto --solve-steps 0,6

The clip is ``benchmarks/video_rate.py``'s at 1080p (a test-split master, 10 s at 24 fps, a
cut every 2 s, the ``local`` grade's SDR; ``--work`` holds or receives them). One shot (the
encoder's shot detector and phase correlation) gets the encoder's grid model (``--config``,
fitted on 6 frames spread over it, at the zoom the encoder estimates or none), then the scene
residual (:mod:`itmfilter.model.scene`) is built from those 6 frames as the encoder builds it
(:func:`itmfilter.encode.gridkeys.scene_options`' steps: every 2nd pixel, splat, push-pull,
``--solve-steps`` conjugate-gradient steps) at each ``--scales`` and coded at each
``--qualities``; every 4th frame not among the 6 is then scored with the model alone (the
decoder's ``predict_pq`` at each frame's placement and age) and with the decoded residual added
to that and clipped (the decoder adds it before the model's clip: the same wherever the model's
PQ is inside [0, 1]). One JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

W, H, FPS = 1920, 1080, 24


def clip(work: Path, split: str = "test") -> tuple[Path, Path]:
    """``benchmarks/video_rate.py``'s 1080p clip in ``work`` (made when missing): the master and
    its ``local`` grade's SDR."""
    import video as video_bench  # benchmarks/video.py: the SDR pass

    from itmfilter.data.testmedia import make_master

    work.mkdir(parents=True, exist_ok=True)
    tag = "" if split == "test" else f"-{split}"
    master = work / f"master-{W}x{H}-10s-shot2{tag}.mkv"
    if not master.exists():
        make_master(master, seconds=10, fps=FPS, size=(W, H), codec="hevc", shot_seconds=2, split=split, quiet=True)
    sdr_path = work / f"sdr-local-{master.stem}.mp4"
    video_bench.make_sdr(master, sdr_path, "local")
    return master, sdr_path


def rate_clip(work: Path, width: int, height: int, subject: bool = False) -> tuple[Path, Path]:
    """A clip ``benchmarks/video_rate.py --size WxH --seconds 10 --shots 2 [--subject]`` made in
    ``work`` (test split): its master and ``local`` SDR; exits with what to run when missing."""
    master = work / f"master-{width}x{height}-10s-shot2{'-subject' if subject else ''}.mkv"
    sdr_path = work / f"sdr-local-{master.stem}.mp4"
    if not (master.exists() and sdr_path.exists()):
        raise SystemExit(f"{master} or its SDR is missing: make them with video_rate.py --size {width}x{height} "
                         f"--seconds 10 --shots 2{' --subject' if subject else ''} --work {work}")
    return master, sdr_path


def shot_frames(master: Path, sdr_path: Path, shot: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """Shot ``shot`` as the encoder sees it (its shot detector and phase correlation): the
    frames' indices, their accumulated offsets since the shot's first frame (pixel-grid units)
    and their luma thumbnails (the zoom search's view)."""
    from itmfilter.encode.segments import _luma_thumb
    from itmfilter.encode.shots import ShotDetector
    from itmfilter.encode.video import VideoEncodeOptions
    from itmfilter.media.phasecorr import MotionEstimator
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.track.motion import pixels_to_shift

    detect, motion = ShotDetector(VideoEncodeOptions.shot_threshold), MotionEstimator()
    current, frames, offsets, thumbs, pos = -1, [], [], [], np.zeros(2)
    for (i, nits), (_, sdr) in zip(read_hdr_frames(master), read_sdr_frames(sdr_path)):
        if detect(nits):
            current += 1
            motion.reset()
            pos = np.zeros(2)
        pan = motion(sdr)
        if current > shot:
            break
        if pan is not None and frames and current == shot:
            pos = pos + np.asarray(pixels_to_shift(pan, W, H), np.float64)
        if current == shot:
            frames.append(i)
            offsets.append(pos.copy())
            thumbs.append(_luma_thumb(sdr))
    return frames, offsets, thumbs


def shot_inputs(work: Path, shot: int) -> SimpleNamespace:
    """Shot ``shot`` of the 1080p clip in ``work`` as the probes take it: ``frames`` (clip
    indices), ``picks`` (its 6 fit frames, positions in the shot), ``evals`` (every 4th other
    frame from the 3rd: the scored ones), ``hdr`` and ``sdr`` of those frames by clip index,
    and the encoder's ``zoom`` and ``offsets`` after the zoom search."""
    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames

    master, sdr_path = clip(work)
    frames, offsets, thumbs = shot_frames(master, sdr_path, shot)
    n = len(frames)
    picks = sorted(set(np.linspace(0, n - 1, 6).round().astype(int).tolist()))
    evals = [k for k in range(2, n, 4) if k not in picks]
    want = {frames[k] for k in picks + evals}
    hdr = {i: x for i, x in read_hdr_frames(master) if i in want}
    sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in want}
    zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
    return SimpleNamespace(frames=frames, picks=picks, evals=evals, hdr=hdr, sdr=sdr, zoom=zoom, offsets=offs)


def fit_inputs(master: Path, sdr_path: Path, shot: int) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]],
                                                                  np.ndarray, float]:
    """Shot ``shot``'s model inputs as the encoder takes them: its 6 fit frames spread over it
    (indices into the shot), their ``(sdr, nits)``, every frame's offsets after the zoom search,
    and the zoom (:func:`itmfilter.encode.gridkeys.estimate_zoom`)."""
    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames

    frames, offsets, thumbs = shot_frames(master, sdr_path, shot)
    picks = sorted(set(np.linspace(0, len(frames) - 1, 6).round().astype(int).tolist()))
    want = {frames[k] for k in picks}
    hdr = {i: x for i, x in read_hdr_frames(master) if i in want}
    sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in want}
    zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
    return picks, [(sdr[frames[k]], hdr[frames[k]]) for k in picks], offs, zoom


def emit(row: dict, out: Path | None) -> None:
    """Print ``row`` as one JSON line, and append it to ``out`` when given."""
    print(json.dumps(row), flush=True)
    if out:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


class ShotFit:
    """The encoder's grid model of one shot, fitted on ``picked`` (``(sdr, nits)`` of the shot's
    frames ``picks``) with the frames placed by ``offsets`` (pixel-grid units, after the zoom
    search) at ``zoom`` a frame: :func:`itmfilter.encode.gridkeys.fit_segment_grid` at the
    encoder's steps and the rung ``config`` of its ladder. ``fit`` (its bytes in ``fit.data``),
    ``model`` (with the zoom), ``centre``, ``half`` and ``scales`` (each frame's) as the encoder's
    scene residual reads them."""

    def __init__(self, picked, offsets: np.ndarray, picks: list[int], config: str, zoom: float, steps: int = 600,
                 compact: bool = False, seed: int | None = None, starts: int = 1, trial_steps: int = 0,
                 clipped_weight: float = 1.0):
        from grid_video import parse_config  # benchmarks/grid_video.py: a named config, changed

        from itmfilter.encode.gridkeys import GRID_LADDER, fit_segment_grid, frame_scales
        from itmfilter.model.grid import GridFitOptions

        self.offsets, self.scales = offsets, frame_scales(len(offsets), zoom)
        options = GridFitOptions(steps=steps, finetune_steps=2 * steps // 3, compact=compact)
        options = replace(options, starts=starts, trial_steps=trial_steps, clipped_weight=clipped_weight)
        if seed is not None:
            options = replace(options, seed=seed)
        self.fit, self.centre, self.half = fit_segment_grid(picked, offsets, picks, parse_config(config, dict(GRID_LADDER))[1],
                                                            options, zoom)
        self.model = replace(self.fit.model, zoom=float(np.float32(zoom)))
        self.fit_seed = options.seed

    def xy(self, k: int) -> np.ndarray:
        """Frame ``k``'s grid coordinates ``(H, W, 2)`` as the decoder places it."""
        from itmfilter.encode.gridkeys import frame_xy

        return frame_xy(H, W, self.offsets[k], self.centre, self.half, self.scales[k])

    def diffs(self, pairs, ks: list[int], sub: int | None = None, scale: int = 4):
        """The scene residual's input from frames ``ks`` (``pairs``: their ``(sdr, nits)``), flat,
        as the encoder builds it for a ``scale`` (:func:`itmfilter.encode.gridkeys._scene_inputs`),
        or from every ``sub``-th pixel."""
        from itmfilter.encode.gridkeys import _scene_diffs, _scene_inputs, _scene_step

        if sub is None:
            return _scene_inputs(self.model, pairs, self.offsets, ks, self.centre, self.half, self.scales,
                                 [scale])[_scene_step(scale)]
        diffs, xys = _scene_diffs(self.model, pairs, self.offsets, ks, self.centre, self.half, self.scales, sub)
        return [d.reshape(-1, 3) for d in diffs], [xy.reshape(-1, 2) for xy in xys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=0)
    ap.add_argument("--config", default="S-6bit", help="a name of itmfilter.encode.gridkeys.GRID_LADDER, optionally changed: "
                         "'M:grid_bits=6/hidden=24'")
    ap.add_argument("--scales", default="4,8,16")
    ap.add_argument("--qualities", default="10,20,30,40")
    ap.add_argument("--solve-steps", default="6", help="comma separated: 0 is the splatted mean alone")
    ap.add_argument("--zoom", default="auto", help="comma separated: auto (the encoder's estimate) and/or none")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid-steps", type=int, default=600,
                    help="the model fit's Adam steps (the encoder's: VideoEncodeOptions.grid_steps, 1800)")
    ap.add_argument("--compact", action="store_true", help="fit and pack the model in format 1.11's compact layout")
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    ap.add_argument("--starts", type=int, default=1, help="initial MLP weights tried (GridFitOptions.starts)")
    ap.add_argument("--trial-steps", type=int, default=0, help="steps each start trains before the best goes on")
    ap.add_argument("--clipped-weights", default="1",
                    help="comma separated: the fit's weight of clipped SDR pixels (GridFitOptions.clipped_weight)")
    ap.add_argument("--seeds", default=None,
                    help="comma separated: fit the model with each of these seeds (default: the encoder's)")
    ap.add_argument("--split", default="test", choices=("test", "val"), help="the clip's scenes")
    ap.add_argument("--subsample", default="auto",
                    help="comma separated: the residual is built from every N-th pixel each way; auto: as the "
                         "encoder does (every pixel up to gridkeys.SCENE_EVERY_PIXEL, then every 2nd)")
    ap.add_argument("--avif-speed", type=int, default=None,
                    help="libaom speed of the residual's coder (default: itmfilter.model.scene.AVIF_SPEED)")
    ap.add_argument("--avif-advanced", default=None,
                    help="libaom options of the residual's coder to compare, variants separated by ';', each "
                         "'key=value,key=value' or 'none' (libavif's defaults); default: "
                         "itmfilter.model.scene.AVIF_ADVANCED alone")
    ap.add_argument("--residual-frames", default="6",
                    help="comma separated: frames spread over the shot the residual is built from (the model's 6 "
                         "are always the model's); each is scored on the same frames, none of them built from")
    ap.add_argument("--ridges", default=None,
                    help="comma separated: the least-squares solve's pull towards the splatted image "
                         "(itmfilter.model.scene.RIDGE, a share of a typical cell's weight); default: RIDGE alone")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.avif_speed is not None:
        import itmfilter.model.scene as scene_module

        scene_module.AVIF_SPEED = args.avif_speed
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.model.grid import predict_pq
    from itmfilter.quality.metrics import psnr_pu21

    master, sdr_path = clip(args.work, args.split)
    frames, offsets, thumbs = shot_frames(master, sdr_path, args.shot)
    n = len(frames)
    picks = sorted(set(np.linspace(0, n - 1, 6).round().astype(int).tolist()))
    builds = {r: sorted(set(np.linspace(0, n - 1, r).round().astype(int).tolist()))
              for r in (int(v) for v in args.residual_frames.split(","))}
    built = set(picks).union(*builds.values())
    evals = [k for k in range(2, n, 4) if k not in built]
    if not evals:
        raise SystemExit("--residual-frames leaves no frame to score on")
    want = {frames[k] for k in sorted(built) + evals}
    hdr = {i: x for i, x in read_hdr_frames(master) if i in want}
    sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in want}
    measured = np.asarray(offsets)
    seeds = [None] if args.seeds is None else [int(v) for v in args.seeds.split(",")]
    weights = [float(v) for v in args.clipped_weights.split(",")]
    for zoom_mode, seed, weight in ((z, s, c) for z in args.zoom.split(",") for s in seeds for c in weights):
        zoom, offs = estimate_zoom(thumbs, measured) if zoom_mode == "auto" else (0.0, measured)
        t0 = time.perf_counter()
        shot = ShotFit([(sdr[frames[k]], hdr[frames[k]]) for k in picks], offs, picks, args.config, zoom,
                       args.grid_steps, args.compact, seed, args.starts, args.trial_steps, weight)
        fit, xy_of = shot.fit, shot.xy
        base = {k: predict_pq(shot.model, sdr[frames[k]], xy=xy_of(k)) for k in evals}
        alone = float(np.mean([psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(base[k]), np.float32)) for k in evals]))
        head = {"shot": args.shot, "frames": n, "config": args.config, "model_bytes": len(fit.data), "zoom": zoom,
                "zoom_mode": zoom_mode, "seed": shot.fit_seed, "starts": args.starts, "trial_steps": args.trial_steps, "clipped_weight": weight, "fit_s": round(time.perf_counter() - t0, 1),
                "model_pu21_psnr": alone}
        print(json.dumps(head), flush=True)
        for (count, build), sub in ((b, None if s == "auto" else int(s)) for b in builds.items()
                                    for s in args.subsample.split(",")):
            pairs = [(sdr[frames[k]], hdr[frames[k]]) for k in build]
            _residuals(args, dict(head, residual_frames=count, subsample=sub or "auto"),
                       lambda scale, p=pairs, b=build, s=sub: shot.diffs(p, b, s, scale), shot.half, evals, base, hdr, frames, xy_of)


def _residuals(args, head, inputs, half, evals, base, hdr, frames, xy_of) -> None:
    """Each --solve-steps, --scales and --qualities residual from ``inputs(scale)`` (flat diffs
    and their grid coordinates), scored on ``evals``."""
    import itmfilter.model.scene as scene_module
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual
    from itmfilter.quality.metrics import psnr_pu21

    alone = head["model_pu21_psnr"]
    variants = [None] if args.avif_advanced is None else [
        None if v.strip() == "none" else dict(kv.split("=", 1) for kv in v.split(","))
        for v in args.avif_advanced.split(";")]
    kept, kept_ridge = scene_module.AVIF_ADVANCED, scene_module.RIDGE
    ridges = [kept_ridge] if args.ridges is None else [float(v) for v in args.ridges.split(",")]
    for steps, ridge in ((s, r) for s in (int(v) for v in args.solve_steps.split(",")) for r in ridges):
        for scale in (int(v) for v in args.scales.split(",") if v):  # --scales '': the model alone
            scene_module.RIDGE = ridge
            plan = ScenePlan(build_scene_residual(*inputs(scale), scene_cells(W, H, half, scale), steps))
            scene_module.RIDGE = kept_ridge
            for quality, variant in ((int(q), v) for q in args.qualities.split(",") for v in variants):
                if args.avif_advanced is not None:
                    scene_module.AVIF_ADVANCED = variant
                data = plan.code(quality)
                scene_module.AVIF_ADVANCED = kept
                scene = unpack_scene_residual(data)
                score = []
                for k in evals:
                    pq = np.clip(base[k] + scene.sample(xy_of(k).reshape(-1, 2)).reshape(H, W, 3), 0, 1)
                    score.append(psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(pq), np.float32)))
                row = {**head, "solve_steps": steps, "ridge": ridge, "scale": scale, "quality": quality,
                       "avif_speed": scene_module.AVIF_SPEED, "avif_advanced": variant if args.avif_advanced is not None
                       else kept, "bytes": len(data),
                       "pu21_psnr": float(np.mean(score)), "gain_db": float(np.mean(score)) - alone}
                emit(row, args.out)


if __name__ == "__main__":
    main()
