"""itmfilter: HDR10 carried inside SDR pictures and video as per-picture MLP weights.

Tensor layout used throughout: channel-last ``(..., H, W, 3)`` float32, matching
PyAV's ``gbrpf32le`` output and per-pixel ``nn.Linear`` layers.
"""

__version__ = "0.1.0"
