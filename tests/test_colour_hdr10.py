"""HDR10 static metadata (ST 2086 / CTA-861.3) and MaxCLL / MaxFALL."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from itmfilter.colour import HDR10Metadata, LightLevelAccumulator, compute_light_levels

# The x265 documentation's P3-D65 / 1000 cd/m2 example, in ST 2086 units.
P3_D65_MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
BT2020_PRIMARIES = "G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)"


def test_p3_d65_x265_params():
    meta = HDR10Metadata.p3_d65()
    assert meta.primaries == ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
    assert meta.white_point == (0.3127, 0.3290)
    assert (meta.max_luminance, meta.min_luminance, meta.max_cll, meta.max_fall) == (1000.0, 0.0001, 0.0, 0.0)
    assert meta.to_x265_params() == f"master-display={P3_D65_MASTER}:max-cll=0,0"


def test_bt2020_x265_params_with_light_levels():
    meta = HDR10Metadata.bt2020(4000.0, 0.005, max_cll=1000.4, max_fall=400.6)
    assert meta.to_x265_params() == f"master-display={BT2020_PRIMARIES}L(40000000,50):max-cll=1000,401"


def test_with_light_levels_and_replace():
    meta = HDR10Metadata.p3_d65().with_light_levels(1200.0, 350.0)
    assert (meta.max_cll, meta.max_fall) == (1200.0, 350.0)
    assert meta.to_x265_params().endswith(":max-cll=1200,350")
    with pytest.raises(ValueError, match="max_fall"):
        dataclasses.replace(meta, max_fall=2000.0)


def test_dict_round_trip_through_json():
    meta = HDR10Metadata.bt2020(1000.0, 0.0001, 850.0, 120.0)
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["primaries"] == [[0.708, 0.292], [0.17, 0.797], [0.131, 0.046]]
    assert data["max_cll"] == 850.0
    assert HDR10Metadata.from_dict(data) == meta
    minimal = {k: data[k] for k in ("primaries", "white_point", "max_luminance", "min_luminance")}
    assert HDR10Metadata.from_dict(minimal).max_cll == 0.0


def test_accepts_arrays_and_normalises_to_tuples():
    meta = HDR10Metadata(
        primaries=np.array([[0.68, 0.32], [0.265, 0.69], [0.15, 0.06]]),
        white_point=np.array([0.3127, 0.329]),
        max_luminance=np.float32(1000),
        min_luminance=0,
    )
    assert meta == HDR10Metadata.p3_d65(min_luminance=0.0)
    assert isinstance(meta.primaries[0], tuple) and isinstance(meta.max_luminance, float)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_luminance": 0.0}, "max_luminance"),
        ({"max_luminance": 20000.0}, "max_luminance"),
        ({"max_luminance": float("nan")}, "max_luminance"),
        ({"max_luminance": "bright"}, "max_luminance"),
        ({"min_luminance": 1000.0}, "min_luminance"),
        ({"min_luminance": -0.1}, "min_luminance"),
        ({"max_cll": -1.0}, "max_cll"),
        ({"max_cll": 70000.0}, "max_cll"),
        ({"max_fall": float("inf")}, "max_fall"),
        ({"max_cll": 100.0, "max_fall": 200.0}, "max_fall"),
        ({"primaries": ((0.68, 0.32), (0.265, 0.69))}, "three"),
        ({"primaries": ((0.68, 0.32), (0.265, 0.69), (0.15, 1.5))}, r"primaries\[B\]"),
        ({"primaries": None}, "primaries"),
        ({"white_point": (0.3127,)}, "white_point"),
        ({"white_point": (0.8, 0.4)}, "white_point"),
    ],
)
def test_validation(changes, match):
    fields = HDR10Metadata.p3_d65().to_dict()
    fields.update(changes)
    with pytest.raises(ValueError, match=match):
        HDR10Metadata(**fields)


def test_from_dict_validation():
    data = HDR10Metadata.p3_d65().to_dict()
    with pytest.raises(ValueError, match="missing"):
        HDR10Metadata.from_dict({k: v for k, v in data.items() if k != "max_luminance"})
    with pytest.raises(ValueError, match="unknown keys"):
        HDR10Metadata.from_dict({**data, "maxCLL": 1000})
    with pytest.raises(ValueError, match="JSON object"):
        HDR10Metadata.from_dict([1, 2, 3])


# --- MaxCLL / MaxFALL (CTA-861.3-A Annex A) -------------------------------------------


def _frames():
    a = np.zeros((2, 2, 3))
    a[0, 0] = (100.0, 500.0, 50.0)  # MaxCLL 500; FALL = 500 / 4 = 125
    b = np.empty((2, 2, 3))
    b[...] = (200.0, 100.0, 50.0)  # CLL 200; FALL 200
    return [a, b]


def test_light_levels_known_values():
    acc = LightLevelAccumulator()
    assert acc.result() == (0.0, 0.0)  # unknown before any frame
    for frame in _frames():
        acc.add(frame)
    assert acc.result() == (500.0, 200.0)
    assert acc.frame_count == 2
    assert compute_light_levels(iter(_frames())) == (500.0, 200.0)
    assert compute_light_levels([]) == (0.0, 0.0)


def test_light_levels_shapes_and_dtypes():
    frames = [f.astype(np.float32) for f in _frames()]
    assert compute_light_levels(frames) == pytest.approx((500.0, 200.0))
    assert compute_light_levels(f.reshape(-1, 3) for f in _frames()) == (500.0, 200.0)
    assert compute_light_levels([np.full((3, 4, 3), 7, np.uint16)]) == (7.0, 7.0)
    big = np.full((270, 480, 3), 0.1, np.float32)
    assert compute_light_levels([big])[1] == pytest.approx(0.1, rel=1e-6)  # float64 mean
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        LightLevelAccumulator().add(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        LightLevelAccumulator().add(np.zeros((0, 3)))


def test_light_levels_non_finite_and_negative():
    frame = np.zeros((2, 2, 3))
    frame[0, 0] = (np.nan, 300.0, 0.0)  # NaN channel ignored: pixel max 300
    frame[0, 1] = (np.nan, np.nan, np.nan)  # all NaN: counts as 0
    frame[1, 0] = (-50.0, -10.0, -1.0)  # negative light counts as 0
    frame[1, 1] = (100.0, 0.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_light_levels([frame]) == (300.0, 100.0)
        assert compute_light_levels([np.full((2, 2, 3), np.inf)]) == (10000.0, 10000.0)
