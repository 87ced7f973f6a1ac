"""``--search``: how widely a capped grid encode searches each shot's refinement steps and scene
image scales and qualities (itmfilter.encode.gridkeys.SEARCHES)."""

import pytest
import torch
from gridfast import FAST
from typer.testing import CliRunner

from itmfilter.cli import app
from itmfilter.encode import gridkeys
from itmfilter.encode.video import SEARCHES, VideoEncodeOptions
from itmfilter.errors import ItmError


def test_the_searches_are_named_alike_and_fast_tries_a_subset_of_thorough():
    assert SEARCHES == tuple(gridkeys.SEARCHES) and VideoEncodeOptions().search == "thorough"
    thorough, fast = gridkeys.SEARCHES["thorough"], gridkeys.SEARCHES["fast"]
    # thorough is the search every measurement in docs/ was made with: the module's constants
    assert (thorough.refine_steps, thorough.scene_scales, thorough.scene_qualities) == (
        gridkeys.REFINE_STEPS, gridkeys.SCENE_SCALES, gridkeys.SCENE_QUALITIES)
    for name in ("refine_steps", "scene_scales", "scene_qualities"):
        few, all_ = getattr(fast, name), getattr(thorough, name)
        assert set(few) < set(all_) and 2 * len(few) <= len(all_) + 1, name


def test_an_unknown_search_is_refused_in_one_line_before_anything_is_written(two_shot_master, tmp_path):
    with pytest.raises(ItmError, match="--search"):
        VideoEncodeOptions(search="quick")
    out = tmp_path / "sdr.mp4"
    res = CliRunner().invoke(app, ["encode", str(two_shot_master), "-o", str(out), "--search", "quick", "--quiet"])
    assert res.exit_code == 2 and "--search 'quick'" in res.output and "thorough" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_a_fast_encode_tries_only_the_fast_candidates_and_keeps_the_cap(two_shot_master, tmp_path, monkeypatch):
    """The name reaches the search through the options and the segment job: every scene image
    coded and every refinement step quantised is one of the fast search's (the real coders run;
    the wrappers only record what they were asked), and the track keeps its cap."""
    from itmfilter.encode.rate import check_rate
    from itmfilter.encode.video import encode_video
    from itmfilter.model import scene
    from itmfilter.track.carriage import carried_bytes, load_track

    qualities, steps = set(), set()
    code, quantise = scene.ScenePlan.code, gridkeys.quantise_refinement

    def record_code(self, quality, window=None):
        qualities.add(quality)
        return code(self, quality, window)

    def record_quantise(residual, step):
        steps.add(step)
        return quantise(residual, step)

    monkeypatch.setattr(scene.ScenePlan, "code", record_code)
    monkeypatch.setattr(gridkeys, "quantise_refinement", record_quantise)
    torch.set_num_threads(1)
    out = tmp_path / "sdr.mp4"
    kbps = 32.0
    encode_video(two_shot_master, out, quiet=True,
                 options=VideoEncodeOptions(max_kbps=kbps, model="grid", **FAST))
    fast = gridkeys.SEARCHES["fast"]
    assert qualities and qualities <= set(fast.scene_qualities), qualities
    assert steps and steps <= set(fast.refine_steps), steps
    sizes = carried_bytes(out, load_track(out))
    assert sum(sizes) <= kbps * 1000 / 8 * 72 / 24 and check_rate(sizes, kbps, 24) == []
