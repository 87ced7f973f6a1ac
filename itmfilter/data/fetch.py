"""Real HDR training scenes from public registries, converted to linear BT.2020 cd/m2.

Sources (both CC0 Poly Haven panoramas; see ``manifest.json``):

* PyPI ``viser==0.2.23`` wheel: 10 lossless Radiance .hdr panoramas, 1024x512.
* npm ``@pmndrs/assets@1.7.0``: 18 half-float DWAB EXRs, 512x256, as base64 in
  ``hdri/*.exr.js``; 10 of them are the viser scenes again (kept as a second picture of
  the same scene id, so no scene can straddle two splits), 8 are other scenes.

Every picture is read as relative radiance, anchored so its diffuse white is at BT.2408's
203 cd/m2 (:func:`itmfilter.media.stills.anchor_exposure`), then clipped at the manifest's
mastering peak (1000 cd/m2) as a colourist mastering for a 1000 cd/m2 display would, and
cached as float32 ``.npy`` ``(H, W, 3)`` with a ``.json`` sidecar recording the anchor
factor, peak and origin. The cache (``$ITMFILTER_CACHE`` or ``~/.cache/itmfilter``) is
resumable: verified downloads and converted pictures are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output
from itmfilter.media.stills import read_hdr

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
#: the scene the built-in sample (``itmfilter/assets/sample.exr``) is cut from; always in "test".
SAMPLE_SCENE = "venice_sunset"


@dataclass(frozen=True)
class Scene:
    """One scene: one or more cached pictures of it.

    ``pictures``: paths of float32 ``.npy`` arrays ``(H, W, 3)``, linear BT.2020 cd/m2,
    mastered to ``peak_nits``. ``meta``: one dict per picture (source, anchor factor, ...).
    """

    name: str
    pictures: tuple[Path, ...]
    meta: tuple[dict, ...]

    def load(self, index: int = 0) -> np.ndarray:
        """Picture ``index`` as float32 ``(H, W, 3)`` cd/m2 (memory-mapped, read-only)."""
        return np.load(self.pictures[index], mmap_mode="r")


def load_manifest(path: str | os.PathLike = MANIFEST_PATH) -> dict:
    """The pinned sources: archives, their sha256, each picture's sha256 and scene id."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ItmError(path, f"cannot read the data manifest ({exc})", "reinstall itmfilter") from None


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$ITMFILTER_CACHE``, else ``~/.cache/itmfilter``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ITMFILTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "itmfilter"


def sha256_of(data_or_path: bytes | os.PathLike) -> str:
    digest = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        digest.update(data_or_path)
    else:
        with open(data_or_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _download_command(archive: dict, folder: Path, quiet: bool) -> list[str]:
    if archive["client"] == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               archive["spec"], "-d", str(folder)]
        return cmd + (["-q"] if quiet else [])
    if archive["client"] == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise ItmError(None, f"cannot fetch {archive['spec']}: the npm client is not installed",
                           f"install Node.js/npm, or put {archive['name']} into {folder.parent} yourself")
        return [npm, "pack", archive["spec"], "--pack-destination", str(folder)] + (["--silent"] if quiet else [])
    raise ItmError(MANIFEST_PATH, f"unknown client {archive['client']!r}", "reinstall itmfilter")


def _fetch_archive(archive: dict, downloads: Path, quiet: bool) -> Path:
    """Download one pinned archive into ``downloads`` (skip when present and verified)."""
    target = downloads / archive["name"]
    if target.exists() and sha256_of(target) == archive["sha256"]:
        return target
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        cmd = _download_command(archive, Path(tmp), quiet)
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None,
                                  stderr=subprocess.PIPE, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ItmError(target, f"download of {archive['spec']} failed ({exc})",
                           "check the network connection to the package registry, or put the file there yourself") from None
        fetched = Path(tmp) / archive["name"]
        if done.returncode != 0 or not fetched.exists():
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise ItmError(target, f"download of {archive['spec']} failed: {' / '.join(tail) or 'no file'}",
                           "the registry may be unreachable: check the network/proxy, or put the file there yourself")
        digest = sha256_of(fetched)
        if digest != archive["sha256"]:
            raise ItmError(target, f"sha256 mismatch: got {digest}, the manifest pins {archive['sha256']}",
                           "the registry served a different file; do not use it, report this")
        os.replace(fetched, target)
    return target


