"""Stills encode: HDR picture -> SDR PNG carrying its adapted MLP (the paper's own setting).

``encode_still`` tone-maps (or takes the user's grade), adapts the network to the pair and
writes the SDR PNG with the weight set in a private PNG chunk (``itMf``) and/or a JSON
sidecar (``<sdr>.itm.json``, :mod:`itmfilter.track.stills`).

With ``max_bytes`` the payload is instead the best of several within that many bytes
(:func:`itmfilter.encode.still_rate.choose_payload`: the polynomial, grid models with a
residual gain layer, and the adapted MLP when it fits), scored against the master.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from itmfilter.colour.hdr10 import compute_light_levels
from itmfilter.colour.tonecurves import get_curve
from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.errors import ItmError
from itmfilter.limits import check_picture_size
from itmfilter.media.atomic import atomic_output
from itmfilter.media.stills import read_hdr, read_sdr, write_sdr_png
from itmfilter.model.adapt import AdaptOptions, adapt
from itmfilter.model.inference import reconstruct_nits
from itmfilter.model.initial import STILLS_INIT, load_init
from itmfilter.model.net import resolve_device
from itmfilter.model.weightset import WeightSet, decode, encode
from itmfilter.track.carriage import sidecar_path
from itmfilter.track.stills import (
    CHUNK_NAME,
    INFO_CHUNK_NAME,
    sdr_codes,
    sdr_fingerprint,
    sidecar_document,
)


@dataclass
class StillReport:
    """What a stills command did, for the CLI to print."""

    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adapt_seconds: float = 0.0
    weight_bytes: int = 0
    mode: str = ""


def encode_still(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tm: str = "bt2446a",
    grade: str | os.PathLike | None = None,
    sidecar: str = "embed",
    options=None,
    init_path: str | os.PathLike | None = None,
    device: str = "auto",
    weight_dtype: str = "fp16",
    nits_per_unit: float | None = None,
    anchor: float | None = None,
    progress=None,
    max_bytes: int | None = None,
    stage=None,
) -> StillReport:
    """HDR still -> SDR PNG with its adapted weights (see the module docstring).

    ``max_bytes``: choose the payload by rate (at most that many bytes); ``stage(name)`` is
    then called as each candidate starts, ``progress(step, loss)`` during the MLP's adaptation.
    """

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ItmError(out, f"unsupported SDR output extension {out.suffix!r}", "write the SDR still as .png")
    if sidecar not in ("embed", "json", "both"):
        raise ItmError(None, f"unknown --sidecar {sidecar!r}", "use embed, json or both")
    inputs = [src] + ([grade] if grade else [])
    picture = read_hdr(src, nits_per_unit=nits_per_unit, anchor=anchor)
    check_picture_size(src, picture.nits.shape[1], picture.nits.shape[0])
    nits = picture.nits
    if grade is not None:
        sdr, bits = read_sdr(grade)
        if sdr.shape != nits.shape:
            raise ItmError(
                grade,
                f"grade is {sdr.shape[1]}x{sdr.shape[0]} but the master {src} is {nits.shape[1]}x{nits.shape[0]}",
                "give an SDR grade of the same size as the master",
            )
        mode = "grade"
    else:
        try:
            curve = get_curve(tm)
        except ValueError as exc:
            raise ItmError(None, str(exc)) from None
        bits = 8
        sdr = curve.forward(nits)
        mode = f"tm:{tm}"
    # Adapt to the SDR exactly as it will be stored (quantised), not to the float curve.
    sdr = (sdr_codes(sdr, bits) / float((1 << bits) - 1)).astype(np.float32)
    target = eotf_inverse_st2084(nits).astype(np.float32)
    init, provenance = load_init(init_path, name=STILLS_INIT)
    dev = resolve_device(device)
    if max_bytes is not None:
        from itmfilter.encode.still_rate import choose_payload

        seconds = {}

        def adapted_mlp():
            res = adapt(init, sdr, target, options or AdaptOptions(), device=dev, progress=progress)
            seconds["adapt"] = res.seconds
            data = encode(WeightSet.from_net(res.net), weight_dtype)
            return data, reconstruct_nits(decode(data).to_net(), sdr, device=dev)

        choice = choose_payload(sdr, nits, max_bytes, mlp=adapted_mlp,
                                mlp_bytes=len(encode(WeightSet.from_net(init), weight_dtype)),
                                progress=stage, path=src)
        blob = choice.best.payload
        adapt_seconds = choice.seconds
        provenance = {"kind": f"none ({choice.best.name})"} if choice.best.name != "mlp" else provenance
        rate_notes = [f"{c.name}: {len(c.payload)} B, {c.pu21:.2f} dB PU21-PSNR" + (f" ({c.note})" if c.note else "")
                      for c in choice.candidates]
        mode_suffix = f", rate:{choice.best.name}"
    else:
        result = adapt(init, sdr, target, options or AdaptOptions(), device=dev, progress=progress)
        blob = encode(WeightSet.from_net(result.net), weight_dtype)
        adapt_seconds, rate_notes, mode_suffix = result.seconds, [], ""
    max_cll, max_fall = compute_light_levels([nits])
    extra = {
        "master": {
            "source": os.fspath(src),
            "max_cll": float(max_cll),
            "max_fall": float(max_fall),
            "peak_nits": float(np.nanmax(nits)),
        },
        "init": provenance.get("kind", provenance.get("path", "")),
        "sdr_origin": mode,
    }
    fingerprint = sdr_fingerprint(sdr, bits)
    report = StillReport(adapt_seconds=adapt_seconds, weight_bytes=len(blob), mode=mode + mode_suffix,
                         notes=rate_notes)
    chunks = {CHUNK_NAME: blob} if sidecar in ("embed", "both") else {}
    if chunks:
        # The sidecar document less its weights: master metadata and SDR assumptions.
        info = sidecar_document(b"", fingerprint, extra)
        del info["weights"]
        chunks[INFO_CHUNK_NAME] = json.dumps(info, sort_keys=True).encode("utf-8")
    with atomic_output(out, inputs=inputs) as tmp:
        write_sdr_png(tmp, sdr, bits=bits, chunks=chunks)
        if sidecar in ("json", "both"):
            doc = sidecar_document(blob, fingerprint, extra)
            with atomic_output(sidecar_path(out), inputs=inputs) as side_tmp:
                Path(side_tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            report.outputs.append(os.fspath(sidecar_path(out)))
    report.outputs.insert(0, os.fspath(out))
    return report
