"""Compile the CPU player's numba kernels into numba's on-disk cache, once, ahead of use.

The fused CPU paths (:mod:`itmfilter.render.fastpath`, :mod:`itmfilter.render.gridpath`) are
numba functions with ``cache=True``: each is compiled on its first call for each argument
type (8-bit and 10-bit planes differ) and the machine code is kept in numba's cache
(``__pycache__`` beside the module, or ``NUMBA_CACHE_DIR``). Compiled at first use, the
first ``itmfilter play --hdr`` on a machine stalls for tens of seconds before its first
frame, and the rung ladder's first timings include the compile. ``scripts/setup.sh`` runs
``python -m itmfilter.render.precompile`` so that this happens at install time instead.

It renders one small frame through every rung of :data:`itmfilter.render.ladder.LADDER`,
through each gain mode a network can select, for an MLP network and a grid model with and
without a scene residual, from 8-bit and 10-bit 4:2:0 planes: the kernels and argument types
the player and the transcoder call.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


def _frames():
    import av

    h, w = 37, 69  # odd sizes: the chroma planes' rounding, as in a real frame of odd size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx * yy) % 256], -1).astype(np.uint8)
    base = av.VideoFrame.from_ndarray(img, format="rgb24")
    return [base.reformat(format=f) for f in ("yuv420p", "yuv420p10le")]


def _grid_models():
    from itmfilter.model.grid import GRID_SIZES, GridModel, PlacedGrid
    from itmfilter.model.scene import ScenePlan, unpack_scene_residual

    cfg = GRID_SIZES["XS"]
    rng = np.random.default_rng(0)
    mmr = np.zeros((22, 3), np.float32)
    mmr[1:4] = np.eye(3, dtype=np.float32) * 0.45
    model = GridModel(cfg, mmr, rng.normal(0, 0.3, cfg.grid_shape).astype(np.float32),
                      [rng.normal(0, 0.3, s).astype(np.float32) for s in cfg.mlp_shapes()])
    yy, xx = np.mgrid[0:6, 0:9] / np.array([5.0, 8.0])[:, None, None]
    image = np.stack([0.1 * xx * yy, 0.05 * xx, 0.08 * yy], -1)
    scene = unpack_scene_residual(ScenePlan(image).code(50))
    place = dict(origin=(0.3, -0.2), half=(1.5, 1.3))
    return [PlacedGrid(model, **place), PlacedGrid(dataclasses.replace(model, scene=scene), **place)]


def compile_kernels(quiet: bool = False) -> float:
    """Render through every CPU rung and kernel once (see the module's text); returns seconds.
    Where the cache already holds a kernel this loads it, in well under a second."""
    from itmfilter.model.initial import load_init
    from itmfilter.progress import progress_bar
    from itmfilter.render.frame import hdr10_planes
    from itmfilter.render.ladder import LADDER

    start = time.perf_counter()
    mlp, _ = load_init()
    jobs = [(mlp, gain) for gain in ("auto", "rgb", "luma")] + [(g, "auto") for g in _grid_models()]
    frames = _frames()
    with progress_bar(len(jobs) * len(frames) * len(LADDER), unit="render", desc="compiling the CPU kernels",
             quiet=quiet) as progress:
        for net, gain in jobs:
            for frame in frames:
                for rung in LADDER:
                    hdr10_planes(frame, net, rung, "cpu", gain=gain)
                    progress.update(1)
    return time.perf_counter() - start


def main() -> None:
    import sys

    quiet = "--quiet" in sys.argv[1:]
    seconds = compile_kernels(quiet=quiet)
    if not quiet:
        print(f"CPU player kernels compiled and cached in {seconds:.0f} s")


if __name__ == "__main__":
    main()
