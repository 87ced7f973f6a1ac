"""The README's first command: encode -> transcode -> eval on the built-in sample.

Two parts: the paper's setting (one still: SDR PNG with its weights, HDR EXR back, metrics
beside the baselines), then the product's (a short HDR10 video master filmed as a camera
pan across the same picture: ``itmfilter encode`` to SDR H.264 with the weight track,
``itmfilter transcode`` back to HEVC Main10 HDR10, the decoded file scored against the
master beside the per-frame polynomial).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from itmfilter.data import sample_path
from itmfilter.data.testmedia import make_master_from_arrays, pan_view
from itmfilter.encode.stills import encode_still
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.media.stills import read_hdr, read_sdr
from itmfilter.media.video import read_hdr_frames, read_sdr_frames
from itmfilter.model.adapt import AdaptOptions
from itmfilter.model.initial import STILLS_INIT, load_init
from itmfilter.progress import step_bar
from itmfilter.quality import baselines
from itmfilter.quality.evaluation import Row, baseline_rows, format_table
from itmfilter.quality.metrics import delta_e_itp, evaluate, psnr_pu21
from itmfilter.transcode.stills import transcode_still
from itmfilter.transcode.video import TranscodeJob, transcode_one


def run_demo(out_dir: Path, *, steps: int | None = None, quiet: bool = False, echo=print, video_seconds: float = 2.0,
             grid_steps: int | None = None, search: str | None = None) -> list:
    """Encode the shipped sample, reconstruct it, and print its scores beside baselines."""

    out_dir.mkdir(parents=True, exist_ok=True)
    master = sample_path()
    sdr_png, hdr_exr = out_dir / "sample-sdr.png", out_dir / "sample-hdr.exr"
    options = AdaptOptions() if steps is None else AdaptOptions(steps=steps)
    bar, advance = step_bar(options.steps, quiet, "adapting sample")
    try:
        enc = encode_still(master, sdr_png, tm="bt2446a", options=options, progress=advance)
    finally:
        bar.close()
    transcode_still(sdr_png, hdr_exr)
    ref = read_hdr(master).nits
    sdr, _ = read_sdr(sdr_png)
    init_net, provenance = load_init(name=STILLS_INIT)
    rows = baseline_rows(sdr, ref, init_net=init_net, gainmap_budget=enc.weight_bytes)  # the gain map at its best in the MLP's bytes
    rows.append(Row("itmfilter-mlp", enc.weight_bytes, evaluate(ref, read_hdr(hdr_exr).nits)))
    echo(f"master {master.name} ({ref.shape[1]}x{ref.shape[0]}), SDR by bt2446a; init: {provenance.get('kind', 'shipped')}")
    echo(f"adaptation {enc.adapt_seconds:.2f} s; wrote {sdr_png} and {hdr_exr}")
    echo(format_table(rows))
    if video_seconds > 0:
        run_video_demo(out_dir, ref, seconds=video_seconds, quiet=quiet, echo=echo, grid_steps=grid_steps,
                       search=search)
    return rows


VIDEO_SIZE = (320, 180)


def run_video_demo(out_dir: Path, picture, *, seconds: float = 2.0, quiet: bool = False, echo=print,
                   first_steps: int = 200, grid_steps: int | None = None, search: str | None = None) -> dict:
    """Film a pan across ``picture`` (linear BT.2020 cd/m2) as an HDR10 master, encode it
    with the shipped defaults (``grid_steps``: the grid fit's steps instead of the encoder's
    default; ``search``: the capped grid encode's search, ``VideoEncodeOptions.search``),
    transcode it back, and score the HDR10 file."""
    h, w = picture.shape[:2]
    fps, window = 24, 0.6 * h
    n = max(2, int(round(seconds * fps)))
    master, sdr_mp4, hdr_mkv = out_dir / "pan-master.mkv", out_dir / "pan-sdr.mp4", out_dir / "pan-hdr10.mkv"
    for p in (master, sdr_mp4, hdr_mkv):
        p.unlink(missing_ok=True)  # the demo's own outputs from an earlier run
    frames = (pan_view(picture, VIDEO_SIZE, (0.4 * w + 1.5 * i, 0.5 * h), window) for i in range(n))
    make_master_from_arrays(master, frames, fps=fps, codec="hevc", quiet=quiet)
    extra = {k: v for k, v in (("grid_steps", grid_steps), ("search", search)) if v is not None}
    report = encode_video(master, sdr_mp4, options=VideoEncodeOptions(first_steps=first_steps, **extra), quiet=quiet)
    result = transcode_one(TranscodeJob(str(sdr_mp4), str(hdr_mkv), quiet=quiet))
    if result.status != "done":
        raise RuntimeError(result.error)
    ref = dict(read_hdr_frames(master))
    scores = {"itmfilter (decoded HDR10 file)": [], "per-frame MMR3 polynomial": []}
    for (i, sdr), (_, hdr) in zip(read_sdr_frames(sdr_mp4), read_hdr_frames(hdr_mkv)):
        if i % 4:
            continue
        poly = baselines.apply_mmr(baselines.fit_mmr(sdr, ref[i]), sdr)
        scores["itmfilter (decoded HDR10 file)"].append((psnr_pu21(ref[i], hdr), delta_e_itp(ref[i], hdr)))
        scores["per-frame MMR3 polynomial"].append((psnr_pu21(ref[i], poly), delta_e_itp(ref[i], poly)))
    echo("")
    echo(f"video: {n} frames {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} panning across the sample -> {master}")
    echo(f"encode: {sdr_mp4}, weights {report.kbit_per_s:.1f} kbit/s ({report.carriage}), packets {report.packets}")
    echo(f"transcode: {hdr_mkv} (HEVC Main10, PQ, BT.2020, HDR10 metadata), {result.fps:.1f} frames/s")
    echo(f"{'method':<34}{'pu21_psnr':>12}{'delta_e_itp':>14}")
    out = {}
    for name, rows in scores.items():
        pu = statistics.mean(r[0] for r in rows)
        de = statistics.mean(r[1] for r in rows)
        out[name] = {"pu21_psnr": pu, "delta_e_itp": de}
        echo(f"{name:<34}{pu:>12.3f}{de:>14.3f}")
    out["kbit_per_s"] = report.kbit_per_s
    out["packets"] = report.packets
    return out
