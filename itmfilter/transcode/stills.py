"""Stills transcode: SDR picture (+ its weights) -> HDR EXR (linear BT.2020) or 16-bit PQ PNG.

Finds the weights (PNG chunk, then sidecar: :func:`itmfilter.track.stills.find_weights`) or
falls back to the initialisation alone (blind mode). A version-2 payload (grid model and
residual layer, :class:`itmfilter.model.weightset.GridStill`) is decoded on the CPU in float32,
whatever ``device`` and ``precision`` say: its decode is specified bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

from itmfilter.encode.stills import StillReport
from itmfilter.errors import ItmError
from itmfilter.limits import check_picture_size
from itmfilter.media.atomic import atomic_output
from itmfilter.media.stills import read_sdr, write_exr, write_png_pq16
from itmfilter.model.inference import reconstruct_nits
from itmfilter.model.initial import load_init
from itmfilter.model.net import resolve_device
from itmfilter.model.weightset import GridStill, WeightFormatError, decode_still
from itmfilter.track.stills import find_weights

HDR_OUTPUTS = (".exr", ".png")


def transcode_still(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    init_path: str | os.PathLike | None = None,
) -> StillReport:
    """SDR still (+ weights) -> HDR still (.exr linear BT.2020, or 16-bit PQ .png)."""

    out = Path(out)
    if out.suffix.lower() not in HDR_OUTPUTS:
        raise ItmError(
            out, f"unsupported HDR output extension {out.suffix!r}", "use .exr (linear BT.2020) or .png (16-bit PQ)"
        )
    sdr, bits = read_sdr(src)
    check_picture_size(src, sdr.shape[1], sdr.shape[0])
    blob, where = find_weights(src, sdr, bits)
    report = StillReport()
    nits = None
    if blob is None:
        net, provenance = load_init(init_path, name="blind")
        report.mode = "blind"
        report.notes.append(
            f"{src}: {where}; blind mode: reconstructed by the initialisation alone "
            f"({provenance.get('kind', 'shipped')}), expect lower fidelity"
        )
    else:
        try:
            payload = decode_still(blob)
            if isinstance(payload, GridStill):
                nits = payload.reconstruct_nits(sdr)
            else:
                net = payload.to_net()
        except WeightFormatError as exc:
            raise ItmError(src, f"{where}: {exc}", "re-encode the picture, or strip the weights for blind mode") from None
        report.mode = "grid" if nits is not None else "weights"
        report.weight_bytes = len(blob)
    if nits is None:
        nits = reconstruct_nits(net, sdr, device=resolve_device(device), precision=precision)
    with atomic_output(out, inputs=[src]) as tmp:
        if out.suffix.lower() == ".exr":
            write_exr(tmp, nits)
        else:
            write_png_pq16(tmp, nits)
    report.outputs.append(os.fspath(out))
    return report
