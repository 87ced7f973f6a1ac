"""Transcoding: SDR + weights -> HDR (EXR/PNG stills, HEVC Main10 HDR10 video, EXR
sequences), one file or many."""
