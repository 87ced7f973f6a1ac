"""itmfilter: HDR10 carried inside SDR pictures and video as per-picture MLP weights.

Tensor layout used throughout: channel-last ``(..., H, W, 3)`` float32, matching
PyAV's ``gbrpf32le`` output and per-pixel ``nn.Linear`` layers.

The stable public entry is the frame-filter API (:mod:`itmfilter.api`)::

    weights = itmfilter.open_weights("sdr.mp4")
    hdr = weights.filter(frame)      # a decoded SDR av.VideoFrame -> tagged HDR10 av.VideoFrame

``import itmfilter`` stays light: the API (and torch with it) is imported on first use of
one of its names.
"""

import os

# MKL's "strict conditional numerical reproducibility": the same matrix-product bits at any
# thread count. Without it MKL splits a product's long inner axis (a weight gradient summed
# over the drawn pixels) between threads on some CPUs (an Intel Xeon here, not an AMD EPYC),
# so an encode's packets changed with ``torch.set_num_threads`` and a one-thread Ray worker
# wrote other bytes than a two-thread local run. MKL reads the variable on its first call,
# which comes after this import; a user's own setting is kept. It costs nothing measurable:
# ``benchmarks/adapt_ab.py --rounds 3`` gave 1.15 against 1.14 ms for a 1024-pixel step and
# a median 2.06 against 2.04 s for a 1080p adaptation, against ``MKL_CBWR=AUTO``.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

__all__ = ["Weights", "open_weights", "__version__"]


def __getattr__(name: str):
    if name in ("Weights", "open_weights"):
        from itmfilter import api

        return getattr(api, name)
    raise AttributeError(f"module 'itmfilter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Weights", "open_weights"})
