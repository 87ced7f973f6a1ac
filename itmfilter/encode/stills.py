"""Stills end to end: HDR picture -> SDR PNG carrying its adapted MLP, and back.

The paper's own setting. ``encode_still`` tone-maps (or takes the user's grade), adapts
the network to the pair and writes the SDR PNG with the weight set in a private PNG chunk
(``itMf``) and/or a JSON sidecar (``<sdr>.itm.json``). ``transcode_still`` reads an SDR
picture, finds its weights (chunk, then sidecar) or falls back to the initialisation alone
(blind mode), and writes a linear BT.2020 EXR or a 16-bit PQ PNG.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from itmfilter.errors import ItmError

CHUNK_NAME = "itMf"
INFO_CHUNK_NAME = "itMj"
SIDECAR_SUFFIX = ".itm.json"
SIDECAR_FORMAT = "itmfilter-still"
SIDECAR_VERSION = 1
HDR_OUTPUTS = (".exr", ".png")
SDR_ASSUMPTIONS = {"primaries": "bt709", "transfer": "bt1886", "white_nits": 100.0, "black_nits": 0.0}


@dataclass
class StillReport:
    """What a stills command did, for the CLI to print."""

    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adapt_seconds: float = 0.0
    weight_bytes: int = 0
    mode: str = ""


def sdr_codes(sdr: np.ndarray, bits: int) -> np.ndarray:
    """Float code values [0, 1] -> integer codes at ``bits`` (8 or 16)."""
    top = (1 << bits) - 1
    return np.clip(np.round(np.nan_to_num(sdr) * top), 0, top).astype(np.uint16)


def sdr_fingerprint(sdr: np.ndarray, bits: int) -> str:
    """SHA-256 binding a weight set to the SDR pixels it was made for.

    Hash of ``b"itmfilter-sdr:{H}x{W}x{bits}:"`` followed by the integer code values,
    row-major R, G, B, as little-endian uint16.
    """
    codes = sdr_codes(sdr, bits)
    h, w, _ = codes.shape
    digest = hashlib.sha256(f"itmfilter-sdr:{h}x{w}x{bits}:".encode("ascii"))
    digest.update(codes.astype("<u2").tobytes())
    return digest.hexdigest()


def sidecar_path(sdr_path: str | os.PathLike) -> Path:
    return Path(os.fspath(sdr_path) + SIDECAR_SUFFIX)


def _sidecar_document(blob: bytes, fingerprint: str, extra: dict) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "sdr": dict(SDR_ASSUMPTIONS),
        "binding": {"sdr_sha256": fingerprint},
        "weights": base64.b64encode(blob).decode("ascii"),
        **extra,
    }


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
) -> StillReport:
    """HDR still -> SDR PNG with its adapted weights (see the module docstring)."""
    from itmfilter.model.adapt import AdaptOptions, adapt
    from itmfilter.colour.hdr10 import compute_light_levels
    from itmfilter.colour.transfer import eotf_inverse_st2084
    from itmfilter.media.atomic import atomic_output
    from itmfilter.media.stills import read_hdr, read_sdr, write_sdr_png
    from itmfilter.model.net import resolve_device
    from itmfilter.colour.tonecurves import get_curve
    from itmfilter.model.weightset import WeightSet, encode
    from itmfilter.model.initial import STILLS_INIT, load_init

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ItmError(out, f"unsupported SDR output extension {out.suffix!r}", "write the SDR still as .png")
    if sidecar not in ("embed", "json", "both"):
        raise ItmError(None, f"unknown --sidecar {sidecar!r}", "use embed, json or both")
    inputs = [src] + ([grade] if grade else [])
    picture = read_hdr(src, nits_per_unit=nits_per_unit, anchor=anchor)
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
    result = adapt(init, sdr, target, options or AdaptOptions(), device=dev, progress=progress)
    blob = encode(WeightSet.from_net(result.net), weight_dtype)
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
    report = StillReport(adapt_seconds=result.seconds, weight_bytes=len(blob), mode=mode)
    chunks = {CHUNK_NAME: blob} if sidecar in ("embed", "both") else {}
    if chunks:
        # The sidecar document less its weights: master metadata and SDR assumptions.
        info = _sidecar_document(b"", fingerprint, extra)
        del info["weights"]
        chunks[INFO_CHUNK_NAME] = json.dumps(info, sort_keys=True).encode("utf-8")
    with atomic_output(out, inputs=inputs) as tmp:
        write_sdr_png(tmp, sdr, bits=bits, chunks=chunks)
        if sidecar in ("json", "both"):
            doc = _sidecar_document(blob, fingerprint, extra)
            with atomic_output(sidecar_path(out), inputs=inputs) as side_tmp:
                Path(side_tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            report.outputs.append(os.fspath(sidecar_path(out)))
    report.outputs.insert(0, os.fspath(out))
    return report


def find_weights(sdr_path: str | os.PathLike, sdr: np.ndarray, bits: int) -> tuple[bytes | None, str]:
    """The weight set for an SDR still: its PNG chunk, else its JSON sidecar.

    Returns ``(blob, where)``; ``(None, reason)`` when there is none. A sidecar made for
    other pixels is refused with an :class:`ItmError`.
    """
    from itmfilter.media.stills import read_png_chunks

    chunks = read_png_chunks(sdr_path) if Path(sdr_path).suffix.lower() == ".png" else {}
    if CHUNK_NAME in chunks:
        return chunks[CHUNK_NAME], "embedded PNG chunk"
    side = sidecar_path(sdr_path)
    if side.exists():
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
            if doc.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {SIDECAR_FORMAT!r}")
            if doc.get("version") != SIDECAR_VERSION:
                raise ItmError(
                    side,
                    f"sidecar version {doc.get('version')} is not supported (this itmfilter reads {SIDECAR_VERSION})",
                    "upgrade itmfilter",
                )
            blob = base64.b64decode(doc["weights"], validate=True)
            bound = doc.get("binding", {}).get("sdr_sha256")
        except ItmError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ItmError(side, f"damaged JSON sidecar ({exc})", "re-encode the picture or delete the sidecar") from None
        if bound and bound != sdr_fingerprint(sdr, bits):
            raise ItmError(
                side,
                f"this sidecar was made for other pixels than {sdr_path}",
                "use the sidecar written with this picture, or delete it for blind mode",
            )
        return blob, "JSON sidecar"
    return None, "no weights found (no itMf chunk, no sidecar)"


def transcode_still(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    init_path: str | os.PathLike | None = None,
) -> StillReport:
    """SDR still (+ weights) -> HDR still (.exr linear BT.2020, or 16-bit PQ .png)."""
    from itmfilter.media.atomic import atomic_output
    from itmfilter.media.stills import read_sdr, write_exr, write_png_pq16
    from itmfilter.model.net import resolve_device
    from itmfilter.model.inference import reconstruct_nits
    from itmfilter.model.weightset import WeightFormatError, decode
    from itmfilter.model.initial import load_init

    out = Path(out)
    if out.suffix.lower() not in HDR_OUTPUTS:
        raise ItmError(
            out, f"unsupported HDR output extension {out.suffix!r}", "use .exr (linear BT.2020) or .png (16-bit PQ)"
        )
    sdr, bits = read_sdr(src)
    blob, where = find_weights(src, sdr, bits)
    report = StillReport()
    if blob is None:
        net, provenance = load_init(init_path, name="blind")
        report.mode = "blind"
        report.notes.append(
            f"{src}: {where}; blind mode: reconstructed by the initialisation alone "
            f"({provenance.get('kind', 'shipped')}), expect lower fidelity"
        )
    else:
        try:
            net = decode(blob).to_net()
        except WeightFormatError as exc:
            raise ItmError(src, f"{where}: {exc}", "re-encode the picture, or strip the weights for blind mode") from None
        report.mode = "weights"
        report.weight_bytes = len(blob)
    nits = reconstruct_nits(net, sdr, device=resolve_device(device), precision=precision)
    with atomic_output(out, inputs=[src]) as tmp:
        if out.suffix.lower() == ".exr":
            write_exr(tmp, nits)
        else:
            write_png_pq16(tmp, nits)
    report.outputs.append(os.fspath(out))
    return report
