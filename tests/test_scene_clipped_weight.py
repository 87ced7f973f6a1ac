"""A grid KEY that a scene residual may follow (a capped, progressive segment) is fitted with
the SDR's clipped pixels weighing ``SCENE_CLIPPED_WEIGHT``; without a cap (no scene residual)
every pixel weighs 1. The encode runs for real up to its first grid fit, which the spy records
and then stops."""

import sys
from pathlib import Path

import numpy as np
import pytest

import itmfilter.encode.gridkeys as gridkeys
from itmfilter.data.testmedia import make_master_from_arrays
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.model.grid import _pixel_weight

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twoshots import CUT, frames  # noqa: E402


class _Stop(Exception):
    pass


@pytest.mark.parametrize("cap, weight", [(64, gridkeys.SCENE_CLIPPED_WEIGHT), (None, 1.0)])
def test_the_key_fit_weighs_clipped_pixels_where_a_scene_image_may_follow(tmp_path, monkeypatch, cap, weight):
    master = tmp_path / "shot.mkv"
    make_master_from_arrays(master, (f for _, f in zip(range(CUT), frames())), fps=24, codec="hevc", peak_nits=1000)
    seen = []

    def spy(picked, offsets, picks, config, options, zoom=0.0, device=None):
        seen.append(options.clipped_weight)
        raise _Stop

    monkeypatch.setattr(gridkeys, "fit_segment_grid", spy)
    opts = VideoEncodeOptions(preset="ultrafast", model="grid", grid_steps=20, max_kbps=cap)
    with pytest.raises(Exception) as stopped:
        encode_video(master, tmp_path / "out.mp4", options=opts, quiet=True)
    assert seen == [weight], (seen, stopped.value)


def test_the_weight_falls_on_clipped_pixels_alone():
    import torch

    rgb = torch.tensor([[1.0, 0.2, 0.1], [0.5, 0.5, 0.5], [0.99, 0.99, 0.99], [0.97, 0.9, 0.9]])
    w = _pixel_weight(rgb, 0.3)
    np.testing.assert_allclose(w.numpy(), [0.3, 1.0, 0.3, 1.0])  # 0.99 -> code 252, 0.97 -> 247
