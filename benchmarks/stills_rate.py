"""Stills rate-distortion: the format at ``--max-bytes N`` against the best gain map within N
bytes, the polynomial and the MLP as it is today.

    python benchmarks/stills_rate.py run --split test --curves local --budgets 8192 16384 32768 \\
        --json docs/stills-rate.json
    python benchmarks/stills_rate.py report docs/stills-rate.json --out docs/stills-rate.md \\
        --svg docs/stills-rate.svg

``run`` takes each scene's largest picture of the split (bicubic in linear light to
``--size`` when smaller), makes the SDR with each tone curve (8-bit), and per budget runs
:func:`itmfilter.encode.still_rate.choose_payload` (the encoder of ``itmfilter encode
--max-bytes``), decodes the chosen payload through the reader and scores it. The gain map
is the best of a sweep: the gain of :func:`itmfilter.quality.baselines.encode_gainmap`
(log2 of (HDR + k) / (SDR placed per BT.2408 + k)) at scale 1, 1/2, 1/4, 1/8, 1 or 3
channels, JPEG (quality 30-95, 4:4:4) and AVIF (10-100, speed 6, 4:4:4 / 4:0:0), the 8-bit
range over the gain's min/max or its 0.02-99.98 % percentiles, for each the highest quality within the bytes (payload + compact JSON metadata), decoded and scored; the
best PU21-PSNR wins. Rows append to the JSON as they finish (a run can be resumed).
The test split is for reporting only: nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itmfilter.colour.tonecurves import get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.data.fetch import fetch_scenes, split_scenes  # noqa: E402
from itmfilter.encode.still_rate import POLISH_CLIPS, choose_payload, highest_fitting, one_sided_clips  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, adapt  # noqa: E402
from itmfilter.model.inference import reconstruct_nits  # noqa: E402
from itmfilter.model.initial import STILLS_INIT, load_init  # noqa: E402
from itmfilter.model.weightset import GridStill, WeightSet, decode, decode_still, encode  # noqa: E402
from itmfilter.quality.baselines import (  # noqa: E402
    GAINMAP_OFFSET_NITS,
    decode_gainmap,
    gainmap_nbytes,
    sdr_placed_bt2408,
)
from itmfilter.quality.metrics import delta_e_itp, luminance_bt2020, psnr_pu21  # noqa: E402

SCALES = (1, 2, 4, 8)
QUALITY = {"jpeg": (30, 95), "avif": (10, 100), "avif-ssim": (10, 100)}
"""Gain-map coders swept: ``avif-ssim`` is libaom with ``tune=ssim``, which at equal bytes scored
0.1-0.3 dB higher than its default on the video scene residual (benchmarks/scene_residual.py)."""
CLIPS = (0.0, 0.02)  # gain range percentiles swept for the gain map, as the encoder tries for its own


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    return f"{cpu}, {torch.get_num_threads()} torch threads, load average {' '.join(load)} at start"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def pictures(split: str, size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    out = []
    for scene in split_scenes(fetch_scenes(quiet=True))[split]:
        sizes = [np.load(p, mmap_mode="r").shape[0] for p in scene.pictures]
        hdr = np.ascontiguousarray(scene.load(int(np.argmax(sizes))), dtype=np.float32)
        if (hdr.shape[1], hdr.shape[0]) != size:
            planes = [np.asarray(Image.fromarray(np.ascontiguousarray(hdr[..., c]), "F").resize(size, Image.Resampling.BICUBIC))
                      for c in range(3)]
            hdr = np.clip(np.stack(planes, -1), 0, None).astype(np.float32)
        out.append((scene.name, hdr))
    return out


def sdr_of(hdr: np.ndarray, curve: str) -> np.ndarray:
    return (np.round(np.clip(get_curve(curve).forward(hdr), 0, 1) * 255) / 255).astype(np.float32)


class GainmapSweep:
    """The best gain map within a budget, over codec x scale x channels x quality."""

    def __init__(self, sdr: np.ndarray, hdr: np.ndarray):
        self.sdr, self.hdr = sdr, hdr
        placed = sdr_placed_bt2408(sdr).astype(np.float64)
        h = hdr.astype(np.float64)
        k = GAINMAP_OFFSET_NITS
        self.planes, self.smalls = {}, {}
        for ch in (1, 3):
            num, den = (luminance_bt2020(h)[..., None], luminance_bt2020(placed)[..., None]) if ch == 1 else (h, placed)
            gain = np.log2((np.maximum(num, 0) + k) / (np.maximum(den, 0) + k)).astype(np.float32)
            for sc in SCALES:
                sw, sh = max(1, math.ceil(gain.shape[1] / sc)), max(1, math.ceil(gain.shape[0] / sc))
                small = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(gain[..., c]), "F").resize(
                    (sw, sh), Image.Resampling.BOX)) for c in range(ch)], -1)
                self.smalls[(sc, ch)] = small
                for clip in CLIPS:  # the range: min/max, or percentiles (as the encoder's residual)
                    self.planes[(sc, ch, clip)] = self._plane(sc, ch, clip)
        self.codes: dict = {}
        self.scores: dict = {}

    def _plane(self, sc: int, ch: int, clip) -> tuple[np.ndarray, dict]:
        """The 8-bit gain image and its metadata; ``clip`` a percentage for both tails or a
        ``(low, high)`` pair, as the encoder's residual range (``ResidualPlan``)."""
        small, k = self.smalls[(sc, ch)], GAINMAP_OFFSET_NITS
        low, high = clip if isinstance(clip, tuple) else (clip, clip)
        lo, hi = float(np.percentile(small, low)), float(np.percentile(small, 100 - high))
        hi = max(hi, lo + 1e-6)
        q = np.round((small - lo) / (hi - lo) * 255).clip(0, 255).astype(np.uint8)
        params = {"gain_min_log2": lo, "gain_max_log2": hi, "gamma": 1.0, "offset_sdr_nits": float(k),
                  "offset_hdr_nits": float(k), "sdr_white_nits": 203.0, "channels": ch, "scale": sc}
        return q, params

    @staticmethod
    def _code(q: np.ndarray, codec: str, quality: int) -> bytes:
        buf = io.BytesIO()
        img = Image.fromarray(q[..., 0], "L") if q.shape[-1] == 1 else Image.fromarray(q, "RGB")
        if codec == "jpeg":
            img.save(buf, format="JPEG", quality=quality, **({} if q.shape[-1] == 1 else {"subsampling": 0}))
        else:
            extra = {"advanced": {"tune": "ssim"}} if codec == "avif-ssim" else {}
            img.save(buf, format="AVIF", quality=quality, speed=6, subsampling="4:0:0" if q.shape[-1] == 1 else "4:4:4",
                     **extra)
        return buf.getvalue()

    def _decode(self, data: bytes, params: dict) -> np.ndarray:
        img = Image.open(io.BytesIO(data))
        arr = np.asarray(img.convert("L") if params["channels"] == 1 else img.convert("RGB"))
        buf = io.BytesIO()  # lossless re-wrap so decode_gainmap's path (de-quantise, upsample, apply) is reused
        Image.fromarray(arr).save(buf, format="PNG")
        return decode_gainmap(self.sdr, buf.getvalue(), params)

    def best(self, budget: int) -> dict | None:
        """The best over every codec and plane; then, as the encoder polishes its best residual
        (``itmfilter.encode.still_rate.choose_payload``), the best setting again at the encoder's
        further ranges, symmetric and then each tail on its own around the best one."""
        best = self._best(budget, [(c, key) for c in QUALITY for key in self.planes])
        if best is None:
            return None
        codec, sc, ch, _ = best["key"]
        best = max(best, self._best(budget, [(codec, self._add(sc, ch, c)) for c in POLISH_CLIPS]) or best,
                   key=lambda b: b["pu21"])
        pairs = one_sided_clips(best["key"][3])
        best = max(best, self._best(budget, [(codec, self._add(sc, ch, p)) for p in pairs]) or best,
                   key=lambda b: b["pu21"])
        best.pop("key")
        return best

    def _add(self, sc: int, ch: int, clip) -> tuple:
        if (sc, ch, clip) not in self.planes:
            self.planes[(sc, ch, clip)] = self._plane(sc, ch, clip)
        return (sc, ch, clip)

    def _best(self, budget: int, settings: list) -> dict | None:
        best = None
        for codec, (sc, ch, clip) in settings:
            lo, hi = QUALITY[codec]
            q, params = self.planes[(sc, ch, clip)]
            meta = gainmap_nbytes(b"", params)
            cache = self.codes.setdefault((codec, sc, ch, clip), {})

            def code(quality, q=q, codec=codec, cache=cache):
                if quality not in cache:
                    cache[quality] = self._code(q, codec, quality)
                return cache[quality]

            hit = highest_fitting(code, budget - meta, lo, hi)
            if hit is None:
                continue
            key = (codec, sc, ch, clip, hit[0])
            if key not in self.scores:
                nits = self._decode(hit[1], params)
                self.scores[key] = (psnr_pu21(self.hdr, nits), delta_e_itp(self.hdr, nits))
            pu, de = self.scores[key]
            if best is None or pu > best["pu21"]:
                what = f"{codec} 1/{sc} {ch}ch q{hit[0]}"
                what += f" clip {clip[0]:g}/{clip[1]:g}%" if isinstance(clip, tuple) else f" clip {clip:g}%" if clip else ""
                best = {"pu21": pu, "de_itp": de, "bytes": len(hit[1]) + meta, "what": what,
                        "key": (codec, sc, ch, clip)}
        return best


