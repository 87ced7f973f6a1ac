"""One BLAS thread while a frame renders on the CPU.

A frame's CPU paths are numba kernels that use every core (:mod:`itmfilter.render.fastpath`),
with small NumPy matrix products between them (the polynomial prior at a guided rung's
samples, the grid model's layers). NumPy's OpenBLAS runs those on its own pool of threads,
which keep spinning after each product and take the cores from the next numba pass: on the
2-core machine ``guided-eighth`` at 1080p took 48 ms a frame (median; 90th percentile 90 ms)
with them and 24 ms (26 ms) with one BLAS thread, the same codes (``docs/playback-benchmark.md``).
The products are a few hundred kFLOP: one thread loses nothing on them.

The limit is set and restored around each frame through ``threadpoolctl`` (the maintained
way to reach every loaded BLAS, NumPy's and SciPy's, without knowing which is there; ~15 us a
frame with one controller), so a program that embeds the renderer keeps its own BLAS setting
outside the call.
"""

from __future__ import annotations

import contextlib
import threading

_CONTROLLER: list = []
_LOCK = threading.Lock()


def _controller():
    """The process's :class:`threadpoolctl.ThreadpoolController`, made on first use (it finds
    the BLAS libraries loaded then: NumPy's is, since the renderer imports it)."""
    with _LOCK:
        if not _CONTROLLER:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER.append(ThreadpoolController())
        return _CONTROLLER[0]


def one_blas_thread():
    """A context manager: every loaded BLAS at one thread inside it, as it was after."""
    try:
        return _controller().limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001 - a BLAS threadpoolctl cannot drive renders as it is
        return contextlib.nullcontext()
