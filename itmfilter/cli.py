"""The ``itmfilter`` command line: thin typer commands over the library.

Heavy imports stay inside the commands so that ``itmfilter --help`` is instant. Every
user-facing error is an :class:`itmfilter.errors.ItmError`, printed as one line with exit
status 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from itmfilter.errors import ItmError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Ship HDR10 inside ordinary SDR: per-picture MLPs carried as metadata.",
)

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed: same seed, same weights.")]
EngineOpt = Annotated[str, typer.Option(help="Video: local (this process) or ray (tasks on a Ray cluster; pip install 'itmfilter[ray]').")]
AddressOpt = Annotated[
    Optional[str],
    typer.Option(help="--engine ray: the cluster, auto (started by `ray start` here) or ray://host:10001; default: a new local instance."),
]


def _tm_names() -> str:
    from itmfilter.colour.tonecurves import curve_names

    return ", ".join(curve_names())


def user_errors(func):
    """Turn ItmError (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ItmError as exc:
            typer.echo(f"itmfilter: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("itmfilter: interrupted; no partial output was left", err=True)
            raise typer.Exit(130) from None

    return wrapper



def _is_still(path: Path) -> bool:
    return path.suffix.lower() in (".exr", ".hdr", ".png", ".tif", ".tiff", ".jpg", ".jpeg")


@app.command()
@user_errors
def encode(
    master: Annotated[Path, typer.Argument(help="HDR master: still (.exr/.hdr/PQ .png) or video (.mov/.mp4/.mkv, EXR sequence).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="SDR output, e.g. sdr.png.")],
    tm: Annotated[str, typer.Option(help="Tone curve for the SDR (see `itmfilter curves`).")] = "bt2446a",
    sdr: Annotated[Optional[Path], typer.Option(help="Your own SDR grade instead of a curve (same size).")] = None,
    sidecar: Annotated[
        str, typer.Option(help="Stills: embed, json or both. Video: embed/auto (SEI in the H.264/HEVC stream), sei, track (MP4/MOV data track), attachment (MKV) or json.")
    ] = "embed",
    steps: Annotated[
        Optional[int], typer.Option(help="Adam steps of per-picture adaptation (default: 1600 for stills, 200 for video key frames).")
    ] = None,
    weights_dtype: Annotated[str, typer.Option("--weights", help="Stored weight precision: fp16 or fp32.")] = "fp16",
    nits_per_unit: Annotated[
        Optional[float], typer.Option(help="cd/m2 of 1.0 for relative-radiance inputs (.hdr).")
    ] = None,
    anchor: Annotated[
        Optional[float],
        typer.Option(help="Relative inputs: place the scene's diffuse white at this many cd/m2 (BT.2408: 203)."),
    ] = None,
    init: Annotated[Optional[Path], typer.Option(help="Initialisation .safetensors (default: shipped).")] = None,
    codec: Annotated[str, typer.Option(help="Video: SDR encoder, libx264 or libx265.")] = "libx264",
    crf: Annotated[int, typer.Option(help="Video: SDR quality (x264/x265 CRF).")] = 18,
    preset: Annotated[str, typer.Option(help="Video: x264/x265 preset.")] = "medium",
    strategy: Annotated[str, typer.Option(help="Video: warm (closed-loop warm start, default) or frame.")] = "warm",
    refresh: Annotated[float, typer.Option(help="Video: re-adapt when the held set's error grows by this ratio.")] = 1.15,
    key_seconds: Annotated[float, typer.Option(help="Video: a self-contained key set at least this often (s).")] = 4.0,
    max_kbps: Annotated[
        float, typer.Option(help="Video: cap on the weights' bitrate in kbit/s, whole file and every window (leaky bucket; 0: no cap).")
    ] = 64.0,
    buffer_seconds: Annotated[
        float, typer.Option(help="Video: the rate cap's buffer, in seconds of the cap: any window of T s costs at most cap x (T + this).")
    ] = 2.0,
    motion: Annotated[
        bool, typer.Option("--motion/--no-motion", help="Video: predict each frame's weights from the previous set shifted by the camera's pan.")
    ] = True,
    max_bytes: Annotated[
        Optional[int],
        typer.Option(help="Stills: the best payload within this many bytes (e.g. 8192), chosen by PU21-PSNR against the master "
                     "among the polynomial, grid models with a residual gain layer and the MLP (if it fits)."),
    ] = None,
    assume_hdr: Annotated[bool, typer.Option(help="Video: treat an untagged master as PQ BT.2020.")] = False,
    fps: Annotated[float, typer.Option(help="EXR-sequence master: frames per second.")] = 24.0,
    adapt_batch: Annotated[
        int, typer.Option(help="Video: full adaptations (keys; every frame with --strategy frame) run this many at once as a batch of networks (e.g. 16 on a GPU; the same weights up to rounding).")
    ] = 1,
    model: Annotated[
        str, typer.Option(help="Video: auto (default: grid under --max-kbps, mlp without a cap), grid (one grid model per shot placed by the pan, refined, with a scene residual; docs/grid-video.md) or mlp (per-frame MLP weight sets, the paper's method).")
    ] = "auto",
    grid_steps: Annotated[
        Optional[int], typer.Option(min=1, max=100000, help="Video, --model grid: Adam steps of a shot's grid fit (default 3600; fewer: a faster encode, a less exact model).")
    ] = None,
    grid_refine: Annotated[
        bool, typer.Option(help="Video, --model grid under --max-kbps: refine each shot's grid over the frames after its KEY (format 1.5; --no-grid-refine: the whole model in the KEY, 1.4).")
    ] = True,
    shift_runs: Annotated[
        bool, typer.Option(help="Video, --model grid: one packet carries up to 1 s of the pan's shifts and the frames it covers carry none (format 1.6; in SEI each sample costs ~28 bytes of framing, 5.4 kbit/s at 24 fps, which go to the grid's refinement instead). --no-shift-runs: a packet per frame (1.5).")
    ] = True,
    scene_residual: Annotated[
        bool, typer.Option(help="Video, --model grid under --max-kbps: a shot's refinement may end in a scene residual, one low-resolution PQ correction image over the pan that every frame reads at its place (format 1.7; where the SDR clips, the detail a grid cannot see). --no-scene-residual: 1.6.")
    ] = True,
    look_ahead: Annotated[
        bool, typer.Option(help="Video, --model grid under --max-kbps: each shot's spare rate carries the next shot's refinement stream before its cut, so it serves all of that shot's frames (format 1.8; the rate promise is unchanged). --no-look-ahead: 1.7.")
    ] = True,
    scene_pieces: Annotated[
        bool, typer.Option(help="Video, --model grid under --max-kbps, with the look-ahead: a shot's scene residual may come in two pieces, each over the part of the pan its frames see, the second replacing the first mid-shot (format 1.9; chosen per shot where its held-out frames score better). Off by default: on 4 s shots at 640x360 it did not raise the clip's quality (docs/scene-pieces.md).")
    ] = False,
    search: Annotated[
        str, typer.Option(help="Video, --model grid under --max-kbps: thorough (default) tries every refinement step, scene-image scale and quality for each shot; fast tries about a third of them (measured in docs/grid-search.md: a faster encode, a little lower quality; the format and the rate promise are the same).")
    ] = "thorough",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """HDR master -> SDR with embedded per-picture MLPs (stills and video).

    Stills: itmfilter encode master.exr -o sdr.png --tm bt2446a   (--max-bytes 8192: a size budget)
    Video:  itmfilter encode master.mov -o sdr.mp4   (SEI in the video stream, also .mkv/.mov/.ts; --sidecar track|attachment|json)
    On a cluster: itmfilter encode master.mov -o sdr.mp4 --engine ray --address auto   (same bytes)
    """
    from itmfilter.encode.stills import encode_still
    from itmfilter.model.adapt import AdaptOptions
    from itmfilter.progress import step_bar

    if not _is_still(master) or master.is_dir() or "%" in master.name:
        from itmfilter.encode.video import VideoEncodeOptions, encode_video

        if max_bytes is not None:
            raise ItmError(master, "--max-bytes is for stills", "give video a rate cap with --max-kbps")

        report = encode_video(
            master,
            output,
            grade=sdr,
            options=VideoEncodeOptions(
                tm=tm, codec=codec, crf=crf, preset=preset, sidecar="auto" if sidecar == "embed" else sidecar,
                strategy=strategy, first_steps=steps or VideoEncodeOptions.first_steps, refresh_ratio=refresh, key_seconds=key_seconds,
                max_kbps=max_kbps or None, buffer_seconds=buffer_seconds, motion=motion, assume_hdr=assume_hdr, fps=fps, seed=seed,
                adapt_batch=adapt_batch, model=model, grid_refine=grid_refine, shift_runs=shift_runs,
                scene_residual=scene_residual, look_ahead=look_ahead, scene_pieces=scene_pieces, search=search,
                **({} if grid_steps is None else {"grid_steps": grid_steps}),
            ),
            init_path=init,
            device=device,
            quiet=quiet,
            engine=engine,
            address=address,
        )
        if not quiet:
            typer.echo(
                f"wrote {report.output}: {report.frames} frames, {report.shots} shots, weights by {report.carriage}, "
                f"{report.metadata_bytes} bytes = {report.kbit_per_s:.1f} kbit/s, worst 1 s {report.worst_window_kbps:.1f} kbit/s "
                f"({report.packets}; keys {report.keys})"
            )
            for note in report.notes:
                typer.echo(f"note: {note}", err=True)
        return
    still_options = AdaptOptions(seed=seed) if steps is None else AdaptOptions(steps=steps, seed=seed)
    if max_bytes is not None:
        from itmfilter.progress import progress_bar

        if max_bytes <= 0:
            raise ItmError(None, f"--max-bytes {max_bytes} is not a size", "give a positive number of bytes, e.g. 8192")
        bar = progress_bar(None, unit="stage", desc=f"rate-choosing {master.name}", quiet=quiet, leave=False)

        def stage(name: str) -> None:
            bar.update(1)
            bar.set_postfix_str(name)

        try:
            report = encode_still(
                master, output, tm=tm, grade=sdr, sidecar=sidecar, options=still_options, init_path=init,
                device=device, weight_dtype=weights_dtype, nits_per_unit=nits_per_unit, anchor=anchor,
                max_bytes=max_bytes, stage=stage,
            )
        finally:
            bar.close()
        if not quiet:
            for note in report.notes:
                typer.echo(f"  {note}")
            typer.echo(
                f"wrote {', '.join(report.outputs)} ({report.mode}; {report.weight_bytes} bytes of weights "
                f"<= {max_bytes}, chosen in {report.adapt_seconds:.1f} s)"
            )
        return
    bar, advance = step_bar(still_options.steps, quiet, f"adapting {master.name}")
    try:
        report = encode_still(
            master,
            output,
            tm=tm,
            grade=sdr,
            sidecar=sidecar,
            options=still_options,
            init_path=init,
            device=device,
            weight_dtype=weights_dtype,
            nits_per_unit=nits_per_unit,
            anchor=anchor,
            progress=advance,
        )
    finally:
        bar.close()
    if not quiet:
        typer.echo(
            f"wrote {', '.join(report.outputs)} ({report.mode}; {report.weight_bytes} bytes of weights, "
            f"adapted in {report.adapt_seconds:.1f} s)"
        )


@app.command()
@user_errors
def transcode(
    inputs: Annotated[list[Path], typer.Argument(help="SDR picture or video(s) carrying weights.")],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output",
            help="Stills: .exr (linear BT.2020) or .png (PQ). Video: .mkv/.mp4 (HEVC Main10 HDR10), a folder, or frames/%06d.exr.",
        ),
    ],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Video: files transcoded in parallel.")] = 1,
    crf: Annotated[int, typer.Option(help="Video: x265 CRF of the HDR10 output.")] = 16,
    preset: Annotated[str, typer.Option(help="Video: x265 preset.")] = "medium",
    precision: Annotated[
        str, typer.Option(help="MLP arithmetic: auto (bf16 where the CPU/GPU has it; measured cost < 0.01 dB), fp32, bf16.")
    ] = "auto",
    init: Annotated[Optional[Path], typer.Option(help="Weights for blind mode (default: shipped).")] = None,
    video_codec: Annotated[
        str, typer.Option(help="Video: HEVC encoder: auto (hevc_nvenc when the device is CUDA and NVENC opens, else libx265), libx265, hevc_nvenc.")
    ] = "auto",
    hwaccel: Annotated[
        str, typer.Option(help="Video on CUDA: decode the SDR with NVDEC: none, cuda, auto (falls back to the CPU decoder with a note).")
    ] = "none",
    stream_format: Annotated[
        str, typer.Option("--format", help="-o - (a pipe): mkv (FFV1 in Matroska, colour tags carried) or nut (rawvideo, no tags, cheapest).")
    ] = "mkv",
    start: Annotated[float, typer.Option(help="-o - (a pipe): start this many seconds into the video.")] = 0.0,
    rung: Annotated[
        str, typer.Option(help="-o - (a pipe): quality ladder, full (default), guided-half, guided-quarter, guided-sixth, guided-eighth, half, quarter, eighth, sixteenth or auto (keeps up with the frame rate).")
    ] = "full",
    device: DeviceOpt = "auto",
    split_frames: Annotated[
        int, typer.Option(help="--engine ray: files longer than this many frames are transcoded in parts (cut at key sets) of at least as many; 0: never.")
    ] = 1440,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Reconstruct HDR from SDR + embedded weights (blind mode when there are none).

    Stills: itmfilter transcode sdr.png -o hdr.exr
    Video:  itmfilter transcode sdr.mp4 -o hdr10.mkv      (many: itmfilter transcode *.mp4 -o out/ -j 2)
    On a cluster: itmfilter transcode *.mp4 -o out/ --engine ray --address auto   (a file per task)
    Pipe:   itmfilter transcode sdr.mp4 -o - | ffmpeg -i - -c:v libx265 hdr10.mp4   (lossless HDR10 stream on stdout)
    """
    if str(output) == "-" or output.is_fifo():
        _transcode_to_pipe(inputs, output, stream_format, start, rung, device, precision, quiet)
        return
    if (stream_format, start, rung) != ("mkv", 0.0, "full"):
        raise ItmError(output, "--format, --start and --rung apply to a pipe output only",
                       "use -o - (stdout) or a named pipe, or drop those options")
    if len(inputs) == 1 and _is_still(inputs[0]):
        from itmfilter.transcode.stills import transcode_still

        report = transcode_still(inputs[0], output, device=device, precision=precision, init_path=init)
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        if not quiet:
            typer.echo(f"wrote {output} ({report.mode})")
        return
    from itmfilter.transcode.video import plan_jobs, summary_table, transcode_many

    if engine not in ("local", "ray"):
        raise ItmError(None, f"unknown --engine {engine!r}", "use local or ray")
    if address and engine != "ray":
        raise ItmError(None, "--address names a Ray cluster", "add --engine ray, or leave --address out")
    planned = plan_jobs(inputs, output, crf=crf, preset=preset, device=device, precision=precision,
                        video_codec=video_codec, hwaccel=hwaccel)
    if engine == "ray":
        from itmfilter.transcode.ray_engine import transcode_many_ray  # Ray is imported on this path only

        results = transcode_many_ray(planned, address=address, quiet=quiet, split_frames=split_frames)
    else:
        results = transcode_many(planned, n_jobs=jobs, quiet=quiet)
    for r in results:
        for note in r.notes:
            typer.echo(f"note: {note}", err=True)
        if r.error:
            typer.echo(f"itmfilter: error: {r.error}", err=True)
    if not quiet:
        typer.echo(summary_table(results))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        # bad input exits 2 as everywhere else; 1 when something failed on its own
        raise typer.Exit(2 if all(r.bad_input for r in failed) else 1)


def _transcode_to_pipe(inputs, output, stream_format, start, rung, device, precision, quiet) -> None:
    """``transcode IN -o -``: one HDR10 stream to stdout (or a named pipe); only the stream
    goes there, notes and the progress bar go to stderr."""
    import os

    from itmfilter.transcode.stream import stream_hdr10

    if len(inputs) != 1 or _is_still(inputs[0]):
        raise ItmError(None, "a pipe output takes one video", "give one SDR video with -o -")
    if str(output) == "-":
        if sys.stdout.isatty():
            raise ItmError(None, "-o - would write binary video to the terminal", "pipe it: ... -o - | ffmpeg -i - out.mkv")
        sink = sys.stdout.buffer
    else:
        sink = open(output, "wb", buffering=0)  # a named pipe: nothing to make atomic
    try:
        result = stream_hdr10(inputs[0], sink, fmt=stream_format, start_s=start, rung=rung, device=device,
                              precision=precision, quiet=quiet)
        sink.flush()
    except BrokenPipeError:
        result = None
    finally:
        if sink is not sys.stdout.buffer:
            try:
                sink.close()
            except BrokenPipeError:
                pass
    if result is None or result.closed_early:
        # The reader went away (a player seeked or quit): stop quietly, as `cmd | head` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return
    if not quiet:
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"streamed {result.frames} frames ({result.mode}, rung {result.rung}, "
                   f"{result.frames / max(result.seconds, 1e-9):.2f} fps, damaged {result.damaged_frames})", err=True)


@app.command()
@user_errors
def play(
    video: Annotated[Path, typer.Argument(help="SDR video (with or without a weight track).")],
    mpv_args: Annotated[
        Optional[list[str]],
        typer.Argument(help="mpv options after --, spelt as for mpv: -- --gpu-sw --geometry=50%", show_default=False),
    ] = None,
    hdr: Annotated[bool, typer.Option("--hdr", help="Reconstruct and show HDR10 (PQ BT.2020).")] = False,
    vo: Annotated[
        str, typer.Option(help="mpv video output: gpu (a window; gpu-next with --hdr), gpu-next, null or image; others: --mpv-opt vo=NAME.")
    ] = "gpu",
    mpv_opt: Annotated[
        Optional[list[str]],
        typer.Option("--mpv-opt", help="An mpv option KEY=VALUE, repeatable (e.g. --mpv-opt gpu-sw=yes); set after mpv.conf, so it wins.",
                     show_default=False),
    ] = None,
    mpv_config: Annotated[
        Optional[bool],
        typer.Option("--mpv-config/--no-mpv-config",
                     help="Load your mpv config (mpv.conf, input.conf, scripts in $MPV_HOME or ~/.config/mpv) as mpv does. "
                          "Default: for a window, not for --vo null/image or --output.", show_default=False),
    ] = None,
    fallback: Annotated[
        bool, typer.Option("--fallback/--no-fallback", help="When the window's output cannot start, retry with gpu-sw=yes (and x11 without --hdr).")
    ] = True,
    output: Annotated[Optional[Path], typer.Option(help="Record what mpv is given into this file (encode mode).")] = None,
    image_dir: Annotated[Optional[Path], typer.Option(help="With --vo image: folder for the PNGs.")] = None,
    rung: Annotated[
        str, typer.Option(help="Quality ladder: auto (from measured speed), full, guided-half, guided-quarter, guided-sixth, guided-eighth (the network on 1 pixel in 4 ... 64, a per-cell colour transform), half, quarter, eighth, sixteenth.")
    ] = "auto",
    gain: Annotated[
        str, typer.Option(help="Below full, for half ... sixteenth: prior (polynomial per pixel + upsampled residual), rgb (gain map) or auto; the guided rungs have one mode.")
    ] = "auto",
    precision: Annotated[str, typer.Option(help="MLP arithmetic: auto, fp32 or bf16.")] = "auto",
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="CPU threads for the network (default: every core torch uses).",
                                    show_default=False)
    ] = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Play through mpv; with --hdr, each frame's MLP turns the SDR into HDR10 in real time.

    Example: itmfilter play sdr.mp4 --hdr        (headless: --vo null, or --output seen.mkv)

    A window loads your mpv config (mpv.conf) as mpv does;
    --mpv-opt KEY=VALUE, or mpv options after --, are set after it.
    Example: itmfilter play sdr.mp4 --hdr --mpv-opt fs=yes -- --volume=50
    If the window cannot open, it retries with gpu-sw=yes and says so.
    Keys: mpv's (space pause, q quit); with --hdr LEFT/RIGHT 5 s, UP/DOWN 60 s.
    """
    import os

    # Before torch and numba load their OpenMP runtime (it reads this once): idle OpenMP
    # threads sleep instead of spinning, so the network's and the fused pass's thread teams
    # do not steal the decoder's and mpv's cores between frames (spinning teams made the
    # rungs up to 40x slower on 2 loaded cores: docs/ladder-timing.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from itmfilter.player.mpv import parse_mpv_options
    from itmfilter.player.mpv import play as run_play

    options = parse_mpv_options(list(mpv_opt or []))
    extra = list(mpv_args or [])
    if extra and not all(a.startswith("--") for a in extra):
        stray = next(a for a in extra if not a.startswith("--"))
        raise ItmError(None, f"unexpected argument {stray!r} after the video",
                       "put mpv options after -- and spell them as for mpv, e.g. -- --gpu-sw")
    options.update(parse_mpv_options(extra))
    provider, peak = None, None
    if hdr:
        from itmfilter.transcode.video import FrameNetworks

        nets = FrameNetworks(video)
        provider = nets.provider
        if nets.track is None and not quiet:
            typer.echo(f"note: {video}: no weight track; blind mode (initialisation alone)", err=True)
        meta = nets.track.header.hdr10_metadata() if nets.track is not None else None
        if meta is not None:
            peak = meta.max_cll or meta.max_luminance
    stats = run_play(
        video, hdr=hdr, vo=vo, output=output, image_dir=image_dir, rung=rung, device=device,
        precision=precision, weights_provider=provider, quiet=quiet, gain=gain, mpv_options=options,
        mpv_config=mpv_config, fallback=fallback, peak_nits=peak, threads=threads,
        on_note=None if quiet else (lambda text: typer.echo(f"note: {text}", err=True)),
    )
    if hdr and nets.warning():
        typer.echo(f"warning: {nets.warning()}", err=True)
    if not quiet:
        typer.echo(
            f"output {stats.video_output}{' (quit)' if stats.user_quit else ''}: "
            f"shown {stats.frames_shown}, dropped {stats.frames_dropped}, rung {stats.rung} ({stats.gain_mode or 'n/a'}), "
            f"filter {stats.fps:.1f} fps, damaged-metadata frames {stats.damaged_frames}, blind frames {stats.blind_frames}"
        )


@app.command()
@user_errors
def catalogue(
    source: Annotated[Path, typer.Argument(help="A CSV of titles (header: input[,output][,sdr]) or a folder of videos.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the outputs and catalogue.csv.")],
    action: Annotated[str, typer.Option(help="encode (HDR masters -> SDR + weights) or transcode (SDR + weights -> HDR10).")] = "encode",
    tm: Annotated[str, typer.Option(help="Encode: tone curve for the SDR.")] = "bt2446a",
    crf: Annotated[int, typer.Option(help="Encode: SDR quality (x264 CRF).")] = 18,
    preset: Annotated[str, typer.Option(help="Encode: x264 preset.")] = "medium",
    max_kbps: Annotated[float, typer.Option(help="Encode: cap on the weights' bitrate in kbit/s (0: no cap).")] = 64.0,
    key_seconds: Annotated[float, typer.Option(help="Encode: a key set at least this often (s); a segment's length.")] = 4.0,
    steps: Annotated[int, typer.Option(help="Encode: Adam steps of a segment's first frame.")] = 200,
    warm_steps: Annotated[int, typer.Option(help="Encode: Adam steps of a warm frame.")] = 60,
    model: Annotated[str, typer.Option(help="Encode: auto (grid under --max-kbps, else mlp), grid or mlp, as encode's --model.")] = "auto",
    grid_steps: Annotated[Optional[int], typer.Option(min=1, max=100000, help="Encode, --model grid: Adam steps of a shot's grid fit (default 3600).")] = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """A catalogue in one resumable run: titles already done are skipped, a summary table is
    printed and written to OUT/catalogue.csv; exit status 1 if any title failed.

    itmfilter catalogue titles.csv -o out/ --engine ray --address auto
    """
    from itmfilter.catalogue import catalogue_table, read_titles, run_catalogue
    from itmfilter.encode.video import VideoEncodeOptions

    if engine not in ("local", "ray"):
        raise ItmError(None, f"unknown --engine {engine!r}", "use local or ray")
    titles = read_titles(source, output, action)
    options = VideoEncodeOptions(tm=tm, crf=crf, preset=preset, max_kbps=max_kbps or None, key_seconds=key_seconds,
                                 first_steps=steps, warm_steps=warm_steps, model=model,
                                 **({} if grid_steps is None else {"grid_steps": grid_steps}))
    results = run_catalogue(titles, output, action=action, options=options, engine=engine, address=address, quiet=quiet)
    for r in results:
        if r.error:
            typer.echo(f"itmfilter: error: {r.error}", err=True)
    if not quiet:
        typer.echo(catalogue_table(results))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@app.command("eval")
@user_errors
def evaluate_cmd(
    reference: Annotated[Path, typer.Argument(help="Reference HDR picture.")],
    test: Annotated[Path, typer.Argument(help="Test HDR picture, same size.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    nits_per_unit: Annotated[Optional[float], typer.Option(help="cd/m2 of 1.0 for relative inputs.")] = None,
) -> None:
    """PU21-PSNR, PQ-PSNR, Delta-E ITP, SSIM and MS-SSIM on PU21 values.

    Example: itmfilter eval master.exr hdr.exr --json
    """
    from itmfilter.media.stills import read_hdr
    from itmfilter.quality.metrics import evaluate

    ref = read_hdr(reference, nits_per_unit=nits_per_unit).nits
    tst = read_hdr(test, nits_per_unit=nits_per_unit).nits
    if ref.shape != tst.shape:
        raise ItmError(test, f"size {tst.shape[1]}x{tst.shape[0]} differs from {reference} ({ref.shape[1]}x{ref.shape[0]})")
    scores = evaluate(ref, tst)
    if as_json:
        typer.echo(json.dumps(scores, indent=1))
    else:
        for key, value in scores.items():
            typer.echo(f"{key:>14}  {value:.4f}")


@app.command("data")
@user_errors
def data_cmd(
    cache: Annotated[Optional[Path], typer.Option(help="Cache folder (default $ITMFILTER_CACHE or ~/.cache/itmfilter).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the real HDR pictures from the registries (checksummed, cached, resumable) and show the split."""
    from itmfilter.data.fetch import fetch_scenes, split_scenes

    scenes = fetch_scenes(cache, quiet=quiet)
    for split, members in split_scenes(scenes).items():
        typer.echo(f"{split:>5}: {', '.join(s.name for s in members)}")


@app.command("make-media")
@user_errors
def make_media(
    output: Annotated[Path, typer.Option("-o", "--output", help="Master to write: .mkv/.mp4 (HEVC) or .mov (ProRes).")],
    seconds: Annotated[float, typer.Option(help="Length in seconds.")] = 10.0,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "1920x1080",
    fps: Annotated[int, typer.Option(help="Frames per second.")] = 24,
    shot_seconds: Annotated[float, typer.Option(help="Seconds between cuts.")] = 4.0,
    split: Annotated[str, typer.Option(help="Scenes from this split: train, val or test.")] = "test",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Make a real HDR10 test master: camera pans across registry HDR panoramas, with cuts.

    Example: itmfilter make-media -o master.mkv --seconds 10 --size 1920x1080
    """
    from itmfilter.data.testmedia import make_master

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ItmError(None, f"--size {size!r} is not WIDTHxHEIGHT", "e.g. --size 1920x1080") from None
    codec = "prores" if output.suffix.lower() == ".mov" else "hevc"
    make_master(output, seconds=seconds, fps=fps, size=(w, h), codec=codec, shot_seconds=shot_seconds,
                split=split, seed=seed, quiet=quiet)
    if not quiet:
        typer.echo(f"wrote {output}")


@app.command("meta-train")
@user_errors
def meta_train_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="Initialisation to write (.safetensors).")],
    algorithm: Annotated[str, typer.Option(help="reptile, fomaml or naive.")] = "reptile",
    steps: Annotated[int, typer.Option(help="Outer steps (tasks of 3 support + 1 query pictures).")] = 800,
    exclude_curve: Annotated[Optional[str], typer.Option(help="Leave this curve out of training (Table 3).")] = None,
    config: Annotated[str, typer.Option(help="Network config: default (video) or stills (wider coordinate input).")] = "default",
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint file: resumes when it exists.")] = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train the initialisation (Algorithm 1) on the train split; resumable.

    Example: itmfilter meta-train -o init-meta.safetensors --algorithm reptile --steps 800
    (the shipped stills initialisation: --algorithm naive --config stills --steps 800)
    """
    from dataclasses import replace

    from itmfilter.data.fetch import fetch_scenes, split_scenes
    from itmfilter.model.initial import save_init
    from itmfilter.model.metatrain import MetaOptions, make_pairs, meta_train
    from itmfilter.model.net import CONFIGS

    if config not in CONFIGS:
        raise ItmError(None, f"unknown --config {config!r}", f"use one of {', '.join(CONFIGS)}")
    opts = MetaOptions(algorithm=algorithm, outer_steps=steps, seed=seed, config=config)
    if exclude_curve:
        opts = replace(opts, curves=tuple(c for c in opts.curves if c != exclude_curve))
    if opts.algorithm == "naive":
        opts = replace(opts, outer_steps=steps * (opts.inner_steps + opts.adapt_steps))
    scenes = split_scenes(fetch_scenes(quiet=quiet))["train"]
    pool = make_pairs(scenes, opts, quiet=quiet)
    net, provenance = meta_train(pool, opts, checkpoint=checkpoint or output.with_suffix(".ckpt"), quiet=quiet)
    save_init(net, output, provenance)
    if not quiet:
        typer.echo(f"wrote {output} ({provenance['seconds']} s)")


@app.command()
def curves() -> None:
    """List the tone curves (name, description, gamut handling)."""
    from itmfilter.colour.tonecurves import REGISTRY

    for curve in REGISTRY.values():
        kind = "spatial" if curve.spatial else "global"
        inv = "inverse" if curve.inverse is not None else "no inverse"
        typer.echo(f"{curve.name:<10} {kind:<7} {inv:<10} {curve.description}")


@app.command()
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="SDR still or video with weights.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stills always do).")] = False,
) -> None:
    """Show what weights a file carries; exit status 1 when it carries none.

    Video: the track header (network, HDR10 metadata), where it is carried, packets by
    kind, the rate in kbit/s, damaged and missing packets.
    Example: itmfilter info sdr.mp4 --json
    """
    if not _is_still(path):
        from itmfilter.track.summary import format_summary, summarise_track

        doc = summarise_track(path)
        typer.echo(json.dumps(doc, indent=1) if as_json else format_summary(doc))
        if doc["carriage"] is None:
            raise typer.Exit(1)
        return
    from itmfilter.media.stills import read_sdr
    from itmfilter.model.weightset import WeightFormatError, describe
    from itmfilter.track.stills import find_weights

    sdr, bits = read_sdr(path)
    blob, where = find_weights(path, sdr, bits)
    if blob is None:
        typer.echo(f"{path}: {where}")
        raise typer.Exit(1)
    try:
        summary = describe(blob)
    except WeightFormatError as exc:
        raise ItmError(path, f"{where}: {exc}") from None
    typer.echo(json.dumps({"where": where, **summary}, indent=1))


@app.command()
@user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path("itmfilter-demo"),
    steps: Annotated[Optional[int], typer.Option(help="Adaptation steps of the still (default: the adaptation's own).")] = None,
    video_seconds: Annotated[float, typer.Option(help="Length of the video part (a pan across the sample); 0 skips it.")] = 2.0,
    grid_steps: Annotated[Optional[int], typer.Option(min=1, max=100000, help="Video part: Adam steps of the shot's grid fit (default: the encoder's, 3600; fewer: faster, a less exact model).")] = None,
    search: Annotated[Optional[str], typer.Option(help="Video part: the capped encode's search, thorough (the encoder's default) or fast (see encode --search).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run encode -> transcode -> eval on the built-in sample (a still, then a short video)
    and print metrics beside baselines."""
    from itmfilter.demo import run_demo

    run_demo(out_dir, steps=steps, quiet=quiet, echo=typer.echo, video_seconds=video_seconds, grid_steps=grid_steps,
             search=search)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
