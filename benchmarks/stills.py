"""Stills benchmark: the per-picture MLP beside the baselines, on real HDR pictures.

    python benchmarks/stills.py --split test --out docs/stills-benchmark.md
    python benchmarks/stills.py --split val --variants     # design choices (tuning: val only)
    python benchmarks/stills.py --timing                    # 1080p adaptation s / reconstruction ms

Pictures: the first picture of every scene of the chosen split (scenes from
``itmfilter.data.fetch``; split by scene, the test split is never used for tuning).
SDR made by every curve of the registry and the spatially varying ``local`` operator.
Baselines on the same pictures: SDR placed per BT.2408, inverse BT.2446a, the
initialisation alone, a per-picture third-order MMR polynomial, gain maps at 1/4 and 1/2
resolution; plus the MLP's fp32 weights to measure the fp16 cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itmfilter.colour.tonecurves import curve_names, get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.data.fetch import fetch_scenes, split_scenes  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, adapt  # noqa: E402
from itmfilter.model.inference import predict_pq, reconstruct_nits  # noqa: E402
from itmfilter.model.initial import STILLS_INIT, load_init  # noqa: E402
from itmfilter.model.net import CONFIGS, ITMNet  # noqa: E402
from itmfilter.model.weightset import WeightSet, decode, encode  # noqa: E402
from itmfilter.quality.evaluation import Row, baseline_rows  # noqa: E402
from itmfilter.quality.metrics import evaluate  # noqa: E402


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    cpu = cpu_model()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}, commit {rev}"


def quantise_sdr(sdr: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(sdr, 0, 1) * 255) / 255).astype(np.float32)


def pictures(split: str, limit: int | None = None):
    scenes = split_scenes(fetch_scenes(quiet=True))[split]
    out = [(s.name, np.ascontiguousarray(s.load(0), dtype=np.float32)) for s in scenes]
    return out[:limit] if limit else out


def mlp_rows(sdr, hdr, init, options: AdaptOptions, label="itmfilter-mlp", fp32_too=True) -> tuple[list[Row], float]:
    target = eotf_inverse_st2084(hdr).astype(np.float32)
    res = adapt(init, sdr, target, options)
    rows = []
    blob16 = encode(WeightSet.from_net(res.net), "fp16")
    rows.append(Row(label, len(blob16), evaluate(hdr, reconstruct_nits(decode(blob16).to_net(), sdr))))
    rows.append(Row(label + "-bf16-recon", len(blob16), evaluate(hdr, reconstruct_nits(decode(blob16).to_net(), sdr, precision="bf16"))))
    if fp32_too:
        blob32 = encode(WeightSet.from_net(res.net), "fp32")
        rows.append(Row(label + "-fp32", len(blob32), evaluate(hdr, reconstruct_nits(decode(blob32).to_net(), sdr))))
    return rows, res.seconds


def run_quality(split: str, curves: list[str], init, options: AdaptOptions, limit=None) -> dict:
    results: dict = {}
    for name, hdr in pictures(split, limit):
        for curve in curves:
            sdr = quantise_sdr(get_curve(curve).forward(hdr))
            rows = baseline_rows(sdr, hdr, init_net=init, gainmap_scales=(4, 2))
            mrows, secs = mlp_rows(sdr, hdr, init, options)
            rows += mrows
            results.setdefault(curve, []).append(
                {"picture": name, "size": list(hdr.shape[:2]), "adapt_s": secs,
                 "rows": {r.method: {"bytes": r.metadata_bytes, **r.scores} for r in rows}}
            )
            mlp = results[curve][-1]["rows"]["itmfilter-mlp"]["pu21_psnr"]
            poly = results[curve][-1]["rows"]["mmr3-poly"]["pu21_psnr"]
            print(f"{split} {name:<20} {curve:<9} mlp {mlp:6.2f} poly {poly:6.2f} ({secs:.1f} s)", flush=True)
    return results


def summarise(results: dict) -> str:
    keys = ("pu21_psnr", "pq_psnr", "delta_e_itp", "pu21_ssim", "bytes")
    lines = []
    for curve, entries in results.items():
        lines.append(f"\n### SDR by `{curve}` ({len(entries)} pictures; means)\n")
        lines.append("| method | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        methods = list(entries[0]["rows"])
        for m in methods:
            vals = []
            for k in keys:
                xs = [e["rows"][m][k] for e in entries]
                vals.append(f"{statistics.mean(xs):.0f}" if k == "bytes" else f"{statistics.mean(xs):.3f}")
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        margin = statistics.mean(e["rows"]["itmfilter-mlp"]["pu21_psnr"] - e["rows"]["mmr3-poly"]["pu21_psnr"] for e in entries)
        fp16 = statistics.mean(e["rows"]["itmfilter-mlp-fp32"]["pu21_psnr"] - e["rows"]["itmfilter-mlp"]["pu21_psnr"] for e in entries)
        secs = statistics.mean(e["adapt_s"] for e in entries)
        bf16 = statistics.mean(e["rows"]["itmfilter-mlp"]["pu21_psnr"] - e["rows"]["itmfilter-mlp-bf16-recon"]["pu21_psnr"] for e in entries)
        lines.append(
            f"\nMLP - polynomial: {margin:+.2f} dB PU21-PSNR; fp16 storage cost vs fp32: {fp16:.3f} dB; "
            f"bf16 reconstruction cost: {bf16:.3f} dB; mean adaptation {secs:.2f} s."
        )
    return "\n".join(lines)


def run_variants(split: str, curves: list[str], limit=None, only: list[str] | None = None) -> None:
    """Design choices measured on the val split (never test)."""
    init, _ = load_init()
    prior_only = {name: ITMNet(cfg) for name, cfg in CONFIGS.items()}
    variants = {
        "default (shipped init)": (init, AdaptOptions()),
        "default config, no pre-training": (prior_only["default"], AdaptOptions()),
        "lr 1e-4 (authors)": (prior_only["default"], AdaptOptions(lr=1e-4)),
        "lr 3e-3": (prior_only["default"], AdaptOptions(lr=3e-3)),
        "uniform sampling": (prior_only["default"], AdaptOptions(sampling="uniform")),
        "hard share 0.5": (prior_only["default"], AdaptOptions(hard_share=0.5)),
        "error map stride 1": (prior_only["default"], AdaptOptions(error_stride=1)),
        "400 steps": (prior_only["default"], AdaptOptions(steps=400, resample_at=(100, 202, 304))),
        "siren w0=30, BT.2408 prior (paper)": (prior_only["paper"], AdaptOptions()),
        "siren w0=30, direct PQ": (prior_only["paper-direct"], AdaptOptions()),
        "fourier, BT.2408 prior": (prior_only["fourier"], AdaptOptions()),
        "siren w0=10, MMR prior": (prior_only["siren-mmr"], AdaptOptions()),
        "shipped init, cosine lr to 1e-4": (init, AdaptOptions(lr_final=1e-4)),
        "shipped init, cosine lr to 0": (init, AdaptOptions(lr_final=0.0)),
        "shipped init, lr 2e-3 cosine to 1e-4": (init, AdaptOptions(lr=2e-3, lr_final=1e-4)),
        "shipped init, lr 3e-3 cosine to 0": (init, AdaptOptions(lr=3e-3, lr_final=0.0)),
        "shipped init, 400 steps": (init, AdaptOptions(steps=400, resample_at=(100, 202, 304))),
        "shipped init, 400 steps of 4096": (init, AdaptOptions(steps=400, batch_size=4096, resample_at=(100, 202, 304))),
        "shipped init, 800 steps of 2048": (init, AdaptOptions(steps=800, batch_size=2048, resample_at=(200, 404, 608))),
        "shipped init, bf16 steps": (init, AdaptOptions(precision="bf16")),
        **{f"shipped init, {n} steps of {b}{' bf16' if p == 'bf16' else ''}{f' lr {lr:g}' if lr != 1e-3 else ''}": (
            init, AdaptOptions(steps=n, batch_size=b, precision=p, lr=lr, resample_at=tuple(round(n * f) for f in (0.25, 0.505, 0.76))))
           for n, b, p, lr in ((600, 2048, "fp32", 1e-3), (1000, 1024, "fp32", 1e-3), (1000, 1024, "fp32", 7e-4),
                               (1200, 1024, "fp32", 1e-3), (1600, 512, "fp32", 1e-3), (2000, 512, "fp32", 7e-4))},
        **{f"shipped init, {n} steps of {b}, last {1 - d:.0%} decayed to {f:g}": (
            init, AdaptOptions(steps=n, batch_size=b, lr_final=f, decay_from=d, resample_at=tuple(round(n * x) for x in (0.25, 0.505, 0.76))))
           for n, b, d, f in ((1600, 512, 0.75, 1e-4), (1200, 1024, 0.75, 1e-4), (600, 2048, 0.75, 1e-4), (1600, 512, 0.5, 0.0),
                              (1000, 1024, 0.75, 1e-4), (800, 1024, 0.75, 1e-4), (1200, 768, 0.75, 1e-4), (1000, 1024, 0.6, 1e-4),
                              (2000, 512, 0.75, 1e-4), (2400, 384, 0.75, 1e-4), (1600, 512, 0.75, 2e-4))},
    }
    variants.update({
        "default, redraw every 200 steps": (init, AdaptOptions(resample_at=tuple(range(200, 1600, 200)))),
        "default, redraw every 100 steps": (init, AdaptOptions(resample_at=tuple(range(100, 1600, 100)))),
        "default, redraw every 200 steps to 1200": (init, AdaptOptions(resample_at=tuple(range(200, 1400, 200)))),
        "default, 15 redraws, error map of ~32k cells": (init, AdaptOptions(redraws=15, error_stride=None)),
        "default, 15 redraws, error map of ~8k cells": (init, AdaptOptions(redraws=15, error_stride=None, error_cells=8192)),
        "default, 31 redraws, error map of ~8k cells": (init, AdaptOptions(redraws=31, error_stride=None, error_cells=8192)),
        "default, error map of ~64k cells": (init, AdaptOptions(error_cells=1 << 16)),
        "default, lr 2e-3": (init, AdaptOptions(lr=2e-3)),
        "default, sample fraction 4%": (init, AdaptOptions(sample_fraction=0.04, min_samples=16384)),
        "default, 31 redraws": (init, AdaptOptions(redraws=31)),
        "now: no pre-training, 6 bands": (prior_only["default"], AdaptOptions()),
        "now: no pre-training, 8 bands": (ITMNet(replace(CONFIGS["default"], fourier_bands=8)), AdaptOptions()),
        "now: no pre-training, 8 bands, coord 48": (ITMNet(replace(CONFIGS["default"], fourier_bands=8, coord_features=48)), AdaptOptions()),
        "stills network (8 bands, 48 coordinate features) with its init": (load_init(name=STILLS_INIT)[0], AdaptOptions()),
        "now: min 32768 drawn": (init, AdaptOptions(min_samples=32768)),
        "now: hard share 0.9": (init, AdaptOptions(hard_share=0.9)),
        "now: 2000 steps, 19 redraws": (init, AdaptOptions(steps=2000, redraws=19)),
        "combo: 4% + 64k cells": (init, AdaptOptions(sample_fraction=0.04, min_samples=16384, error_cells=1 << 16)),
        "combo: 4% + 64k cells + lr 2e-3": (init, AdaptOptions(sample_fraction=0.04, min_samples=16384, error_cells=1 << 16, lr=2e-3)),
        "combo: 4% + lr 2e-3": (init, AdaptOptions(sample_fraction=0.04, min_samples=16384, lr=2e-3)),
        "default, hard share 0.5": (init, AdaptOptions(hard_share=0.5)),
        "default, hard share 0.9": (init, AdaptOptions(hard_share=0.9)),
    })
    if only:
        variants = {k: v for k, v in variants.items() if any(o in k for o in only)}
    data = [(n, h, c, quantise_sdr(get_curve(c).forward(h))) for n, h in pictures(split, limit) for c in curves]
    for label, (net, opts) in variants.items():
        scores, secs, per_curve = [], [], {}
        for _, hdr, curve, sdr in data:
            res = adapt(net, sdr, eotf_inverse_st2084(hdr).astype(np.float32), opts)
            scores.append(evaluate(hdr, reconstruct_nits(res.net, sdr))["pu21_psnr"])
            per_curve.setdefault(curve, []).append(scores[-1])
            secs.append(res.seconds)
        curves_text = "  ".join(f"{c} {statistics.mean(v):.2f}" for c, v in per_curve.items())
        print(f"{label:<20} PU21-PSNR {statistics.mean(scores):6.2f} dB  adapt {statistics.mean(secs):.2f} s  [{curves_text}]", flush=True)


def run_authors(split: str, curves: list[str], limit=None) -> str:
    """The authors' recipe beside ours and the polynomial on the same pictures (nothing is
    tuned here, so the test split is allowed): their network (SIREN w0=30 predicting PQ
    directly), their optimiser settings (Adam lr 1e-4, 200 steps, 2% samples, OHEM resampled
    at 50/101/152), from a random initialisation (their meta-trained one is not published
    with weights for this data); the same recipe at lr 1e-3; our default."""
    from itmfilter.quality import baselines

    init, _ = load_init(name=STILLS_INIT)
    recipes = {
        "authors' recipe (siren w0=30, direct PQ, lr 1e-4)": (ITMNet(CONFIGS["paper-direct"]), AdaptOptions(lr=1e-4)),
        "authors' network, lr 1e-3": (ITMNet(CONFIGS["paper-direct"]), AdaptOptions()),
        "itmfilter default (shipped init)": (init, AdaptOptions()),
    }
    rows = []
    for curve in curves:
        data = [(n, h, quantise_sdr(get_curve(curve).forward(h))) for n, h in pictures(split, limit)]
        poly = [evaluate(h, baselines.apply_mmr(baselines.fit_mmr(s, h), s))["pu21_psnr"] for _, h, s in data]
        rows.append((curve, "per-picture MMR3 polynomial (oracle fit)", statistics.mean(poly), 0.0))
        for label, (net, opts) in recipes.items():
            scores = [evaluate(h, reconstruct_nits(adapt(net, s, eotf_inverse_st2084(h).astype(np.float32), opts).net, s))["pu21_psnr"]
                      for _, h, s in data]
            rows.append((curve, label, statistics.mean(scores), statistics.mean(a - b for a, b in zip(scores, poly))))
            print(rows[-1], flush=True)
    lines = [f"| SDR | method | PU21-PSNR dB (mean of {len(data)}) | margin over the polynomial dB |", "|---|---|---|---|"]
    lines += [f"| {c} | {m} | {v:.2f} | {d:+.2f} |" for c, m, v, d in rows]
    return "\n".join(lines) + "\n"


def run_clipping(split: str, curves: list[str], init, limit=None) -> str:
    """Where the error is: PU21-PSNR of the adapted MLP and of the polynomial with the
    pixels the SDR clipped (max R'G'B' >= 0.99, no information left but position) replaced
    by the master's, and with the other pixels replaced. Analysis only (no tuning)."""
    from itmfilter.quality.baselines import apply_mmr, fit_mmr
    from itmfilter.quality.metrics import psnr_pu21

    lines = ["| picture | curve | clipped % | method | PU21-PSNR | clipped pixels perfect | unclipped pixels perfect |",
             "|---|---|---|---|---|---|---|"]
    for name, hdr in pictures(split, limit):
        for curve in curves:
            sdr = quantise_sdr(get_curve(curve).forward(hdr))
            clip = sdr.max(-1) >= 0.99
            target = eotf_inverse_st2084(hdr).astype(np.float32)
            mlp = reconstruct_nits(adapt(init, sdr, target, AdaptOptions()).net, sdr)
            poly = apply_mmr(fit_mmr(sdr, hdr), sdr).astype(np.float32)  # cd/m2
            for label, rec in (("mlp", mlp), ("mmr3-poly", poly)):
                a, b = rec.copy(), rec.copy()
                a[clip], b[~clip] = hdr[clip], hdr[~clip]
                lines.append(f"| {name} | {curve} | {100 * clip.mean():.1f} | {label} | {psnr_pu21(hdr, rec):.2f} "
                             f"| {psnr_pu21(hdr, a):.2f} | {psnr_pu21(hdr, b):.2f} |")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def run_timing(repeats: int = 3, sizes=((1920, 1080), (3840, 2160))) -> dict:
    """Adaptation seconds and reconstruction ms for 1920x1080 and 3840x2160 pictures."""
    import torch.nn.functional as F

    name, hdr = pictures("test", 1)[0]
    init, _ = load_init(name=STILLS_INIT)
    out = {}
    for w, h in sizes:
        t = torch.from_numpy(np.ascontiguousarray(hdr)).permute(2, 0, 1)[None]
        big = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy().copy()
        sdr = quantise_sdr(get_curve("bt2446a").forward(big))
        target = eotf_inverse_st2084(big).astype(np.float32)
        entry = {}
        res = adapt(init, sdr, target, AdaptOptions())
        entry["adapt_s"] = res.seconds
        if w == 1920:
            # adapt_s is the first (cold) run of the process; the median is over `repeats`
            # further runs (warm: what every frame of a video encode or a batch pays)
            warm = [adapt(init, sdr, target, AdaptOptions()).seconds for _ in range(repeats)]
            entry["adapt_s_median"] = statistics.median(warm)
            entry["adapt_s_warm_runs"] = [round(x, 3) for x in warm]
        # The MLP against a gain map of at most the same bytes (JPEG quality swept).
        from itmfilter.quality import baselines

        blob = encode(WeightSet.from_net(res.net), "fp16")
        entry["mlp_bytes"] = len(blob)
        entry["mlp_pu21"] = evaluate(big, reconstruct_nits(decode(blob).to_net(), sdr))["pu21_psnr"]
        for scale in (4, 2):
            best = None
            for q in (95, 90, 80, 70, 60, 50, 40, 30, 20, 10):
                data, params = baselines.encode_gainmap(sdr, big, scale=scale, quality=q, channels=3)
                nbytes = len(data) + len(json.dumps(params))
                if nbytes <= len(blob):
                    best = (q, nbytes, evaluate(big, baselines.decode_gainmap(sdr, data, params))["pu21_psnr"])
                    break
            entry[f"gainmap_1/{scale}_at_equal_bytes"] = best
        for precision in ("fp32", "bf16"):
            predict_pq(init, sdr[:64, :64], precision=precision)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                predict_pq(init, sdr, precision=precision)
                times.append(time.perf_counter() - t0)
            entry[f"reconstruct_ms_{precision}"] = 1000 * statistics.median(times)
        out[f"{w}x{h}"] = entry
        print(w, h, entry, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--curves", default=",".join(curve_names()))
    ap.add_argument("--limit", type=int, default=None, help="at most this many pictures")
    ap.add_argument("--variants", action="store_true", help="design-choice table (use --split val)")
    ap.add_argument("--only", default=None, help="--variants: only labels containing one of these (comma-separated)")
    ap.add_argument("--authors", action="store_true", help="the authors' recipe beside ours and the polynomial")
    ap.add_argument("--timing", action="store_true", help="1080p/2160p timing only")
    ap.add_argument("--clipping", action="store_true", help="error split between clipped and other pixels")
    ap.add_argument("--timing-sizes", default="1920x1080,3840x2160")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()
    curves = [c for c in args.curves.split(",") if c]
    if args.authors:
        text = run_authors(args.split, curves, args.limit)
        print(text)
        if args.out:
            args.out.write_text(f"# The authors' recipe on the {args.split} split\n\nCommand: `python {' '.join(sys.argv)}`\n\n"
                                f"Machine: {machine()}\n\n{text}")
        return
    if args.variants:
        run_variants(args.split, curves, args.limit, [o for o in (args.only or "").split(",") if o])
        return
    if args.clipping:
        text = run_clipping(args.split, curves, load_init(name=STILLS_INIT)[0], args.limit)
        if args.out:
            args.out.write_text(f"# Where the error is: clipped highlights ({args.split} split)\n\nCommand: `python {' '.join(sys.argv)}`\n\n"
                                f"Machine: {machine()}\n\n{text}\n")
        return
    if args.timing:
        sizes = tuple(tuple(int(v) for v in x.split("x")) for x in args.timing_sizes.split(","))
        timing = run_timing(args.repeats, sizes)
        if args.out:
            args.out.write_text(f"# Stills timing\n\nMachine: {machine()}\n\n```\n{json.dumps(timing, indent=1)}\n```\n")
        return
    init, provenance = load_init(name=STILLS_INIT)
    results = run_quality(args.split, curves, init, AdaptOptions(), args.limit)
    text = summarise(results)
    print(text)
    if args.out:
        cmd = "python " + " ".join(sys.argv)
        args.out.write_text(
            f"# Stills benchmark ({args.split} split)\n\nCommand: `{cmd}`\n\nMachine: {machine()}\n\n"
            f"Initialisation: {json.dumps(provenance.get('kind', provenance))}\n{text}\n"
        )
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
