"""itmfilter: HDR10 carried inside SDR pictures and video as per-picture MLP weights.

Tensor layout used throughout: channel-last ``(..., H, W, 3)`` float32, matching
PyAV's ``gbrpf32le`` output and per-pixel ``nn.Linear`` layers.

The stable public entry is the frame-filter API (:mod:`itmfilter.api`)::

    weights = itmfilter.open_weights("sdr.mp4")
    hdr = weights.filter(frame)      # a decoded SDR av.VideoFrame -> tagged HDR10 av.VideoFrame

``import itmfilter`` stays light: the API (and torch with it) is imported on first use of
one of its names.
"""

__version__ = "0.1.0"

__all__ = ["Weights", "open_weights", "__version__"]


def __getattr__(name: str):
    if name in ("Weights", "open_weights"):
        from itmfilter import api

        return getattr(api, name)
    raise AttributeError(f"module 'itmfilter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Weights", "open_weights"})
