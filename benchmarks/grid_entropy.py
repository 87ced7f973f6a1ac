"""Would a better entropy coder shrink a grid KEY? Bytes of real grid models, coded as the format
codes them and as a context-adaptive arithmetic coder would.

    python benchmarks/grid_entropy.py --shots 0,1,2 --configs M,M-48x24 --out docs/grid-entropy.jsonl

The clip and shots are ``benchmarks/scene_residual.py``'s (the 1080p benchmark clip, ``--work``).
Each shot's grid model is fitted as the encoder fits it (:class:`scene_residual.ShotFit`), then
its bytes (``sidecar/SPEC.md`` section 11.2: fixed fields, then one zstd frame of the grid codes,
delta-coded along each row, and the int8 MLP) are taken apart:

* ``zstd``: the frame as coded; ``zstd_grid`` and ``zstd_mlp`` each part alone;
* per predictor of a code from its decoded neighbours (``left``, the format's; ``med``, LOCO-I's
  median of left, up and up-left; ``plane``, left + up - up-left; ``avg3``, the mean of left, up
  and the previous luma bin), the residual's order-0 entropy and the ideal code length of an
  adaptive arithmetic coder (frequency counts that adapt as it goes, the bits a range coder
  spends within a fraction of a percent) with no context, with a context of the neighbours'
  gradient (6 classes), and with that and the channel;
* ``reached``: the fraction of grid cells any pixel of any frame of the shot reads (a bilinear
  corner), and ``zstd_unreached_left``: the frame's bytes with every unreached cell's code set to
  its left neighbour's (what the decoder never reads can be anything).

One JSON line per shot and config.

    python benchmarks/grid_entropy.py --track TRACK.mp4 --out docs/grid-entropy-track.jsonl

reads the models a real encode carries instead (format 1.11's compact layout: the grid codes in a
zstd frame of their own): per grid KEY the same columns from its grid codes (``zstd_grid`` as
carried), and per kind-1 refinement (the 2x grid's int8 residual codes) its zstd frame as carried
against the adaptive coder on the codes with no context and with the magnitude of the left and
upper codes (6 classes) as context. One JSON line per KEY and per refinement.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def adaptive_bytes(symbols: np.ndarray, contexts: np.ndarray, alphabet: int, inc: int = 24) -> float:
    """Ideal code length in bytes of ``symbols`` under adaptive frequency counts per context
    (each count starts at 1 and grows by ``inc`` when its symbol is coded; a context's counts
    halve past 2**16, as a range coder's must)."""
    counts = np.ones((int(contexts.max()) + 1, alphabet), np.float64)
    total = counts.sum(1)
    bits = 0.0
    for s, c in zip(symbols.tolist(), contexts.tolist()):
        bits -= math.log2(counts[c, s] / total[c])
        counts[c, s] += inc
        total[c] += inc
        if total[c] > 1 << 16:
            counts[c] = np.maximum(counts[c] // 2, 1)
            total[c] = counts[c].sum()
    return bits / 8


def _before(a: np.ndarray, axis: int, fill: np.ndarray) -> np.ndarray:
    """``a``'s previous element along ``axis``; ``fill``'s where there is none."""
    out = np.roll(a, 1, axis).copy()
    first = [slice(None)] * a.ndim
    first[axis] = 0
    out[tuple(first)] = fill[tuple(first)]
    return out


def predictors(q: np.ndarray, bits: int) -> dict[str, np.ndarray]:
    """Predictions of each code of ``q`` ``(C, D, H, W)`` from codes before it in raster order."""
    top = (1 << bits) - 1
    left = _before(q, 3, np.full_like(q, (top + 1) // 2))
    up = _before(q, 2, left)
    upleft = _before(left, 2, left)
    bin_before = _before(q, 1, left)
    lo, hi = np.minimum(left, up), np.maximum(left, up)
    return {
        "left": left,
        "med": np.where(upleft >= hi, lo, np.where(upleft <= lo, hi, left + up - upleft)),
        "plane": np.clip(left + up - upleft, 0, top),
        "avg3": (left + up + bin_before + 1) // 3,
    }, np.minimum(np.floor(np.log2(np.abs(left - upleft) + np.abs(up - upleft) + np.abs(bin_before - left) + 1)), 5
                  ).astype(np.int64)


def _grid_row(q: np.ndarray, bits: int, channels: int) -> dict:
    """The predictor columns of grid codes ``q`` ``(C, D, H, W)`` of ``bits`` bits."""
    row = {}
    alphabet = 1 << bits
    preds, ctx = predictors(q, bits)
    channel = np.broadcast_to(np.arange(channels)[:, None, None, None], q.shape)
    for name, p in preds.items():
        r = ((q - p) % alphabet).ravel()
        h = np.bincount(r, minlength=alphabet) / r.size
        row[f"{name}_order0"] = round(float(-(h[h > 0] * np.log2(h[h > 0])).sum() * r.size / 8))
        row[f"{name}_adaptive"] = round(adaptive_bytes(r, np.zeros_like(r), alphabet))
        row[f"{name}_context"] = round(adaptive_bytes(r, ctx.ravel(), alphabet))
        row[f"{name}_context_channel"] = round(adaptive_bytes(r, (ctx * channels + channel).ravel(), alphabet))
    return row


def from_track(path: Path, out: Path | None) -> None:
    """The columns for the grid KEYs and kind-1 refinements a real track carries."""
    import struct

    import zstandard
    from scene_residual import emit  # benchmarks/scene_residual.py

    from itmfilter.model.grid import (
        COMPACT_FLAG,
        REFINE_KIND_2X,
        _frames,
        _read_head,
        grid_model_length,
        refined_config,
    )
    from itmfilter.track import codec
    from itmfilter.track.carriage import load_track
    from itmfilter.track.format import decode_packet

    track = load_track(path)
    if track is None:
        raise SystemExit(f"{path}: carries no weight track")
    unzstd = zstandard.ZstdDecompressor()
    streams: dict[tuple[str, int], bytes] = {}
    configs = {}
    for frame in sorted(track.packets):
        p = decode_packet(track.packets[frame])
        if p.kind == "key" and p.coding in codec.GRID_KEY_CODINGS:
            payload = codec.split_ahead_grid_key(p.payload)[1] if p.coding == codec.AHEAD_GRID_KEY_CODING else p.payload
            model = payload[16:]  # after the placement (four binary32)
            end = grid_model_length(model)
            cfg, flags = _read_head(model)
            if not flags & COMPACT_FLAG:
                raise SystemExit(f"{path}: frame {frame}'s grid model is not in the compact layout")
            (start, zlen), (_, mlen) = _frames(model, cfg, flags)[0]
            deltas = np.frombuffer(unzstd.decompress(model[start:start + zlen]), np.uint8)
            q = (np.cumsum(deltas.reshape(-1, cfg.width).astype(np.int64), 1) % 256).reshape(cfg.grid_shape)
            emit({"track": path.name, "frame": frame, "shot": p.shot, "part": "key grid", "grid_shape": list(cfg.grid_shape),
                  "bits": cfg.grid_bits, "zstd_grid": zlen, "zstd_mlp": mlen, **_grid_row(q, cfg.grid_bits, cfg.channels)}, out)
            configs[p.shot] = cfg
            streams[("shot", p.shot)] = model[end:] + streams.get(("ahead", p.shot), b"") + streams.get(("shot", p.shot), b"")
        elif p.kind == "delta" and p.coding in codec.RUN_CODINGS:
            rest = codec.decode_shift_run(p)[1]
            key = ("ahead", p.shot + 1) if p.coding == codec.AHEAD_RUN_DELTA_CODING else ("shot", p.shot)
            streams[key] = streams.get(key, b"") + rest
    for (what, shot), stream in sorted(streams.items()):
        cfg, pos = configs.get(shot), 0
        while what == "shot" and cfg is not None and pos + 4 <= len(stream):
            (n,) = struct.unpack_from("<I", stream, pos)
            record, pos = stream[pos + 4:pos + 4 + n], pos + 4 + n
            if record[:1] != bytes([REFINE_KIND_2X]):
                continue
            fine = refined_config(cfg)
            body = record[1 + 2 * cfg.channels:]
            codes = np.frombuffer(unzstd.decompress(body), np.int8).astype(np.int64).reshape(fine.grid_shape)
            left = np.abs(_before(codes, 3, np.zeros_like(codes)))
            up = np.abs(_before(codes, 2, np.zeros_like(codes)))
            ctx = np.minimum(np.floor(np.log2(left + up + 1)), 5).astype(np.int64).ravel()
            symbols = (codes % 256).ravel()
            emit({"track": path.name, "shot": shot, "part": "refinement", "grid_shape": list(fine.grid_shape),
                  "zstd": len(body), "nonzero": round(float((codes != 0).mean()), 4),
                  "adaptive": round(adaptive_bytes(symbols, np.zeros_like(symbols), 256)),
                  "context": round(adaptive_bytes(symbols, ctx, 256))}, out)
            cfg = fine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", type=Path, default=None, help="read the models of this encoded video instead of fitting")
    ap.add_argument("--shots", default="0,1,2")
    ap.add_argument("--configs", default="M", help="names of itmfilter.encode.gridkeys.GRID_LADDER, comma separated")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate1080")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    args = ap.parse_args()
    if args.track is not None:
        return from_track(args.track, args.out)

    import torch
    import zstandard
    from scene_residual import ShotFit, clip, emit, shot_frames  # benchmarks/scene_residual.py

    from itmfilter.encode.gridkeys import estimate_zoom
    from itmfilter.media.video import read_hdr_frames, read_sdr_frames
    from itmfilter.model.grid import ZSTD_LEVEL, _frames, _luma, _read_head, axis_weights

    torch.set_num_threads(args.threads)

    def zstd(data: bytes) -> int:
        return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))

    def rows_coded(q: np.ndarray) -> bytes:  # the format's delta coding along each row
        p = q.reshape(-1, q.shape[-1]).astype(np.int16)
        return np.concatenate([p[:, :1], np.diff(p, axis=1) % 256], 1).astype(np.uint8).tobytes()

    master, sdr_path = clip(args.work)
    for shot in (int(v) for v in args.shots.split(",")):
        frames, offsets, thumbs = shot_frames(master, sdr_path, shot)
        n = len(frames)
        picks = sorted(set(np.linspace(0, n - 1, 6).round().astype(int).tolist()))
        sdr = {i: x for i, x in read_sdr_frames(sdr_path) if i in set(frames)}
        hdr = {i: x for i, x in read_hdr_frames(master) if i in {frames[k] for k in picks}}
        zoom, offs = estimate_zoom(thumbs, np.asarray(offsets))
        for config in args.configs.split(","):
            fit = ShotFit([(sdr[frames[k]], hdr[frames[k]]) for k in picks], offs, picks, config, zoom)
            data = fit.fit.data
            cfg, flags = _read_head(data)
            if cfg.depth == 0:
                raise SystemExit(f"{config}: a 2D grid; this probe reads bilateral grids")
            ((start, zlen),), _ = _frames(data, cfg, flags)  # the one frame of the layout before 1.11
            raw = zstandard.ZstdDecompressor().decompress(data[start:start + zlen], max_output_size=1 << 26)
            cells = int(np.prod(cfg.grid_shape))
            deltas = np.frombuffer(raw[:cells], np.uint8).reshape(-1, cfg.grid_shape[-1]).astype(np.int64)
            q = (np.cumsum(deltas, 1) % 256).reshape(cfg.grid_shape)
            mlp = raw[cells:]
            row = {"shot": shot, "config": config, "grid_shape": list(cfg.grid_shape), "bits": cfg.grid_bits,
                   "model_bytes": len(data), "fixed_bytes": start, "zstd": zlen, "zstd_grid": zstd(raw[:cells]),
                   "zstd_mlp": zstd(mlp), "mlp_bytes": len(mlp)}
            row.update(_grid_row(q, cfg.grid_bits, cfg.channels))
            _, d, h, w = cfg.grid_shape
            reached = np.zeros((d, h, w), bool)
            for k in range(n):
                s = sdr[frames[k]].reshape(-1, 3)
                xy = fit.xy(k).reshape(-1, 2)
                ix, _ = axis_weights(xy[:, 0], w)
                iy, _ = axis_weights(xy[:, 1], h)
                iz, _ = axis_weights(_luma(s) * np.float32(2) - 1, d)
                for dz in (0, 1):
                    for dy in (0, 1):
                        for dx in (0, 1):
                            reached[iz + dz, iy + dy, ix + dx] = True
            filled = q.copy()
            for x in range(1, w):
                gap = ~reached[:, :, x]
                filled[:, gap, x] = filled[:, gap, x - 1]
            for x in range(w - 2, -1, -1):  # a row's leading unreached cells take the first reached one's
                gap = ~reached[:, :, : x + 1].any(axis=2)
                filled[:, gap, x] = filled[:, gap, x + 1]
            row["reached"] = round(float(reached.mean()), 4)
            row["zstd_unreached_left"] = zstd(rows_coded(filled) + mlp)
            emit(row, args.out)


if __name__ == "__main__":
    main()
