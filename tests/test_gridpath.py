"""A grid shot's fused CPU path (itmfilter.render.gridpath) against the normative decoder."""

import numpy as np
import pytest
from gridcases import ramp_frame, random_model

from itmfilter.model.grid import GRID_SIZES, PlacedGrid
from itmfilter.render.frame import hdr10_planes, pq_to_yuv420p10, sdr_frame_to_rgb


@pytest.mark.parametrize("size", ["P", "XS", "S"])
@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
def test_fused_grid_frame_matches_the_normative_decoder(size, fmt):
    pytest.importorskip("numba")
    model = random_model(GRID_SIZES[size], seed=len(size))
    placed = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3))  # a shot that pans
    frame = ramp_frame(45, 78, fmt)
    want = pq_to_yuv420p10(placed.predict_pq(sdr_frame_to_rgb(frame).astype(np.float32)))
    exact = hdr10_planes(frame, placed, "full", "cpu", path="exact")
    got = hdr10_planes(frame, placed, "full", "cpu")
    for g, w, e in zip(got, want, exact):
        assert np.array_equal(w, e)
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    assert want[0].max() - want[0].min() > 50  # the comparison is of a varied picture


def test_grid_residual_points_match_the_rows():
    pytest.importorskip("numba")
    from itmfilter.render import gridpath

    placed = PlacedGrid(random_model(GRID_SIZES["S"], 5), origin=(0.2, -0.1), half=(1.3, 1.2))
    rng = np.random.default_rng(0)
    h, w = 37, 53
    rgb = rng.random((h, w, 3)).astype(np.float32)
    rows_all = gridpath.residual_grid(placed, rgb, h, w).reshape(h, w, 3)
    r, c = rng.integers(0, h, 300), rng.integers(0, w, 300)
    pts = gridpath.residual_points(placed, rgb[r, c], r, c, h, w)
    np.testing.assert_allclose(pts, rows_all[r, c], atol=1e-5)
    sub = gridpath.residual_grid(placed, rgb[3::6][:, 3::6], h, w, np.arange(3, h, 6), np.arange(3, w, 6))
    np.testing.assert_allclose(sub.reshape(rows_all[3::6, 3::6].shape), rows_all[3::6, 3::6], atol=1e-5)
    # the normative decoder's residual over its polynomial, at those pixels
    want = placed.predict_pq(rgb)
    from itmfilter.model.grid import mmr_terms
    prior = (mmr_terms(rgb.reshape(-1, 3)) @ placed.model.mmr).reshape(h, w, 3)
    ok = (prior + rows_all > 0.01) & (prior + rows_all < 0.99)  # away from the clip
    np.testing.assert_allclose((prior + rows_all)[ok], want[ok], atol=2e-5)


