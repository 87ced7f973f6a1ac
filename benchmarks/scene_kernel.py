"""The scene residual read by a cubic kernel instead of the format's bilinear one: a probe.

    python benchmarks/scene_kernel.py --shot 1 --config M --scales 2,4 --out F.jsonl

One shot of ``benchmarks/scene_residual.py``'s 1080p clip gets the encoder's grid model
(``ShotFit``, 600 + 400 steps); its residual image is then solved by least squares under each
read (``--kinds``: ``linear`` the format's bilinear read, ``bspline`` the cubic B-spline,
``catrom`` Catmull-Rom; 4 x 4 cells a pixel, edges clamped; the normal equations by SciPy's
sparse products and conjugate gradients, ``--iters`` steps, the encoder's ridge), beside the
encoder's own image (``prod6``: six steps from the splatted mean). Each is scored uncoded and
coded (``ScenePlan``: 8 bits at the 0.01 % tails, AV1 at ``--qualities``) on every 4th frame
the model was not fitted on, read back with its own kernel. One JSON line per point. The
decoder reads bilinearly; nothing here changes the format.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import scene_residual as SR  # noqa: E402

W, H = SR.W, SR.H


def taps(f: np.ndarray, kind: str) -> list[np.ndarray]:
    """The four weights of cells ``i - 1 .. i + 2`` at fraction ``f`` past cell ``i``."""
    f = f.astype(np.float64)
    if kind == "linear":
        return [np.zeros_like(f), 1 - f, f, np.zeros_like(f)]
    if kind == "bspline":
        return [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6]
    if kind == "catrom":
        return [(-f**3 + 2 * f**2 - f) / 2, (3 * f**3 - 5 * f**2 + 2) / 2, (-3 * f**3 + 4 * f**2 + f) / 2, (f**3 - f**2) / 2]
    raise ValueError(kind)


def axis(coord: np.ndarray, cells: int, kind: str):
    """Cell indices (clamped at the edges) and weights along one axis, corners on the ends as
    :func:`itmfilter.model.scene.axis_weights`."""
    u = (coord.astype(np.float64) + 1) * 0.5 * (cells - 1)
    u = np.clip(u, 0, cells - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), cells - 2)
    f = u - i0
    idx = [np.clip(i0 + k, 0, cells - 1) for k in (-1, 0, 1, 2)]
    return idx, taps(f, kind)


def matrix(xy: np.ndarray, cells: tuple[int, int], kind: str) -> sp.csr_matrix:
    """The read as a sparse ``(pixels, cells)`` matrix."""
    w, h = cells
    ix, wx = axis(xy[:, 0], w, kind)
    iy, wy = axis(xy[:, 1], h, kind)
    n = xy.shape[0]
    rows, cols, vals = [], [], []
    r = np.arange(n)
    for a in range(4):
        for b in range(4):
            v = wy[a] * wx[b]
            keep = v != 0
            rows.append(r[keep])
            cols.append((iy[a] * w + ix[b])[keep])
            vals.append(v[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, w * h))


def solve(diffs, xys, cells, kind, start, ridge_share=0.02, iters=60):
    """The least-squares image under the read, with the encoder's ridge towards ``start``."""
    mats = (matrix(np.asarray(xy, np.float64).reshape(-1, 2), cells, kind) for xy in xys)
    return solve_reads(diffs, mats, cells, start, ridge_share, iters)


def solve_reads(diffs, mats, cells, start, ridge_share=0.02, iters=60):
    """The least-squares image under the reads ``mats`` (sparse ``(pixels, cells)``, a frame each,
    made one at a time if an iterator), with the encoder's ridge towards ``start``."""
    w, h = cells
    AtA, Atd, den = None, np.zeros((w * h, 3)), np.zeros(w * h)
    for d, A in zip(diffs, mats):
        AtA = A.T @ A if AtA is None else AtA + A.T @ A
        Atd += A.T @ np.asarray(d, np.float64).reshape(-1, 3)
        den += np.asarray(A.sum(0)).ravel()
    typical = float(np.median(den[den > 0]))
    ridge = ridge_share * typical
    M = (AtA + ridge * sp.identity(w * h)).tocsr()
    x0 = start.reshape(-1, 3)
    out = np.zeros_like(x0)
    for c in range(3):
        out[:, c], _ = cg(M, Atd[:, c] + ridge * x0[:, c], x0=x0[:, c], maxiter=iters)
    return out.reshape(h, w, 3)


