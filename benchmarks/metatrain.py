"""Meta-training benchmark: the paper's Tables 3 and 4, steps curve, blind mode.

    python benchmarks/metatrain.py train --out benchmarks/out     # trains naive, fomaml, reptile inits
    python benchmarks/metatrain.py table --out benchmarks/out --report docs/metatrain-benchmark.md

``train`` fits every initialisation on the train split with equal compute (naive gets as
many Adam steps as a meta task has inner + adaptation steps in all), plus the
leave-one-curve-out inits for Table 3. ``table`` evaluates them on the test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.colour.tonecurves import curve_names, get_curve  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.data.fetch import fetch_scenes, split_scenes  # noqa: E402
from itmfilter.model.adapt import AdaptOptions, adapt  # noqa: E402
from itmfilter.model.inference import reconstruct_nits  # noqa: E402
from itmfilter.model.initial import load_init, save_init  # noqa: E402
from itmfilter.model.metatrain import MetaOptions, make_pairs, meta_train  # noqa: E402
from itmfilter.model.net import CONFIGS, ITMNet  # noqa: E402
from itmfilter.quality.evaluation import baseline_rows  # noqa: E402
from itmfilter.quality.metrics import evaluate  # noqa: E402

STEPS = (0, 10, 25, 50, 100, 200)
HELD_OUT = ("youtube", "local")


def train_all(out: Path, outer_steps: int, quiet: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scenes = split_scenes(fetch_scenes(quiet=True))["train"]
    base = MetaOptions(outer_steps=outer_steps)
    pool = make_pairs(scenes, base, quiet=quiet)
    per_task = base.inner_steps + base.adapt_steps
    jobs = {
        "naive": replace(base, algorithm="naive", outer_steps=outer_steps * per_task),
        "fomaml": replace(base, algorithm="fomaml"),
        "reptile": replace(base, algorithm="reptile"),
    }
    for name, opts in jobs.items():
        target = out / f"init-{name}.safetensors"
        if target.exists():
            continue
        net, prov = meta_train(pool, opts, checkpoint=out / f"{name}.ckpt", quiet=quiet)
        save_init(net, target, prov)
        print(f"{name}: {prov['seconds']} s", flush=True)
    for curve in HELD_OUT:
        target = out / f"init-reptile-no-{curve}.safetensors"
        if target.exists():
            continue
        opts = replace(base, algorithm="reptile", curves=tuple(c for c in base.curves if c != curve))
        sub = make_pairs(scenes, opts, quiet=quiet)
        net, prov = meta_train(sub, opts, checkpoint=out / f"no-{curve}.ckpt", quiet=quiet)
        save_init(net, target, prov)
        print(f"reptile without {curve}: {prov['seconds']} s", flush=True)


def _test_pairs(curves):
    from stills import quantise_sdr

    scenes = split_scenes(fetch_scenes(quiet=True))["test"]
    for s in scenes:
        hdr = np.ascontiguousarray(s.load(0), dtype=np.float32)
        for c in curves:
            sdr = quantise_sdr(get_curve(c).forward(hdr))
            yield s.name, c, hdr, sdr


def _score(init, hdr, sdr, steps, sampling):
    if steps == 0:
        net = init
    else:
        opts = AdaptOptions(steps=steps, sampling=sampling, resample_at=tuple(int(steps * f) for f in (0.25, 0.505, 0.76)))
        net = adapt(init, sdr, eotf_inverse_st2084(hdr).astype(np.float32), opts).net
    return evaluate(hdr, reconstruct_nits(net, sdr))


def tables(out: Path, report: Path | None, parts=("table4", "steps", "table3", "blind"), table4_steps=(50, 200)) -> None:
    inits = {"none (prior only)": ITMNet(CONFIGS["default"])}
    for name in ("naive", "fomaml", "reptile"):
        path = out / f"init-{name}.safetensors"
        if path.exists():
            inits[name] = load_init(path)[0]
    curves = curve_names()
    pairs = list(_test_pairs(curves))
    lines = [f"# Meta-training benchmark (test split, {len(pairs)} picture x curve pairs)\n",
             f"Command: `python benchmarks/metatrain.py table --out {out}`\n"]
    from stills import machine

    lines.append(f"Machine: {machine()}\n")
    # Table 4: init x sampling at equal steps.
    for steps in (table4_steps if "table4" in parts else ()):
        lines.append(f"\n## Table 4 at {steps} adaptation steps (mean PU21-PSNR dB / dE-ITP)\n")
        lines.append("| initialisation | uniform | spatial-aware OHEM |\n|---|---|---|")
        for name, init in inits.items():
            cells = []
            for sampling in ("uniform", "ohem"):
                s = [_score(init, h, d, steps, sampling) for _, _, h, d in pairs]
                cells.append(f"{statistics.mean(x['pu21_psnr'] for x in s):.2f} / {statistics.mean(x['delta_e_itp'] for x in s):.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    # Steps curve.
    lines.append("\n## PU21-PSNR against adaptation steps (OHEM)\n")
    lines.append("| initialisation | " + " | ".join(str(s) for s in STEPS) + " |\n|---|" + "---|" * len(STEPS))
    curve_by_init = {}
    for name, init in (inits.items() if "steps" in parts else ()):
        vals = [statistics.mean(_score(init, h, d, st, "ohem")["pu21_psnr"] for _, _, h, d in pairs) for st in STEPS]
        curve_by_init[name] = vals
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
        print(lines[-1], flush=True)
    if "none (prior only)" in curve_by_init:
        ref = curve_by_init.get("naive", curve_by_init["none (prior only)"])[-1]
        for name, vals in curve_by_init.items():
            reach = next((st for st, v in zip(STEPS, vals) if v >= ref), None)
            lines.append(f"\n{name}: reaches naive-200-step quality ({ref:.2f} dB) at {reach if reach is not None else '>200'} steps.")
    # Table 3: generalisation to a curve left out of meta-training.
    lines.append("\n## Table 3: init trained without curve X, tested on SDR by X (200 steps, PU21-PSNR)\n")
    lines.append("| curve X | meta init with X | meta init without X | no pre-training |\n|---|---|---|---|")
    for curve in (HELD_OUT if "table3" in parts else ()):
        path = out / f"init-reptile-no-{curve}.safetensors"
        if not path.exists() or "reptile" not in inits:
            continue
        sub = [(h, d) for _, c, h, d in pairs if c == curve]
        row = [statistics.mean(_score(i, h, d, 200, "ohem")["pu21_psnr"] for h, d in sub)
               for i in (inits["reptile"], load_init(path)[0], inits["none (prior only)"])]
        lines.append(f"| {curve} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        print(lines[-1], flush=True)
    # Blind mode.
    lines.append("\n## Blind mode (no metadata): initialisation alone vs no-metadata baselines (PU21-PSNR / dE-ITP)\n")
    lines.append("| method | PU21-PSNR | dE-ITP |\n|---|---|---|")
    blind = {}
    for _, _, h, d in (pairs if "blind" in parts else ()):
        rows = baseline_rows(d, h, gainmap_scales=())
        for r in rows:
            if r.method in ("sdr-bt2408", "inverse-bt2446a"):
                blind.setdefault(r.method, []).append(r.scores)
        for name, init in inits.items():
            blind.setdefault(f"init: {name}", []).append(evaluate(h, reconstruct_nits(init, d)))
    for m, s in blind.items():
        lines.append(f"| {m} | {statistics.mean(x['pu21_psnr'] for x in s):.2f} | {statistics.mean(x['delta_e_itp'] for x in s):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if report:
        report.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("train", "table"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--outer-steps", type=int, default=800)
    ap.add_argument("--report", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--parts", default="table4,steps,table3,blind", help="comma list of table4, steps, table3, blind")
    ap.add_argument("--table4-steps", default="50,200")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    if args.what == "train":
        train_all(args.out, args.outer_steps, args.quiet)
    else:
        tables(args.out, args.report, tuple(args.parts.split(",")), tuple(int(v) for v in args.table4_steps.split(",")))
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
