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

_NETS = ("mlp", "grid")
_FORMATS = ("yuv420p", "yuv420p10le")
PARTS = tuple((n, f) for n in _NETS for f in _FORMATS)
"""The precompile's independent parts (network kind, plane format): each compiles its own
kernels' signatures, so separate processes can compile them side by side."""


def _frames() -> dict:
    import av

    h, w = 37, 69  # odd sizes: the chroma planes' rounding, as in a real frame of odd size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx * yy) % 256], -1).astype(np.uint8)
    base = av.VideoFrame.from_ndarray(img, format="rgb24")
    return {f: base.reformat(format=f) for f in _FORMATS}


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


def nets(kind: str) -> list:
    """``(network, gain mode)`` pairs of ``kind`` (``mlp``: the shipped initialisation in each
    gain mode; ``grid``: a grid model without and with a scene residual)."""
    if kind == "mlp":
        from itmfilter.model.initial import load_init

        mlp, _ = load_init()
        return [(mlp, gain) for gain in ("auto", "rgb", "luma")]
    return [(g, "auto") for g in _grid_models()]


def compile_kernels(parts=PARTS) -> float:
    """Render through every CPU rung and kernel once for each of ``parts`` (see the module's
    text); returns seconds. Where the cache already holds a kernel this loads it, in well under
    a second."""
    from itmfilter.render.frame import hdr10_planes
    from itmfilter.render.ladder import LADDER

    start = time.perf_counter()
    frames = _frames()
    for kind, fmt in parts:
        for net, gain in nets(kind):
            for rung in LADDER:
                hdr10_planes(frames[fmt], net, rung, "cpu", gain=gain)
    return time.perf_counter() - start


def compile_in_parallel(quiet: bool = False, processes: int | None = None) -> float:
    """:func:`compile_kernels` with its parts in ``processes`` worker processes (default: one
    a core, at most one a part); numba writes each cache entry atomically, so the processes
    share the cache safely. Returns wall seconds."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from itmfilter.progress import progress_bar

    start = time.perf_counter()
    processes = processes or min(len(PARTS), os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")  # torch and numba's threads do not survive a fork
    with progress_bar(len(PARTS), unit="part", desc="compiling the CPU kernels", quiet=quiet) as progress, \
            ProcessPoolExecutor(processes, mp_context=context) as pool:
        for done in as_completed([pool.submit(compile_kernels, (part,)) for part in PARTS]):
            done.result()
            progress.update(1)
    return time.perf_counter() - start


def main() -> None:
    import sys

    quiet = "--quiet" in sys.argv[1:]
    seconds = compile_in_parallel(quiet=quiet)
    if not quiet:
        print(f"CPU player kernels compiled and cached in {seconds:.0f} s")


if __name__ == "__main__":
    main()
