"""Video rate-distortion benchmark: the weight track under ``--max-kbps`` caps, against
per-frame full adaptation, the per-frame polynomial and the best gain-map track at equal rate.

    python benchmarks/video_rate.py --size 640x360 --seconds 10 --shots 2,4 \\
        --caps 8,16,32,64,128 --out docs/video-rate.md

Masters are made by the test-media maker from test-split scenes (pans with cuts every
``--shots`` seconds, PQ BT.2020 10-bit HEVC). For each shot length and SDR operator (the
global curve ``bt2446a`` and the spatially varying ``local``), the clip is encoded at each
cap with the default encoder (SDR given, so every cap sees the same SDR pixels); every
``--eval-every``-th frame of the reconstruction (decoded SDR + decoded track, as the player
sees it) is scored against the master (PU21-PSNR, dE-ITP). Rates: the whole weight track
(header included) over the clip, and its costliest 1 s window.

References on the same frames: per-frame full adaptation (each scored frame adapted from
the initialisation with the key-frame recipe, unquantised float32: the quality ceiling of
adaptation, at any rate), the per-frame MMR3 polynomial (264 B a frame), and gain-map
tracks: the log2 gain of the master over the SDR placed at 203 cd/m2 (luminance, 1
channel, or per RGB channel, 3) at 1/``scale`` resolution, coded as a video of every frame
(24 fps) with libx264 / libx265 at several CRFs; its rate is the sum of its coded packets.
"The best gain map at equal rate" for a cap is the best of those whose rate is at most the
weight track's measured whole-file rate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from itmfilter.colour.primaries import luminance  # noqa: E402
from itmfilter.colour.transfer import eotf_inverse_st2084  # noqa: E402
from itmfilter.data.testmedia import make_master  # noqa: E402
from itmfilter.encode.rate import DEFAULT_BUFFER_SECONDS  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.media.video import SdrWriter, read_hdr_frames, read_sdr_frames  # noqa: E402
from itmfilter.quality import baselines  # noqa: E402
from itmfilter.quality.metrics import delta_e_itp, psnr_pu21  # noqa: E402

FPS = 24
LO, HI = -2.0, 4.0  # log2 gain range coded by the gain-map track


def _score(master: dict, recon: dict) -> dict:
    keys = sorted(recon)
    return {"pu21_psnr": statistics.mean(psnr_pu21(master[i], recon[i]) for i in keys),
            "delta_e_itp": statistics.mean(delta_e_itp(master[i], recon[i]) for i in keys)}


def gain_frames(master_path: Path, sdr_path: Path, scored: set[int], base: int = 4,
                channels: tuple[int, ...] = (1, 3)) -> tuple[dict, dict, tuple[int, int]]:
    """Every frame's log2 gain of the master over the SDR placed at 203 cd/m2, block-averaged
    at 1/``base`` resolution: ``{1: [(h/base, w/base, 1)...], 3: [(h/base, w/base, 3)...]}``
    (luminance, per channel), the placed SDR of the scored frames, and the full size (h, w).
    Computed once per clip and grade; coarser scales (multiples of ``base``) average these
    blocks further. ``base`` is the finest scale swept: 1/4 holds ~0.4 GB of gains for 10 s
    of 1080p, 1/2 four times that, 1/1 sixteen."""
    gains: dict = {ch: [] for ch in channels}
    placed, size = {}, (0, 0)
    for (_, nits), (i, sdr) in zip(read_hdr_frames(master_path), read_sdr_frames(sdr_path)):
        h, w = nits.shape[:2]
        size = (h, w)
        sdr_base = baselines.sdr_placed_bt2408(sdr)
        if i in scored:
            placed[i] = sdr_base
        for ch in channels:
            if ch == 1:
                g = np.log2((luminance(nits, primaries="bt2020") + 0.5) / (luminance(sdr_base, primaries="bt2020") + 0.5))[..., None]
            else:
                g = np.log2((np.maximum(nits, 0) + 0.5) / (np.maximum(sdr_base, 0) + 0.5))
            gh, gw = -(-h // base), -(-w // base)  # edge blocks padded by replication
            g = np.pad(g, ((0, gh * base - h), (0, gw * base - w), (0, 0)), mode="edge")
            gains[ch].append(g.reshape(gh, base, gw, base, ch).mean(axis=(1, 3)).astype(np.float32))
    return gains, placed, size


def gainmap_track(gains: dict, placed: dict, size: tuple[int, int], scale: int, channels: int,
                  codec: str, crf: int, work: Path, base: int = 4, tune: str = "none") -> tuple[float, dict]:
    """Code every frame's log2 gain at 1/``scale`` (from :func:`gain_frames` at 1/``base``) as
    an 8-bit 4:2:0 video at 24 fps, with the coder's ``tune`` (``none``: its default, which for
    x264 and x265 spends bits on psycho-visual detail that PSNR does not reward; ``psnr``,
    ``ssim``); (kbit/s of its coded packets, reconstructions of the scored frames)."""
    import av
    import torch
    import torch.nn.functional as F

    h, w = size
    path = work / f"gain-{scale}-{channels}ch-{codec}-crf{crf}-{tune}.mp4"
    f = scale // base
    frames = gains[channels]
    qh, qw = frames[0].shape[:2]
    gh, gw = -(-qh // (2 * f)) * 2, -(-qw // (2 * f)) * 2  # ceil, even: the edge blocks are padded
    with SdrWriter(path, gw, gh, FPS, codec=codec, crf=crf, preset="medium",
                   codec_options=None if tune == "none" else {"tune": tune}) as writer:
        for g in frames:
            g = np.pad(g, ((0, gh * f - qh), (0, gw * f - qw), (0, 0)), mode="edge")
            small = g.reshape(gh, f, gw, f, channels).mean(axis=(1, 3))
            v = np.clip((small - LO) / (HI - LO), 0, 1)
            writer.write(np.repeat(v, 3, axis=-1) if channels == 1 else v)
    with av.open(str(path)) as c:
        sizes = [p.size for p in c.demux(c.streams.video[0]) if p.size]  # decode order: as a stream delivers them
    nbytes = sum(sizes)
    recon = {}
    for i, frame in read_sdr_frames(path):
        if i not in placed:
            continue
        g = frame * (HI - LO) + LO
        g = g[..., :1] if channels == 1 else g
        t = torch.from_numpy(np.ascontiguousarray(g.transpose(2, 0, 1)))[None]
        # the map's pixel covers scale x scale picture pixels from the top left; the padded edge is cropped
        up = F.interpolate(t, size=(gh * scale, gw * scale), mode="bilinear", align_corners=False)[0].numpy()
        up = up.transpose(1, 2, 0)[:h, :w]
        recon[i] = placed[i] * 2.0 ** up
    path.unlink()
    return 8 * nbytes / 1000 / (len(frames) / FPS), recon, worst_window_kbps(sizes)


def worst_window_kbps(sizes: list[int], fps: int = FPS) -> float:
    """kbit/s of the costliest ``fps`` consecutive packets (one frame each, in decode order): a
    gain-map track's worst 1 s window, the figure the weight track's report gives for its own
    (a CRF-coded track has no buffer bound: its keys at the cuts set this)."""
    if not sizes:
        return 0.0
    n = min(fps, len(sizes))
    sums = np.convolve(np.asarray(sizes, np.float64), np.ones(n), mode="valid")
    return float(8 * sums.max() / 1000 / (n / fps))


def full_adaptation(sdr_frames: dict, master: dict, device) -> dict:
    """Each scored frame adapted from the initialisation (the encoder's key-frame recipe),
    reconstructed with float32 weights."""
    from dataclasses import replace

    from itmfilter.model.adapt import RECIPE_200x8192, adapt
    from itmfilter.model.inference import reconstruct_nits
    from itmfilter.model.initial import load_init

    init, _ = load_init()
    opts = replace(RECIPE_200x8192, steps=VideoEncodeOptions.first_steps)
    out = {}
    for i in sorted(sdr_frames):
        net = adapt(init, sdr_frames[i], eotf_inverse_st2084(master[i]).astype(np.float32), opts, device=device).net
        out[i] = reconstruct_nits(net, sdr_frames[i], device=device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shots", default="2,4", help="shot lengths in seconds, comma separated")
    ap.add_argument("--caps", default="8,16,32,64,128", help="--max-kbps values")
    ap.add_argument("--curves", default="bt2446a,local")
    ap.add_argument("--buffer-seconds", type=float, default=DEFAULT_BUFFER_SECONDS)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--gain-scales", default="4,8,16",
                    help="1/scale resolutions, multiples of the smallest (1 and 2 hold 16x and 4x the memory of 4)")
    ap.add_argument("--gain-crfs", default="20,22,25,27,30,33,35,37,40,45,51",
                    help="steps of 2-3 near the front: steps of 10 left 20-60 kbit/s at 1080p without a gain-map track")
    ap.add_argument("--gain-codecs", default="libx264,libx265")
    ap.add_argument("--gain-channels", default="1,3")
    ap.add_argument("--gain-tunes", default="none",
                    help="the gain map coder's tune, comma separated: none (its default), psnr, ssim")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "rate")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full-every", type=int, default=8,
                    help="per-frame full adaptation on every n-th frame (a multiple of --eval-every; it is slow)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--merge", type=Path, nargs="*", default=None,
                    help="write --out from these result .json files (runs split by curve, shot length or cap; "
                         "a later file's row for a cap replaces an earlier one's) and exit")
    ap.add_argument("--model", default="mlp", help="encode --model: mlp (default) or grid")
    ap.add_argument("--scene-pieces", action="store_true",
                    help="grid track: a shot's scene residual may come in two windowed pieces (format 1.9)")
    ap.add_argument("--no-look-ahead", action="store_true",
                    help="with --model grid: no shot's tail carries the next shot's stream (format 1.7)")
    ap.add_argument("--no-grid-refine", action="store_true",
                    help="with --model grid: the whole grid model in each KEY (format 1.4), no progressive shots")
    ap.add_argument("--skip-refs", action="store_true",
                    help="encode and score the caps only (no full adaptation, polynomial or gain-map sweep)")
    ap.add_argument("--grid-steps", type=int, default=VideoEncodeOptions.grid_steps,
                    help="with --model grid: the KEY fit's Adam steps (default: the encoder's)")
    ap.add_argument("--search", default=VideoEncodeOptions.search,
                    help="with --model grid: the encoder's search, thorough (the default) or fast")
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="the scenes the masters are made from: test (reported) or val (for choosing settings)")
    ap.add_argument("--subject", action="store_true",
                    help="each shot also films a subject moving on its own across the frame "
                         "(itmfilter.data.testmedia.subject_shots): motion a static scene cannot explain")
    ap.add_argument("--note", default="", help="a line added under the machine line (e.g. how the runs were split)")
    args = ap.parse_args()
    if args.merge:
        from stills import machine

        results: dict = {}
        for path in args.merge:  # .json from --out, or a run's log (the printed rows)
            for key, rows in _load_results(path).items():
                into = results.setdefault(key, {"mlp": [], "gain": [], "refs": {}})
                into["mlp"] += rows["mlp"]
                into["gain"] += rows["gain"]
                into["refs"].update(rows["refs"])
                if rows.get("full_frames"):
                    into["full_frames"] = rows["full_frames"]
        for rows in results.values():
            # runs split over caps read in cap order; a later file's row for a cap replaces an
            # earlier one (a re-run of that cap with a newer encoder)
            rows["mlp"] = sorted({r["cap"]: r for r in rows["mlp"]}.values(), key=lambda r: r["cap"])
            _compare(rows)
        head = [f"# Video rate-distortion ({args.size}, {args.seconds:g} s at {FPS} fps, test-split scenes)\n",
                f"Command: `python {shlex.join(sys.argv)}`\n", f"Machine: {machine()}\n"] + ([args.note + "\n"] if args.note else [])
        args.out.write_text("\n".join(head + _tables(results)) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        _plot(results, args.out.with_suffix(".svg"), args.size)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import video as video_bench  # benchmarks/video.py: the SDR pass and the player-side reconstruction
    from stills import machine

    from itmfilter.model.net import resolve_device

    device = resolve_device(args.device)
    video_bench.DEVICE = device
    w, h = (int(v) for v in args.size.split("x"))
    caps = [float(c) for c in args.caps.split(",") if c]  # none: the references alone
    args.work.mkdir(parents=True, exist_ok=True)
    lines = [f"# Video rate-distortion ({w}x{h}, {args.seconds:g} s at {FPS} fps, {args.split}-split scenes"
             f"{', a moving subject in each shot' if args.subject else ''})\n",
             f"Command: `python {shlex.join(sys.argv)}`\n", f"Machine: {machine()}\n",
             f"Scored on every {args.eval_every}th frame. Track kbit/s: whole weight track (header included) over the "
             f"clip; worst 1 s: its costliest window of {FPS} frames. Buffer {args.buffer_seconds:g} s. "
             f"\"vs full adaptation\": the track's PU21-PSNR minus per-frame full adaptation's, both on every "
             f"{args.full_every}th frame.\n"]
    results: dict = {}
    for shot_s in (float(s) for s in args.shots.split(",")):
        tag = ("" if args.split == "test" else f"-{args.split}") + ("-subject" if args.subject else "")
        master = args.work / f"master-{w}x{h}-{args.seconds:g}s-shot{shot_s:g}{tag}.mkv"
        if not master.exists():
            make_master(master, seconds=args.seconds, fps=FPS, size=(w, h), codec="hevc", shot_seconds=shot_s,
                        split=args.split, quiet=True, subject=args.subject)
        master_frames = {i: n for i, n in read_hdr_frames(master) if i % args.eval_every == 0}
        for curve in args.curves.split(","):
            key = f"{shot_s:g}s shots, {curve}"
            print(f"== {key}", flush=True)
            rows = results[key] = {"mlp": [], "gain": [], "refs": {}}
            sdr_plain = args.work / f"sdr-{curve}-{master.stem}.mp4"
            video_bench.make_sdr(master, sdr_plain, curve)
            sdr_frames = {i: s for i, s in read_sdr_frames(sdr_plain) if i in master_frames}
            for cap in caps:
                out = args.work / f"track-{curve}-{master.stem}-cap{cap:g}.mp4"
                out.unlink(missing_ok=True)
                # and what an interrupted run left beside it: the encoder would resume from it,
                # whatever code wrote it (a benchmark measures this commit's encoder alone)
                shutil.rmtree(out.parent / f".{out.name}.itm-work", ignore_errors=True)
                t0 = time.perf_counter()
                opts = VideoEncodeOptions(tm=curve, max_kbps=cap, buffer_seconds=args.buffer_seconds, model=args.model,
                                          grid_refine=not args.no_grid_refine, look_ahead=not args.no_look_ahead,
                                          scene_pieces=args.scene_pieces, grid_steps=args.grid_steps,
                                          search=args.search)
                report = encode_video(master, out, grade=sdr_plain, options=opts, device=str(device), quiet=True)
                secs = time.perf_counter() - t0
                recon = {i: nits for i, _, nits in video_bench.reconstruct_clip(out, args.eval_every)}
                s = _score(master_frames, recon)
                per_frame = {i: psnr_pu21(master_frames[i], recon[i]) for i in recon}
                row = {"cap": cap, "kbit_s": report.kbit_per_s, "worst_1s_kbit_s": report.worst_window_kbps, **s,
                       "per_frame": per_frame,
                       "packets": report.packets, "keys": report.keys, "notes": report.notes, "encode_s": secs,
                       "search": args.search}
                rows["mlp"].append(row)
                print(row, flush=True)
            if args.skip_refs:
                continue
            t0 = time.perf_counter()
            if args.full_every:  # 0: skip (e.g. a second run extending the gain-map sweep)
                sub = {i: sdr_frames[i] for i in sdr_frames if i % args.full_every == 0}
                full = full_adaptation(sub, master_frames, device)
                s = _score(master_frames, full)
                rows["refs"]["per-frame full adaptation (float32, any rate)"] = dict(s, kbit_s=None)
                rows["full_frames"] = sorted(sub)
                print("full", s, time.perf_counter() - t0, flush=True)
                print("full_frames", sorted(sub), flush=True)
            poly = {i: baselines.apply_mmr(baselines.fit_mmr(sdr_frames[i], master_frames[i]), sdr_frames[i])
                    for i in sdr_frames}
            rows["refs"]["per-frame MMR3 polynomial"] = dict(_score(master_frames, poly), kbit_s=8 * 264 * FPS / 1000)
            print("poly", _score(master_frames, poly), flush=True)
            del poly  # a picture per scored frame: at 1080p on every 2nd frame 3 GB, not needed again
            scales = [int(v) for v in args.gain_scales.split(",")]
            chans = tuple(int(v) for v in args.gain_channels.split(","))
            base = min(scales)
            if any(s % base for s in scales):
                raise SystemExit(f"--gain-scales {args.gain_scales}: each must be a multiple of the smallest")
            gains, placed, full_size = gain_frames(master, sdr_plain, set(master_frames), base=base, channels=chans)
            for codec in args.gain_codecs.split(","):
                for scale in scales:
                    for ch in chans:
                        for crf, tune in itertools.product((int(v) for v in args.gain_crfs.split(",")),
                                                           args.gain_tunes.split(",")):
                            recon = None  # the last track's pictures go before the next one's are made
                            kbps, recon, worst = gainmap_track(gains, placed, full_size, scale, ch, codec, crf,
                                                               args.work, base=base, tune=tune)
                            g = {"codec": codec, "scale": scale, "channels": ch, "crf": crf, "kbit_s": kbps,
                                 "worst_1s_kbit_s": worst,
                                 **({"tune": tune} if tune != "none" else {}), **_score(master_frames, recon)}
                            rows["gain"].append(g)
                            print(g, flush=True)
            _compare(rows)
            if args.out:  # partial results survive an interrupted run
                args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    lines += _tables(results)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        _plot(results, args.out.with_suffix(".svg"), f"{w}x{h}")


def _compare(rows: dict) -> None:
    """Per capped track: the best gain map at or below its rate, and its PU21-PSNR on the
    frames per-frame full adaptation was scored on."""
    sub = rows.get("full_frames")
    for row in rows["mlp"]:
        row["best_gain"] = best_within(rows["gain"], row["kbit_s"])
        if sub:
            per_frame = {int(k): v for k, v in row["per_frame"].items()}
            row["pu21_psnr_full_subset"] = statistics.mean(per_frame[i] for i in sub)


def front_at(gains: list[dict], kbps: float, x: str = "kbit_s", y: str = "pu21_psnr") -> float | None:
    """The gain-map front's PU21-PSNR at ``kbps``, interpolated in log rate between the two
    front points around it (None outside the front): a margin that a track spending a little
    more or less than a front point does not swing (the best map at or below a rate jumps at
    each point). ``x`` and ``y``: the rows' keys of the rate and the score."""
    import math

    front = _front(gains, x, y)
    for a, b in zip(front, front[1:]):
        if a[x] <= kbps <= b[x]:
            t = math.log(kbps / a[x]) / math.log(b[x] / a[x]) if b[x] > a[x] else 1.0
            return a[y] + t * (b[y] - a[y])
    return None


def _load_results(path: Path) -> dict:
    """Results from an --out .json, or parsed from a run's log (rows are printed as they come)."""
    import ast

    if path.suffix == ".json":
        return json.loads(path.read_text())
    results: dict = {}
    rows = None
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            rows = results.setdefault(line[3:].strip(), {"mlp": [], "gain": [], "refs": {}})
        elif line.startswith("{'cap'"):
            rows["mlp"].append(ast.literal_eval(line))
        elif line.startswith("{'codec'"):
            rows["gain"].append(ast.literal_eval(line))
        elif line.startswith("full "):
            body = line[5:]
            score = ast.literal_eval(body[: body.rindex("}") + 1])
            rows["refs"]["per-frame full adaptation (float32, any rate)"] = dict(score, kbit_s=None)
        elif line.startswith("poly "):
            rows["refs"]["per-frame MMR3 polynomial"] = dict(ast.literal_eval(line[5:]), kbit_s=8 * 264 * FPS / 1000)
        elif line.startswith("full_frames "):
            rows["full_frames"] = ast.literal_eval(line[12:])
    return results


def _gain_label(g: dict | None) -> str:
    if g is None:
        return "none fits"
    tune = f" tune {g['tune']}" if g.get("tune") else ""
    return (f"{g['pu21_psnr']:.2f} dB at {g['kbit_s']:.1f} kbit/s (1/{g['scale']}, {g['channels']} ch, "
            f"{g['codec']} crf {g['crf']}{tune})")


def _tables(results: dict) -> list[str]:
    lines = []
    for key, rows in results.items():
        full = rows["refs"].get("per-frame full adaptation (float32, any rate)", {}).get("pu21_psnr")
        full = full if all("pu21_psnr_full_subset" in r for r in rows["mlp"]) else None
        lines.append(f"\n## {key}\n")
        lines.append("| cap kbit/s | track kbit/s | worst 1 s kbit/s | PU21-PSNR | dE-ITP | vs full adaptation | best gain map at <= this rate | track - gain map | track - gain-map front at this rate | best gain map within the cap | track - it | keys | packets |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows["mlp"]:
            g = r.get("best_gain")
            diff = f"{r['pu21_psnr'] - g['pu21_psnr']:+.2f} dB" if g else ""
            vs = f"{r['pu21_psnr_full_subset'] - full:+.2f} dB" if full is not None else ""
            at = front_at(rows["gain"], r["kbit_s"])
            interp = f"{r['pu21_psnr'] - at:+.2f} dB" if at is not None else ""
            # what a user who asked for the cap could have had as a gain map instead: the best
            # one whose whole-file rate is within the cap (the track's unspent rate counts against it)
            capped = best_within(rows["gain"], r["cap"])
            vs_cap = f"{r['pu21_psnr'] - capped['pu21_psnr']:+.2f} dB" if capped else ""
            lines.append(f"| {r['cap']:g} | {r['kbit_s']:.2f} | {r['worst_1s_kbit_s']:.2f} | {r['pu21_psnr']:.2f} | "
                         f"{r['delta_e_itp']:.2f} | {vs} | {_gain_label(g)} | {diff} | {interp} | {_gain_label(capped)} | "
                         f"{vs_cap} | {r['keys']} | {r['packets']} |")
        for name, ref in rows["refs"].items():
            rate = "any" if ref["kbit_s"] is None else f"{ref['kbit_s']:.1f}"
            lines.append(f"| {name} | {rate} | | {ref['pu21_psnr']:.2f} | {ref['delta_e_itp']:.2f} | | | | | | | | |")
        front = _front(rows["gain"])
        lines.append("\nGain-map tracks on the rate-quality front (each better than every cheaper one):\n")
        lines.append("| kbit/s | worst 1 s kbit/s | PU21-PSNR | dE-ITP | scale | channels | codec | CRF | tune |\n"
                     "|---|---|---|---|---|---|---|---|---|")
        for g in front:
            worst = f"{g['worst_1s_kbit_s']:.1f}" if "worst_1s_kbit_s" in g else ""
            lines.append(f"| {g['kbit_s']:.1f} | {worst} | {g['pu21_psnr']:.2f} | {g['delta_e_itp']:.2f} | "
                         f"1/{g['scale']} | {g['channels']} | {g['codec']} | {g['crf']} | {g.get('tune') or 'none'} |")
    return lines


def best_within(gains: list[dict], kbps: float) -> dict | None:
    """The best-scoring gain-map track whose whole-file rate is at or below ``kbps`` (None if none is)."""
    fits = [g for g in gains if g["kbit_s"] <= kbps]
    return max(fits, key=lambda g: g["pu21_psnr"]) if fits else None


def _front(gains: list[dict], x: str = "kbit_s", y: str = "pu21_psnr") -> list[dict]:
    best, front = -1e9, []
    for g in sorted(gains, key=lambda r: r[x]):
        if g[y] > best:
            best = g[y]
            front.append(g)
    return front


def _plot(results: dict, path: Path, size: str) -> None:
    """An SVG of PU21-PSNR against kbit/s (log), one panel per clip and grade: the capped
    track, every gain-map track (grey) and their front, the polynomial (dotted) and per-frame
    full adaptation (dashed). Plain SVG, no plotting library."""
    import math

    pw, ph, pad = 330, 260, 45
    keys = list(results)
    legend = [("#14c", "weight track at caps"), ("#e80", "gain-map front"), ("#bbb", "gain-map tracks"),
              ("#c22", "MMR3 polynomial, 50.7 kbit/s"), ("#2a2", "per-frame full adaptation")]
    per_row = max(1, min(len(legend), (pw * len(keys) - 20) // 170))  # ~170 px an entry: no label overlaps the next
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{pw * len(keys)}" '
           f'height="{ph + 44 + 16 * -(-len(legend) // per_row)}" '
           'font-family="sans-serif" font-size="10">',
           f'<text x="10" y="14" font-size="12">Weight track vs gain-map track, {size} (PU21-PSNR dB vs metadata kbit/s, log)</text>']
    for k, key in enumerate(keys):
        rows = results[key]
        pts = [(r["kbit_s"], r["pu21_psnr"]) for r in rows["mlp"] + rows["gain"]]
        refs = [r["pu21_psnr"] for r in rows["refs"].values()]
        x_lo, x_hi = math.log10(min(p[0] for p in pts) / 1.2), math.log10(max(p[0] for p in pts) * 1.2)
        ys = [p[1] for p in pts] + refs
        y_lo, y_hi = math.floor(min(ys)) - 1, math.ceil(max(ys)) + 1
        x0 = k * pw

        def X(v, x0=x0, x_lo=x_lo, x_hi=x_hi):
            return x0 + pad + (math.log10(v) - x_lo) / (x_hi - x_lo) * (pw - pad - 10)

        def Y(v, y_lo=y_lo, y_hi=y_hi):
            return 30 + (1 - (v - y_lo) / (y_hi - y_lo)) * (ph - 40)

        out.append(f'<text x="{x0 + pad}" y="28">{key}</text>')
        out.append(f'<rect x="{x0 + pad}" y="30" width="{pw - pad - 10}" height="{ph - 40}" fill="none" stroke="#999"/>')
        for v in (1, 2, 5, 10, 20, 50, 100, 200, 500):
            if x_lo <= math.log10(v) <= x_hi:
                out.append(f'<text x="{X(v):.1f}" y="{ph + 2}" text-anchor="middle">{v}</text>')
        for v in range(y_lo, y_hi + 1, max(1, (y_hi - y_lo) // 6)):
            out.append(f'<text x="{x0 + pad - 4}" y="{Y(v) + 3:.1f}" text-anchor="end">{v}</text>')
        for name, ref in rows["refs"].items():
            dash = "6,3" if ref["kbit_s"] is None else "2,3"
            out.append(f'<line x1="{x0 + pad}" x2="{x0 + pw - 10}" y1="{Y(ref["pu21_psnr"]):.1f}" y2="{Y(ref["pu21_psnr"]):.1f}" '
                       f'stroke="{"#2a2" if ref["kbit_s"] is None else "#c22"}" stroke-dasharray="{dash}"><title>{name}</title></line>')
        for g in rows["gain"]:
            out.append(f'<circle cx="{X(g["kbit_s"]):.1f}" cy="{Y(g["pu21_psnr"]):.1f}" r="2" fill="#bbb"/>')
        for series, colour in ((_front(rows["gain"]), "#e80"), (sorted(rows["mlp"], key=lambda r: r["kbit_s"]), "#14c")):
            line = " ".join(f"{X(r['kbit_s']):.1f},{Y(r['pu21_psnr']):.1f}" for r in series)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            for r in series:
                out.append(f'<circle cx="{X(r["kbit_s"]):.1f}" cy="{Y(r["pu21_psnr"]):.1f}" r="3.5" fill="{colour}">'
                           f'<title>{r["kbit_s"]:.1f} kbit/s, {r["pu21_psnr"]:.2f} dB</title></circle>')
    step = (pw * len(keys) - 20) / per_row
    for i, (colour, text) in enumerate(legend):
        x, y = 20 + (i % per_row) * step, ph + 30 + (i // per_row) * 16
        out.append(f'<circle cx="{x:.0f}" cy="{y}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{x + 8:.0f}" y="{y + 4}">{text}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
