"""The grid-track conformance vectors' common check (sidecar/vectors/grid_*_manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from itmfilter.model.grid import PlacedGrid
from itmfilter.track.codec import TrackDecoder
from itmfilter.track.format import read_track_blob

VECTORS = Path(__file__).resolve().parents[1] / "sidecar" / "vectors"


def check_grid_vector(manifest: str, name: str, minor: int):
    """Decode vector ``name`` of ``manifest`` frame by frame: its header's minor version, each
    frame's status, grid cells, placement (exactly) and PQ on the vector's SDR (within 1e-6)
    as the manifest lists them. Returns ``(decoder, packets, placed per frame)``."""
    entry = {e["file"]: e for e in json.loads((VECTORS / manifest).read_text())["vectors"]}[name]
    header, packets = read_track_blob((VECTORS / name).read_bytes())
    assert header.version == (1, minor)
    sdr, expected = np.load(VECTORS / entry["sdr"]), np.load(VECTORS / entry["expected"])
    placements = np.load(VECTORS / entry["placements"])
    dec, placed_all = TrackDecoder(header), []
    for f in range(len(expected)):
        placed, status = dec.params_at(f, packets)
        assert isinstance(placed, PlacedGrid) and status == entry["statuses"][f], (f, status)
        assert [placed.model.config.width, placed.model.config.height] == entry["cells"][f], f
        assert np.array_equal(np.array([*placed.origin, *placed.half]), placements[f]), f
        assert np.abs(placed.predict_pq(sdr) - expected[f]).max() <= 1e-6, f
        placed_all.append(placed)
    return dec, packets, placed_all
