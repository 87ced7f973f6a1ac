"""Encode on Ray (``engine="ray"``): the same bytes as the local run, a killed worker's
segment retried, an interrupted job resumed. One local Ray instance for the module
(``ray.init(num_cpus=2)``), on a tiny real master made by the test (2 shots, 4 segments)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra (scripts/setup.sh installs it)")

from twoshots import N, frames  # noqa: E402

from itmfilter.data.testmedia import make_master_from_arrays  # noqa: E402
from itmfilter.encode.segments import plan_segments  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.track.carriage import load_track  # noqa: E402

OPTS = VideoEncodeOptions(first_steps=40, warm_steps=5, preset="ultrafast", key_seconds=0.5,
                          model="mlp")  # 12-frame segments
REPO = Path(__file__).resolve().parents[1]


_frames = frames


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    path = tmp_path_factory.mktemp("master") / "master.mkv"
    make_master_from_arrays(path, _frames(), fps=24, codec="hevc", peak_nits=1000)
    return path


@pytest.fixture(scope="module")
def local_track(master, tmp_path_factory):
    """The local engine's track, made in a fresh interpreter that must not import Ray."""
    out = tmp_path_factory.mktemp("local") / "sdr.mp4"
    code = ("import sys; from itmfilter.encode.video import VideoEncodeOptions, encode_video; "
            f"r = encode_video(sys.argv[1], sys.argv[2], options=VideoEncodeOptions(**{OPTS.__dict__!r}), quiet=True); "
            "assert (r.segments, r.shots) == (4, 2), r; "
            "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'the local path imported Ray'")
    subprocess.run([sys.executable, "-c", code, str(master), str(out)], cwd=REPO, check=True)
    return load_track(out), out


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (start-up takes seconds; Ray gives its raylet
    a fixed 30 s to register, which a busy machine can miss: one more try then)."""
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False,
                     log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _same_track(a, b):
    assert a.header.to_bytes() == b.header.to_bytes()
    assert a.packets == b.packets


def test_plan_segments_cut_at_shots_and_key_interval():
    segs = plan_segments([0, 20], 36, 12)
    assert [(s.start, s.end, s.shot, s.opens_shot) for s in segs] == [
        (0, 12, 0, True), (12, 20, 0, False), (20, 32, 1, True), (32, 36, 1, False)]


def test_ray_track_is_byte_identical_to_local(master, local_track, cluster, tmp_path):
    out = tmp_path / "sdr.mp4"
    report = encode_video(master, out, options=OPTS, quiet=True, engine="ray")
    assert report.segments == 4 and report.resumed_segments == 0
    _same_track(load_track(out), local_track[0])
    assert out.read_bytes() == local_track[1].read_bytes()  # one remux of the same packets: the same file
    assert not list(tmp_path.glob(".*itm-work"))


def _task_pids() -> list[int]:
    """Ray workers running a segment (Ray titles a busy worker ``ray::<function>``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if cmdline.startswith(b"ray::") and b"encode_segment_task" in cmdline.split(b"\0")[0]:
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def test_killed_worker_segment_is_retried_with_the_same_bytes(master, local_track, cluster, tmp_path):
    out = tmp_path / "sdr.mp4"
    result = {}

    def run():
        try:
            result["report"] = encode_video(master, out, options=OPTS, quiet=True, engine="ray")
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        pids = _task_pids()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)  # a worker dies mid-segment
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None, "no worker was seen running a segment"
    assert "error" not in result, result.get("error")
    assert not Path(f"/proc/{killed}").exists()
    _same_track(load_track(out), local_track[0])


def test_interrupted_ray_encode_resumes_only_the_rest(master, local_track, cluster, tmp_path):
    out = tmp_path / "sdr.mp4"
    work = tmp_path / ".sdr.mp4.itm-work"
    # A second driver on the module's cluster, killed once a segment is checkpointed.
    code = ("import sys; from itmfilter.encode.video import VideoEncodeOptions, encode_video; "
            f"encode_video(sys.argv[1], sys.argv[2], options=VideoEncodeOptions(**{OPTS.__dict__!r}), "
            "quiet=True, engine='ray', address=sys.argv[3])")
    driver = subprocess.Popen([sys.executable, "-c", code, str(master), str(out), cluster], cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while not list(work.glob("segment-*.bin")) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
    finally:
        driver.kill()
        driver.wait()
    done = len(list(work.glob("segment-*.bin")))
    assert 1 <= done < 4, f"{done} segments finished before the kill"
    assert not out.exists()
    report = encode_video(master, out, options=OPTS, quiet=True, engine="ray")
    assert report.resumed_segments == done and report.segments == 4
    _same_track(load_track(out), local_track[0])


def test_transcode_files_on_ray(local_track, cluster, tmp_path):
    from itmfilter.media.video import probe_video
    from itmfilter.transcode.ray_engine import transcode_many_ray
    from itmfilter.transcode.video import plan_jobs

    inputs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for p in inputs:
        p.write_bytes(local_track[1].read_bytes())
    (tmp_path / "c.mp4").write_bytes(b"not a video")
    jobs = plan_jobs(inputs + [tmp_path / "c.mp4"], tmp_path / "out", preset="ultrafast")
    results = transcode_many_ray(jobs, quiet=True)
    assert [r.status for r in results] == ["done", "done", "failed"]  # one bad file does not stop the others
    assert [r.frames for r in results[:2]] == [N, N] and all(r.mode == "weights" for r in results[:2])
    assert "c.mp4" in results[2].error
    assert probe_video(tmp_path / "out" / "a.hdr10.mkv").is_hdr
    again = transcode_many_ray(jobs[:2], quiet=True)
    assert [r.status for r in again] == ["skipped", "skipped"]


def test_long_file_transcoded_in_parts_on_ray(local_track, cluster, tmp_path):
    from itmfilter.media.video import probe_video, read_hdr_frames
    from itmfilter.transcode.ray_engine import part_starts, transcode_many_ray
    from itmfilter.transcode.video import TranscodeJob, transcode_one

    source = local_track[1]
    assert part_starts(source, 12) == [0, 12]  # keys at 0, 12, 20, 32: parts of >= 12 frames, the last >= 6
    whole = transcode_one(TranscodeJob(str(source), str(tmp_path / "whole.mkv"), preset="ultrafast"))
    [split] = transcode_many_ray([TranscodeJob(str(source), str(tmp_path / "split.mkv"), preset="ultrafast")],
                                 quiet=True, split_frames=12)
    assert whole.status == split.status == "done" and split.frames == N
    assert any("2 parts" in n for n in split.notes)
    assert not list(tmp_path.glob(".*itm-parts"))
    a, b = probe_video(tmp_path / "whole.mkv"), probe_video(tmp_path / "split.mkv")
    assert b.is_hdr and (b.width, b.height, b.fps) == (a.width, a.height, a.fps)
    fa, fb = list(read_hdr_frames(tmp_path / "whole.mkv")), list(read_hdr_frames(tmp_path / "split.mkv"))
    assert [i for i, _ in fb] == list(range(N))  # every frame once, at its own time
    diff = [float(np.abs(x - y).mean() / max(x.mean(), 1e-6)) for (_, x), (_, y) in zip(fa, fb)]
    assert max(diff) < 0.05  # the same pictures, up to two x265 encodes' differences
