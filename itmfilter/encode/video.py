"""``itmfilter encode`` for video: HDR master -> SDR video carrying per-frame MLPs.

Three passes, so that the weights are fitted to the SDR a player will actually decode
(after the lossy SDR codec), not to the pre-codec SDR:

1. master -> SDR video (tone curve, libx264/libx265, BT.709 tags, audio/subtitles copied);
   a user's grade (``--sdr grade.mov``) skips this pass and is stream-copied as it is;
2. detect shots over the master and plan the segments (key set to key set: shot starts
   and every ``key_seconds`` within a shot; :mod:`itmfilter.encode.segments`); per segment,
   decode master and SDR in lockstep, adapt the network per frame (strategy below) and
   code the weights with :class:`itmfilter.track.codec.TrackEncoder` (a key set first,
   predicted from the shipped initialisation, then quantised closed-loop deltas, repeats)
   within ``--max-kbps`` (:mod:`itmfilter.encode.rate`: the whole track and every window,
   planned from pass-1 information). Segments are independent: they run in
   order here or as tasks on a Ray cluster (``engine="ray"``) with the same bytes;
   finished segments are checkpointed so an interrupted encode resumes;
3. remux the SDR stream (+ audio/subtitles) with the track, atomically: by default (H.264
   or HEVC, any of .mp4/.mov/.mkv/.ts) as SEI inside the video stream, each access unit
   carrying its frame's packet and KEY access units the compressed track header (or, where
   one carried it less than a key interval before, an 8-byte reference to it), so the
   weights survive remuxing, segmenting, cutting and concatenation
   (:mod:`itmfilter.track.sei`); or an MP4/MOV data track, an MKV attachment, a JSON
   sidecar (``--sidecar track|attachment|json``).

Strategies (``--strategy``; measured in ``benchmarks/video.py``):

* ``frame``: every frame adapted from the initialisation with the full step count;

Full adaptations (the keys, every frame of ``frame``) may run ``adapt_batch`` at a time as
a batch of networks (:func:`itmfilter.model.adapt.adapt_batch`: the keys of the next
segments, the next frames of ``frame``): the same weights up to float rounding (the same
bits on the project's CPU), one set of kernel launches for many networks on a GPU;
* ``warm`` (default): a segment's first frame (a shot start or a forced key) adapted
  fully; a later frame keeps the set the *decoder* holds (a 6-7 byte compact repeat packet) while
  that set's error on the frame stays within ``refresh_ratio`` of its error when it was
  made; otherwise it is warm-started
  from the decoder's set (closed loop) for a few steps, its polynomial prior refitted to
  the frame (a fixed prior extrapolates badly when new colours enter the shot: measured
  -16 dB on a pan), and coded as a delta. ``refresh_ratio`` trades bits for quality.
  With ``motion`` (default), the camera's global translation since the previous frame is
  measured by phase correlation on the SDR (:mod:`itmfilter.media.phasecorr`) and the held
  set is first shifted by it (:mod:`itmfilter.track.motion`: exact for a pan); the shift
  travels in every frame's packet (8 bytes) and the refresh test, the warm start and the
  delta all start from the shifted set.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from itmfilter.colour.hdr10 import HDR10Metadata
from itmfilter.colour.tonecurves import get_curve
from itmfilter.encode.rate import (
    DEFAULT_BUFFER_SECONDS,
    PRIOR_KEY_BYTES,
    carried_sizes,
    check_rate,
    final_header_bytes,
    plan_ahead,
    plan_rate,
    run_frames_bytes,
    window_bytes,
)
from itmfilter.encode.segments import (
    STREAM_RUN_FRAMES,
    SegmentJob,
    SegmentStore,
    encode_segments_local,
    packet_heads,
    place_ahead,
    plan_segments,
    release_unused_lanes,
    survey_master,
)
from itmfilter.errors import ItmError
from itmfilter.limits import check_picture_size
from itmfilter.media.atomic import atomic_output, check_writable
from itmfilter.media.containers import add_data_stream, mux_data
from itmfilter.media.stills import read_hdr
from itmfilter.media.video import (
    SdrWriter,
    exr_sequence,
    probe_video,
    read_hdr_frames,
)
from itmfilter.model.adapt import RECIPE_200x8192
from itmfilter.model.initial import load_init
from itmfilter.model.net import resolve_device
from itmfilter.track.carriage import (
    resolve_mode,
    sei_binding,
    sei_header_frames,
    sidecar_path,
    stream_binding,
)
from itmfilter.track.codec import (
    AHEAD_RUN_DELTA_CODING,
    COMPACT_MODEL_MINOR,
    GRID_MINOR,
    HALF_MOTION_SHIFT_BYTES,
    PROGRESSIVE_GRID_MINOR,
    RUN_HEAD_BYTES,
    SCENE_MINOR,
    SHIFT_RUN_DELTA_CODING,
    SHIFT_RUN_MINOR,
    TrackEncoder,
    carries_update,
    decode_shift_run,
    init_identity,
    init_reference,
    key_form,
)
from itmfilter.track.format import (
    HEADER_REF_BYTES,
    MKV_ATTACHMENT_MIMETYPE,
    MKV_ATTACHMENT_NAME,
    TrackHeader,
    decode_packet,
    flatten_state,
    pack_sample,
    track_to_json,
    write_track_blob,
)
from itmfilter.track.sei import SEI_FRAMING_RESERVE_BYTES, remux_with_sei, sei_nal_bytes, video_codec

STRATEGIES = ("warm", "frame")
MODELS = ("auto", "mlp", "grid")
SEARCHES = ("thorough", "fast")  # the names of encode.gridkeys.SEARCHES (kept here: no torch to check a name)
"""``auto`` (the default): ``grid`` under a rate cap with the ``warm`` strategy, where one grid
model per shot with its refinements, scene residual and look-ahead is ahead of the per-frame
MLP track at every measured cap (docs/video-rate.md, docs/video-rate-1080p.md: 3-8 dB on a
spatially varying grade, and within 0.5 dB of per-frame full adaptation on a global curve at
16 kbit/s where the MLP track is 0.7-1.0 dB below it); ``mlp`` without a cap (per-frame
adaptation at any rate, the paper's method) or with ``--strategy frame``."""
"""``--model``: ``mlp`` (per-frame MLP weight sets, format 1.3) or ``grid`` (one grid model
per segment placed by the pan, format 1.4; under a cap progressive, format 1.5: the KEY's model
refined over the next frames; an MLP key where no grid config fits the budget)."""


WARM_PARAMS = {"all": None, "coord": ("coord.",), "coord+head": ("coord.", "fusion.6.")}
"""``warm_params`` -> the parameter-name prefixes a warm frame retrains (the prior is refitted
in every case). The pan itself is applied exactly by motion compensation; what is left
(content entering the frame, a zoom, the grade's local changes) is retrained on the first
coordinate layer (800 of 9.6k values) and the output layer (195): the default
``coord+head`` with 60 steps measured 35.46 dB at 1080p on the spatially varying grade,
against 35.08 dB for ``coord`` with 30 steps, at the same cap and encode speed
(docs/video-motion.md)."""

@dataclass(frozen=True)
class VideoEncodeOptions:
    tm: str = "bt2446a"
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    sidecar: str = "auto"
    strategy: str = "warm"
    first_steps: int = 200
    warm_steps: int = 60  # measured in docs/video-motion.md: +0.38 dB at 1080p with coord+head, same encode speed
    warm_lr: float = 3e-3
    warm_params: str = "coord+head"  # what warm frames retrain (WARM_PARAMS); measured in benchmarks/video.py
    refresh_ratio: float = 1.15
    motion: bool = True  # motion-compensated prediction of warm frames (a global translation)
    key_seconds: float = 4.0
    key_dtype: str = "init"  # predicted from the shipped initialisation: ~2.6x smaller than int8 at equal PQ-PSNR
    delta_step: float | None = 1 / 64
    max_kbps: float | None = 64.0  # metadata rate cap (whole track, and every window within the buffer); None or 0: no cap
    buffer_seconds: float = DEFAULT_BUFFER_SECONDS  # the rate model's buffer B = cap x this (encode/rate.py)
    shot_threshold: float = 0.06  # mean |delta PQ luma| of 32x18 thumbnails that makes a cut
    assume_hdr: bool = False
    fps: float = 24.0  # frame rate of an EXR-sequence master (video files carry their own)
    seed: int = 0
    adapt_batch: int = 1  # full adaptations run this many at once (keys of the next segments; every frame of "frame")
    model: str = "auto"  # "grid" under a cap, else "mlp" (MODELS); "grid": one grid model per shot (encode/gridkeys.py)
    grid_steps: int = SegmentJob.grid_steps  # --model grid: the fit's Adam steps (the segment job's default)
    grid_fits_on_device: bool = SegmentJob.grid_fits_on_device  # --model grid: fits on a CUDA --device too
    grid_refine: bool = True  # --model grid under a cap: progressive shots (format 1.5, KEY coding 5; docs/grid-video.md)
    shift_runs: bool = True  # --model grid: shifts in runs, one packet for up to 1 s of frames (format 1.6, DELTA coding 5)
    scene_residual: bool = True  # --model grid under a cap: a shot's stream may end in a scene residual (format 1.7)
    look_ahead: bool = True  # --model grid under a cap: a shot's spare rate carries the next shot's stream (format 1.8)
    scene_pieces: bool = False  # --model grid under a cap: a shot's scene residual may come in two windowed pieces (1.9)
    search: str = "thorough"  # --model grid under a cap: how many refinement steps, scene scales and qualities are tried

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ItmError(None, f"unknown --model {self.model!r}", f"use one of {', '.join(MODELS)}")
        if self.model == "auto":  # resolved here, so every later reader sees mlp or grid
            object.__setattr__(self, "model", "grid" if self.max_kbps and self.strategy == "warm" else "mlp")
        if self.model == "grid" and self.strategy != "warm":
            raise ItmError(None, "--model grid codes one model per shot", "leave --strategy at warm")
        if isinstance(self.grid_steps, bool) or not isinstance(self.grid_steps, int) or not 1 <= self.grid_steps <= 100000:
            raise ItmError(None, f"grid_steps must be a whole number in 1..100000, got {self.grid_steps!r}")
        if self.search not in SEARCHES:
            raise ItmError(None, f"unknown --search {self.search!r}", f"use one of {', '.join(SEARCHES)}")
        if self.strategy not in STRATEGIES:
            raise ItmError(None, f"unknown --strategy {self.strategy!r}", f"use one of {', '.join(STRATEGIES)}")
        if self.max_kbps is not None and not self.max_kbps >= 0:
            raise ItmError(None, f"--max-kbps must be a positive bitrate in kbit/s, got {self.max_kbps}",
                           "give e.g. 64, or 0 for no cap")
        if not self.buffer_seconds >= 0:
            raise ItmError(None, f"--buffer-seconds must be >= 0, got {self.buffer_seconds}", "give e.g. 1")
        if self.warm_params not in WARM_PARAMS:
            raise ItmError(None, f"unknown warm_params {self.warm_params!r}", f"use one of {', '.join(WARM_PARAMS)}")
        if isinstance(self.adapt_batch, bool) or not isinstance(self.adapt_batch, int) or not 1 <= self.adapt_batch <= 256:
            raise ItmError(None, f"--adapt-batch must be a whole number of frames in 1..256, got {self.adapt_batch!r}",
                           "give e.g. 1 (one at a time) or 16 (on a GPU)")
        if self.codec not in ("libx264", "libx265"):
            raise ItmError(None, f"unknown --codec {self.codec!r}", "use libx264 or libx265")


@dataclass
class VideoEncodeReport:
    output: str
    frames: int
    shots: int
    metadata_bytes: int
    kbit_per_s: float
    carriage: str
    packets: dict
    segments: int = 0  # units of work (key set to key set)
    resumed_segments: int = 0  # of which finished by an earlier, interrupted run
    keys: dict = dataclasses.field(default_factory=dict)  # how KEYs were coded (codec.key_form)
    worst_window_kbps: float = 0.0  # the costliest 1 s window of the track (headers as carried)
    notes: list = dataclasses.field(default_factory=list)


def _job_key(master: Path, grade: Path | None, options: VideoEncodeOptions, init_tag: str) -> str:

    frames = exr_sequence(master)
    st = frames[-1].stat() if frames else master.stat()
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed release too: a resumed run must not keep segments another release wrote
        release = version("itmfilter")
    except PackageNotFoundError:
        release = "unknown"
    parts = [str(master.resolve()), str(st.st_size), str(st.st_mtime_ns), json.dumps(asdict(options), sort_keys=True), init_tag,
             release]
    if grade:
        gs = grade.stat()
        parts += [str(grade.resolve()), str(gs.st_size), str(gs.st_mtime_ns)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class _SequenceInfo:
    """What encode needs to know of an EXR-sequence master (linear light: always HDR)."""

    width: int
    height: int
    fps: Fraction
    frame_count: int
    is_hdr: bool = True
    hdr10: HDR10Metadata | None = None
    color_trc: str = "linear"


def _probe_master(master: Path, options: VideoEncodeOptions):


    frames = exr_sequence(master)
    if frames is None:
        return probe_video(master), False
    first = read_hdr(frames[0]).nits
    fps = Fraction(options.fps).limit_denominator(1001)
    return _SequenceInfo(first.shape[1], first.shape[0], fps, len(frames)), True


def _make_sdr(master: Path, out: Path, info, options: VideoEncodeOptions, quiet: bool, sequence: bool = False) -> None:


    try:
        curve = get_curve(options.tm)
    except ValueError as exc:
        raise ItmError(None, str(exc)) from None
    bar = tqdm(total=info.frame_count or None, unit="frame", desc="SDR pass", disable=quiet, leave=False)
    with SdrWriter(out, info.width, info.height, info.fps, codec=options.codec, crf=options.crf,
                   preset=options.preset, copy_from=None if sequence else master) as writer:
        for _, nits in read_hdr_frames(master, assume_hdr=options.assume_hdr):
            writer.write(curve.forward(nits))
            bar.update(1)
    bar.close()


def _work_dir(output: Path) -> Path:
    """The folder beside the output where passes 1-2 keep what a resumed run reuses."""
    return output.parent / f".{output.name}.itm-work"


def encode_video(
    master: str | os.PathLike,
    output: str | os.PathLike,
    *,
    grade: str | os.PathLike | None = None,
    options: VideoEncodeOptions = VideoEncodeOptions(),
    init_path: str | os.PathLike | None = None,
    device: str = "auto",
    quiet: bool = False,
    engine: str = "local",
    address: str | None = None,
) -> VideoEncodeReport:
    """Run the three passes (module docstring); returns what was written.

    ``engine``: where pass 2's segments run: ``local`` (in order, in this process) or
    ``ray`` (tasks on the Ray cluster at ``address``: ``auto``, ``ray://host:10001``, or
    None for a new local instance; :mod:`itmfilter.encode.ray_engine`). Both give the
    same bytes.

    Bad input (an :class:`ItmError`) removes the work folder: there is nothing to resume.
    An interruption (Ctrl-C, a kill) keeps it, so the next run resumes."""
    if engine not in ("local", "ray"):
        raise ItmError(None, f"unknown --engine {engine!r}", "use local or ray")
    if address and engine != "ray":
        raise ItmError(None, "--address names a Ray cluster", "add --engine ray, or leave --address out")
    output = Path(output)
    check_writable(output.parent, output)
    try:
        return _encode_video(master, output, grade=grade, options=options, init_path=init_path, device=device,
                             quiet=quiet, engine=engine, address=address)
    except ItmError:
        shutil.rmtree(_work_dir(output), ignore_errors=True)
        raise


def _encode_video(master, output, *, grade, options, init_path, device, quiet, engine, address) -> VideoEncodeReport:
    master, output = Path(master), Path(output)
    grade = Path(grade) if grade else None
    inputs = [master] + ([grade] if grade else [])
    if output.exists() and output.resolve() in [p.resolve() for p in inputs]:
        raise ItmError(output, "output would overwrite an input", "choose another output name")
    sdr_codec = options.codec if grade is None else probe_video(grade).codec
    mode = resolve_mode(options.sidecar, output, sdr_codec)
    info, sequence = _probe_master(master, options)
    check_picture_size(master, info.width, info.height)
    if not info.is_hdr and not options.assume_hdr:
        raise ItmError(master, f"looks like SDR (transfer={info.color_trc})", "give an HDR master, or --assume-hdr for untagged files")
    if info.width % 2 or info.height % 2:
        raise ItmError(master, f"is {info.width}x{info.height}: the 4:2:0 SDR video needs an even width and height",
                       "crop or pad the master first, e.g. ffmpeg -i IN -vf crop=trunc(iw/2)*2:trunc(ih/2)*2 OUT")
    if grade is not None:
        ginfo = probe_video(grade, count_frames=True)
        minfo = info if sequence else probe_video(master, count_frames=True)
        if (ginfo.width, ginfo.height) != (info.width, info.height):
            raise ItmError(grade, f"grade is {ginfo.width}x{ginfo.height}, master is {info.width}x{info.height}", "give a grade of the master's size")
        if ginfo.fps != info.fps:
            raise ItmError(grade, f"grade runs at {float(ginfo.fps):.3f} fps, master at {float(info.fps):.3f}", "conform the grade's frame rate")
        if ginfo.frame_count != minfo.frame_count:
            raise ItmError(grade, f"grade has {ginfo.frame_count} frames, master {minfo.frame_count}", "give a grade of the same length")
    init, provenance = load_init(init_path)
    resolve_device(device)  # a bad --device is refused before pass 1
    work = _work_dir(output)
    key = _job_key(master, grade, options, json.dumps(provenance, sort_keys=True, default=str))
    job_file = work / "job.json"
    if work.exists() and (not job_file.exists() or json.loads(job_file.read_text()).get("key") != key):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps({"key": key}))

    # Pass 1: the SDR stream.
    if grade is None:
        sdr_path = work / ("sdr" + (".mkv" if output.suffix.lower() == ".mkv" else ".mp4"))
        if not (work / "sdr.done").exists():
            _make_sdr(master, sdr_path, info, options, quiet, sequence)
            (work / "sdr.done").write_text("ok")
    else:
        sdr_path = grade
    sinfo = probe_video(sdr_path, count_frames=True)
    # SEI rides inside the access units it was fitted to: only the size is bound (a cut
    # changes the first packet and the frame count; sidecar/SPEC.md section 6).
    binding = sei_binding(sinfo.width, sinfo.height) if mode == "sei" else stream_binding(sdr_path)
    fps = sinfo.fps
    hdr10 = info.hdr10
    header = TrackHeader(
        config=init.config,
        fps=(fps.numerator, fps.denominator),
        frame_count=sinfo.frame_count,
        width=sinfo.width,
        height=sinfo.height,
        hdr10=None,
        binding=binding,
        encoder={"tool": "itmfilter", "strategy": options.strategy, "init": provenance.get("kind", "shipped")},
    )
    if options.model == "grid":  # a track with grid keys declares 1.4 (1.5 when its shots may be
        # progressive); an MLP track stays 1.3, byte for byte
        minor = PROGRESSIVE_GRID_MINOR if options.grid_refine and options.max_kbps else GRID_MINOR
        if options.shift_runs:  # shift runs (DELTA coding 5): 1.6 whether or not the shots are progressive
            minor = SHIFT_RUN_MINOR
        if options.scene_residual and options.grid_refine and options.max_kbps:
            minor = SCENE_MINOR  # progressive shots that may end their stream with a scene residual
        if _looks_ahead(options):
            # a shot's tail may carry the next shot's stream (1.8, KEY and DELTA coding 6), its
            # scene residual may come in windowed pieces (1.9, refinement kind 4, with
            # --scene-pieces), and its compressed header is compressed against the header
            # dictionary (1.10): ~50 bytes where it was ~560, on every KEY that carries it in SEI;
            # its grid models take the compact layout (1.11: binary16 fields, the grid and the
            # MLP in two zstd frames): ~400 bytes less on a KEY of an M model
            minor = COMPACT_MODEL_MINOR
        header = dataclasses.replace(header, version=(header.version[0], minor),
                                     encoder={**header.encoder, "model": "grid"})
    key_interval = max(1, round(options.key_seconds * float(fps)))
    # half_shift: motion travels as two binary16 (DELTA coding 3, format 1.3): 4 bytes a frame, not 8
    kwargs = {"key_interval": key_interval, "key_dtype": options.key_dtype, "half_shift": True}
    notes: list[str] = []
    if options.key_dtype == "init":
        init_vec = flatten_state(init.state_dict())
        name = Path(str(provenance.get("path", "prior-only"))).stem.removeprefix("init-")
        ident = init_identity(name, init_vec)
        if init_reference(dataclasses.replace(header, init=ident)) is None:
            # a decoder would not hold this initialisation: self-contained keys instead
            kwargs["key_dtype"] = "int8"
            notes.append("the initialisation is not a shipped one: keys are int8 (not predicted), "
                         "so a --max-kbps cap may be exceeded by keys")
        else:
            kwargs["init"] = (name, init_vec)
    if options.delta_step is not None:
        kwargs["delta_step"] = options.delta_step
    encoder = TrackEncoder(header, **kwargs)

    # Pass 2: adaptation, segment by segment (key set to key set; itmfilter.encode.segments),
    # each checkpointed when done so an interrupted encode resumes.
    survey = survey_master(master, options.shot_threshold, assume_hdr=options.assume_hdr,
                           total=sinfo.frame_count or None, quiet=quiet)
    segments = plan_segments(survey.shot_starts, survey.frame_count, key_interval)
    # The video settings were measured with the earlier adaptation recipe (200 steps of
    # 8192 pixels, constant lr): kept here until the video benchmark is re-run with the newer one.
    first_opts = replace(RECIPE_200x8192, steps=options.first_steps, seed=options.seed)
    warm_opts = replace(
        RECIPE_200x8192, steps=options.warm_steps, lr=options.warm_lr, seed=options.seed, resample_at=(0,), error_stride=8,
        trainable=WARM_PARAMS[options.warm_params],
    )
    # What the header costs where it travels: the compressed form (1.3) with the KEYs
    # sei_header_frames picks and an 8-byte reference with the other KEYs (SEI), the
    # compressed form in the first sample (data track), the binary form once (attachment, JSON).
    starts = [s.start for s in segments]
    if mode in ("sei", "track"):
        header_bytes = final_header_bytes(encoder.header, hdr10, compressed=True)
        full_headers = sei_header_frames(starts, key_interval) if mode == "sei" else frozenset(starts[:1])
        other = HEADER_REF_BYTES if mode == "sei" else 0
        key_headers = tuple(header_bytes if s in full_headers else other for s in starts)
    else:
        header_bytes = final_header_bytes(encoder.header, hdr10)
        full_headers, other = frozenset(starts[:1]), 0
        key_headers = tuple(header_bytes if j == 0 else 0 for j in range(len(starts)))
    head, key_head = packet_heads(header, len(survey.shot_starts) or 1)
    motion, rate, aheads = options.motion, None, ()
    # In SEI the cap also pays each sample's NAL framing (the promise counts the bytes the
    # video stream grows by): the packets are planned against what is left.
    track_kbps = options.max_kbps
    # Shift runs (grid shots, DELTA coding 5): one packet carries up to a second of shifts and
    # the frames it covers send no sample; the plan counts what they cost and gives back the
    # framing reserve of every frame without a sample (encode/segments.py).
    runs = options.model == "grid" and options.shift_runs
    run_frames = max(1, min(255, round(float(fps))))
    sample_framing = SEI_FRAMING_RESERVE_BYTES if mode == "sei" else 0
    if options.max_kbps and mode == "sei":
        framing_kbps = SEI_FRAMING_RESERVE_BYTES * 8 * float(fps) / 1000
        track_kbps = options.max_kbps - framing_kbps
        if track_kbps <= 0:
            raise ItmError(master, f"--max-kbps {options.max_kbps:g} is below the SEI framing alone "
                           f"({framing_kbps:.1f} kbit/s at {float(fps):g} fps)",
                           f"give more than --max-kbps {framing_kbps:.1f}, or --sidecar track")
    if options.max_kbps and options.strategy != "frame":
        # Pass-1 rate plan (encode/rate.py). What every key is planned to cost at least, best
        # first: a refitted prior with the pan followed, a refitted prior without motion shifts,
        # the initialisation alone.
        bare = encoder.min_key_bytes()
        # With shift runs a KEY borrows from the cap's own buffer B (the segments' budgets hold
        # the carried bytes less the framing reserve each frame gives back, ``run_buffer``): the
        # plan checks that each KEY fits that, not the B of the cap less the framing (328 B for
        # 1,000 at 8 kbit/s in SEI, where a first KEY with its header did not fit and the plan
        # dropped the motion shifts for the whole track). The plan's own buffer, which sizes
        # the look-ahead lanes, is unchanged.
        key_buffer = (options.max_kbps or 0.0) * 1000 / 8 * options.buffer_seconds if runs else None
        plans = [(motion, PRIOR_KEY_BYTES), (False, PRIOR_KEY_BYTES), (False, bare)] if bare is not None \
            else [(motion, 0), (False, 0)]
        for plan_motion, floor in plans:
            nonkey = None
            if runs:  # a grid shot's frames after its KEY cost their shift runs, less the framing they skip
                nonkey = functools.partial(run_frames_bytes, head_bytes=head, run_frames=run_frames,
                                           framing=sample_framing, shifts=plan_motion)
            rate = plan_rate(track_kbps, float(fps), [s.frames for s in segments],
                             per_packet=HALF_MOTION_SHIFT_BYTES if plan_motion else 0, min_key_bytes=floor,
                             segment_headers=key_headers, head_bytes=head, key_head_bytes=key_head,
                             buffer_seconds=options.buffer_seconds, bare_key_bytes=bare, nonkey_bytes=nonkey,
                             key_buffer=key_buffer)
            if rate.shortfall <= 0:
                break
        if rate.shortfall <= 0 and runs and _looks_ahead(options):
            # the look-ahead (format 1.8): what each shot's tail can carry of the next shot's stream
            lane_head = head + RUN_HEAD_BYTES + sample_framing + 4  # a lane packet beyond a bare run: head, framing
            aheads = plan_ahead(rate, [s.frames for s in segments], [s.opens_shot for s in segments], nonkey,
                                lane_head, STREAM_RUN_FRAMES)
        if motion and not plan_motion:
            notes.append(f"--max-kbps {options.max_kbps:g} leaves no room for motion shifts: motion off")
        motion = plan_motion
        if rate.shortfall > 0:
            n_frames = survey.frame_count
            need = track_kbps * (1 + rate.shortfall / (rate.per_frame * n_frames)) + options.max_kbps - track_kbps
            headers = sum(1 for h in key_headers if h == header_bytes)
            raise ItmError(master, f"--max-kbps {options.max_kbps:g} cannot carry even a bare weight track "
                           f"({n_frames} frames, {len(segments)} key sets: {head} bytes a frame"
                           f"{f' and {SEI_FRAMING_RESERVE_BYTES} of SEI framing' if mode == 'sei' else ''}, a key per set, "
                           f"the {header_bytes}-byte header {headers} time{'s' if headers != 1 else ''})",
                           f"give at least --max-kbps {need + 0.05:.1f}")
    job = SegmentJob(
        master=os.fspath(master), sdr=os.fspath(sdr_path), header=header, first=first_opts, warm=warm_opts,
        fps=float(fps), coder=kwargs, strategy=options.strategy, refresh_ratio=options.refresh_ratio,
        motion=motion, max_kbps=track_kbps, header_bytes=header_bytes, rate=rate,
        key_headers=key_headers, other_key_header=other,
        assume_hdr=options.assume_hdr, init_path=os.fspath(init_path) if init_path else None, device=device,
        adapt_batch=options.adapt_batch, model=options.model, grid_steps=options.grid_steps,
        grid_fits_on_device=options.grid_fits_on_device,
        grid_refine=options.grid_refine and options.model == "grid",
        shift_runs=runs, run_frames=run_frames, sample_framing=sample_framing,
        scene_residual=options.scene_residual and options.grid_refine and options.model == "grid",
        scene_pieces=bool(options.scene_pieces and options.scene_residual and _looks_ahead(options)),
        run_buffer=(options.max_kbps or 0.0) * 1000 / 8 * options.buffer_seconds,
        aheads=aheads, search=options.search,
    )
    store = SegmentStore(work)
    desc = f"adapting ({options.strategy})"
    if engine == "ray":
        from itmfilter.encode.ray_engine import (
            encode_segments_ray,  # Ray is imported on this path only
        )

        packets, resumed = encode_segments_ray(job, segments, store, address=address, quiet=quiet, desc=desc)
    else:
        packets, resumed = encode_segments_local(job, segments, store, quiet=quiet, desc=desc)
    if not packets:
        raise ItmError(master, "no frames could be decoded", "check the master")
    if aheads:
        # a lane its receiver did not take is given back to its sender, which is encoded again
        packets, aheads = release_unused_lanes(job, segments, packets, quiet=quiet)
        # each shot's ahead bytes, carried by its KEY so far, into the lane of the shot before
        try:
            packets = place_ahead(packets, compact=job.compact)
        except ValueError as exc:  # a sender that fell back to MLP keys has no lane
            raise ItmError(master, f"the look-ahead could not be carried: {exc}",
                           "encode with --no-look-ahead (format 1.7)") from None
    shot = len(survey.shot_starts) - 1

    max_cll, max_fall = survey.max_cll, survey.max_fall
    if hdr10 is None:
        hdr10 = HDR10Metadata.bt2020(max_luminance=max(max_cll, 100.0)).with_light_levels(max_cll, max_fall)
    elif not hdr10.max_cll:
        hdr10 = hdr10.with_light_levels(max_cll, max_fall)
    header = dataclasses.replace(encoder.header, hdr10=hdr10.to_dict())

    # Pass 3: carriage.
    order = sorted(packets)
    frames = max(survey.frame_count, order[-1] + 1)  # frames a shift run covers have no packet
    header_sizes = {0: len(header.to_bytes())}  # bytes sent before each frame's packet
    if mode == "json":
        _remux(sdr_path, output, inputs, None, None, None)
        with atomic_output(sidecar_path(output), inputs=inputs) as tmp:
            Path(tmp).write_text(json.dumps(track_to_json(header, [packets[i] for i in order])) + "\n")
    elif mode == "attachment":
        blob = write_track_blob(header, [packets[i] for i in order])
        _remux(sdr_path, output, inputs, None, (MKV_ATTACHMENT_NAME, MKV_ATTACHMENT_MIMETYPE, blob), None)
    elif mode == "sei":
        whole, ref = header.to_compressed_bytes(), header.reference().to_bytes()
        header_sizes = {i: len(whole if i in full_headers else ref) for i in order
                        if decode_packet(packets[i]).kind == "key"}

        def sample(frame: int) -> bytes | None:
            raw = packets.get(frame)
            if raw is None:
                return None
            if decode_packet(raw).kind != "key":
                return raw
            return (whole if frame in full_headers else ref) + raw

        remux_with_sei(sdr_path, output, sample)
        codec = video_codec(output) or "h264"
        sei_sizes = [sei_nal_bytes(b, codec) if (b := sample(i)) is not None else 0 for i in range(frames)]
    else:
        header_sizes = {0: len(header.to_compressed_bytes())}
        _remux(sdr_path, output, inputs, header, None, packets)
    if max(header_sizes.values(), default=0) > header_bytes:
        notes.append(f"the final header ({max(header_sizes.values())} bytes) outgrew the {header_bytes} bytes "
                     "the rate plan reserved for it")
    shutil.rmtree(work, ignore_errors=True)
    if mode == "sei":
        sizes = sei_sizes
    else:  # per frame, 0 where a shift run covers the frame
        carried = carried_sizes([packets[i] for i in order], 0, header_sizes={order.index(i): b for i, b in header_sizes.items()
                                                                            if i in packets})
        sizes = [0] * frames
        for i, b in zip(order, carried):
            sizes[i] = b
    meta_bytes = sum(sizes)
    seconds = frames / float(fps)
    kinds: dict[str, int] = {}
    for i in order:
        p = decode_packet(packets[i])
        if p.kind == "delta" and p.coding == AHEAD_RUN_DELTA_CODING:
            kind = "run+ahead" if decode_shift_run(p)[1] else "run"  # carrying the next shot's stream
        elif p.kind == "delta" and p.coding == SHIFT_RUN_DELTA_CODING:
            kind = "run" if not carries_update(p) else "run+stream"  # a shift run, or a refinement packet carrying one
        else:
            kind = "shift" if p.kind == "delta" and not carries_update(p) else p.kind  # the pan alone
        kinds[kind] = kinds.get(kind, 0) + 1
    if frames > len(order):
        kinds["covered"] = frames - len(order)  # frames without a packet that a run carries
    worst = window_bytes(sizes, max(1, round(float(fps))))
    if options.max_kbps and rate is not None:  # the promise, checked on the bytes as carried
        promised = max(options.max_kbps * 1000 / 8 * options.buffer_seconds, rate.buffer)
        broken = check_rate(sizes, options.max_kbps, float(fps), buffer=promised)
        if broken:
            notes.append(f"--max-kbps {options.max_kbps:g} not kept: {broken[0]}"
                         + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""))
    keys: dict[str, int] = {}
    for i in order:
        p = decode_packet(packets[i])
        if p.kind == "key":
            form = key_form(p, encoder)
            keys[form] = keys.get(form, 0) + 1
    return VideoEncodeReport(os.fspath(output), frames, shot + 1, meta_bytes, 8 * meta_bytes / 1000 / seconds, mode, kinds,
                             segments=len(segments), resumed_segments=resumed, keys=keys,
                             worst_window_kbps=8 * worst / 1000 / min(1.0, seconds), notes=notes)


