"""One weight set as bytes: the format embedded in SDR pictures and JSON sidecars.

Layout, version 1 (all integers little-endian; specified in ``sidecar/SPEC.md``)::

    offset  size  field
    0       4     magic b"ITMW"
    4       1     format version (1)
    5       1     dtype: 1 = fp16, 2 = fp32
    6       2     config length C (bytes)
    8       C     model config, UTF-8 JSON (ModelConfig.to_json)
    8+C     4     payload length P (bytes)
    12+C    P     parameters, in ITMNet.state_dict() order, each flattened row-major,
                  in the set's dtype, except tensors named ``prior_*`` (the per-picture
                  polynomial prior), always fp32: its cubic terms cancel and fp16 loses
                  too much
    12+C+P  4     CRC-32 (zlib) of every byte before it

The parameter shapes are implied by the config, so a reader rebuilds the network from the
config and fills it in order; a payload of the wrong length is an error.

Version 2 adds a second kind of still payload, the grid model (polynomial + bilateral grid +
small MLP, :mod:`itmfilter.model.grid`) with an optional residual gain layer
(:mod:`itmfilter.model.residual`); byte 5 (the dtype in version 1) is the kind, 3::

    offset  size  field
    0       4     magic b"ITMW"
    4       1     format version (2)
    5       1     kind: 3 = grid model
    6       2     reserved, 0
    8       4     model length L
    12      L     grid model bytes (``pack_grid_model``); L = 0: no model, then the
                  residual layer's base must be the placed SDR (a gain map alone)
    12+L    4     residual length R (0: none)
    16+L    R     residual layer bytes
    16+L+R  4     CRC-32 (zlib) of every byte before it

Writers keep writing MLP weight sets as version 1, so every reader of version 1 still reads
them; :func:`decode_still` reads both versions, :func:`decode` only MLP weight sets.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from itmfilter.model.grid import GridFormatError, GridModel, predict_nits, unpack_grid_model
from itmfilter.model.net import ITMNet, ModelConfig
from itmfilter.model.residual import (
    BASE_SDR_PLACED,
    ResidualFormatError,
    apply_residual,
    describe_residual,
    residual_base,
)

MAGIC = b"ITMW"
VERSION = 1
GRID_VERSION = 2
KIND_GRID = 3
DTYPES = {"fp16": (1, np.float16), "fp32": (2, np.float32)}
_CODE_TO_DTYPE = {code: (name, np_dtype) for name, (code, np_dtype) in DTYPES.items()}


class WeightFormatError(ValueError):
    """Bytes that are not a valid weight set; the message says what is wrong."""


@dataclass
class WeightSet:
    config: ModelConfig
    state: dict[str, torch.Tensor]

    @classmethod
    def from_net(cls, net: ITMNet) -> "WeightSet":
        return cls(net.config, {k: v.detach().cpu().float().clone() for k, v in net.state_dict().items()})

    def to_net(self) -> ITMNet:
        net = ITMNet(self.config)
        net.load_state_dict(self.state)
        return net.eval()


def encode(weights: WeightSet, dtype: str = "fp16") -> bytes:
    """Serialise a weight set (see the module docstring for the layout)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    code, np_dtype = DTYPES[dtype]
    config = weights.config.to_json().encode("utf-8")
    payload = b"".join(
        v.detach().cpu().float().numpy().astype(_tensor_dtype(k, np_dtype)).tobytes() for k, v in weights.state.items()
    )
    head = MAGIC + struct.pack("<BBH", VERSION, code, len(config)) + config
    body = head + struct.pack("<I", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _tensor_dtype(name: str, np_dtype) -> np.dtype:
    """Little-endian storage dtype of one tensor (see the module docstring)."""
    return np.dtype(np.float32 if name.startswith("prior_") else np_dtype).newbyteorder("<")


def decode(data: bytes) -> WeightSet:
    """Parse bytes written by :func:`encode`; raises :class:`WeightFormatError`."""
    if len(data) < 16 or data[:4] != MAGIC:
        raise WeightFormatError("not an itmfilter weight set (bad magic)")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise WeightFormatError("weight set is damaged (CRC-32 mismatch)")
    version, code, clen = struct.unpack("<BBH", data[4:8])
    if version == GRID_VERSION:
        raise WeightFormatError("this is a grid-model still payload (version 2), not an MLP weight set")
    if version != VERSION:
        raise WeightFormatError(
            f"weight format version {version} is not supported (this itmfilter reads version {VERSION}); "
            "upgrade itmfilter"
        )
    if code not in _CODE_TO_DTYPE:
        raise WeightFormatError(f"unknown weight dtype code {code}")
    try:
        config = ModelConfig.from_json(data[8 : 8 + clen].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise WeightFormatError(f"bad model config: {exc}") from None
    (plen,) = struct.unpack("<I", data[8 + clen : 12 + clen])
    payload = data[12 + clen : 12 + clen + plen]
    if len(payload) != plen or 12 + clen + plen + 4 != len(data):
        raise WeightFormatError("weight set is truncated or has trailing bytes")
    _, np_dtype = _CODE_TO_DTYPE[code]
    template = ITMNet(config).state_dict()
    expected = sum(v.numel() * _tensor_dtype(k, np_dtype).itemsize for k, v in template.items())
    if expected != plen:
        raise WeightFormatError(f"payload holds {plen} bytes, the config needs {expected}")
    state, pos = {}, 0
    for name, ref in template.items():
        dt = _tensor_dtype(name, np_dtype)
        size = ref.numel() * dt.itemsize
        values = np.frombuffer(payload[pos : pos + size], dtype=dt).astype(np.float32)
        state[name] = torch.from_numpy(values).reshape(ref.shape)
        pos += size
    return WeightSet(config, state)


@dataclass
class GridStill:
    """A version-2 still payload: a grid model's bytes and an optional residual layer's."""

    model_data: bytes
    residual: bytes | None = None

    def model(self) -> GridModel:
        return unpack_grid_model(self.model_data)

    def reconstruct_nits(self, sdr: np.ndarray) -> np.ndarray:
        """SDR ``(H, W, 3)`` BT.709 R'G'B' [0, 1] -> ``(H, W, 3)`` float32 BT.2020 cd/m2.
        Raises :class:`WeightFormatError` when the bytes cannot be used."""
        try:
            if not self.model_data:  # a gain map alone: its base is the placed SDR
                if not self.residual or residual_base(self.residual) != BASE_SDR_PLACED:
                    raise WeightFormatError("a still payload without a model needs a gain layer over the SDR")
                return apply_residual(sdr, None, self.residual)
            nits = predict_nits(self.model(), sdr)
            return apply_residual(sdr, nits, self.residual) if self.residual else nits
        except (GridFormatError, ResidualFormatError) as exc:
            raise WeightFormatError(str(exc)) from None


def encode_grid_still(model_data: bytes, residual: bytes | None = None) -> bytes:
    """Serialise a version-2 still payload (see the module docstring)."""
    residual = residual or b""
    body = MAGIC + struct.pack("<BBHI", GRID_VERSION, KIND_GRID, 0, len(model_data)) + model_data
    body += struct.pack("<I", len(residual)) + residual
    return body + struct.pack("<I", zlib.crc32(body))


def grid_still_overhead() -> int:
    """Bytes of a version-2 payload beyond its model and residual (20)."""
    return len(encode_grid_still(b""))


def decode_still(data: bytes) -> "WeightSet | GridStill":
    """Any still payload: a version-1 MLP weight set or a version-2 grid still."""
    if len(data) >= 16 and data[:4] == MAGIC and data[4] == GRID_VERSION:
        (crc,) = struct.unpack("<I", data[-4:])
        if zlib.crc32(data[:-4]) != crc:
            raise WeightFormatError("weight set is damaged (CRC-32 mismatch)")
        kind, _, mlen = struct.unpack("<BHI", data[5:12])
        if kind != KIND_GRID:
            raise WeightFormatError(f"unknown still payload kind {kind}; upgrade itmfilter")
        if 12 + mlen + 4 > len(data) - 4:
            raise WeightFormatError("weight set is truncated or has trailing bytes")
        (rlen,) = struct.unpack("<I", data[12 + mlen:16 + mlen])
        if 16 + mlen + rlen + 4 != len(data):
            raise WeightFormatError("weight set is truncated or has trailing bytes")
        return GridStill(bytes(data[12:12 + mlen]), bytes(data[16 + mlen:16 + mlen + rlen]) or None)
    return decode(data)


def describe(data: bytes) -> dict:
    """A JSON-ready summary (for ``itmfilter info``)."""
    if len(data) > 4 and data[4] == GRID_VERSION:
        still = decode_still(data)
        grid = None
        if still.model_data:
            try:
                cfg = still.model().config
            except GridFormatError as exc:
                raise WeightFormatError(str(exc)) from None
            grid = {"width": cfg.width, "height": cfg.height, "depth": cfg.depth, "channels": cfg.channels,
                    "hidden": cfg.hidden, "layers": cfg.layers, "grid_bits": cfg.grid_bits}
        return {
            "bytes": len(data),
            "kind": "grid",
            "grid": grid,
            "model_bytes": len(still.model_data),
            "residual": describe_residual(still.residual) if still.residual else None,
        }
    ws = decode(data)
    return {
        "bytes": len(data),
        "config": json.loads(ws.config.to_json()),
        "dtype": _CODE_TO_DTYPE[data[5]][0],
        "parameters": sum(v.numel() for v in ws.state.values()),
    }
