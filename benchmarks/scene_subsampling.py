"""A shot's scene image coded as 4:4:4 (the format's) and as 4:2:0 AV1: bytes against the
image's own error, in PQ.

    python benchmarks/scene_subsampling.py --shot 2 --out docs/scene-residual/subsampling-shot2.jsonl

The scene image (:mod:`itmfilter.model.scene`) is the codes of a shot's PQ residual master -
model; its coder's error adds to what the image already misses of each frame. This compares
the two chroma samplings on that error alone: the shot of ``benchmarks/scene_residual.py``'s
1080p clip gets the encoder's grid model (``--config``, ``--grid-steps``) and the encoder's
scene image at each ``--scales``, which is coded at each ``--qualities`` (libaom at the
format's speed and options) with each sampling, decoded by libavif (through Pillow, its own
Y'CbCr-to-R'G'B' and chroma upsampling for both), and scored as PSNR of the decoded codes
against the coded ones, scaled to PQ by each channel's ``(hi - lo) / 255`` (peak 1). One JSON
line per point, then per sampling the front over every scale interpolated in log bytes at
``--at`` bytes.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def coded_psnr(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, quality: int, sampling: str) -> tuple[int, float]:
    """``codes`` coded at ``quality`` with ``sampling`` as the format codes them otherwise:
    (bytes of the AVIF file less its ~270-byte container, PSNR in PQ of the decoded codes)."""
    from PIL import Image

    from itmfilter.model import scene

    buf = io.BytesIO()
    extra = {"advanced": scene.AVIF_ADVANCED} if scene.AVIF_ADVANCED else {}
    Image.fromarray(codes, "RGB").save(buf, format="AVIF", quality=quality, speed=scene.AVIF_SPEED,
                                       subsampling=sampling, **extra)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float64)
    err = (decoded - codes) * ((hi - lo) / 255.0)
    mdat = buf.getvalue().find(b"mdat")
    size = len(buf.getvalue()) - mdat - 4 if mdat >= 0 else len(buf.getvalue())
    return size, 10 * math.log10(1.0 / max(float(np.mean(err ** 2)), 1e-20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shot", type=int, default=2)
    ap.add_argument("--config", default="S", help="a name of itmfilter.encode.gridkeys.GRID_LADDER")
    ap.add_argument("--grid-steps", type=int, default=300)
    ap.add_argument("--scales", default="2,3,4")
    ap.add_argument("--qualities", default="10,20,30,40,50,60,70")
    ap.add_argument("--samplings", default="4:4:4,4:2:0")
    ap.add_argument("--ranges", default="channel",
                    help="the codes' ranges: channel (the encoder's: each channel its own tails), shared (one "
                         "range for the three, so a zero residual is a grey code and the coder's Y'CbCr "
                         "sees the residual's own luminance and chroma)")
    ap.add_argument("--at", default="2000,3000,5000,8000,12000,16000", help="bytes the fronts are compared at")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args()

    import scene_residual as sr
    import torch
    from video_rate import front_at  # benchmarks/video_rate.py: a front interpolated in log rate

    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells
    from itmfilter.progress import progress_bar

    torch.set_num_threads(args.threads)
    picks, pairs, offsets, zoom = sr.fit_inputs(*sr.clip(args.work), args.shot)
    fit = sr.ShotFit(pairs, offsets, picks, args.config, zoom, args.grid_steps)
    scales = [int(v) for v in args.scales.split(",")]
    qualities = [int(v) for v in args.qualities.split(",")]
    ranges = args.ranges.split(",")
    rows: dict[str, list[dict]] = {f"{s}/{r}": [] for s in args.samplings.split(",") for r in ranges}
    with progress_bar(len(scales) * len(qualities) * len(rows), unit="image", desc="coding",
                      quiet=args.quiet) as bar:
        for scale in scales:
            cells = scene_cells(sr.W, sr.H, fit.half, scale)
            image = build_scene_residual(*fit.diffs(pairs, picks, None, scale), cells, 6)
            plan = ScenePlan(image)
            coded = {"channel": (plan.codes, plan.lo, plan.hi)}
            if "shared" in ranges:
                lo, hi = np.full(3, plan.lo.min()), np.full(3, plan.hi.max())
                coded["shared"] = (np.round((image - lo) / (hi - lo) * 255).clip(0, 255).astype(np.uint8), lo, hi)
            for quality in qualities:
                for name, done in rows.items():
                    sampling, kind = name.split("/")
                    size, psnr = coded_psnr(*coded[kind], quality, sampling)
                    done.append({"shot": args.shot, "config": args.config, "scale": scale, "quality": quality,
                                 "sampling": sampling, "range": kind, "bytes": size, "image_pq_psnr": psnr})
                    sr.emit(done[-1], args.out)
                    bar.update(1)
    first = next(iter(rows))
    for name, done in rows.items():
        row = {"shot": args.shot, "coding": name, "against": first}
        for size in (int(v) for v in args.at.split(",")):
            a, b = (front_at(r, size, "bytes", "image_pq_psnr") for r in (rows[first], done))
            row[f"db_at_{size}"] = None if a is None or b is None else round(b - a, 3)
        sr.emit(row, args.out)


if __name__ == "__main__":
    main()
