"""The README's first command: encode -> transcode -> eval on the built-in sample."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, *, steps: int = 200, quiet: bool = False, echo=print) -> list:
    """Encode the shipped sample, reconstruct it, and print its scores beside baselines."""
    from itmfilter.adapt import AdaptOptions
    from itmfilter.cli import _step_bar
    from itmfilter.data import sample_path
    from itmfilter.evaluation import Row, baseline_rows, format_table
    from itmfilter.media.stills import read_hdr, read_sdr
    from itmfilter.metrics import evaluate
    from itmfilter.stills import encode_still, transcode_still
    from itmfilter.weights.init import load_init

    out_dir.mkdir(parents=True, exist_ok=True)
    master = sample_path()
    sdr_png, hdr_exr = out_dir / "sample-sdr.png", out_dir / "sample-hdr.exr"
    bar, advance = _step_bar(steps, quiet, "adapting sample")
    try:
        enc = encode_still(master, sdr_png, tm="bt2446a", options=AdaptOptions(steps=steps), progress=advance)
    finally:
        bar.close()
    transcode_still(sdr_png, hdr_exr)
    ref = read_hdr(master).nits
    sdr, _ = read_sdr(sdr_png)
    init_net, provenance = load_init()
    rows = baseline_rows(sdr, ref, init_net=init_net)
    rows.append(Row("itmfilter-mlp", enc.weight_bytes, evaluate(ref, read_hdr(hdr_exr).nits)))
    echo(f"master {master.name} ({ref.shape[1]}x{ref.shape[0]}), SDR by bt2446a; init: {provenance.get('kind', 'shipped')}")
    echo(f"adaptation {enc.adapt_seconds:.2f} s; wrote {sdr_png} and {hdr_exr}")
    echo(format_table(rows))
    return rows