def run(args) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.json)
    doc = json.loads(out.read_text()) if out.exists() else {"machine": machine(), "commit": commit(), "rows": []}
    done = {(r["split"], r["picture"], r["curve"], r["budget"]) for r in doc["rows"]}
    size = tuple(int(v) for v in args.size.split("x"))
    init, _ = load_init(name=STILLS_INIT)
    for name, hdr in pictures(args.split, size):
        if args.pictures and name not in args.pictures:
            continue
        for curve in args.curves:
            todo = [b for b in args.budgets if (args.split, name, curve, b) not in done]
            if not todo:
                continue
            sdr = sdr_of(hdr, curve)
            cache: dict = {}

            def mlp():
                res = adapt(init, sdr, eotf_inverse_st2084(hdr).astype(np.float32), AdaptOptions())
                blob = encode(WeightSet.from_net(res.net), "fp16")
                return blob, reconstruct_nits(decode(blob).to_net(), sdr)

            mlp_bytes = len(encode(WeightSet.from_net(init), "fp16"))
            if "mlp" not in cache:
                t0 = time.process_time()
                cache["mlp"] = mlp()
                mlp_cpu = time.process_time() - t0
            mlp_nits = cache["mlp"][1]
            today = {"pu21": psnr_pu21(hdr, mlp_nits), "de_itp": delta_e_itp(hdr, mlp_nits), "bytes": len(cache["mlp"][0]),
                     "cpu_s": mlp_cpu}
            sweep = GainmapSweep(sdr, hdr)
            for budget in todo:
                t0, c0 = time.perf_counter(), time.process_time()
                choice = choose_payload(sdr, hdr, budget, mlp=mlp, mlp_bytes=mlp_bytes, cache=cache)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                payload = decode_still(choice.best.payload)
                nits = payload.reconstruct_nits(sdr) if isinstance(payload, GridStill) else mlp_nits
                ours = {"pu21": psnr_pu21(hdr, nits), "de_itp": delta_e_itp(hdr, nits), "bytes": len(choice.best.payload),
                        "what": choice.best.name + (f" ({choice.best.note})" if choice.best.note else ""),
                        "wall_s": wall, "cpu_s": cpu}
                assert ours["bytes"] <= budget and abs(ours["pu21"] - choice.best.pu21) < 1e-9, (ours, choice.best.pu21)
                poly = next(c for c in choice.candidates if c.name == "polynomial")
                row = {"split": args.split, "picture": name, "curve": curve, "budget": budget,
                       "size": [hdr.shape[1], hdr.shape[0]], "ours": ours,
                       "candidates": [[c.name, len(c.payload), c.pu21] for c in choice.candidates],
                       "gainmap": sweep.best(budget), "polynomial": {"pu21": poly.pu21, "bytes": len(poly.payload)},
                       "mlp_today": today}
                gm = row["gainmap"]
                print(f"{args.split} {name:<20} {curve:<8} {budget:6d}  ours {ours['pu21']:6.2f} dB {ours['bytes']:6d} B "
                      f"[{ours['what']}] cpu {cpu:5.1f}s  gain map {gm['pu21'] if gm else float('nan'):6.2f} "
                      f"({gm['bytes'] if gm else 0} B {gm['what'] if gm else '-'})  poly {poly.pu21:.2f}  "
                      f"mlp {today['pu21']:.2f}", flush=True)
                doc["rows"].append(row)
                out.write_text(json.dumps(doc, indent=1))