def _members(archive: dict, path: Path):
    """Yield ``(member name, picture bytes, picture suffix)`` for the manifest's files."""
    wanted = archive["files"]
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                for name in wanted:
                    yield name, zf.read(name), Path(name).suffix
        else:
            with tarfile.open(path, "r:gz") as tf:
                for name in wanted:
                    text = tf.extractfile(name).read().decode("ascii")
                    payload = text[text.index("base64,") + 7:text.rindex("'")]
                    yield name, base64.b64decode(payload), ".exr"
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise ItmError(path, f"does not hold the expected pictures ({exc})",
                       "delete it so it is downloaded again") from None


def _convert(data: bytes, suffix: str, out: Path, meta: dict, manifest: dict) -> None:
    """Anchor, master and cache one picture as ``out`` (.npy) plus ``out.json``."""

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"picture{suffix}"
        src.write_bytes(data)
        picture = read_hdr(src, anchor=manifest["reference_white_nits"])
    peak = float(manifest["mastering_peak_nits"])
    nits = np.minimum(picture.nits, np.float32(peak))
    meta = dict(meta, anchor_factor=picture.info["anchor_factor"], mastering_peak_nits=peak,
                reference_white_nits=manifest["reference_white_nits"],
                clipped_fraction=float((picture.nits.max(axis=-1) > peak).mean()),
                shape=list(nits.shape), layout="linear BT.2020 RGB, cd/m2, float32 (H, W, 3)")
    with atomic_output(out) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(nits, dtype=np.float32))
    with atomic_output(out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))


def fetch_scenes(cache_dir: str | os.PathLike | None = None, quiet: bool = False) -> list[Scene]:
    """Download, verify, convert and cache every manifest picture; return the scenes by name.

    Raises :class:`ItmError` when a registry is unreachable, a client (pip/npm) is
    missing, or a downloaded archive or picture does not match its pinned sha256.
    """

    manifest = load_manifest()
    root = cache_root(cache_dir)
    downloads, scenes_dir = root / "downloads", root / "scenes"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
        scenes_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ItmError(root, f"cannot create the cache folder ({exc})", "set ITMFILTER_CACHE to a writable folder") from None
    by_scene: dict[str, list[tuple[Path, dict]]] = {}
    archives = manifest["archives"]
    for archive in tqdm(archives, desc="fetch sources", unit="archive", disable=quiet):
        todo = {}
        for member, entry in archive["files"].items():
            out = scenes_dir / f"{entry['scene']}--{archive['id']}.npy"
            by_scene.setdefault(entry["scene"], []).append((out, {}))
            if not (out.exists() and out.with_suffix(".json").exists()):
                todo[member] = out
        if not todo:
            continue
        path = _fetch_archive(archive, downloads, quiet)
        with tqdm(total=len(todo), desc=f"convert {archive['id']}", unit="picture", disable=quiet) as bar:
            for member, data, suffix in _members(archive, path):
                if member not in todo:
                    continue
                expected = archive["files"][member]["sha256"]
                if sha256_of(data) != expected:
                    raise ItmError(f"{path}!{member}", "sha256 mismatch of the extracted picture",
                                   "delete the archive so it is downloaded again")
                meta = {"scene": archive["files"][member]["scene"], "source": f"{archive['spec']}:{member}",
                        "sha256": expected, "licence": archive["licence"]}
                _convert(data, suffix, todo[member], meta, manifest)
                bar.update(1)
    scenes = []
    for name in sorted(by_scene):
        paths = tuple(sorted(p for p, _ in by_scene[name]))
        metas = tuple(json.loads(p.with_suffix(".json").read_text()) for p in paths)
        scenes.append(Scene(name, paths, metas))
    return scenes


