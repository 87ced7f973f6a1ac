"""players/itmfilter.lua in the real mpv CLI (headless): a file with weights plays as
HDR10 through the filter, from mpv's --start and after a seek; a file without weights plays
untouched; the playlist goes on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

import itmfilter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "players" / "itmfilter.lua"

pytestmark = pytest.mark.skipif(shutil.which("mpv") is None, reason="needs the mpv command")


def _mpv(*args: str) -> list[str]:
    command = f"{sys.executable} -m itmfilter.cli"
    return ["mpv", "--no-config", "--ao=null", f"--script={SCRIPT}", "--msg-level=itmfilter=v",
            f"--script-opts=itmfilter-command={command},itmfilter-rung=full,itmfilter-device=cpu,itmfilter-precision=fp32",
            *args]


def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width].copy()
            for p in frame.planes]


def _decoded(path) -> list:
    with av.open(str(path)) as src:
        return list(src.decode(video=0))


def test_weighted_file_plays_as_hdr10_from_start(weighted_clip, tmp_path):
    seen = tmp_path / "seen.mkv"
    res = subprocess.run(_mpv("--vo=null", "--start=0.25", f"--o={seen}", "--ovc=ffv1", str(weighted_clip)),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "HDR10 through itmfilter (data track, rung full) from 0.250 s" in log
    # the tags mpv's output carries are asked over IPC in the next test: the script's log line
    # comes from a property observer, which sees the value when it runs, and a loaded machine can
    # run it after this 6-frame encode has closed its output (the value is then nil, no line)
    # what mpv decoded (encoded losslessly by mpv) is the filter's output from frame 6 on
    frames = _decoded(seen)
    weights = itmfilter.open_weights(weighted_clip, device="cpu", precision="fp32")
    want = [weights.planes(f) for f in _decoded(weighted_clip)[6:]]
    assert len(frames) == 6
    assert all(np.array_equal(a, b) for f, w in zip(frames, want) for a, b in zip(_planes(f), w))


class _Ipc:
    def __init__(self, path: Path) -> None:
        deadline = time.time() + 60
        while not path.exists():
            assert time.time() < deadline, "mpv did not open its IPC socket"
            time.sleep(0.1)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rw")

    def command(self, *args):
        self.file.write(json.dumps({"command": list(args)}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:  # events come on the same socket
                return reply.get("data")

    def wait_for(self, what, timeout=120.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = what()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError("mpv did not get there in time")


def test_seek_restarts_the_pipe_and_the_playlist_goes_on(weighted_clip, plain_clip, tmp_path):
    sock = tmp_path / "mpv.sock"
    mpv = subprocess.Popen(_mpv("--vo=null", "--pause", f"--input-ipc-server={sock}", str(weighted_clip), str(plain_clip)),
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ipc = _Ipc(sock)
        params = ipc.wait_for(lambda: ipc.command("get_property", "video-out-params"))
        tags = tuple(params[k] for k in ("pixelformat", "colormatrix", "primaries", "gamma", "colorlevels"))
        assert tags == ("yuv420p10", "bt.2020-ncl", "bt.2020", "pq", "limited"), params
        ipc.command("seek", 0.25, "absolute")
        # the restarted pipe starts at the target, on the file's own clock
        # (asked of the parameters the wait saw: a second read may land while mpv reconfigures)
        after = ipc.wait_for(lambda: (ipc.command("get_property", "time-pos") or 0) >= 0.24
                             and ipc.command("get_property", "video-out-params"))
        assert after["gamma"] == "pq"
        assert ipc.command("get_property", "playlist-count") == 2
        ipc.command("set_property", "pause", False)
        log = mpv.communicate(timeout=300)[0]
    finally:
        if mpv.poll() is None:
            mpv.kill()
    assert mpv.returncode == 0, log
    assert "seek: restarting the filter at 0.250 s" in log
    assert "from 0.250 s" in log and log.count("HDR10 through itmfilter") == 2
    assert "plain.mp4" in log and "Exiting... (End of file)" in log
    assert not [p for p in os.listdir(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp")
                if p.startswith(f"itmfilter-{mpv.pid}-")]  # its named pipes are gone
