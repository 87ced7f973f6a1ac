"""Carriage of a still's weight set: the private PNG chunk (``itMf``) and the JSON sidecar
(``<sdr>.itm.json``), both bound to the SDR pixels they were fitted to (sidecar/SPEC.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from itmfilter.errors import ItmError
from itmfilter.limits import MAX_STILL_SIDECAR_BYTES
from itmfilter.media.stills import read_png_chunks
from itmfilter.track.carriage import check_sidecar_size, sidecar_path

CHUNK_NAME = "itMf"
INFO_CHUNK_NAME = "itMj"
SIDECAR_FORMAT = "itmfilter-still"
SIDECAR_VERSION = 1
SDR_ASSUMPTIONS = {"primaries": "bt709", "transfer": "bt1886", "white_nits": 100.0, "black_nits": 0.0}


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


def sidecar_document(blob: bytes, fingerprint: str, extra: dict) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "sdr": dict(SDR_ASSUMPTIONS),
        "binding": {"sdr_sha256": fingerprint},
        "weights": base64.b64encode(blob).decode("ascii"),
        **extra,
    }


def find_weights(sdr_path: str | os.PathLike, sdr: np.ndarray, bits: int) -> tuple[bytes | None, str]:
    """The weight set for an SDR still: its PNG chunk, else its JSON sidecar.

    Returns ``(blob, where)``; ``(None, reason)`` when there is none. A sidecar made for
    other pixels is refused with an :class:`ItmError`.
    """
    chunks = read_png_chunks(sdr_path) if Path(sdr_path).suffix.lower() == ".png" else {}
    if CHUNK_NAME in chunks:
        return chunks[CHUNK_NAME], "embedded PNG chunk"
    side = sidecar_path(sdr_path)
    if side.exists():
        check_sidecar_size(side, MAX_STILL_SIDECAR_BYTES, "re-encode the still (its sidecar is damaged)")
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