def split_scenes(scenes: list, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2) -> dict[str, list]:
    """Split by scene into ``{"train", "val", "test"}``: deterministic for a seed, disjoint.

    ``test`` holds at least 3 scenes (and always :data:`SAMPLE_SCENE`, the built-in
    sample's scene, so the sample is never trained on); ``val`` at least 1. Accepts
    :class:`Scene` objects or scene names; each list is sorted by name.
    """
    def name_of(scene):
        return scene if isinstance(scene, str) else scene.name

    unique = sorted({name_of(s): s for s in scenes}.items())
    if len(unique) < 5:
        raise ItmError(None, f"need at least 5 scenes to split (3 test, 1 val, 1 train), got {len(unique)}",
                       "fetch the scenes first with fetch_scenes()")
    n = len(unique)
    n_test = max(3, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    if n_test + n_val >= n:
        raise ItmError(None, f"{n} scenes are too few for {n_test} test and {n_val} val scenes",
                       "lower the fractions or add scenes")
    names = [name for name, _ in unique]
    order = list(np.random.default_rng(seed).permutation(n))
    if SAMPLE_SCENE in names:  # pinned to test; the rest keep their shuffled order
        pinned = names.index(SAMPLE_SCENE)
        order.remove(pinned)
        order.insert(0, pinned)
    chosen = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {split: [unique[i][1] for i in sorted(idx)] for split, idx in chosen.items()}


def views(
    scene_nits: np.ndarray,
    size: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    peak_nits: float | None = None,
    max_stops: float = 1.0,
) -> np.ndarray:
    """Cut ``n`` training windows of ``size`` = (h, w) from one scene picture.

    Random positions (wrapping around horizontally when the picture is a 2:1
    equirectangular panorama), random horizontal flips and random exposure changes of
    up to ``max_stops`` stops (uniform in log2). ``peak_nits`` (cd/m2) re-clips after the
    exposure change, as the mastering did. Input ``(H, W, 3)`` cd/m2; output float32
    ``(n, h, w, 3)`` cd/m2.
    """
    scene_nits = np.asarray(scene_nits)
    if scene_nits.ndim != 3 or scene_nits.shape[2] != 3:
        raise ItmError(None, f"scene must be (H, W, 3), got {scene_nits.shape}", "pass one picture")
    height, width = scene_nits.shape[:2]
    h, w = int(size[0]), int(size[1])
    panorama = width == 2 * height
    if h < 1 or w < 1 or h > height or (w > width):
        raise ItmError(None, f"window {h}x{w} does not fit the {height}x{width} scene",
                       "choose a smaller size")
    out = np.empty((n, h, w, 3), dtype=np.float32)
    for i in range(n):
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width if panorama else width - w + 1))
        cols = (np.arange(left, left + w) % width) if panorama else slice(left, left + w)
        window = np.asarray(scene_nits[top:top + h][:, cols], dtype=np.float32)
        if rng.random() < 0.5:
            window = window[:, ::-1]
        window = window * np.float32(2.0 ** rng.uniform(-max_stops, max_stops))
        if peak_nits is not None:
            window = np.minimum(window, np.float32(peak_nits))
        out[i] = window
    return out


def build_manifest(downloads: Path) -> dict:
    """Maintainer tool: hash archives and pictures in ``downloads`` into a manifest dict."""
    manifest = load_manifest()
    for archive in manifest["archives"]:
        path = downloads / archive["name"]
        archive["sha256"] = sha256_of(path)
        for member, data, _ in _members(archive, path):
            archive["files"][member]["sha256"] = sha256_of(data)
    return manifest


def _main() -> None:  # python -m itmfilter.data.fetch
    scenes = fetch_scenes()
    for scene in scenes:
        print(scene.name, len(scene.pictures), [m["source"] for m in scene.meta])


if __name__ == "__main__":
    _main()
