"""A two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``,
one CPU each, started and stopped here): ``itmfilter catalogue --engine ray --address``
encodes a CSV of titles on it, gives the local run's bytes, writes the summary table,
exits 1 for the bad title, and skips the finished title when run again."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the Ray tests need the ray extra (scripts/setup.sh installs it)")

from itmfilter.data.testmedia import make_master_from_arrays  # noqa: E402
from itmfilter.encode.video import VideoEncodeOptions, encode_video  # noqa: E402
from itmfilter.track.carriage import load_track  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
# This cluster lives for one test on one machine: no token (Ray's default token, shared in
# ~/.ray, is rewritten whenever another Ray on the machine starts; a real cluster keeps it).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
W, H, N = 64, 48, 30
# what the catalogue command below asks for (its other settings are the defaults)
# (the MLP model: with the default under the catalogue's 64 kbit/s cap, the grid, this test took
# 314 s of a 1,087 s suite on an Intel Xeon, 133 s at 60 grid steps, most of it in the grid's
# refinement and scene searches; tests/test_thread_count.py encodes a grid track at 1 and 2 threads)
OPTS = VideoEncodeOptions(first_steps=30, warm_steps=5, preset="ultrafast", key_seconds=0.5, model="mlp")


def _frames():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for i in range(N):
        base = (xx + 2 * i) / W if i < 18 else 1 - yy / H
        yield (np.stack([base, base**2, 1 - base], -1) * (300 if i < 18 else 120) + 1.0).astype(np.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_nodes(address: str, n: int, timeout: float = 120) -> None:
    code = ("import ray, sys, time; ray.init(address=sys.argv[1], log_to_driver=False); t = time.time()\n"
            "while sum(x['Alive'] for x in ray.nodes()) < int(sys.argv[2]) and time.time() - t < float(sys.argv[3]):\n"
            "    time.sleep(0.5)\n"
            "sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= int(sys.argv[2]) else 1)")
    subprocess.run([sys.executable, "-c", code, address, str(n), str(timeout)], check=True, timeout=timeout + 60, env=ENV)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Head and worker node, each a ``ray start --block`` process of ours: SIGTERM to it
    stops that node's raylet and workers (never ``ray stop``, which would stop every Ray
    on the machine)."""
    if not RAY.exists():
        pytest.skip("no ray command beside the interpreter")
    port = _free_port()
    common = ["--num-cpus=1", "--object-store-memory=80000000", "--block", "--disable-usage-stats"]
    logs = tmp_path_factory.mktemp("ray-logs")
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                            stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT, env=ENV)
    procs = [head]
    try:
        # the head listens on this machine's address, which it prints for the other nodes
        deadline, found = time.monotonic() + 120, None
        while found is None and time.monotonic() < deadline and head.poll() is None:
            found = re.search(r"ray start --address='([^']+)'", (logs / "head.log").read_text())
            time.sleep(0.5)
        assert found, (logs / "head.log").read_text()
        address = found.group(1)
        procs.append(subprocess.Popen([str(RAY), "start", f"--address={address}", *common],
                                      stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT, env=ENV))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        # `ray start --head` notes its address here for `ray.init()` to find; a stopped
        # head's note would send every later ray.init() to a dead cluster
        note = Path("/tmp/ray/ray_current_cluster")
        if "address" in locals() and note.exists() and note.read_text().strip() == address:
            note.unlink()


def test_catalogue_on_a_two_node_cluster(two_nodes, tmp_path):
    master = tmp_path / "titles" / "pan.mkv"
    master.parent.mkdir()
    make_master_from_arrays(master, _frames(), fps=24, codec="hevc", peak_nits=1000)
    (tmp_path / "titles" / "broken.mkv").write_bytes(b"not a video")
    csv = tmp_path / "titles" / "titles.csv"
    csv.write_text("input,output\npan.mkv,\nbroken.mkv,\n")
    out = tmp_path / "out"
    local = encode_video(master, tmp_path / "local.mp4", options=OPTS, quiet=True)
    assert local.segments == 3  # 0-11, 12-17 | 18-29 (a cut at 18)

    cmd = [sys.executable, "-m", "itmfilter.cli", "catalogue", str(csv), "-o", str(out), "--engine", "ray",
           "--address", two_nodes, "--steps", "30", "--warm-steps", "5", "--preset", "ultrafast",
           "--key-seconds", "0.5", "--model", "mlp", "--quiet"]
    env = ENV
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr  # the broken title failed; the other one is done
    assert "broken.mkv" in first.stderr and first.stderr.count("itmfilter: error:") == 1
    a, b = load_track(out / "pan.mp4"), load_track(tmp_path / "local.mp4")
    assert a.header.to_bytes() == b.header.to_bytes() and a.packets == b.packets
    rows = (out / "catalogue.csv").read_text().splitlines()
    assert rows[0].startswith("input,output,status") and ",done," in rows[1] and ",failed," in rows[2]

    (tmp_path / "titles" / "broken.mkv").unlink()
    shutil.copy(master, tmp_path / "titles" / "broken.mkv")  # fixed; the finished title is skipped
    again = subprocess.run(cmd[:-1], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "2 titles" in again.stdout and "0 failed" in again.stdout
    rows = (out / "catalogue.csv").read_text().splitlines()
    assert ",skipped," in rows[1] and ",done," in rows[2]
