import json
import os
import re

import numpy as np
import OpenEXR
import pytest

from itmfilter.data import sample_path
from itmfilter.data.fetch import SAMPLE_SCENE, load_manifest, split_scenes, views
from itmfilter.errors import ItmError
from itmfilter.media.stills import read_hdr

network = pytest.mark.skipif(os.environ.get("ITMFILTER_NETWORK") != "1",
                             reason="downloads from PyPI/npm; set ITMFILTER_NETWORK=1")


def test_sample_is_real_hdr():
    path = sample_path()
    assert path.is_file() and path.stat().st_size < 400_000
    with OpenEXR.File(str(path)) as exr:
        header = dict(exr.header())
        assert exr.channels()["RGB"].pixels.dtype == np.float16
    assert header["whiteLuminance"] == 100.0
    picture = read_hdr(path)
    assert picture.nits.shape == (270, 480, 3) and picture.nits.dtype == np.float32
    assert picture.nits.max() > 500.0
    assert 5.0 < np.median(picture.nits) < 400.0  # a normally exposed scene, not a highlight map
    assert (path.parent / "LICENSE-sample.txt").read_text().count("CC0") >= 1


def test_manifest_is_pinned():
    manifest = load_manifest()
    assert manifest["reference_white_nits"] == 203.0 and manifest["mastering_peak_nits"] in (1000.0, 4000.0)
    scenes = set()
    for archive in manifest["archives"]:
        assert re.fullmatch(r"[0-9a-f]{64}", archive["sha256"])
        for entry in archive["files"].values():
            assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
            scenes.add(entry["scene"])
    assert len(scenes) == 18 and SAMPLE_SCENE in scenes


def test_split_is_by_scene_deterministic_and_disjoint():
    names = sorted({e["scene"] for a in load_manifest()["archives"] for e in a["files"].values()})
    split = split_scenes(names, seed=0)
    assert split == split_scenes(list(reversed(names)), seed=0)
    assert len(split["test"]) >= 3 and len(split["val"]) >= 1 and split["train"]
    assert SAMPLE_SCENE in split["test"]
    together = split["train"] + split["val"] + split["test"]
    assert sorted(together) == names  # every scene once, none in two splits
    assert split_scenes(names, seed=1) != split
    with pytest.raises(ItmError):
        split_scenes(names[:3])


def test_views_crop_flip_and_exposure():
    rng = np.random.default_rng(0)
    scene = np.tile(np.arange(64, dtype=np.float32)[None, :, None], (32, 1, 3)) + 1.0  # 2:1 panorama
    out = views(scene, (8, 16), n=50, rng=rng)
    assert out.shape == (50, 8, 16, 3) and out.dtype == np.float32
    flips, ratios = 0, []
    for window in out:
        row = window[0, :, 0]
        steps = np.diff(row)
        flips += steps[np.abs(steps) < 10].mean() < 0  # ignoring the wrap-around seam
        ratios.append(window.max() / scene.max())
    assert 5 < flips < 45
    assert all(r <= 2.0 + 1e-6 for r in ratios)
    peaked = views(scene * 100, (8, 16), n=5, rng=rng, peak_nits=1000.0)
    assert peaked.max() <= 1000.0
    with pytest.raises(ItmError, match="does not fit"):
        views(scene, (64, 16), n=1, rng=rng)


def test_views_exposure_within_one_stop():
    rng = np.random.default_rng(1)
    scene = np.full((20, 30, 3), 100.0, np.float32)
    out = views(scene, (4, 4), n=200, rng=rng)
    levels = out[:, 0, 0, 0]
    assert levels.min() >= 50.0 - 1e-3 and levels.max() <= 200.0 + 1e-3
    assert levels.min() < 60 and levels.max() > 170


@pytest.mark.network
@network
def test_fetch_scenes_from_registries(tmp_path):
    from itmfilter.data.fetch import fetch_scenes

    scenes = fetch_scenes(tmp_path, quiet=True)
    assert len(scenes) == 18
    meta = {m["source"]: m for s in scenes for m in s.meta}
    assert len(meta) == 28
    venice = next(s for s in scenes if s.name == "venice_sunset")
    picture = venice.load(0)
    assert picture.dtype == np.float32 and picture.max() <= 1000.0 and picture.max() > 500.0
    assert json.loads(venice.pictures[0].with_suffix(".json").read_text())["anchor_factor"] > 0
    # resumable: a second call converts nothing and returns the same scenes
    again = fetch_scenes(tmp_path, quiet=True)
    assert [s.pictures for s in again] == [s.pictures for s in scenes]


def _fake_client(monkeypatch, script):
    import sys

    from itmfilter.data import fetch

    monkeypatch.setattr(fetch, "_download_command",
                        lambda archive, folder, quiet: [sys.executable, "-c", script, str(folder / archive["name"])])
    return fetch


def test_download_sha_mismatch_names_the_file(tmp_path, monkeypatch):
    fetch = _fake_client(monkeypatch, "import sys; open(sys.argv[1], 'wb').write(b'tampered')")
    archive = load_manifest()["archives"][0]
    with pytest.raises(ItmError, match=re.escape(archive["name"]) + ".*sha256 mismatch"):
        fetch._fetch_archive(archive, tmp_path, quiet=True)
    assert not (tmp_path / archive["name"]).exists()


def test_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    fetch = _fake_client(monkeypatch, "import sys; sys.exit('ERROR: Could not connect to the registry')")
    archive = load_manifest()["archives"][1]
    with pytest.raises(ItmError, match="download of .* failed.*Could not connect.*network"):
        fetch._fetch_archive(archive, tmp_path, quiet=True)
