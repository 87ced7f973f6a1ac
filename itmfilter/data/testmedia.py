"""Real HDR10 test masters made from the registry HDR panoramas.

No HDR video is published in any package registry, but HDR stills are (see
:mod:`itmfilter.data.fetch`). A master is made the way a camera operator would film
them: each shot pans a window smoothly across one scene's panorama (wrapping around the
equirectangular seam, optionally with a slow zoom), and the edit cuts to the next scene
every ``shot_seconds``. Frames are linear BT.2020 cd/m2, clipped at ``peak_nits`` as a
colourist mastering for that display would, PQ encoded and written by
:class:`itmfilter.media.video.Hdr10Writer` as HEVC Main10 (HDR10 SEI with MaxCLL/MaxFALL
measured over every frame) or ProRes 422 HQ.

Detail is limited by the source: the panoramas are 1024x512 (or 512x256), so a 1080p
frame magnifies a window of ~450x256 source pixels about 4x with bilinear sampling. The
masters are sharp in time (sub-pixel motion, real cuts, real highlights and dynamic
range) but soft in space; use them for colour, temporal and throughput tests, not for
judging fine detail.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from itmfilter.colour.hdr10 import HDR10Metadata, LightLevelAccumulator
from itmfilter.errors import ItmError
from itmfilter.limits import MAX_FRAMES, MIN_PICTURE_SIDE, picture_size_problem
from itmfilter.media.video import Hdr10Writer

__all__ = ["make_master", "make_master_from_arrays", "camera_frames", "camera_shots", "camera_centre", "camera_height",
           "pan_view", "place_subject", "subject_shots", "MASTER_CODECS"]

#: make_master codec name -> (Hdr10Writer codec, file suffixes it may be written to)
MASTER_CODECS = {"hevc": ("libx265", (".mp4", ".mov", ".mkv")), "prores": ("prores_ks", (".mov", ".mkv"))}


def pan_view(panorama: np.ndarray, size: tuple[int, int], centre: tuple[float, float], window_height: float) -> np.ndarray:
    """Sample one view of a panorama with bilinear interpolation at sub-pixel positions.

    Parameters
    ----------
    panorama : numpy.ndarray, shape (Hp, Wp, 3)
        Linear BT.2020 cd/m2. Wraps around horizontally (equirectangular 360 panorama),
        clamps vertically.
    size : (width, height)
        Output size in pixels.
    centre : (x, y)
        Window centre in panorama pixels (floats; x may be any real, it wraps).
    window_height : float
        Window height in panorama pixels; its width is ``window_height * width / height``.

    Returns
    -------
    numpy.ndarray, shape (height, width, 3), float32 cd/m2
    """
    out_w, out_h = int(size[0]), int(size[1])
    pano_h, pano_w = panorama.shape[:2]
    scale = window_height / out_h  # panorama pixels per output pixel, both axes
    # pixel centres: output pixel i covers [i, i + 1) -> panorama position of its centre
    xs = centre[0] + (np.arange(out_w) + 0.5 - out_w / 2) * scale - 0.5
    ys = centre[1] + (np.arange(out_h) + 0.5 - out_h / 2) * scale - 0.5
    ys = np.clip(ys, 0.0, pano_h - 1.0)
    y0 = np.floor(ys).astype(np.intp)
    fy = (ys - y0).astype(np.float32)[:, None, None]
    y1 = np.minimum(y0 + 1, pano_h - 1)
    x0f = np.floor(xs)
    fx = (xs - x0f).astype(np.float32)[None, :, None]
    x0 = x0f.astype(np.intp) % pano_w
    x1 = (x0 + 1) % pano_w
    cols = np.unique(np.concatenate([x0, x1]))  # touch only the columns the window needs
    lookup = np.searchsorted(cols, x0), np.searchsorted(cols, x1)
    strip = np.asarray(panorama[:, cols], dtype=np.float32)
    rows = strip[y0] * (1 - fy) + strip[y1] * fy  # (out_h, n_cols, 3)
    return rows[:, lookup[0]] * (1 - fx) + rows[:, lookup[1]] * fx


def camera_frames(
    panoramas: Sequence[np.ndarray],
    n_frames: int,
    fps: float,
    size: tuple[int, int],
    shot_seconds: float = 4.0,
    seed: int = 0,
    peak_nits: float = 1000.0,
    zoom: bool = True,
    subject: bool = False,
) -> Iterator[np.ndarray]:
    """Yield ``n_frames`` linear BT.2020 cd/m2 frames ``(h, w, 3)`` float32 of panning shots.

    Shot ``k`` films ``panoramas[k % len(panoramas)]``: the window (half the panorama's
    height, near the horizon) starts at a seeded random heading and pans at a constant
    speed of 0.15-0.3 window widths per second, left or right; every other shot (when
    ``zoom``) also zooms in by up to 15 %. With ``subject``, each shot also has a subject
    that moves on its own across the frame (:func:`subject_shots`): what a static scene
    under a moving camera cannot explain. Values are clipped at ``peak_nits``. The same
    arguments always give the same frames.
    """
    if not panoramas:
        raise ItmError(None, "no scenes to film", "pass at least one panorama")
    out_w, out_h = int(size[0]), int(size[1])
    frames_per_shot = max(1, int(round(shot_seconds * float(fps))))
    shots = camera_shots(panoramas, n_frames, size, frames_per_shot, seed, zoom)
    subjects = subject_shots(panoramas, len(shots), size, seed) if subject else None
    for i in range(int(n_frames)):
        k, j = divmod(i, frames_per_shot)
        shot = shots[k]
        frame = pan_view(shot["pano"], (out_w, out_h), camera_centre(shot, j, fps), camera_height(shot, j, frames_per_shot))
        if subjects is not None:
            place_subject(frame, subjects[k], j / float(fps))
        yield np.minimum(frame, np.float32(peak_nits), out=frame)


def subject_shots(panoramas: Sequence[np.ndarray], n_shots: int, size: tuple[int, int], seed: int = 0) -> list[dict]:
    """A moving subject for each shot: a sprite of 0.4 x 0.3 of the frame cut from another
    panorama around its brightest pixel (so it carries highlights of its own), under a soft
    elliptical mask, that crosses the frame at 0.25-0.5 frame widths a second, up or down by
    up to 0.1 heights a second, and bobs by 4 % of the height at 1-2 Hz. Dicts of ``sprite``
    ``(h, w, 3)`` cd/m2, ``alpha`` ``(h, w, 1)``, the start ``x``, ``y`` (the sprite's
    top-left corner, frame pixels), ``vx``, ``vy`` (pixels a second), ``bob`` (pixels) and
    ``hz``. Drawn from their own generator: the camera's draws are those without a subject."""
    out_w, out_h = int(size[0]), int(size[1])
    sw, sh = max(2, int(round(0.4 * out_w))), max(2, int(round(0.3 * out_h)))
    rng = np.random.default_rng([seed, 1])
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    r = np.hypot((xx + 0.5) / sw * 2 - 1, (yy + 0.5) / sh * 2 - 1)
    alpha = np.clip((1.0 - r) / 0.2, 0.0, 1.0)[..., None]  # opaque inside, a soft 20 % edge
    subjects = []
    for k in range(int(n_shots)):
        pano = panoramas[(k + 1) % len(panoramas)]
        lum = pano.sum(axis=2)
        py, px = np.unravel_index(int(np.argmax(lum)), lum.shape)
        height = 0.25 * pano.shape[0]
        centre = (float(px) + rng.uniform(-0.3, 0.3) * height * sw / sh,
                  float(np.clip(py + rng.uniform(-0.3, 0.3) * height, height / 2, pano.shape[0] - height / 2)))
        sprite = pan_view(pano, (sw, sh), centre, height)
        direction = rng.choice([-1.0, 1.0])
        subjects.append({
            "sprite": sprite, "alpha": alpha,
            "x": (out_w - sw) * (0.5 - 0.5 * direction) + rng.uniform(-0.1, 0.1) * out_w,
            "y": rng.uniform(0.1, 0.6) * out_h,
            "vx": direction * rng.uniform(0.25, 0.5) * out_w,
            "vy": rng.uniform(-0.1, 0.1) * out_h,
            "bob": 0.04 * out_h, "hz": rng.uniform(1.0, 2.0),
        })
    return subjects


