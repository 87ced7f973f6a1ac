"""``python -m itmfilter.render.precompile`` (run by scripts/setup.sh) compiles every numba
kernel the CPU player and transcoder call, for every argument type they pass, so that no
render compiles at first use."""

import av
import numpy as np
import pytest

pytest.importorskip("numba")


def _dispatchers():
    from numba.core.registry import CPUDispatcher

    from itmfilter.render import fastpath, gridpath

    factories = [fastpath._kernel, fastpath._prior_kernel, fastpath._guided_kernels, fastpath._fit_kernel,
                 fastpath._probe_kernel, fastpath._block_mean_kernel, fastpath._block_argmax_kernel,
                 gridpath._kernels]
    found = {}
    for factory in factories:
        made = factory()
        for i, k in enumerate(made if isinstance(made, tuple) else (made,)):
            if isinstance(k, CPUDispatcher):
                found[f"{factory.__name__}[{i}]"] = k
    return found


def test_after_the_precompile_no_render_compiles_a_kernel():
    from itmfilter.render.frame import hdr10_planes
    from itmfilter.render.ladder import LADDER
    from itmfilter.render.precompile import compile_kernels, nets

    compile_kernels()  # every part, in this process: loads from the cache that setup filled (compiles if cold)
    kernels = _dispatchers()
    assert len(kernels) >= 15
    compiled = {name: len(k.signatures) for name, k in kernels.items()}
    assert all(compiled.values()), compiled  # every kernel called at least once
    # frames of another size and range than the precompile's: a full-range 8-bit one and a
    # 10-bit one, every rung, an MLP network (each gain mode) and grid models with and without
    # a scene residual: no kernel gains a signature
    yy, xx = np.mgrid[0:36, 0:64]
    img = np.stack([xx * 4 % 256, yy * 7 % 256, (xx + yy) * 3 % 256], -1).astype(np.uint8)
    base = av.VideoFrame.from_ndarray(img, format="rgb24")
    for fmt in ("yuvj420p", "yuv420p10le"):
        frame = base.reformat(format=fmt)
        for net, gain in nets("mlp") + nets("grid"):
            for rung in LADDER:
                hdr10_planes(frame, net, rung, "cpu", gain=gain)
    assert {name: len(k.signatures) for name, k in kernels.items()} == compiled
