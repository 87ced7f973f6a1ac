"""A catalogue: many titles encoded (or transcoded) in one run, with a summary table.

The titles come from a CSV file (a header row; column ``input`` required, ``output`` and,
for encodes, ``sdr`` (the title's own grade) optional; relative paths are taken from the
CSV's folder) or from a folder (every video file in it). Each title's output goes to
``out/`` unless the CSV names one. The run is resumable: a title whose output exists is
skipped, and an encode interrupted mid-title resumes from its finished segments. A failed
title is recorded and the others go on; :func:`run_catalogue` returns every title's row,
and ``catalogue.csv`` in the output folder holds the table.

With ``engine="ray"`` every encode's segments run as Ray tasks (titles one after the
other, each spread over the cluster) and transcodes run a file per task.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output
from itmfilter.progress import progress_bar
from itmfilter.transcode.video import TranscodeJob, transcode_many

VIDEO_SUFFIXES = (".mov", ".mp4", ".mkv", ".mxf", ".m4v")
ACTIONS = ("encode", "transcode")


@dataclass(frozen=True)
class Title:
    input: str
    output: str
    sdr: str | None = None


@dataclass
class TitleResult:
    input: str
    output: str
    status: str  # "done", "skipped", "failed"
    frames: int = 0
    seconds: float = 0.0
    kbit_per_s: float = 0.0
    error: str = ""


def read_titles(source: str | os.PathLike, out: str | os.PathLike, action: str = "encode") -> list[Title]:
    """The titles of a CSV file or a folder (module docstring)."""
    source, out = Path(source), Path(out)
    if action not in ACTIONS:
        raise ItmError(None, f"unknown catalogue action {action!r}", f"use one of {', '.join(ACTIONS)}")
    suffix = ".mp4" if action == "encode" else ".hdr10.mkv"
    if source.is_dir():
        inputs = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not inputs:
            raise ItmError(source, "is a folder without video files", f"put titles ({', '.join(VIDEO_SUFFIXES)}) in it or give a CSV")
        return [Title(os.fspath(p), os.fspath(out / (p.stem + suffix))) for p in inputs]
    if not source.is_file():
        raise ItmError(source, "no such file or folder", "give a CSV of titles or a folder of videos")
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "input" not in rows[0]:
        raise ItmError(source, "has no 'input' column", "give a CSV with a header row: input[,output][,sdr]")
    base = source.parent
    titles = []
    for n, row in enumerate(rows, start=2):
        name = (row.get("input") or "").strip()
        if not name:
            raise ItmError(source, f"line {n} has no input", "fill in the input column or remove the line")
        src = base / name
        dst = (base / row["output"].strip()) if (row.get("output") or "").strip() else out / (src.stem + suffix)
        grade = (row.get("sdr") or "").strip()
        titles.append(Title(os.fspath(src), os.fspath(dst), os.fspath(base / grade) if grade else None))
    outs = [t.output for t in titles]
    if len(set(outs)) != len(outs):
        raise ItmError(source, "names the same output twice", "give each title its own output")
    return titles


def run_catalogue(titles: list[Title], out: str | os.PathLike, *, action: str = "encode",
                  options: VideoEncodeOptions = VideoEncodeOptions(), engine: str = "local",
                  address: str | None = None, quiet: bool = False) -> list[TitleResult]:
    """Encode (or transcode) every title, skipping those already done; writes
    ``out/catalogue.csv`` and returns the rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[TitleResult] = []
    pending = []
    for t in titles:
        if Path(t.output).exists():
            results.append(TitleResult(t.input, t.output, "skipped"))
        else:
            pending.append(t)
    if engine == "ray":
        from itmfilter.cluster import connect  # Ray is imported on this path only

        cluster = connect(address)
    else:
        cluster = contextlib.nullcontext()
    with cluster:
        if action == "transcode":
            jobs = [TranscodeJob(t.input, t.output) for t in pending]
            if engine == "ray":
                from itmfilter.transcode.ray_engine import transcode_many_ray

                done = transcode_many_ray(jobs, address=address, quiet=quiet)
            else:
                done = transcode_many(jobs, quiet=quiet)
            results += [TitleResult(r.source, r.output, r.status, r.frames, r.seconds, 0.0, r.error) for r in done]
        else:
            with progress_bar(len(pending), unit="title", desc="catalogue", quiet=quiet or len(pending) < 2) as bar:
                for t in pending:
                    results.append(_encode_title(t, options, engine, address, quiet))
                    bar.update(1)
    order = {t.output: i for i, t in enumerate(titles)}
    results.sort(key=lambda r: order.get(r.output, len(order)))
    with atomic_output(out / "catalogue.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(results[0]).keys()) if results else ["input"])
            writer.writeheader()
            for r in results:
                writer.writerow(asdict(r))
    return results


def _encode_title(title: Title, options, engine, address, quiet) -> TitleResult:
    started = time.perf_counter()
    row = TitleResult(title.input, title.output, "failed")
    try:
        Path(title.output).parent.mkdir(parents=True, exist_ok=True)
        report = encode_video(title.input, title.output, grade=title.sdr, options=options, engine=engine,
                              address=address, quiet=quiet)
        row.status, row.frames, row.kbit_per_s = "done", report.frames, report.kbit_per_s
    except ItmError as exc:
        row.error = str(exc)
    except Exception as exc:  # one bad title must not stop the catalogue; say what happened
        row.error = f"{title.input}: {type(exc).__name__}: {exc}"
    row.seconds = time.perf_counter() - started
    return row


def catalogue_table(results: list[TitleResult]) -> str:
    """The summary table printed at the end of a run."""
    lines = [f"{'title':<32}{'status':>9}{'frames':>8}{'fps':>8}{'kbit/s':>8}"]
    for r in results:
        fps = r.frames / r.seconds if r.seconds > 0 else 0.0
        lines.append(f"{Path(r.input).name[:31]:<32}{r.status:>9}{r.frames:>8}{fps:>8.2f}{r.kbit_per_s:>8.1f}")
    failed = sum(r.status == "failed" for r in results)
    lines.append(f"{len(results)} titles, {sum(r.frames for r in results)} frames, {failed} failed")
    return "\n".join(lines)
