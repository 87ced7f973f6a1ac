"""Rendering: SDR frame + weights -> HDR10 frame, at full resolution or on a cheaper rung
of the playback ladder, on the CPU (fused numba pass) or on CUDA."""
