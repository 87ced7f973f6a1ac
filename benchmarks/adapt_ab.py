"""Interleaved timing of adaptation recipes and engines at 1080p (one process, same picture).

The shared 2-core machine drifts in speed by up to 1.6x within minutes, so comparing two
separate runs says little; this alternates the candidates on the same picture, round after
round, and reports each one's min and median. Also times one training step of the default
network with the hand-written backward and with autograd.

    python benchmarks/adapt_ab.py --rounds 6 [--out docs/....md]

Picture: the first test picture upscaled bilinearly to 1920x1080, SDR by bt2446a (the one
``benchmarks/stills.py --timing`` uses).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from stills import machine, pictures, quantise_sdr  # noqa: E402

from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, RECIPE_200x8192, _ManualStep, adapt  # noqa: E402
from itmfilter.model.initial import STILLS_INIT, load_init  # noqa: E402
from itmfilter.model.optim import Adam  # noqa: E402


def picture_1080p():
    import torch.nn.functional as F

    _, hdr = pictures("test", 1)[0]
    t = torch.from_numpy(np.ascontiguousarray(hdr)).permute(2, 0, 1)[None]
    big = F.interpolate(t, size=(1080, 1920), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy().copy()
    return quantise_sdr(get_curve("bt2446a").forward(big)), eotf_inverse_st2084(big).astype(np.float32)


def step_ms(net, batch: int, manual: bool, repeats: int = 500) -> float:
    """Milliseconds of one training step (forward, backward, flat Adam) on ``batch`` pixels."""
    gen = torch.Generator().manual_seed(0)
    rgb, tgt = torch.rand(batch, 3, generator=gen), torch.rand(batch, 3, generator=gen)
    xy = torch.rand(batch, 2, generator=gen) * 2 - 1
    prior, four = net.prior(rgb), net.fourier_features(xy)
    opt = Adam(list(net.parameters()), lr=1e-3, flat=True)
    fn = _ManualStep(net) if manual else None

    def one():
        if fn is not None:
            fn(four, rgb, prior, tgt)
        else:
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(rgb, xy, prior), tgt).backward()
        opt.step()

    for _ in range(50):
        one()
    t0 = time.perf_counter()
    for _ in range(repeats):
        one()
    ms = (time.perf_counter() - t0) / repeats * 1e3
    opt.release()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    default_net, _ = load_init()
    stills_net, _ = load_init(name=STILLS_INIT)
    candidates = {
        "earlier recipe (200x8192), default network": (default_net, RECIPE_200x8192),
        "current recipe, default network, autograd": (default_net, AdaptOptions(engine="autograd")),
        "current recipe, default network": (default_net, AdaptOptions()),
        "current recipe, stills network (shipped for stills)": (stills_net, AdaptOptions()),
    }
    sdr, target = picture_1080p()
    adapt(default_net, sdr, target, AdaptOptions(steps=20))  # first-call costs out of the way
    times = {k: [] for k in candidates}
    for _ in range(args.rounds):
        for label, (net, opts) in candidates.items():
            times[label].append(adapt(net, sdr, target, opts).seconds)
    lines = [f"Machine: {machine()}", "", f"1080p adaptation, {args.rounds} interleaved rounds:", "",
             "| candidate | min s | median s | runs |", "|---|---|---|---|"]
    for label, ts in times.items():
        lines.append(f"| {label} | {min(ts):.2f} | {statistics.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    lines += ["", "One training step of the default network (ms, mean of 500):", "",
              "| pixels | autograd | hand-written |", "|---|---|---|"]
    for batch in (512, 1024):
        auto = step_ms(load_init()[0].train(), batch, manual=False)
        hand = step_ms(load_init()[0].train(), batch, manual=True)
        lines.append(f"| {batch} | {auto:.2f} | {hand:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text("# Adaptation A/B (interleaved)\n\nCommand: `python benchmarks/adapt_ab.py --rounds "
                            f"{args.rounds} --out {args.out}`\n\n" + text)


if __name__ == "__main__":
    main()
