"""``itmfilter transcode`` for video: SDR + weight track -> HEVC Main10 HDR10 (or EXRs).

The unit of work is :func:`transcode_one`, a pure function of a picklable
:class:`TranscodeJob` returning a :class:`TranscodeResult`: the local driver
(:func:`transcode_many`) maps it over a process pool, and a distributed engine (Ray's
``remote``, a Dask bag) could map the very same function over the same jobs. Finished
outputs are skipped, every write is atomic, and a failure of one input is reported in the
summary without stopping the others.

HDR10 static metadata: the master's mastering display and MaxCLL/MaxFALL from the track
header; when the header has none (blind mode, or an old track), MaxCLL/MaxFALL are
computed over the reconstruction in a first pass (CTA-861.3), never guessed. libx265
writes them as SEI itself; for hevc_nvenc the same two SEI messages are inserted into
every IRAP packet (:func:`itmfilter.track.sei.hdr10_sei_filter`).

Where a frame goes (``TranscodeJob.path``): on CUDA (``auto``) the player's per-frame path,
:func:`itmfilter.render.frame.hdr10_planes` (the fused Triton kernel for the full network):
the decoded 8/10-bit planes go up to the device once, the 10-bit HDR10 planes come back
once, straight into the encoder, with no float frame on the host. On a CPU (``auto``) the
reference path as before: :func:`itmfilter.model.inference.predict_pq` over the float
frame, then the writer's exact float64 conversion (the bytes of earlier releases; the
per-frame path differs from it by up to one code). ``--video-codec auto`` picks hevc_nvenc
when the device is CUDA and PyAV can open it, else libx265 (with a note when CUDA was
there); ``--hwaccel cuda`` asks FFmpeg for NVDEC decoding, with a note and the CPU decoder
when it is unavailable.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from itmfilter.colour.hdr10 import HDR10Metadata, LightLevelAccumulator
from itmfilter.colour.transfer import eotf_st2084
from itmfilter.errors import ItmError
from itmfilter.limits import check_picture_size
from itmfilter.media.frames import HWACCELS
from itmfilter.media.video import (
    Hdr10Writer,
    probe_video,
    read_sdr_frames,
    read_sdr_video_frames,
    resolve_hevc_encoder,
)
from itmfilter.model.grid import PlacedGrid
from itmfilter.model.inference import predict_pq
from itmfilter.model.net import resolve_device
from itmfilter.render.threads import one_blas_thread
from itmfilter.track.provider import FrameNetworks


@dataclass(frozen=True)
class TranscodeJob:
    source: str
    output: str
    crf: int = 16
    preset: str = "medium"
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = True
    position: int = 0  # tqdm bar line, for parallel bars
    start: int = 0  # a part of a long file: frames start .. end - 1 only, no audio (joined later)
    end: int | None = None
    video_codec: str = "auto"  # HEVC_ENCODERS: hevc_nvenc on CUDA where it opens, else libx265
    hwaccel: str = "none"  # HWACCELS: NVDEC decoding where it opens
    path: str = "auto"  # FRAME_PATHS: how a frame is reconstructed (module docstring)

    @property
    def is_part(self) -> bool:
        return self.start > 0 or self.end is not None


@dataclass
class TranscodeResult:
    source: str
    output: str
    status: str  # "done", "skipped", "failed"
    frames: int = 0
    seconds: float = 0.0
    mode: str = ""  # "weights" or "blind"
    damaged_frames: int = 0
    blind_frames: int = 0  # frames with weights but no set to decode (before a cut file's first key)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    bad_input: bool = False  # failed on the input (an ItmError), not on a fault of its own

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


FRAME_PATHS = ("auto", "reference", "triton", "torch", "exact")
"""``TranscodeJob.path``: ``auto`` (``frame`` on CUDA, ``reference`` on a CPU); ``reference``
(:func:`itmfilter.model.inference.predict_pq`, then the writer's float64 conversion); or a
path of :func:`itmfilter.render.frame.hdr10_planes` (the per-frame filter, planes to planes;
``triton`` runs on a CPU under ``TRITON_INTERPRET=1``)."""


def frame_path(path: str, device) -> str:
    """The path ``path`` (:data:`FRAME_PATHS`) resolves to on ``device``: ``reference`` or a
    :func:`itmfilter.render.frame.hdr10_planes` path (``auto`` there picks triton on CUDA)."""
    if path not in FRAME_PATHS:
        raise ItmError(None, f"unknown frame path {path!r}", f"use one of {', '.join(FRAME_PATHS)}")
    if path == "auto":
        return "frame" if device.type == "cuda" else "reference"
    return path


def _reconstructed(source: Path, nets: FrameNetworks, device, precision, start: int = 0, end: int | None = None):

    for index, sdr in read_sdr_frames(source, start=start):
        if end is not None and index >= end:
            break
        net = nets(index)
        if isinstance(net, PlacedGrid):  # a grid shot's frame (format 1.4): its own float32 decoder
            # at one BLAS thread: the model's layers are small products, and OpenBLAS's pool
            # keeps spinning after each one, on the cores x265's threads encode the frames
            # before with (docs/transcode-benchmark.md: 1.78 -> 1.65 s a 1080p frame, 803 ->
            # 459 CPU-s for 240 frames, the same HEVC frames)
            with one_blas_thread():
                pq = net.predict_pq(np.asarray(sdr, dtype=np.float32))
            yield index, pq
            continue
        yield index, predict_pq(net, sdr, device=device, precision=precision).clamp(0, 1).cpu().numpy()


def filtered_planes(source: Path, nets: FrameNetworks, device, precision, path: str, hwaccel: str,
                     notes: list[str], start: int = 0, end: int | None = None):
    """``(index, [Y, Cb, Cr])``: the HDR10 10-bit planes (numpy uint16) of each frame of
    ``source`` from presentation index ``start`` to ``end`` (excluded), each through
    ``nets(index)`` by the player's per-frame path,
    :func:`itmfilter.render.frame.hdr10_planes` at the ``full`` rung (``path``: one of its
    paths, or ``frame`` for its ``auto``). ``hwaccel``: see
    :func:`itmfilter.media.video.read_sdr_video_frames`; its fallback note is appended to
    ``notes``."""
    from itmfilter.render.frame import hdr10_planes

    frames, note = read_sdr_video_frames(source, start=start, hwaccel=hwaccel)
    if note:
        notes.append(note)
    for index, frame in frames:
        if end is not None and index >= end:
            break
        yield index, hdr10_planes(frame, nets(index), "full", device, precision,
                                  path="auto" if path == "frame" else path)


def hevc_encoder_for(video_codec: str, device) -> tuple[str, str | None]:
    """``(codec, note)`` of :func:`itmfilter.media.video.resolve_hevc_encoder`, except that
    ``auto`` without CUDA is libx265 without probing NVENC (nothing to say on a CPU)."""
    if video_codec == "auto" and device.type != "cuda":
        return "libx265", None
    return resolve_hevc_encoder(video_codec)


def write_hdr10_video(source: Path, output, nets: FrameNetworks, info, metadata: HDR10Metadata, *, device,
                      precision: str = "auto", path: str = "reference", codec: str = "libx265",
                      hwaccel: str = "none", crf: int = 16, preset: str = "medium", start: int = 0,
                      end: int | None = None, copy_from=None, notes: list[str] | None = None,
                      progress=None) -> int:
    """The main pass of a transcode: frames ``start`` .. ``end - 1`` of ``source``, each through
    ``nets(index)`` (``path``: ``reference`` or a path of :func:`filtered_planes`), into an
    HEVC HDR10 ``output`` by ``codec`` with ``metadata`` (libx265 writes it as SEI; for
    hevc_nvenc it is inserted, :func:`itmfilter.track.sei.hdr10_sei_filter`), audio and
    subtitles copied from ``copy_from``. ``info``: the source's
    :class:`itmfilter.media.video.VideoInfo`. Returns the frames written; ``progress`` is
    called with 1 after each."""
    notes = notes if notes is not None else []
    packet_filter = None
    if codec == "hevc_nvenc":
        from itmfilter.track.sei import hdr10_sei_filter

        packet_filter = hdr10_sei_filter(metadata)
    frames = 0
    with Hdr10Writer(output, info.width, info.height, info.fps, codec=codec, crf=crf, preset=preset,
                     metadata=metadata, copy_from=copy_from, packet_filter=packet_filter) as writer:
        if path == "reference":
            for _, pq in _reconstructed(source, nets, device, precision, start, end):
                writer.write(pq)
                frames += 1
                if progress is not None:
                    progress(1)
        else:
            for _, planes in filtered_planes(source, nets, device, precision, path, hwaccel, notes, start, end):
                writer.write_planes(planes)
                frames += 1
                if progress is not None:
                    progress(1)
    return frames


def transcode_one(job: TranscodeJob) -> TranscodeResult:
    """Transcode one SDR video (see the module docstring); never raises for bad input."""


    source, output = Path(job.source), job.output
    started = time.perf_counter()
    result = TranscodeResult(job.source, job.output, "failed")
    try:
        exr = output.endswith(".exr")
        if not exr and Path(output).exists():
            result.status = "skipped"
            return result
        info = probe_video(source)
        check_picture_size(source, info.width, info.height)
        nets = FrameNetworks(source)
        result.mode = nets.mode
        if nets.track is None:
            result.notes.append(f"{source}: no weight track; blind mode (initialisation alone)")
        device = resolve_device(job.device)
        path = frame_path(job.path, device)
        if job.hwaccel not in HWACCELS:
            raise ItmError(None, f"unknown --hwaccel {job.hwaccel!r}", f"use one of {', '.join(HWACCELS)}")
        codec, codec_note = hevc_encoder_for(job.video_codec, device)
        if codec_note and not exr:
            result.notes.append(f"{source}: {codec_note}")
        header_hdr10 = nets.track.header.hdr10_metadata() if nets.track is not None else None
        total = info.frame_count or None
        if job.is_part and (header_hdr10 is None or not header_hdr10.max_cll):
            raise ItmError(source, "has no MaxCLL/MaxFALL in its track, so it cannot be transcoded in parts",
                           "transcode it whole")
        if header_hdr10 is None or not header_hdr10.max_cll:
            acc = LightLevelAccumulator()
            for _, pq in _reconstructed(source, nets, device, job.precision):
                acc.add(eotf_st2084(pq))
            max_cll, max_fall = acc.result()
            base = header_hdr10 or HDR10Metadata.bt2020(max_luminance=max(1000.0, max_cll))
            header_hdr10 = base.with_light_levels(max_cll, max_fall)
            result.notes.append(f"{source}: MaxCLL/MaxFALL computed over the reconstruction")
            nets = FrameNetworks(source)
        bar = tqdm(total=total, unit="frame", desc=source.name, disable=job.quiet, position=job.position, leave=False)
        if exr:
            from itmfilter.media.stills import write_exr

            _make_folder(Path(output).parent, output)
            for index, pq in _reconstructed(source, nets, device, job.precision):
                write_exr(output % index, eotf_st2084(pq), inputs=[source])
                result.frames += 1
                bar.update(1)
        else:
            result.frames = write_hdr10_video(
                source, output, nets, info, header_hdr10, device=device, precision=job.precision, path=path,
                codec=codec, hwaccel=job.hwaccel, crf=job.crf, preset=job.preset, start=job.start, end=job.end,
                copy_from=None if job.is_part else source, notes=result.notes, progress=bar.update)
        bar.close()
        result.damaged_frames = nets.damaged
        if nets.track is not None:
            result.blind_frames = nets.blind_frames
            if nets.warning():
                result.notes.append(nets.warning())
            elif nets.blind_frames:
                result.notes.append(f"{source}: {nets.blind_frames} frames had no key to decode from "
                                    "(a cut before the first key): reconstructed blind")
        result.status = "done"
    except ItmError as exc:
        result.error = str(exc)
        result.bad_input = True
    except Exception as exc:  # one bad input must not stop the others; say what happened
        result.error = f"{source}: {type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _make_folder(folder: Path, output) -> None:
    """Create an output folder, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ItmError(output, f"cannot create the output folder {str(folder)!r} ({exc.strerror or exc})",
                       "choose a folder you can write to") from None


def plan_jobs(inputs: list[Path], output: Path, **kwargs) -> list[TranscodeJob]:
    """One job per input: ``output`` is a file (one input), a folder (many), or an EXR
    pattern ``frames/%06d.exr`` (one input)."""
    if not inputs:
        raise ItmError(None, "no inputs given", "name one or more SDR videos")
    for src in inputs:
        if not src.exists():
            raise ItmError(src, "no such file", "check the path")
    pattern = "%" in output.name and output.suffix.lower() == ".exr"
    if len(inputs) > 1 or (output.exists() and output.is_dir()) or (not output.suffix and not pattern):
        if pattern:
            raise ItmError(output, "an EXR pattern takes one input", "transcode one video at a time to EXRs")
        _make_folder(output, output)
        outs = [output / (src.stem + ".hdr10.mkv") for src in inputs]
    else:
        if not pattern and output.suffix.lower() not in (".mkv", ".mp4", ".mov"):
            raise ItmError(output, f"unsupported output extension {output.suffix!r}", "use .mkv, .mp4, .mov, a folder, or frames/%06d.exr")
        outs = [output]
    jobs = []
    for i, (src, out) in enumerate(zip(inputs, outs)):
        if out.resolve() == src.resolve():
            raise ItmError(out, "output would overwrite its input", "choose another output")
        jobs.append(TranscodeJob(os.fspath(src), os.fspath(out), position=i + 1, **kwargs))
    return jobs


def transcode_many(jobs: list[TranscodeJob], n_jobs: int = 1, quiet: bool = False) -> list[TranscodeResult]:
    """Run jobs locally (``n_jobs`` processes), with an overall progress bar."""


    jobs = [TranscodeJob(**{**j.__dict__, "quiet": quiet}) for j in jobs]
    overall = tqdm(total=len(jobs), unit="file", desc="transcode", disable=quiet or len(jobs) == 1, position=0)
    results: list[TranscodeResult] = []
    if n_jobs <= 1:
        for job in jobs:
            results.append(transcode_one(job))
            overall.update(1)
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            for res in pool.map(transcode_one, jobs):
                results.append(res)
                overall.update(1)
    overall.close()
    return results


def summary_table(results: list[TranscodeResult]) -> str:
    lines = [f"{'file':<32}{'status':>9}{'mode':>9}{'frames':>8}{'fps':>8}{'damaged':>9}"]
    for r in results:
        lines.append(f"{Path(r.source).name[:31]:<32}{r.status:>9}{r.mode:>9}{r.frames:>8}{r.fps:>8.2f}{r.damaged_frames:>9}")
    failed = sum(r.status == "failed" for r in results)
    frames = sum(r.frames for r in results)
    lines.append(f"{len(results)} files, {frames} frames, {failed} failed")
    return "\n".join(lines)
