"""Batch transcode as Ray tasks: :func:`itmfilter.transcode.video.transcode_one` (a pure
function of a picklable :class:`TranscodeJob`) mapped over the jobs on a Ray cluster, one
file per task, one bar over the files. The workers read the sources and write the outputs
at the paths in the jobs (shared storage on a real cluster); every write is atomic, so a
task Ray re-runs after its worker died starts clean, and finished outputs are skipped on
a re-run.
"""

from __future__ import annotations

from dataclasses import replace

from itmfilter.cluster import connect, run_tasks
from itmfilter.progress import progress_bar
from itmfilter.transcode.video import TranscodeJob, TranscodeResult, transcode_one


def transcode_task(job: TranscodeJob) -> TranscodeResult:
    """One file on a worker, with one torch thread (a task holds one CPU)."""
    import torch

    torch.set_num_threads(1)
    return transcode_one(job)


def transcode_many_ray(jobs: list[TranscodeJob], *, address: str | None = None,
                       quiet: bool = False) -> list[TranscodeResult]:
    """Run ``jobs`` on the Ray cluster at ``address`` (:func:`itmfilter.cluster.connect`);
    results in the order of ``jobs``."""
    jobs = [replace(j, quiet=True) for j in jobs]  # the workers' bars would not reach this terminal
    results: dict[str, TranscodeResult] = {}
    with progress_bar(len(jobs), unit="file", desc="transcode on Ray", quiet=quiet) as bar, connect(address):
        for job, result in run_tasks(transcode_task, jobs):
            results[job.output] = result
            bar.update(1)
            bar.set_postfix(frames=sum(r.frames for r in results.values()))
    return [results[j.output] for j in jobs]
