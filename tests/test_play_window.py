"""`itmfilter play --hdr` in a real X window, looked at the way a person would.

Each test starts its own Xvfb (a virtual X server: `apt-get install xvfb`, which
scripts/setup.sh installs) with a 640x360 screen, runs the command line as a separate
process (as a user would, and so that no test shares a libmpv instance or its X
connection), drives mpv through its JSON IPC (`keypress`, properties) and takes
screenshots of the screen with `xwd` + ImageMagick. mpv renders with `gpu-next` on
Mesa's software rasteriser (llvmpipe): there is no GPU under Xvfb, so the plain
`gpu-next` output fails and the player falls back to `gpu-sw=yes`.

The clip is 7 s of 320x180 at 24 fps: a colour gradient with a white square that moves
right by (320 - 60) / 168 px a frame, so a screenshot tells which frame is on screen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
W, H, FPS, N = 320, 180, 24, 7 * 24
SCREEN = (640, 360)
WINDOW_OPTS = ["--mpv-opt", "geometry=640x360+0+0", "--mpv-opt", "osc=no", "--mpv-opt", "osd-level=0"]

if shutil.which("Xvfb") is None:
    pytest.skip("Xvfb is not installed (scripts/setup.sh installs xvfb)", allow_module_level=True)
pytest.importorskip("mpv")


def _square_left(i: int) -> int:
    return int(20 + i * (W - 60) / N)


def _frame_rgb(i: int) -> np.ndarray:
    x = np.linspace(0, 1, W)[None, :]
    y = np.linspace(0, 1, H)[:, None]
    img = np.stack(np.broadcast_arrays(x, y, 0.5 * (1 - x)), -1).copy()
    img[60:120, _square_left(i):_square_left(i) + 40] = 1.0
    return (img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("window") / "sdr.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        cc = v.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        v.options = {"crf": "16", "preset": "ultrafast"}
        for i in range(N):
            frame = av.VideoFrame.from_ndarray(_frame_rgb(i), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
    return path


def _die_with_parent() -> None:
    """Linux: SIGTERM the child when the test process dies, even where no finally runs."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture
def display():
    """A fresh Xvfb on a free display number (-displayfd), 640x360, 24-bit, with GLX."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp",
         "-noreset", "+extension", "GLX"],
        pass_fds=(w,), preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        buf = b""
        deadline = time.monotonic() + 20
        while not buf.endswith(b"\n"):  # Xvfb writes its display number once it accepts clients
            left = deadline - time.monotonic()
            assert left > 0 and select.select([r], [], [], left)[0], "Xvfb did not start in 20 s"
            chunk = os.read(r, 64)
            assert chunk, f"Xvfb exited with status {proc.wait()}"
            buf += chunk
        yield ":" + buf.decode().strip()
    finally:
        os.close(r)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(display: str | None, mpv_home: Path) -> dict:
    """The environment of a user at that display, with their mpv config in ``mpv_home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display is not None:
        env["DISPLAY"] = display
    env["MPV_HOME"] = str(mpv_home)
    mpv_home.mkdir(parents=True, exist_ok=True)
    return env


def _itmfilter(*args, env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "itmfilter.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent, **popen)


def _abandon(proc: subprocess.Popen, exc: BaseException) -> AssertionError:
    """Kill the player after a failed step; the failure with the player's stderr."""
    proc.kill()
    _, err = proc.communicate()
    return AssertionError(f"{exc!r}\nitmfilter's stderr:\n{err}")


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"itmfilter did not end within {timeout} s\n{out}\n{err}") from None
    return proc.returncode, out, err


