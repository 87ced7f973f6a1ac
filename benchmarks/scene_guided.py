"""The scene residual read with the frame's own SDR as a guide (joint bilateral upsampling): a probe.

    python benchmarks/scene_guided.py --shot 1 --config M --scales 2,4 --sigmas 0.1,0.05 --out F.jsonl

The format reads a shot's scene image bilinearly: a pixel takes its four cells by their bilinear
weights, so an edge of the master's detail (a clipped window, a lamp) is blurred over a cell each
way. The decoder also holds the frame's SDR, whose edges are where the SDR clips. This probe
weighs each of a pixel's four cells also by how close the pixel's SDR guide is to the cell's
(``exp(-(g(p) - G(c))^2 / 2 sigma^2)``, renormalised over the four; ``G(c)``: the frame's guide
averaged over the pixels that read cell ``c``, by their bilinear weights, which the decoder can
compute from the frame it shows). The guide ``--guide``: ``luma`` (BT.709 Y' of the SDR codes) or
``max`` (the largest of R', G', B', which is what clips).

One shot of ``benchmarks/scene_residual.py``'s 1080p clip gets the encoder's grid model (600 + 400
steps); per scale and sigma its image is solved by least squares under that read (the encoder's
ridge, SciPy's conjugate gradients: ``benchmarks/scene_kernel.py``'s solve), beside the bilinear
read's (``linear``), and scored uncoded and coded (``ScenePlan``, AV1 at ``--qualities``) on every
4th frame the model was not fitted on, each frame read with its own guide. One JSON line per point.
Nothing here changes the format.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import scene_kernel as SK  # noqa: E402
import scene_residual as SR  # noqa: E402

W, H = SR.W, SR.H


def guide_of(sdr: np.ndarray, kind: str) -> np.ndarray:
    """The guide of each pixel of ``sdr`` (R'G'B' codes in 0..1), flat."""
    rgb = sdr.reshape(-1, 3).astype(np.float64)
    if kind == "luma":
        return rgb @ np.array([0.2126, 0.7152, 0.0722])
    if kind == "max":
        return rgb.max(1)
    raise ValueError(kind)


def guided_matrix(xy: np.ndarray, guide: np.ndarray, cells: tuple[int, int], sigma: float | None) -> sp.csr_matrix:
    """The read as a sparse ``(pixels, cells)`` matrix: bilinear weights times the range weight of
    the pixel's guide against the cell's (the frame's own mean by the same bilinear weights),
    renormalised per pixel. ``sigma`` None: the bilinear read."""
    a = SK.matrix(xy, cells, "linear").tocoo()
    if sigma is None:
        return a.tocsr()
    den = np.bincount(a.col, a.data, minlength=cells[0] * cells[1])
    num = np.bincount(a.col, a.data * guide[a.row], minlength=cells[0] * cells[1])
    cell_guide = num / np.maximum(den, 1e-12)
    r = np.exp(-((guide[a.row] - cell_guide[a.col]) ** 2) / (2 * sigma * sigma))
    v = a.data * (r + 1e-6)  # a floor keeps the bilinear read where no cell matches
    total = np.bincount(a.row, v, minlength=a.shape[0])
    return sp.csr_matrix((v / total[a.row], (a.row, a.col)), shape=a.shape)


def main() -> None:
    ap = SK.shot_arguments(__doc__)
    ap.add_argument("--sigmas", default="0.1,0.05", help="comma separated; the bilinear read is always run")
    ap.add_argument("--guide", default="max", choices=("luma", "max"))
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    a = ap.parse_args()
    from itmfilter.encode.gridkeys import _scene_step
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual
    held = SK.prepare_shot(a.work, a.shot, a.config)
    frames, picks, evals, sdr, shot, score = held.frames, held.picks, held.evals, held.sdr, held.shot, held.score
    hdr = held.hdr
    alone = float(np.mean([score(k, 0) for k in evals]))
    head = dict(shot=a.shot, config=a.config, model_bytes=len(shot.fit.data), zoom=held.zoom, alone=alone, guide=a.guide)
    print(json.dumps(head), flush=True)
    pairs = [(sdr[frames[k]], hdr[frames[k]]) for k in picks]
    eval_guides = {k: guide_of(sdr[frames[k]], a.guide) for k in evals}
    sigmas = [None] + [float(s) for s in a.sigmas.split(",") if s]
    for scale in (int(s) for s in a.scales.split(",")):
        step = _scene_step(scale)
        diffs, xys = shot.diffs(pairs, picks, None, scale)
        fit_guides = [guide_of(sdr[frames[k]][::step, ::step], a.guide) for k in picks]
        cells = scene_cells(W, H, shot.half, scale)
        start = build_scene_residual(diffs, xys, cells, 0)
        for sigma in sigmas:
            t0 = time.perf_counter()
            mats = (guided_matrix(np.asarray(xy, np.float64).reshape(-1, 2), g, cells, sigma)
                    for xy, g in zip(xys, fit_guides))
            img = SK.solve_reads(diffs, mats, cells, start, iters=a.iters)
            reads = {k: guided_matrix(shot.xy(k).reshape(-1, 2).astype(np.float64), eval_guides[k], cells, sigma)
                     for k in evals}

            def mean_score(values):
                flat = values.reshape(-1, 3)
                return float(np.mean([score(k, (reads[k] @ flat).reshape(H, W, 3)) for k in evals]))

            name = "linear" if sigma is None else f"guided {sigma:g}"
            rows = [dict(head, scale=scale, read=name, quality="float", bytes=None, pu21=mean_score(img))]
            plan = ScenePlan(img.astype(np.float32))
            for q in (int(v) for v in a.qualities.split(",")):
                data = plan.code(q)
                vals = unpack_scene_residual(data).values.astype(np.float64)
                rows.append(dict(head, scale=scale, read=name, quality=q, bytes=len(data), pu21=mean_score(vals)))
            for row in rows:
                row["secs"] = round(time.perf_counter() - t0, 1)
                print(json.dumps(row), flush=True)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