def read(values: np.ndarray, xs: np.ndarray, ys: np.ndarray, kind: str) -> np.ndarray:
    """The corrections on a frame whose pixel columns read ``xs`` and rows ``ys``."""
    h, w = values.shape[:2]
    ix, wx = axis(xs, w, kind)
    iy, wy = axis(ys, h, kind)
    rows = sum(values[:, ix[k]] * wx[k][None, :, None] for k in range(4))
    return sum(rows[iy[k]] * wy[k][:, None, None] for k in range(4))


def prepare_shot(work: Path, shot_index: int, config: str) -> SimpleNamespace:
    """Shot ``shot_index`` of ``benchmarks/scene_residual.py``'s 1080p clip in ``work`` with the
    encoder's grid model ``config`` fitted on 6 of its frames (``picks``) and the frames scored
    (``evals``, every 4th not fitted on): ``frames`` (clip indices), ``hdr`` and ``sdr`` (by clip
    index), ``shot`` (:class:`scene_residual.ShotFit`) and ``score(k, correction)``, the mean
    PU21-PSNR of eval frame ``k`` with ``correction`` added to the model's PQ before the clip."""
    import torch

    torch.set_num_threads(1)
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.model.grid import predict_pq
    from itmfilter.quality.metrics import psnr_pu21

    inputs = SR.shot_inputs(work, shot_index)
    frames, picks, evals, hdr, sdr = inputs.frames, inputs.picks, inputs.evals, inputs.hdr, inputs.sdr
    zoom = inputs.zoom
    shot = SR.ShotFit([(sdr[frames[k]], hdr[frames[k]]) for k in picks], inputs.offsets, picks, config, zoom)
    base = {k: predict_pq(shot.model, sdr[frames[k]], xy=shot.xy(k)) for k in evals}

    def score(k: int, corr) -> float:
        return psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(np.clip(base[k] + corr, 0, 1)), np.float32))

    return SimpleNamespace(frames=frames, picks=picks, evals=evals, hdr=hdr, sdr=sdr, shot=shot, score=score,
                           zoom=zoom)


def shot_arguments(doc: str) -> argparse.ArgumentParser:
    """The probes' common options: the shot, the model's config, the image scales and qualities."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--config", default="M")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--qualities", default="20,30,40")
    return ap


def main() -> None:
    ap = shot_arguments(__doc__)
    ap.add_argument("--kinds", default="linear,bspline,catrom")
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    a = ap.parse_args()
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual
    held = prepare_shot(a.work, a.shot, a.config)
    frames, picks, evals, hdr, sdr, shot, score = (held.frames, held.picks, held.evals, held.hdr, held.sdr,
                                                   held.shot, held.score)
    alone = float(np.mean([score(k, 0) for k in evals]))
    head = dict(shot=a.shot, config=a.config, model_bytes=len(shot.fit.data), zoom=held.zoom, alone=alone)
    print(json.dumps(head), flush=True)
    pairs = [(sdr[frames[k]], hdr[frames[k]]) for k in picks]
    axes = {}
    for k in evals:
        xy = shot.xy(k)
        axes[k] = (xy[0, :, 0].astype(np.float64), xy[:, 0, 1].astype(np.float64))
        assert np.allclose(xy[..., 0], xy[0:1, :, 0]) and np.allclose(xy[..., 1], xy[:, 0:1, 1])
    for scale in (int(s) for s in a.scales.split(",")):
        diffs, xys = shot.diffs(pairs, picks, None, scale)
        cells = scene_cells(W, H, shot.half, scale)
        t0 = time.perf_counter()
        prod = build_scene_residual(diffs, xys, cells, 6)
        start = build_scene_residual(diffs, xys, cells, 0)
        imgs = {"prod6": ("linear", prod)}
        for kind in a.kinds.split(","):
            imgs[kind] = (kind, solve(diffs, xys, cells, kind, start, iters=a.iters))
        for name, (kind, img) in imgs.items():
            unc = float(np.mean([score(k, read(img, *axes[k], kind)) for k in evals]))
            row = dict(head, scale=scale, image=name, quality="float", bytes=None, pu21=unc, secs=round(time.perf_counter() - t0, 1))
            print(json.dumps(row), flush=True)
            plan = ScenePlan(img)
            for q in (int(v) for v in a.qualities.split(",")):
                data = plan.code(q)
                vals = unpack_scene_residual(data).values.astype(np.float64)
                s = float(np.mean([score(k, read(vals, *axes[k], kind)) for k in evals]))
                row = dict(head, scale=scale, image=name, quality=q, bytes=len(data), pu21=s)
                print(json.dumps(row), flush=True)
                if a.out:
                    open(a.out, "a").write(json.dumps(row) + "\n")
if __name__ == "__main__":
    main()