def place_subject(frame: np.ndarray, subject: dict, seconds: float) -> None:
    """Composite ``subject`` (:func:`subject_shots`) into ``frame`` in place where it is
    ``seconds`` into its shot (whole-pixel positions; the part outside the frame is cut)."""
    h, w = frame.shape[:2]
    sh, sw = subject["sprite"].shape[:2]
    x = int(round(subject["x"] + subject["vx"] * seconds))
    y = int(round(subject["y"] + subject["vy"] * seconds + subject["bob"] * math.sin(2 * math.pi * subject["hz"] * seconds)))
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x0 >= x1 or y0 >= y1:
        return
    a = subject["alpha"][y0 - y:y1 - y, x0 - x:x1 - x]
    region = frame[y0:y1, x0:x1]
    region *= 1 - a
    region += a * subject["sprite"][y0 - y:y1 - y, x0 - x:x1 - x]


def camera_shots(panoramas: Sequence[np.ndarray], n_frames: int, size: tuple[int, int], shot_frames: int,
                 seed: int = 0, zoom: bool = True) -> list[dict]:
    """The camera of each shot :func:`camera_frames` films (the same draws, in order): dicts of
    ``pano``, the start centre ``x``, ``y`` (panorama pixels), ``speed`` (panorama pixels a
    second), the start window ``height`` and the ``zoom`` (share of the height lost by the
    shot's last frame). Also the ground truth of benchmarks that measure motion."""
    out_w, out_h = int(size[0]), int(size[1])
    frames_per_shot = max(1, int(shot_frames))
    rng = np.random.default_rng(seed)
    shots = []
    for k in range(-(-int(n_frames) // frames_per_shot)):
        pano = panoramas[k % len(panoramas)]
        pano_h, pano_w = pano.shape[:2]
        height0 = 0.5 * pano_h
        width0 = height0 * out_w / out_h
        if width0 > pano_w:  # very wide output: fit the width instead
            height0 = pano_w * out_h / out_w
        shots.append({
            "pano": pano,
            "x": rng.uniform(0, pano_w),
            "y": pano_h * rng.uniform(0.45, 0.55),
            "speed": rng.uniform(0.15, 0.3) * height0 * out_w / out_h * rng.choice([-1.0, 1.0]),
            "height": height0,
            "zoom": rng.uniform(0.0, 0.15) if (zoom and k % 2 == 1) else 0.0,
        })
    return shots


def camera_centre(shot: dict, j: int, fps: float) -> tuple[float, float]:
    """Frame ``j`` of ``shot``'s window centre, panorama pixels."""
    return (shot["x"] + shot["speed"] * (j / float(fps)), shot["y"])


def camera_height(shot: dict, j: int, frames_per_shot: int) -> float:
    """Frame ``j`` of ``shot``'s window height, panorama pixels (it shrinks linearly by the zoom)."""
    return shot["height"] * (1.0 - shot["zoom"] * (j / max(1, frames_per_shot - 1)))


def _check_out(out_path, codec: str) -> Path:
    path = Path(out_path)
    if codec not in MASTER_CODECS:
        raise ItmError(path, f"unknown master codec {codec!r}", f"use one of {sorted(MASTER_CODECS)}")
    suffixes = MASTER_CODECS[codec][1]
    if path.suffix.lower() not in suffixes:
        raise ItmError(path, f"a {codec} master cannot be written as {path.suffix or 'a file without extension'}",
                       f"use one of {', '.join(suffixes)}")
    return path


def _encode(path: Path, frames: Iterable[np.ndarray], size, fps, codec, metadata, n_frames, quiet, crf, preset):


    with Hdr10Writer(path, size[0], size[1], fps, codec=MASTER_CODECS[codec][0], crf=crf, preset=preset,
                     metadata=metadata) as writer, \
            tqdm(total=n_frames, desc=f"master {path.name}", unit="frame", disable=quiet) as bar:
        for frame in frames:
            writer.write_nits(frame)
            bar.update(1)
    return path


def make_master(
    out_path: str | os.PathLike,
    *,
    seconds: float = 10.0,
    fps: float = 24,
    size: tuple[int, int] = (1920, 1080),
    codec: str = "hevc",
    shot_seconds: float = 4.0,
    scenes: Sequence[str | np.ndarray] | None = None,
    split: str = "test",
    seed: int = 0,
    peak_nits: float = 1000.0,
    quiet: bool = False,
    crf: float = 12,
    preset: str = "fast",
    cache_dir: str | os.PathLike | None = None,
    subject: bool = False,
) -> Path:
    """Film an HDR10 master from real HDR panoramas (see the module docstring).

    Parameters
    ----------
    out_path : path
        ``.mp4``/``.mov``/``.mkv`` for ``codec="hevc"`` (HEVC Main10, 4:2:0, HDR10 SEI),
        ``.mov``/``.mkv`` for ``codec="prores"`` (ProRes 422 HQ, 4:2:2, tags only).
    seconds, fps : float
        Duration in seconds and frame rate (frames = round(seconds * fps)).
    size : (width, height)
        Frame size in pixels; even numbers (4:2:0).
    shot_seconds : float
        Length of each shot; the edit cuts to the next scene after it.
    scenes : list of scene names or (Hp, Wp, 3) cd/m2 arrays, optional
        Names are fetched with :func:`itmfilter.data.fetch.fetch_scenes` (the network is
        used once, then the cache); arrays are filmed as given (tests, own panoramas).
        ``None``: the scenes of ``split`` ("train", "val" or "test") for ``seed``.
    peak_nits : float
        Mastering peak in cd/m2: frames are clipped there and the mastering display
        metadata says so (P3-D65 primaries, 0.0001 cd/m2 black).
    crf, preset : x265 quality and speed (HEVC only).
    subject : bool
        Each shot also films a subject moving on its own (:func:`subject_shots`).

    Returns the output path. MaxCLL/MaxFALL are measured over every frame first (the
    frames are rendered twice, which costs far less than encoding them).
    """
    _check_timing(out_path, seconds, fps, shot_seconds)
    problem = picture_size_problem(*size)
    if problem or size[0] % 2 or size[1] % 2:
        raise ItmError(out_path, f"--size {size[0]}x{size[1]}: " + (problem or "4:2:0 needs an even width and height"),
                       f"give an even WIDTHxHEIGHT from {MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE} to 8192x8192, e.g. 1920x1080")
    path = _check_out(out_path, codec)
    panoramas = _load_scenes(scenes, split, seed, quiet, cache_dir)
    n_frames = max(1, int(round(seconds * float(fps))))

    def frames():
        return camera_frames(panoramas, n_frames, fps, size, shot_seconds, seed, peak_nits, subject=subject)

    levels = LightLevelAccumulator()
    for frame in frames():
        levels.add(frame)
    metadata = HDR10Metadata.p3_d65(peak_nits, 0.0001, *levels.result())
    return _encode(path, frames(), size, fps, codec, metadata, n_frames, quiet, crf, preset)


def _check_timing(out_path, seconds: float, fps: float, shot_seconds: float) -> None:
    """Positive, finite durations and rate, and no more frames than a track may hold."""
    for name, value in (("--seconds", seconds), ("--fps", fps), ("--shot-seconds", shot_seconds)):
        if not (math.isfinite(value) and value > 0):
            raise ItmError(out_path, f"{name} must be a positive number, got {value}", f"give e.g. {name} 10")
    if seconds * fps >= MAX_FRAMES:
        raise ItmError(out_path, f"{seconds} s at {fps} fps is more than {MAX_FRAMES} frames", "make a shorter master")


def _load_scenes(scenes, split, seed, quiet, cache_dir) -> list[np.ndarray]:
    if scenes is not None and all(isinstance(s, np.ndarray) for s in scenes):
        arrays = list(scenes)
    else:
        from itmfilter.data.fetch import fetch_scenes, split_scenes

        available = fetch_scenes(cache_dir, quiet=quiet)
        by_name = {s.name: s for s in available}
        if scenes is None:
            splits = split_scenes(available, seed=seed)
            if split not in splits:
                raise ItmError(None, f"unknown split {split!r}", f"use one of {sorted(splits)}")
            chosen = list(splits[split])
            np.random.default_rng(seed).shuffle(chosen)
        else:
            chosen = []
            for name in scenes:
                if isinstance(name, np.ndarray):
                    chosen.append(name)
                elif name in by_name:
                    chosen.append(by_name[name])
                else:
                    raise ItmError(None, f"unknown scene {name!r}", f"choose from {sorted(by_name)}")
        arrays = []
        for scene in chosen:
            if isinstance(scene, np.ndarray):
                arrays.append(scene)
                continue
            # the largest picture of the scene (1024x512 .hdr over the 512x256 EXR)
            best = max(range(len(scene.pictures)), key=lambda i: np.prod(scene.meta[i].get("shape", [0, 0])[:2]))
            arrays.append(np.asarray(scene.load(best), dtype=np.float32))
    for a in arrays:
        if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 2:
            raise ItmError(None, f"a scene must be an (H, W, 3) cd/m2 array, got shape {a.shape}",
                           "pass panoramas as float arrays")
    if not arrays:
        raise ItmError(None, "no scenes to film", "pass scene names or arrays")
    return arrays


def make_master_from_arrays(
    out_path: str | os.PathLike,
    frames_nits: Iterable[np.ndarray],
    fps: float,
    codec: str = "hevc",
    *,
    peak_nits: float = 1000.0,
    light_levels: tuple[float, float] | None = None,
    crf: float = 12,
    preset: str = "fast",
    quiet: bool = True,
) -> Path:
    """Encode your own linear BT.2020 cd/m2 frames ``(H, W, 3)`` as an HDR10 master.

    Frames are clipped at ``peak_nits`` (the mastering display's peak). MaxCLL/MaxFALL
    (cd/m2) are measured over all frames unless ``light_levels`` gives them; measuring
    needs the frames twice, so a one-shot iterator is held in memory (fine for test
    clips; for long clips pass a list or ``light_levels``).
    """
    path = _check_out(out_path, codec)
    peak = np.float32(peak_nits)
    if light_levels is None:
        frames = frames_nits if isinstance(frames_nits, Sequence) else list(frames_nits)
        levels = LightLevelAccumulator()
        for frame in frames:
            levels.add(np.minimum(np.asarray(frame, np.float32), peak))
        light_levels = levels.result()
    else:
        frames = frames_nits
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ItmError(path, "no frames to encode", "pass at least one frame")
    first = np.asarray(first, np.float32)
    if first.ndim != 3 or first.shape[2] != 3:
        raise ItmError(path, f"frames must be (H, W, 3) cd/m2, got shape {first.shape}", "pass channel-last RGB")
    size = (first.shape[1], first.shape[0])

    def clipped():
        yield np.minimum(first, peak)
        for frame in iterator:
            yield np.minimum(np.asarray(frame, np.float32), peak)

    metadata = HDR10Metadata.p3_d65(peak_nits, 0.0001, *light_levels)
    total = len(frames) if isinstance(frames, Sequence) else None
    return _encode(path, clipped(), size, fps, codec, metadata, total, quiet, crf, preset)