# --- report -----------------------------------------------------------------------------------

COLOURS = {"ours": "#1f77b4", "gainmap": "#d62728", "polynomial": "#2ca02c", "mlp_today": "#9467bd"}
LABELS = {"ours": "itmfilter --max-bytes", "gainmap": "best gain map within the bytes",
          "polynomial": "MMR3 polynomial", "mlp_today": "MLP today (fp16)"}


def _mean(xs):
    return statistics.mean(xs) if xs else float("nan")


def curves(rows):
    """{(split, curve): {budget: [rows]}}"""
    out: dict = {}
    for r in rows:
        out.setdefault((r["split"], r["curve"]), {}).setdefault(r["budget"], []).append(r)
    return out


def svg(groups) -> str:
    panels = list(groups.items())
    pw, ph, m = 420, 300, 55
    width, height = pw * max(1, len(panels)), ph + 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for i, ((split, curve), by_budget) in enumerate(panels):
        x0 = i * pw
        budgets = sorted(by_budget)
        series = {
            "ours": [(b, _mean([r["ours"]["pu21"] for r in by_budget[b]])) for b in budgets],
            "gainmap": [(b, _mean([r["gainmap"]["pu21"] for r in by_budget[b] if r["gainmap"]])) for b in budgets],
            "polynomial": [(_mean([r["polynomial"]["bytes"] for r in by_budget[b]]), _mean([r["polynomial"]["pu21"] for r in by_budget[b]])) for b in budgets[:1]],
            "mlp_today": [(_mean([r["mlp_today"]["bytes"] for r in by_budget[b]]), _mean([r["mlp_today"]["pu21"] for r in by_budget[b]])) for b in budgets[:1]],
        }
        ys = [y for s in series.values() for _, y in s if y == y]
        lo, hi = math.floor(min(ys) - 1), math.ceil(max(ys) + 1)
        xlo, xhi = math.log2(256), math.log2(max(65536, max(budgets)))

        def px(b):
            return x0 + m + (math.log2(b) - xlo) / (xhi - xlo) * (pw - m - 15)

        def py(v):
            return 25 + (hi - v) / (hi - lo) * (ph - 60)

        parts.append(f'<text x="{x0 + m}" y="15" font-weight="bold">{split} split, SDR by {curve} ({len(by_budget[budgets[0]])} pictures, means)</text>')
        parts.append(f'<line x1="{x0 + m}" y1="{py(lo)}" x2="{x0 + pw - 15}" y2="{py(lo)}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + m}" y1="{py(lo)}" x2="{x0 + m}" y2="{py(hi)}" stroke="black"/>')
        for e in range(int(xlo), int(xhi) + 1):
            parts.append(f'<text x="{px(2 ** e)}" y="{py(lo) + 14}" text-anchor="middle">{2 ** e / 1024:g} KB</text>')
        step = max(1, (hi - lo) // 6)
        for v in range(lo, hi + 1, step):
            parts.append(f'<text x="{x0 + m - 5}" y="{py(v) + 4}" text-anchor="end">{v}</text>')
            parts.append(f'<line x1="{x0 + m}" y1="{py(v)}" x2="{x0 + pw - 15}" y2="{py(v)}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + 12}" y="{py((lo + hi) / 2)}" transform="rotate(-90 {x0 + 12} {py((lo + hi) / 2)})" text-anchor="middle">PU21-PSNR (dB)</text>')
        for key, pts in series.items():
            pts = [(b, v) for b, v in pts if v == v]
            if not pts:
                continue
            if len(pts) > 1:
                parts.append(f'<polyline fill="none" stroke="{COLOURS[key]}" stroke-width="2" points="'
                             + " ".join(f"{px(b):.1f},{py(v):.1f}" for b, v in pts) + '"/>')
            for b, v in pts:
                parts.append(f'<circle cx="{px(b):.1f}" cy="{py(v):.1f}" r="3.5" fill="{COLOURS[key]}"/>')
    for j, key in enumerate(COLOURS):
        lx, ly = m + (j % 2) * 190, ph + 32 + (j // 2) * 18
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLOURS[key]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 10}">{LABELS[key]}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def report(args) -> None:
    doc = json.loads(Path(args.json).read_text())
    groups = curves(doc["rows"])
    lines = [f"Machine: {doc['machine']}. Commit: {doc['commit']}.", ""]
    for (split, curve), by_budget in groups.items():
        n = len(next(iter(by_budget.values())))
        lines += [f"### {split} split, SDR by `{curve}` ({n} pictures; means, the per-picture minimum of the margin in brackets)", "",
                  "| budget | ours PU21 (bytes) | best gain map PU21 (bytes) | ours - gain map (min) | ours dE-ITP | gain map dE-ITP "
                  "| polynomial PU21 (bytes) | ours - polynomial (min) | MLP today PU21 (bytes) | encode CPU s (max) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for b in sorted(by_budget):
            rs = by_budget[b]
            gm = [r for r in rs if r["gainmap"]]
            d_gm = [r["ours"]["pu21"] - r["gainmap"]["pu21"] for r in gm]
            d_poly = [r["ours"]["pu21"] - r["polynomial"]["pu21"] for r in rs]
            lines.append(
                f"| {b} | {_mean([r['ours']['pu21'] for r in rs]):.2f} ({_mean([r['ours']['bytes'] for r in rs]):.0f}) "
                f"| {_mean([r['gainmap']['pu21'] for r in gm]):.2f} ({_mean([r['gainmap']['bytes'] for r in gm]):.0f}) "
                f"| {_mean(d_gm):+.2f} ({min(d_gm) if d_gm else float('nan'):+.2f}) "
                f"| {_mean([r['ours']['de_itp'] for r in rs]):.2f} | {_mean([r['gainmap']['de_itp'] for r in gm]):.2f} "
                f"| {_mean([r['polynomial']['pu21'] for r in rs]):.2f} ({_mean([r['polynomial']['bytes'] for r in rs]):.0f}) "
                f"| {_mean(d_poly):+.2f} ({min(d_poly):+.2f}) "
                f"| {_mean([r['mlp_today']['pu21'] for r in rs]):.2f} ({_mean([r['mlp_today']['bytes'] for r in rs]):.0f}) "
                f"| {_mean([r['ours']['cpu_s'] for r in rs]):.1f} ({max(r['ours']['cpu_s'] for r in rs):.1f}) |")
        lines += ["", "Per picture (PU21-PSNR dB; what was chosen; the best gain map's setting):", "",
                  "| picture | budget | ours | chosen | gain map | gain-map setting | ours - gain map |", "|---|---|---|---|---|---|---|"]
        for b in sorted(by_budget):
            for r in by_budget[b]:
                g = r["gainmap"]
                lines.append(f"| {r['picture']} | {b} | {r['ours']['pu21']:.2f} | {r['ours']['what']} | "
                             f"{g['pu21'] if g else float('nan'):.2f} | {g['what'] if g else '-'} | "
                             f"{(r['ours']['pu21'] - g['pu21']) if g else float('nan'):+.2f} |")
        lines.append("")
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    if args.svg:
        Path(args.svg).write_text(svg(groups) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--split", default="test", choices=("test", "val"))
    r.add_argument("--curves", nargs="+", default=["local"])
    r.add_argument("--budgets", nargs="+", type=int, default=[8192, 16384, 32768])
    r.add_argument("--size", default="1024x512")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--json", required=True)
    r.add_argument("--pictures", nargs="+", help="only these pictures of the split (to run it in parallel lanes)")
    p = sub.add_parser("report")
    p.add_argument("json")
    p.add_argument("--out")
    p.add_argument("--svg")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    main()
