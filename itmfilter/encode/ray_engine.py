"""Pass 2 of a video encode as Ray tasks: one task per segment (:mod:`itmfilter.encode.segments`).

The driver plans the segments, loads those an earlier run finished, and submits the rest;
each task runs :func:`itmfilter.encode.segments.encode_segment` (the very function the
local engine calls, so the bytes are the same) with one torch thread, reading its master
and SDR frames from the paths in the job. Finished segments are checkpointed by the
driver as they arrive, in any order; the packets are assembled in frame order by the
caller, which remuxes once. A segment whose worker dies is re-run by Ray
(:data:`itmfilter.cluster.DEFAULT_RETRIES` times) with the same result. One bar counts
the frames of finished segments (frames/s and ETA over the whole encode).
"""

from __future__ import annotations

from itmfilter.cluster import connect, run_tasks
from itmfilter.encode.segments import Segment, SegmentJob, SegmentStore, encode_segment
from itmfilter.progress import progress_bar


def encode_segment_task(segment: Segment, job: SegmentJob) -> dict[int, bytes]:
    """A segment's packets, on a worker: :func:`encode_segment` with one torch thread
    (a task holds one CPU; the bytes do not depend on the thread count)."""
    import torch

    torch.set_num_threads(1)
    return encode_segment(job, segment)


def encode_segments_ray(job: SegmentJob, segments: list[Segment], store: SegmentStore, *,
                        address: str | None = None, quiet: bool = False,
                        desc: str = "adapting") -> tuple[dict[int, bytes], int]:
    """Encode ``segments`` as Ray tasks on the cluster at ``address``
    (:func:`itmfilter.cluster.connect`); those in ``store`` are loaded, not redone. Returns
    all packets and the number of segments resumed from the store."""
    packets: dict[int, bytes] = {}
    todo = []
    for segment in segments:
        done = store.load(segment)
        if done is None:
            todo.append(segment)
        else:
            packets.update(done)
    resumed = len(segments) - len(todo)
    total = sum(s.frames for s in segments)
    with progress_bar(total or None, unit="frame", desc=f"{desc} on Ray", quiet=quiet) as bar:
        bar.update(sum(s.frames for s in segments) - sum(s.frames for s in todo))
        bar.set_postfix(segments=f"{resumed}/{len(segments)}")
        if todo:
            with connect(address):
                finished = resumed
                for segment, result in run_tasks(encode_segment_task, todo, job):
                    store.save(segment, result)
                    packets.update(result)
                    finished += 1
                    bar.update(segment.frames)
                    bar.set_postfix(segments=f"{finished}/{len(segments)}")
    return packets, resumed
