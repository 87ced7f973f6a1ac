"""One plot of the video benchmark: metadata kbit/s against PU21-PSNR, per SDR operator.

    python benchmarks/plot_video.py docs/video-benchmark.md -o docs/video-rate-quality.svg

Reads the markdown tables written by ``benchmarks/video.py`` (one per SDR operator) and
draws, on a log kbit/s axis, the MLP weight track (every strategy; the rate-capped warm
strategies joined as a curve), the per-frame MMR3 polynomial and the gain-map track
(H.264 CRFs joined as a curve). Plain SVG, no plotting library needed.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

COLOURS = {"mlp": "#1f77b4", "gain": "#d62728", "poly": "#2ca02c", "frame": "#9467bd"}


def parse(md: str) -> dict[str, list[tuple[str, float, float]]]:
    """``{operator: [(method, kbit/s, PU21), ...]}`` from the benchmark's markdown."""
    tables: dict[str, list] = {}
    current = None
    size = ""
    for line in md.splitlines():
        t = re.match(r"# Video benchmark \(([^,]+, [^ ]+ s)", line)
        if t:
            size = f" ({t.group(1)})"
        m = re.match(r"## SDR by `([^`]+)`", line)
        if m:
            current = m.group(1) + size
            tables[current] = []
            continue
        if current and line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                tables[current].append((cells[0], float(cells[1]), float(cells[2])))
            except (ValueError, IndexError):
                continue
    return {k: v for k, v in tables.items() if v}


def kind(method: str) -> str:
    if method.startswith("gain-map"):
        return "gain"
    if "polynomial" in method:
        return "poly"
    if method.startswith("per-frame full"):
        return "frame"
    return "mlp"


def svg(tables: dict, title: str) -> str:
    panel_w, panel_h, pad = 420, 300, 55
    width = panel_w * len(tables) + 20
    height = panel_h + 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="10" y="18" font-size="14">{title}</text>']
    for p, (op, rows) in enumerate(tables.items()):
        x0 = 10 + p * panel_w
        kb = [r[1] for r in rows]
        db = [r[2] for r in rows]
        lo, hi = math.log10(min(kb) / 1.5), math.log10(max(kb) * 1.5)
        ylo, yhi = math.floor(min(db) - 1), math.ceil(max(db) + 1)

        def X(v, x0=x0, lo=lo, hi=hi):
            return x0 + pad + (math.log10(v) - lo) / (hi - lo) * (panel_w - pad - 15)

        def Y(v, ylo=ylo, yhi=yhi):
            return 30 + (yhi - v) / (yhi - ylo) * (panel_h - 40)

        out.append(f'<text x="{x0 + pad}" y="42" font-size="12">SDR by {op}</text>')
        out.append(f'<rect x="{x0 + pad}" y="30" width="{panel_w - pad - 15}" height="{panel_h - 40}" fill="none" stroke="#888"/>')
        for dec in range(math.floor(lo), math.ceil(hi) + 1):
            for m in (1, 2, 5):
                v = m * 10**dec
                if lo <= math.log10(v) <= hi:
                    out.append(f'<line x1="{X(v):.1f}" y1="{panel_h - 10}" x2="{X(v):.1f}" y2="30" stroke="#eee"/>')
                    out.append(f'<text x="{X(v):.1f}" y="{panel_h + 4}" text-anchor="middle">{v:g}</text>')
        step = max(1, round((yhi - ylo) / 6))
        for v in range(ylo, yhi + 1, step):
            out.append(f'<line x1="{x0 + pad}" y1="{Y(v):.1f}" x2="{x0 + panel_w - 15}" y2="{Y(v):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 + pad - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{v}</text>')
        out.append(f'<text x="{x0 + pad + (panel_w - pad) / 2}" y="{panel_h + 20}" text-anchor="middle">metadata kbit/s (log)</text>')
        out.append(f'<text transform="translate({x0 + 14},{panel_h / 2 + 20}) rotate(-90)" text-anchor="middle">PU21-PSNR dB</text>')
        for k in ("mlp", "gain"):
            pts = sorted((r[1], r[2]) for r in rows if kind(r[0]) == k and (k == "gain" or "cap" in r[0]))
            if len(pts) > 1:
                d = " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in pts)
                out.append(f'<polyline points="{d}" fill="none" stroke="{COLOURS[k]}" stroke-width="1.5"/>')
        for name, a, b in rows:
            k = kind(name)
            out.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="4" fill="{COLOURS[k]}"><title>{name}: {a:g} kbit/s, {b:g} dB</title></circle>')
            if "default" in name:
                out.append(f'<text x="{X(a) + 6:.1f}" y="{Y(b) - 6:.1f}" fill="{COLOURS[k]}">default</text>')
    legend = [("mlp", "MLP weight track (warm, rate caps joined)"), ("frame", "MLP, per-frame full adaptation"),
              ("poly", "per-frame MMR3 polynomial"), ("gain", "gain-map track, H.264 CRFs joined")]
    for i, (k, text) in enumerate(legend):
        x = 20 + i * (width - 20) / 4
        out.append(f'<circle cx="{x:.1f}" cy="{height - 14}" r="4" fill="{COLOURS[k]}"/>')
        out.append(f'<text x="{x + 8:.1f}" y="{height - 10}">{text}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", type=Path, nargs="+", help="markdown written by benchmarks/video.py")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--title", default="Weight track vs gain-map track: bitrate against quality")
    args = ap.parse_args()
    tables: dict = {}
    for path in args.inputs:
        tables.update(parse(path.read_text()))
    if not tables:
        raise SystemExit(f"no benchmark tables found in {', '.join(map(str, args.inputs))}")
    args.out.write_text(svg(tables, args.title))
    print(f"wrote {args.out}: {', '.join(f'{k} ({len(v)} points)' for k, v in tables.items())}")


if __name__ == "__main__":
    main()
