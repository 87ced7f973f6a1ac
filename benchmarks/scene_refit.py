"""A probe: the MLP of a grid shot's model refitted with its scene image in place.

    python benchmarks/scene_refit.py --shot 1 --qualities 30,45 --refit-steps 600,1200

The encoder fits a shot's model, then builds the scene image from what the model leaves (master
minus model, in PQ). The image is added before the model's clip, so it enters the network's
output exactly as the polynomial does: the MLP can be fine-tuned again with the decoded image
added to its prior, over the quantised grid, so that the model covers what the image does not
rather than what it already carries. The grid's codes, and so the KEY's bytes but for the MLP's
int8 tensors' compression, stay as they were. This probe fits the shot's model as the encoder
does (``benchmarks/scene_residual.py``'s :class:`ShotFit`), builds and codes the image at
``--scale`` and each ``--qualities``, then refits the MLP for each ``--refit-steps`` at each
``--clipped-weights`` and scores, on the frames neither was built from, the model + image before
and after, and the refitted model alone (what a frame decoded before its image arrives shows).
One JSON line per setting.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scene_residual import H, ShotFit, W, emit, shot_inputs  # noqa: E402


def refit_mlp(model, scene, picked, xys, steps: int, clipped_weight: float, compact: bool = True):
    """``model``'s MLP fine-tuned on the ``picked`` frames' pixels (``xys`` their grid
    coordinates) with ``scene`` added to the polynomial prior, over the model's decoded grid;
    quantised to int8 as the packer does (binary16 scales when ``compact``). Returns the model
    with the new MLP."""
    import torch

    from itmfilter.model.grid import GridFitOptions, _GridNet, _pu21_t, _train, load_mlp, mmr_features, quantise_mlp

    rgb = torch.from_numpy(np.concatenate([s.reshape(-1, 3) for s, _ in picked]).astype(np.float32))
    nits = torch.from_numpy(np.concatenate([n.reshape(-1, 3) for _, n in picked]).astype(np.float32))
    xy = np.concatenate([x.reshape(-1, 2) for x in xys]).astype(np.float32)
    net = _GridNet(model.config, torch.from_numpy(np.asarray(model.mmr, np.float32)))
    load_mlp(net.mlp, model.mlp)
    grid = torch.from_numpy(np.asarray(model.grid, np.float32))[None]
    xy_t = torch.from_numpy(xy)
    coords = net.coords(rgb, xy_t)
    prior = mmr_features(rgb) @ net.mmr + torch.from_numpy(scene.sample(xy).astype(np.float32))
    options = GridFitOptions(steps=steps, finetune_steps=steps, clipped_weight=clipped_weight, compact=compact)
    _train(net, rgb, coords, prior, _pu21_t(nits), options, grid_fixed=grid, steps=steps, lr_scale=0.3)
    mlp = [(codes * np.float32(scale)).astype(np.float32) for scale, codes in quantise_mlp(net.mlp, compact)]
    return replace(model, mlp=mlp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--config", default="M")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--qualities", default="30,45")
    ap.add_argument("--refit-steps", default="600,1200")
    ap.add_argument("--clipped-weights", default="1,0.3")
    ap.add_argument("--grid-steps", type=int, default=1800)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from itmfilter.colour.transfer import eotf_st2084
    from itmfilter.encode.gridkeys import GRID_STARTS, GRID_TRIAL_SHARE, SCENE_CLIPPED_WEIGHT
    from itmfilter.model.grid import predict_pq
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual
    from itmfilter.quality.metrics import psnr_pu21

    inputs = shot_inputs(args.work, args.shot)
    frames, picks, evals, hdr, sdr = inputs.frames, inputs.picks, inputs.evals, inputs.hdr, inputs.sdr
    zoom, offs = inputs.zoom, inputs.offsets
    picked = [(sdr[frames[k]], hdr[frames[k]]) for k in picks]
    shot = ShotFit(picked, offs, picks, args.config, zoom, args.grid_steps, True, None, GRID_STARTS,
                   int(args.grid_steps * GRID_TRIAL_SHARE), SCENE_CLIPPED_WEIGHT)

    def score(model, scene=None) -> float:
        out = []
        for k in evals:
            pq = predict_pq(model, sdr[frames[k]], xy=shot.xy(k))
            if scene is not None:
                pq = np.clip(pq + scene.sample(shot.xy(k).reshape(-1, 2)).reshape(H, W, 3), 0, 1)
            out.append(psnr_pu21(hdr[frames[k]], np.asarray(eotf_st2084(pq), np.float32)))
        return float(np.mean(out))

    head = {"shot": args.shot, "config": args.config, "model_bytes": len(shot.fit.data), "scale": args.scale,
            "model_alone": score(shot.model)}
    plan = ScenePlan(build_scene_residual(*shot.diffs(picked, picks, None, args.scale),
                                          scene_cells(W, H, shot.half, args.scale), 6))
    xys = [shot.xy(k) for k in picks]
    for quality in (int(q) for q in args.qualities.split(",")):
        data = plan.code(quality)
        scene = unpack_scene_residual(data)
        before = score(shot.model, scene)
        for steps in (int(v) for v in args.refit_steps.split(",")):
            for weight in (float(v) for v in args.clipped_weights.split(",")):
                refit = refit_mlp(shot.model, scene, picked, xys, steps, weight)
                emit(dict(head, quality=quality, image_bytes=len(data), refit_steps=steps, clipped_weight=weight,
                          with_image=before, refit_with_image=score(refit, scene), refit_alone=score(refit)),
                     args.out)


if __name__ == "__main__":
    main()