def _remux(sdr_path: Path, output: Path, inputs, header, attachment, packets) -> None:
    """Copy the SDR file's streams into ``output``, adding the data track or attachment."""


    with atomic_output(output, inputs=inputs) as tmp:
        with av.open(str(sdr_path)) as src, av.open(str(tmp), "w") as dst:
            mapping = {}
            for stream in src.streams:
                if stream.type in ("video", "audio", "subtitle"):
                    mapping[stream.index] = dst.add_stream_from_template(stream)
            vin = src.streams.video[0]
            data_stream = None
            if packets is not None:
                fps = Fraction(*header.fps)
                data_stream = add_data_stream(dst, output.suffix, fps)
            if attachment is not None:
                dst.add_attachment(*attachment)
            queue = sorted(packets) if packets is not None else []
            origin = vin.start_time or 0
            for pkt in src.demux():
                if pkt.stream.index not in mapping or pkt.dts is None:
                    continue
                if data_stream is not None and pkt.stream is vin and pkt.pts is not None:
                    now = float((pkt.dts - origin) * vin.time_base)
                    while queue and queue[0] / float(fps) <= now + 1e-9:
                        _mux_data(dst, data_stream, queue.pop(0), header, packets)
                pkt.stream = mapping[pkt.stream.index]
                dst.mux(pkt)
            while queue:
                _mux_data(dst, data_stream, queue.pop(0), header, packets)


def _mux_data(dst, stream, frame: int, header, packets) -> None:

    mux_data(dst, stream, frame, pack_sample(packets[frame], header if frame == 0 else None, compressed=True))


def _looks_ahead(options: VideoEncodeOptions) -> bool:
    """Whether an encode with ``options`` plans a look-ahead (format 1.8): progressive grid
    shots with shift runs under a cap."""
    return bool(options.model == "grid" and options.look_ahead and options.grid_refine and options.shift_runs
                and options.max_kbps)  # a grid model implies the warm strategy (VideoEncodeOptions refuses frame)