class MpvIpc:
    """mpv's JSON IPC (``input-ipc-server``): commands, properties, key presses."""

    def __init__(self, path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the player exited ({proc.returncode}) before mpv listened:\n"
                                     + proc.stderr.read())
            if path.exists():
                try:
                    self.sock = socket.socket(socket.AF_UNIX)
                    self.sock.connect(str(path))
                    break
                except OSError:
                    self.sock.close()
            assert time.monotonic() < deadline, f"mpv did not open {path} in {timeout} s"
            time.sleep(0.1)
        self.file = self.sock.makefile("r")
        self.next_id = 0

    def command(self, *args):
        self.next_id += 1
        self.sock.sendall((json.dumps({"command": list(args), "request_id": self.next_id}) + "\n").encode())
        while True:
            line = self.file.readline()
            assert line, "mpv closed its IPC socket"
            reply = json.loads(line)
            if reply.get("request_id") == self.next_id:
                return reply

    def get(self, name):
        reply = self.command("get_property", name)
        return reply.get("data") if reply["error"] == "success" else None

    def wait(self, name, cond, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while True:
            value = self.get(name)
            if value is not None and cond(value):
                return value
            assert time.monotonic() < deadline, f"mpv's {name} stayed {value!r} for {timeout} s"
            time.sleep(0.05)

    def press(self, key: str) -> None:
        assert self.command("keypress", key)["error"] == "success"

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _screenshot(display: str) -> np.ndarray:
    """The whole X screen as float RGB (H, W, 3) in code values 0..255: `xwd -root`,
    converted by ImageMagick."""
    from PIL import Image

    xwd = subprocess.run(["xwd", "-silent", "-display", display, "-root"], check=True, capture_output=True).stdout
    png = subprocess.run(["convert", "xwd:-", "png:-"], input=xwd, check=True, capture_output=True).stdout
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)


def _paused_picture(ipc: MpvIpc, display: str) -> tuple[float, np.ndarray]:
    """``(time-pos, screenshot)`` once mpv is paused and its position has settled."""
    ipc.wait("pause", bool)
    pos = ipc.wait("time-pos", lambda v: True)
    while True:
        time.sleep(0.4)
        now = ipc.get("time-pos")
        if now == pos:
            break
        pos = now
    return pos, _screenshot(display)


def _square_x(img: np.ndarray) -> float:
    """Centre of the white square, in source pixels, from a full-screen picture."""
    h, w, _ = img.shape
    rows = img[int(h * 70 / H):int(h * 110 / H)].mean(axis=(0, 2))
    xs = np.nonzero(rows > 0.9 * rows.max())[0]
    return (xs.min() + xs.max() + 1) / 2 * W / w


def _expected_square_x(pos: float) -> float:
    return _square_left(round(pos * FPS)) + 20


def _reference(display: str, video: Path, pos: float, tmp: Path) -> np.ndarray:
    """What mpv itself shows for ``video`` at ``pos`` in the same window: the mpv command
    line, no config, gpu-next on llvmpipe, paused after an exact seek."""
    sock = tmp / f"ref-{video.stem}.sock"
    proc = subprocess.Popen(
        ["mpv", "--no-config", "--terminal=no", "--vo=gpu-next", "--gpu-sw=yes", "--ao=null",
         f"--geometry={SCREEN[0]}x{SCREEN[1]}+0+0", "--osc=no", "--osd-level=0", "--pause",
         "--hr-seek=yes", f"--start={pos:.6f}", f"--input-ipc-server={sock}", str(video)],
        env=dict(os.environ, DISPLAY=display), preexec_fn=_die_with_parent)
    try:
        ipc = MpvIpc(sock, proc, timeout=30)
        ipc.wait("vo-configured", bool)
        ipc.wait("time-pos", lambda v: abs(v - pos) < 0.5 / FPS)
        time.sleep(0.5)
        picture = _screenshot(display)
        ipc.command("quit")
        ipc.close()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return picture


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _itm_error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("itmfilter: error:")]


