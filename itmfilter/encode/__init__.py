"""Encoding: an HDR master (and optionally the colourist's SDR grade) -> SDR + weights, for
stills and for video (shot pre-pass, rate budget, adaptation, track, remux)."""