@pytest.mark.parametrize("rung", ["guided-half", "guided-quarter", "guided-eighth"])
def test_grid_guided_rungs_follow_the_model(rung, monkeypatch):
    """A grid shot's guided rung: close to the model on every pixel, and exactly it (within a
    code) where every block is refined."""
    pytest.importorskip("numba")
    from itmfilter.render import gridpath, ladder

    model = random_model(GRID_SIZES["XS"], seed=7)
    placed = PlacedGrid(model, origin=(0.37, -0.21), half=(1.6, 1.3))
    frame = ramp_frame(61, 90, "yuv420p")
    full = hdr10_planes(frame, placed, "full", "cpu")
    got = hdr10_planes(frame, placed, rung, "cpu")
    from itmfilter.model.grid import mmr_terms

    rgb = sdr_frame_to_rgb(frame).astype(np.float32)
    prior = pq_to_yuv420p10(np.clip(mmr_terms(rgb.reshape(-1, 3)) @ model.mmr, 0, 1).reshape(rgb.shape))
    diff = np.abs(got[0].astype(int) - full[0].astype(int)).mean()
    # an approximation, and a close one: this random model is far rougher than a fitted one
    assert 0 < diff < 0.25 * np.abs(prior[0].astype(int) - full[0].astype(int)).mean()
    monkeypatch.setattr(gridpath, "refine_blocks", lambda *a, **k: ladder.refine_blocks(*a, **{**k, "share": 1.0, "tol": -1.0}))
    every = hdr10_planes(frame, placed, rung, "cpu")
    for g, f in zip(every, full):
        d = np.abs(g.astype(int) - f.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.05
    # a plain rung takes the guided rung of its cost
    assert np.array_equal(hdr10_planes(frame, placed, "eighth", "cpu")[0], hdr10_planes(frame, placed, "guided-eighth", "cpu")[0])


def test_auto_rung_walks_a_grid_shots_ladder():
    pytest.importorskip("numba")
    from itmfilter.render.frame import auto_rung

    placed = PlacedGrid(random_model(GRID_SIZES["S"], 2), origin=(0.1, 0.0), half=(1.2, 1.1))
    frame = ramp_frame(90, 160, "yuv420p")
    rung, timings = auto_rung(placed, frame, 24.0, "cpu", "auto")
    assert rung == "full" and "full" in timings  # a small frame: the model on every pixel keeps up
    assert set(timings) <= {"full", "guided-quarter", "guided-sixth", "guided-eighth"}
    rung, timings = auto_rung(placed, frame, 100000.0, "cpu", "auto")  # an impossible rate: the cheapest
    assert rung == "guided-eighth"
    # a rate between: the choice is the best rung within GRID_RUNG_HEADROOM of the period by the
    # timings it returns (a grid rung slows more in play than its timing shows), not 0.9 of it
    from itmfilter.render import ladder

    rung, timings = auto_rung(placed, frame, 24.0, "cpu", "auto")
    cheapest = min(timings.values())
    fps = ladder.GRID_RUNG_HEADROOM / (1.2 * cheapest)  # the cheapest fits, with a margin
    rung, timings = auto_rung(placed, frame, fps, "cpu", "auto")
    fits = [n for n, t in timings.items() if t <= ladder.GRID_RUNG_HEADROOM / fps]
    if fits:
        assert ladder.RUNG_NAMES.index(rung) == min(ladder.RUNG_NAMES.index(n) for n in fits)
    else:  # the machine slowed between the two timings: none fits, the cheapest
        assert rung == min(timings, key=timings.get)
    assert ladder.GRID_RUNG_HEADROOM < ladder.RUNG_HEADROOM


def test_a_grid_tracks_controller_steps_down_its_own_ladder():
    from itmfilter.render.ladder import GRID_LADDER, RungController

    control = RungController("full", window=4, ladder=GRID_LADDER)
    rungs = [control.frame_done(True) for _ in range(12)]
    assert rungs[3] == "guided-quarter" and rungs[7] == "guided-sixth" and rungs[11] == "guided-eighth"


def test_the_fused_paths_pixel_centres_are_the_normative_ones():
    """The player's NumPy pixel centres: bit for bit those of :func:`pixel_centres` (torch)."""
    from itmfilter.model.separable import pixel_centres
    from itmfilter.render.gridpath import _all_centres, _centres

    for n in (1, 2, 45, 78, 360, 1080, 1920, 2160, 3840):
        want = pixel_centres(n).numpy()
        assert np.array_equal(_all_centres(n), want) and _all_centres(n).dtype == np.float32
        idx = np.arange(0, n, 7)
        assert np.array_equal(_centres(n, idx), pixel_centres(n, idx).numpy())


def test_a_frame_renders_with_one_blas_thread_and_leaves_the_callers_setting():
    """render.threads: NumPy's BLAS at one thread inside the limit (its spinning pool took the
    numba passes' cores), the caller's count after it and after a whole frame."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from itmfilter.render.threads import one_blas_thread

    def counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    assert counts(), "threadpoolctl finds no BLAS: the limit would do nothing"
    model = random_model(GRID_SIZES["XS"], seed=3)
    placed = PlacedGrid(model, origin=(0.1, 0.2), half=(1.2, 1.1))
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outside = counts()
        with one_blas_thread():
            assert counts() == [1] * len(outside)
        assert counts() == outside
        hdr10_planes(ramp_frame(48, 80, "yuv420p"), placed, "guided-half", "cpu")
        assert counts() == outside


def test_a_transcode_reconstructs_grid_frames_at_one_blas_thread(plain_clip, monkeypatch):
    """transcode.video._reconstructed: a grid shot's frame goes through the float32 decoder at one
    BLAS thread (OpenBLAS's spinning pool took the cores x265 encodes on), the caller's count
    around it, and the same PQ bits as the decoder called directly."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from itmfilter.media.video import read_sdr_frames
    from itmfilter.transcode.video import _reconstructed

    def counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    placed = PlacedGrid(random_model(GRID_SIZES["S"], seed=5), origin=(0.1, 0.2), half=(1.2, 1.1))
    seen, real = [], PlacedGrid.predict_pq

    def watched(self, sdr):
        seen.append(counts())
        return real(self, sdr)

    monkeypatch.setattr(PlacedGrid, "predict_pq", watched)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outside = counts()
        got = list(_reconstructed(plain_clip, lambda i: placed, "cpu", "fp32"))
        assert counts() == outside
    assert outside and seen == [[1] * len(outside)] * len(got) == [[1] * len(outside)] * 6
    for (i, pq), (_, sdr) in zip(got, read_sdr_frames(plain_clip)):
        assert np.array_equal(pq, real(placed, np.asarray(sdr, dtype=np.float32))), i


def test_the_cached_kernels_hold_no_jitted_helper_in_their_closure():
    """numba keys a cached kernel by its closure's pickled contents, and a dispatcher pickles
    differently in every process: a kernel holding one recompiled on every start (~35 s before
    `play` showed its first 1080p frame). Helpers are module globals instead."""
    pytest.importorskip("numba")
    from numba.core.registry import CPUDispatcher

    from itmfilter.render import fastpath, gridpath

    factories = [getattr(fastpath, n) for n in dir(fastpath) if n.startswith("_") and n.endswith(("kernel", "kernels"))]
    factories.append(gridpath._kernels)
    kernels = [k for f in factories for k in (f() if isinstance(f(), tuple) else (f(),)) if hasattr(k, "py_func")]
    assert len(kernels) >= 12
    for k in kernels:
        held = [c.cell_contents for c in (k.py_func.__closure__ or ())]
        assert not any(isinstance(v, CPUDispatcher) for v in held), k.py_func.__qualname__