def test_hdr_window_plays_seeks_pauses_and_quits(clip, display, tmp_path):
    """The headline: a window opens (gpu-next fails on Xvfb, gpu-sw=yes is used and said),
    plays, pauses, seeks both ways with the picture of the new position on screen, the
    picture is the HDR reconstruction tone-mapped by mpv (as mpv shows the --output
    recording of the same frames), not the SDR, and q ends it with status 0."""
    sock = tmp_path / "mpv.sock"
    proc = _itmfilter("play", clip, "--hdr", "--rung", "full", *WINDOW_OPTS,
                      "--mpv-opt", f"input-ipc-server={sock}", env=_env(display, tmp_path / "mpvhome"))
    try:
        ipc = MpvIpc(sock, proc)
        ipc.wait("time-pos", lambda t: t >= 0.5)  # playing
        assert ipc.get("gpu-sw") is True  # the fallback
        ipc.press("SPACE")  # mpv's own pause key
        t_a, shot_a = _paused_picture(ipc, display)
        ipc.press("RIGHT")  # +5 s: a new producer from there
        t_b = ipc.wait("time-pos", lambda t: t > t_a + 4)
        t_b, shot_b = _paused_picture(ipc, display)
        ipc.press("LEFT")  # -5 s
        ipc.wait("time-pos", lambda t: t < t_b - 4)
        t_c, shot_c = _paused_picture(ipc, display)
        ipc.press("q")
        ipc.close()
    except BaseException as exc:
        raise _abandon(proc, exc) from exc
    code, out, err = _finish(proc)
    assert code == 0, err
    assert "Traceback" not in err and not _itm_error_lines(err), err
    assert "could not open its video output gpu-next" in err and "trying gpu-next with gpu-sw=yes" in err
    assert "output gpu-next with gpu-sw=yes" in out and "(quit)" in out, out

    assert abs(t_b - (t_a + 5)) < 0.2 and abs(t_c - (t_b - 5)) < 0.2, (t_a, t_b, t_c)
    for pos, shot in ((t_a, shot_a), (t_b, shot_b), (t_c, shot_c)):
        assert shot.shape[:2] == (SCREEN[1], SCREEN[0])
        assert shot.mean() > 40, f"a black window at {pos:.3f} s"
        # the frame on screen is the one at mpv's position (5 s is 186 px apart)
        assert abs(_square_x(shot) - _expected_square_x(pos)) <= 4, (pos, _square_x(shot))

    # what the HDR frames look like in mpv: the exact frames recorded (--output) and
    # shown by mpv itself at the same position, tone-mapped the same way
    recording = tmp_path / "seen.mkv"
    code, out, err = _finish(_itmfilter("play", clip, "--hdr", "--rung", "full", "--vo", "null",
                                        "--output", recording, "--quiet",
                                        env=_env(None, tmp_path / "mpvhome")), timeout=300)
    assert code == 0, err
    hdr_ref = _reference(display, recording, t_b, tmp_path)
    sdr_ref = _reference(display, clip, t_b, tmp_path)
    corr = np.corrcoef(shot_b.mean(axis=2).ravel(), hdr_ref.mean(axis=2).ravel())[0, 1]
    print(f"window at {t_b:.3f} s: mean RGB {shot_b.mean(axis=(0, 1)).round(1)}, recording in mpv "
          f"{hdr_ref.mean(axis=(0, 1)).round(1)}, correlation {corr:.4f}, MAE {_mae(shot_b, hdr_ref):.2f}; "
          f"SDR in mpv {sdr_ref.mean(axis=(0, 1)).round(1)}, MAE {_mae(shot_b, sdr_ref):.2f}")
    assert np.abs(shot_b.mean(axis=(0, 1)) - hdr_ref.mean(axis=(0, 1))).max() < 3
    assert corr > 0.98
    # and not the SDR as it was
    assert _mae(shot_b, sdr_ref) > 10 and _mae(shot_b, hdr_ref) < _mae(shot_b, sdr_ref) / 4, (
        _mae(shot_b, hdr_ref), _mae(shot_b, sdr_ref))


def test_user_mpv_config_and_pass_through_options(clip, display, tmp_path):
    """mpv.conf under $MPV_HOME is read (its gpu-sw=yes makes the first output work, so
    there is no fallback; its input-ipc-server opens the socket); --mpv-opt and options
    after -- are set after it and win. Closing the window (WM_DELETE_WINDOW, as a window
    manager's close button) ends it with status 0."""
    home = tmp_path / "mpvhome"
    home.mkdir()
    sock = tmp_path / "conf.sock"
    (home / "mpv.conf").write_text(f"gpu-sw=yes\ninput-ipc-server={sock}\nosd-duration=1234\nvolume=37\n")
    proc = _itmfilter("play", clip, "--hdr", "--rung", "eighth", "--mpv-opt", "volume=55",
                      "--", "--geometry=640x360+0+0", "--no-osc", "--osd-level=0", env=_env(display, home))
    try:
        ipc = MpvIpc(sock, proc)
        ipc.wait("vo-configured", bool)
        assert ipc.get("gpu-sw") is True
        assert ipc.get("osd-duration") == 1234  # from mpv.conf
        assert ipc.get("volume") == 55  # --mpv-opt over mpv.conf
        assert ipc.get("osc") is False and ipc.get("osd-level") == 0  # after --
        window = subprocess.run(["xdotool", "search", "--class", "mpv"], env=dict(os.environ, DISPLAY=display),
                                capture_output=True, text=True).stdout.split()
        assert window, "no mpv window on the screen"
        _wm_delete(display, int(window[-1]))
        ipc.close()
    except BaseException as exc:
        raise _abandon(proc, exc) from exc
    code, out, err = _finish(proc)
    assert code == 0, err
    assert "Traceback" not in err and "could not open" not in err, err
    assert "output gpu-next with gpu-sw=yes" in out and "(quit)" in out, out


def test_no_usable_output_exits_2_with_one_line(clip, display, tmp_path):
    """No display at all (fallback tried too), and a display where gpu-next cannot start
    with the fallback ruled out by the user's own gpu-sw=no: status 2 and one line naming
    mpv, the outputs tried, mpv's reason and what to do."""
    runs = {
        "no display": _itmfilter("play", clip, "--hdr", "--rung", "full",
                                 env=_env(None, tmp_path / "home-a")),
        "gpu-sw=no": _itmfilter("play", clip, "--hdr", "--rung", "full", "--mpv-opt", "gpu-sw=no",
                                env=_env(display, tmp_path / "home-b")),
    }
    for name, proc in runs.items():
        code, out, err = _finish(proc)
        lines = _itm_error_lines(err)
        assert code == 2 and len(lines) == 1 and err.rstrip().endswith(lines[0]), (name, code, err)
        line = lines[0]
        assert "Traceback" not in err and not out, (name, err)
        # mpv, the outputs tried, mpv's reason (its wording depends on the attempt), what to do
        tried, _, rest = line.partition("): ")
        assert tried.startswith("itmfilter: error: mpv could not open its video output (tried "), line
        assert rest.split(". ")[0].strip(), line
        assert "--vo null" in rest, line
        if name == "no display":
            assert "tried gpu-next, then gpu-next with gpu-sw=yes" in line and "DISPLAY" in line, line
        else:
            assert tried.endswith("(tried gpu-next") and "trying" not in err, line
            assert "Failed initializing any suitable GPU context" in rest, line


class _XClientMessageEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("l", ctypes.c_long * 5)]


class _XEvent(ctypes.Union):
    _fields_ = [("xclient", _XClientMessageEvent), ("pad", ctypes.c_long * 24)]


def _wm_delete(display: str, window: int) -> None:
    """Send WM_DELETE_WINDOW to ``window``, as a window manager's close button does."""
    x = ctypes.CDLL(ctypes.util.find_library("X11"))
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(_XEvent)]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    event = _XEvent()
    event.xclient.type = 33  # ClientMessage
    event.xclient.window = window
    event.xclient.message_type = x.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
    event.xclient.format = 32
    event.xclient.l[0] = x.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    x.XSendEvent(dpy, window, 0, 0, ctypes.byref(event))
    x.XFlush(dpy)
    x.XCloseDisplay(dpy)
