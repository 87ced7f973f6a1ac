"""Grid keys (``--model grid``, format 1.4): one grid model per segment, placed by the pan.

A segment (a shot, or ``key_seconds`` of a longer one) gets one grid model
(:mod:`itmfilter.model.grid`: MMR3 polynomial + a small MLP fed by a learned bilateral grid)
in the segment's *scene* coordinates: frame ``t`` shows the scene displaced by the camera's
accumulated translation ``o_t`` since the segment's first frame (the encoder's phase
correlation, in pixel-grid units), so its pixel centres ``p`` sit at ``p + o_t`` in the scene.
The union of the moved frames is mapped onto the grid's [-1, 1] square (``centre`` and
``half``-size per axis), whose cells grow with that extent (the named config's cell size on
one frame), and one model is fitted on pixels pooled from ``fit_frames`` frames spread over
the segment (:func:`itmfilter.model.grid.fit_grid_model_pixels`). Measured on the 640x360
benchmark clip with 2 s shots: +1.4 to +2.5 dB PU21-PSNR over the best gain-map track at
equal rate (docs/grid-video.md).

The config is the largest of :data:`GRID_LADDER` whose estimated bytes fit the KEY's budget
(the segment's share of ``--max-kbps``, :meth:`itmfilter.encode.rate.RateBudget.key_budget`);
when the fitted model comes out larger than the budget the next smaller one is fitted.

Progressive (format 1.5, KEY coding 5 and DELTA coding 4): under a cap a KEY may cost at most
``r + B`` (one frame's share plus the buffer) while the segment may spend its whole share, so
the KEY's model is then followed by a refinement (the grid at twice the resolution, the
polynomial and MLP kept: :func:`itmfilter.model.grid.fit_grid_refinement`) sent as fast as the
bucket allows over the next frames. Its step is chosen among :data:`REFINE_STEPS` by the
segment's expected mean PU21-PSNR: the coarse model's score on the frames before the refinement
completes, the refined model's after (:func:`expected_score`); no refinement when none beats
the coarse model alone. This module holds the pure parts (geometry, estimates, the fits, the
scores); the packets are made in :func:`itmfilter.encode.segments.encode_segment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from itmfilter.colour.transfer import eotf_st2084
from itmfilter.model.grid import (
    GRID_SIZES,
    MAX_ZOOM,
    GridConfig,
    GridFitOptions,
    GridModel,
    apply_grid_refinement,
    finish_pq,
    fit_grid_model_pixels,
    fit_grid_refinement,
    fixed_bytes,
    pack_grid_refinement,
    pre_scene_pq,
    predict_pq,
    quantise_refinement,
)
from itmfilter.model.net import pixel_grid
from itmfilter.quality.metrics import psnr_pu21

GRID_LADDER: tuple[tuple[str, GridConfig], ...] = (
    ("M-48x24", replace(GRID_SIZES["M"], width=48, height=24)),
    ("M", GRID_SIZES["M"]),
    ("S-24x12", replace(GRID_SIZES["S"], width=24, height=12)),
    ("S", GRID_SIZES["S"]),
    ("S-6bit", replace(GRID_SIZES["S"], grid_bits=6)),
    ("S-5bit", replace(GRID_SIZES["S"], grid_bits=5)),
    ("XS", GRID_SIZES["XS"]),
    ("XS-5bit", replace(GRID_SIZES["XS"], grid_bits=5)),
    ("XXS", GridConfig(width=6, height=3, depth=8, channels=4, hidden=8, layers=2, grid_bits=5)),
    ("XXXS", GridConfig(width=4, height=2, depth=8, channels=4, hidden=8, layers=2, grid_bits=5)),
    ("XXXS-d4", GridConfig(width=4, height=2, depth=4, channels=4, hidden=8, layers=2, grid_bits=5)),
    ("P", GRID_SIZES["P"]),
)
"""Configs by decreasing size (per frame of picture: a pan grows the grid). All but the last
three and the first were measured in docs/grid-video.md (M 38.09 dB at 47.5 kbit/s, S 24x12 37.81 at 28.8, S
37.18 at 17.1, S 6 bits 37.15 at 15.3, S 5 bits 36.85 at 13.4, XS 35.85 at 8.9 on the
``local`` grade); ``XXS`` (~0.8-1 KB), ``XXXS`` (~0.75 KB with a pan, 4x2 cells on one frame:
a KEY that also carries the ~0.6 KB track header at 16 kbit/s) and ``XXXS-d4`` (4 luma bins,
~0.65 KB; on the benchmark clip's first shot 34.97 and 33.81 dB) bridge XS (~1.5 KB) and
``P`` (the polynomial and a 2x2 offset plane, ~0.3 KB), the floor: at 16 kbit/s in SEI a 2 s
shot's KEY may cost ~1.3 KB. A refinement (progressive shots) doubles the coarse grid's cells.
``M-48x24`` (2.25 times M's cells) heads the ladder since the fit's roughness penalty
(:class:`itmfilter.model.grid.GridFitOptions`) roughly halved what a grid's codes cost: at the
higher caps a KEY has room for it."""

DEFAULT_GRID = "S-6bit"
"""The config without a rate cap: 37.15 dB at 15.3 kbit/s in docs/grid-video.md, within
0.03 dB of S at 7 bits for 1.9 kbit/s less."""

PLACEMENT_BYTES = 16  # KEY coding 4's placement: four binary32


def estimate_ratio(raw: float) -> float:
    """Expected compressed / raw bytes of a grid's delta-coded codes and int8 MLP (zstd), by raw
    size: 0.65 up to 2 KB raw, 0.35 from 16 KB, linear in log2 between. With the fit's roughness
    penalty an M model (15.7 KB raw) measured 0.28-0.34 on stills, an S (4 KB) 0.37-0.45, while
    the small grids of a small picture keep the 0.6-0.7 measured without it (a ratio of 0.5 for
    all made the 2 s shot of the 96x54 test clip try three large configs that missed and code no
    grid at all). Slightly optimistic on purpose: a model that comes out too large is refitted
    one size down."""
    t = min(max(math.log2(max(raw, 1.0) / 2048.0) / 3.0, 0.0), 1.0)
    return 0.65 - 0.30 * t


ESTIMATE_SLACK = 1.2
"""A config is tried when its estimate is within this factor of the budget: large grids
may compress better than the estimate says (M: 0.28-0.34 of raw measured on stills); the fit's actual
bytes decide, and a miss is refitted one size down."""


def frame_scales(count: int, zoom: float) -> np.ndarray:
    """Each frame's scale in the scene, ``1 + zoom * t`` for ``t`` frames after the KEY, as the
    decoder clamps it (:attr:`itmfilter.model.grid.PlacedGrid.scale`)."""
    from itmfilter.model.grid import MAX_SCALE, MIN_SCALE

    return np.clip(1.0 + float(np.float32(zoom)) * np.arange(count), MIN_SCALE, MAX_SCALE)


def grid_geometry(config: GridConfig, offsets: np.ndarray, zoom: float = 0.0) -> tuple[GridConfig, np.ndarray, np.ndarray]:
    """The segment's grid and the map of scene coordinates onto it: ``offsets`` ``(n, 2)``
    are the frames' accumulated shifts (pixel-grid units), ``zoom`` the shot's zoom rate;
    returns the config with its cells grown by the extent, ``centre`` and ``half`` (binary32
    values, as the KEY carries them), so that ``xy_grid = (p s_t + o_t - centre) / half``."""
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    scales = frame_scales(len(offsets), zoom)[:, None]
    lo, hi = (offsets - scales).min(0), (offsets + scales).max(0)
    centre = ((lo + hi) / 2).astype(np.float32).astype(np.float64)
    half = ((hi - lo) / 2).astype(np.float32).astype(np.float64)
    if config.width > 2 or config.height > 2:
        config = replace(config, width=int(round((config.width - 1) * half[0])) + 1,
                         height=int(round((config.height - 1) * half[1])) + 1)
    return config, centre, half


def estimated_bytes(config: GridConfig, compact: bool = False) -> int:
    """A KEY coding 4 payload's expected size: placement, the model's fixed fields (``compact``:
    the layout of format 1.11, binary16 fields and a second frame length), and the compressed
    grid codes and int8 MLP (:func:`estimate_ratio` of their raw size at the grid's bits)."""
    shapes = config.mlp_shapes()
    fixed = PLACEMENT_BYTES + fixed_bytes(config, compact)
    grid = int(np.prod(config.grid_shape)) * config.grid_bits / 8
    mlp = sum(int(np.prod(s)) for s in shapes)
    return int(fixed + estimate_ratio(grid + mlp) * (grid + mlp)) + 16


def frame_xy(height: int, width: int, offset, centre, half, scale: float = 1.0) -> np.ndarray:
    """``(H, W, 2)`` float32 grid coordinates of a frame at scene offset ``offset`` and ``scale``."""
    base = pixel_grid(height, width).numpy().astype(np.float64)
    return ((base * scale + np.asarray(offset, np.float64) - centre) / half).astype(np.float32)


ZOOM_STARTS = (-0.006, -0.003, 0.0, 0.003, 0.006)
"""Zoom rates the per-frame scale search starts from (a 2 s shot zooming by 15 %: ~0.003)."""
ZOOM_GAIN = 0.1
"""A zoom is kept only when it aligns the shot's frames this much (relative squared error)
better than the pan alone, and changes the scale by at least :data:`MIN_ZOOM_CHANGE` over the
shot. With the alignment reading no padding (:func:`_align`) a pan's links fit a scale within
0.01 % of 1 and no better (ratio 1.000 on the val split's 640x360 pans), a 2.6 % zoom has 0.46 of
the pan's error, an 11 % zoom 0.09, and a 12 % zoom at 192x108 (48x27 thumbnails of an x264
SDR) 0.80: 0.2 refused that one."""
MIN_ZOOM_CHANGE = 0.02
MIN_OVERLAP = 0.25
ALIGN_HUBER: float | None = 0.02
"""The alignment's loss is Huber's: squared up to this luma difference (0-1), linear beyond, so
a subject that moves on its own (a tenth of the frame disagreeing by 0.1-0.5) pulls the camera's
fit far less than under least squares; None: least squares."""
"""Frames sharing less than this share of their pixels with the first are not aligned to it."""


def _align(first, frame, scale: float, shift, fit_scale: bool) -> tuple[float, np.ndarray, float]:
    """Least squares over the shared pixels: ``frame(p) ~ first(p s + t)`` on luma thumbnails
    (torch tensors ``(1, 1, h, w)`` and ``(h, w)``), from ``scale, shift`` (pixel-grid units),
    the scale held unless ``fit_scale``. Returns ``(s, t, mean squared error)``; an infinite
    error when the frames share less than :data:`MIN_OVERLAP`."""
    import torch
    import torch.nn.functional as F

    h, w = frame.shape
    base = pixel_grid(h, w)
    # pixels read within the outer pixel centres: past them the bilinear read mixes in the zero
    # padding, which pulls every alignment against the direction the frames overlap in (a pan
    # of 48 frames summed it to 1.5-3 px at 384x216)
    lim = torch.tensor([1 - 1 / w, 1 - 1 / h])
    s = torch.tensor([float(scale)], requires_grad=fit_scale)
    t = torch.tensor(np.asarray(shift, np.float32), requires_grad=True)
    params = [t, s] if fit_scale else [t]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=40, line_search_fn="strong_wolfe")

    def loss_of():
        q = base * s + t
        inside = (q.abs() <= lim).all(-1).float()
        seen = F.grid_sample(first, q[None], mode="bilinear", align_corners=False)[0, 0]
        r = (seen - frame).abs()
        if ALIGN_HUBER is None:
            cost = r ** 2
        else:
            cost = torch.where(r <= ALIGN_HUBER, r ** 2, 2 * ALIGN_HUBER * r - ALIGN_HUBER ** 2)
        return (cost * inside).sum() / inside.sum().clamp(min=1), inside.mean()

    def closure():
        opt.zero_grad()
        loss, _ = loss_of()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss, overlap = loss_of()
    if float(overlap) < MIN_OVERLAP or not torch.isfinite(loss):
        return float(scale), np.asarray(shift, np.float64), float("inf")
    return float(s.detach()), t.detach().numpy().astype(np.float64), float(loss)


CHAIN_STEP = 0.8
"""The largest move (pixel-grid units, a frame spans 2 along each axis) between two frames
:func:`estimate_zoom` aligns with each other: a long pan's last frame may share nothing with
its first, so the frames are aligned link by link, each link's frames sharing >= 36 % of
their pixels (before the zoom)."""


REFIT_TOLERANCE = 0.15
"""A frame's translation refitted at its zoomed scale is kept only within this (pixel-grid
units, 7.5 % of the frame) of the phase correlation's: the least squares on thumbnails can
settle on a far minimum (a repeated texture, a flat sky) that the correlation does not."""


def _chain(rel: np.ndarray, n: int) -> list[int]:
    """Anchor frames ``0 = a_0 < a_1 < ... = n - 1`` for :func:`estimate_zoom`: each the farthest
    frame after the last within :data:`CHAIN_STEP` of it along both axes (by the measured
    translations ``rel``) and at most a quarter of the shot after it (so every shot has at least
    three links to fit its rate through, as frames ``n/4, n/2, n - 1`` had)."""
    anchors, limit = [0], max(1, n // 4)
    while anchors[-1] < n - 1:
        a = anchors[-1]
        b = a + 1
        while b + 1 < n and b + 1 - a <= limit and np.abs(rel[b + 1] - rel[a]).max() <= CHAIN_STEP:
            b += 1
        anchors.append(b)
    return anchors


def estimate_zoom(thumbs: list[np.ndarray], offsets: np.ndarray) -> tuple[float, np.ndarray]:
    """The shot's zoom rate (0 when no zoom is clear) and its frames' offsets aligned with it
    (``offsets`` as given when the frames cannot be aligned). The phase correlation's
    translations (``offsets``, pixel-grid units) are biased by a zoom (each frame's spectrum
    also stretches), so a chain of anchor frames
    (:func:`_chain`) is aligned link by link by scale and translation together (:func:`_align`,
    least squares on the luma thumbnails ``thumbs``, ``(h, w)`` float32 each), the rate
    ``s_t = 1 + z t`` taken as the median of the links' rates, and, when it
    beats translation alone by :data:`ZOOM_GAIN`, kept (else the zoom is 0). Every frame's
    translation is then refitted at its scale against the last anchor before it (kept as
    measured where the refit fails), pans too: the correlation's sub-pixel steps are biased on
    8-bit frames of smooth content, and summed over a shot they drift (1080p benchmark clip's
    pans, 47 frames: 2.1 / 5.7 / 3.5 px at the last frame, 0.12 / 0.07 / 0.37 px refitted;
    ``benchmarks/pan_drift.py``), which misplaces the shot's scene residual."""
    import torch

    n = len(thumbs)
    offsets = np.asarray(offsets, np.float64)
    if n < 3:
        return 0.0, offsets
    frames = [torch.from_numpy(np.ascontiguousarray(t, np.float32)) for t in thumbs]
    rel = offsets - offsets[0]
    anchors = _chain(rel, n)
    plain, zoomed, rates = [], [], []
    scale = 1.0
    for a, b in zip(anchors, anchors[1:]):
        ref = frames[a][None, None]
        start = _align(ref, frames[b], 1.0, rel[b] - rel[a], False)
        # a coarse search over the link's scale, then scale and shift together
        tries = [start] + [_align(ref, frames[b], 1.0 + d * (b - a), rel[b] - rel[a], False) for d in ZOOM_STARTS if d]
        best = min(tries, key=lambda r: r[2])
        link = _align(ref, frames[b], best[0], best[1], True)
        if not (np.isfinite(start[2]) and np.isfinite(link[2])):
            return 0.0, offsets
        plain.append(start)
        zoomed.append(link)
        rates.append(scale * (link[0] - 1) / (b - a))  # the scale's change a frame over the link
        scale *= link[0]
    # the median of the links' rates: one link fitted on a poor overlap does not set the shot's
    zoom = float(np.float32(np.clip(np.median(rates), -MAX_ZOOM, MAX_ZOOM)))
    if sum(a[2] for a in zoomed) > (1 - ZOOM_GAIN) * sum(b[2] for b in plain) or abs(zoom) * (n - 1) < MIN_ZOOM_CHANGE:
        zoom = 0.0  # a pan: its translations are still refitted, at scale 1
    scales = frame_scales(n, zoom)
    out = rel.copy()
    for k in range(1, n):  # tracked: from the last frame's aligned shift plus the measured step, or as measured
        a = max(x for x in anchors if x < k)
        ref, s_a = frames[a][None, None], float(scales[a])
        # frame k(p) ~ anchor(p s_rel + t_rel), the anchor at scene (q s_a + out[a]): scene = p s_k + (t_rel s_a + out[a])
        tries = [_align(ref, frames[k], float(scales[k]) / s_a, (start - out[a]) / s_a, False)
                 for start in (out[k - 1] + rel[k] - rel[k - 1], rel[k])]
        _, t, err = min(tries, key=lambda r: r[2])
        if np.isfinite(err) and np.abs(t * s_a + out[a] - rel[k]).max() <= REFIT_TOLERANCE:
            out[k] = t * s_a + out[a]
    return zoom, offsets[0] + out


def fit_frames_of(count: int, fit_frames: int) -> list[int]:
    """Positions (0-based in the segment) of the ``fit_frames`` frames spread over ``count``."""
    return sorted(set(np.linspace(0, count - 1, min(fit_frames, count)).round().astype(int).tolist()))


def heldout_frames_of(picks: list[int]) -> list[int]:
    """Positions halfway between consecutive fit frames (``picks``, ascending) that are not fit
    frames themselves: where the encoder scores what it built from the fit frames (the scene
    residual) on pixels it was not built from."""
    mids = {(a + b) // 2 for a, b in zip(picks, picks[1:])}
    return sorted(mids - set(picks))


def fit_segment_grid(frames: list[tuple[np.ndarray, np.ndarray]], offsets: np.ndarray, picks: list[int],
                     config: GridConfig, options: GridFitOptions, zoom: float = 0.0, device=None):
    """Fit one grid model to the picked frames (``frames[k] = (sdr, nits)`` for ``picks[k]``)
    placed by ``offsets`` and ``zoom``, its Adam steps on ``device`` (None: the CPU); returns
    ``(fit, centre, half)`` (:class:`itmfilter.model.grid.GridFit`)."""
    cfg, centre, half = grid_geometry(config, offsets, zoom)
    h, w = frames[0][0].shape[:2]
    scales = frame_scales(len(offsets), zoom)
    rgb = np.concatenate([s.reshape(-1, 3) for s, _ in frames])
    nits = np.concatenate([n.reshape(-1, 3) for _, n in frames])
    xy = np.concatenate([frame_xy(h, w, offsets[k], centre, half, scales[k]).reshape(-1, 2) for k in picks])
    return fit_grid_model_pixels(rgb, nits, xy, cfg, options, device=device), centre, half


def ladder_from(key_max: int | None, offsets: np.ndarray, compact: bool = False) -> list[tuple[str, GridConfig]]:
    """The configs to try, best first: the default without a cap, else every config of the
    ladder whose estimate (grown by the pan; ``compact`` as :func:`estimated_bytes`) is within
    :data:`ESTIMATE_SLACK` of ``key_max`` payload bytes (the caller keeps the first whose fitted
    bytes fit)."""
    if key_max is None:
        return [(DEFAULT_GRID, dict(GRID_LADDER)[DEFAULT_GRID])]
    return [(name, cfg) for name, cfg in GRID_LADDER
            if estimated_bytes(grid_geometry(cfg, offsets)[0], compact) <= ESTIMATE_SLACK * key_max]


GRID_STARTS = 4
"""Initial MLP weights a shot's grid fit tries (:attr:`itmfilter.model.grid.GridFitOptions.starts`),
each for the first :data:`GRID_TRIAL_SHARE` of its steps, before the one with the lowest loss goes
on. On the 1080p benchmark clip's first two 2 s shots (M, 1,800 steps, compact;
``benchmarks/scene_residual.py --shot N --config M --scales '' --starts 4 --trial-steps 225``
against ``--seeds 0,1,2,3,4,5``) the one fit of seed 0 scored 40.97 / 36.15 dB PU21-PSNR on its
held-out frames, six seeds 40.97-41.84 / 36.15-36.95 at about the same bytes."""
GRID_TRIAL_SHARE = 1 / 8
"""The share of a grid fit's steps each of its :data:`GRID_STARTS` trains before one is chosen:
the multi-start costs ``(GRID_STARTS - 1) * GRID_TRIAL_SHARE`` more of the first fit's steps (3/8;
a fit is 1 + 2/3 of its steps with the MLP's fine-tune)."""

SCENE_CLIPPED_WEIGHT = 0.3
"""The weight in a grid KEY's fit of the SDR's clipped pixels (:attr:`GridFitOptions.clipped_weight`;
the others weigh 1) where a scene residual may follow it (progressive segments under a cap).
Where the SDR clips it holds nothing of the master: the scene image carries the detail there
whatever the model does, so the model's capacity goes further on the pixels where it is the whole
answer. On the 1080p val clip's shots 1 and 3 (model M, ``benchmarks/scene_residual.py --split val
--clipped-weights 1,0.3,0.1``) 0.3 scored the model alone +0.09 / +0.06 dB and, with an image of
1/2-1/4 at quality 15-45, +0.15 to +0.6 dB at equal total bytes; 0.1 lost 0.4-0.6 dB alone.
Through the encoder on the 1080p test clip (2 s shots) eleven of fifteen shots rose at 16 / 32 /
64 kbit/s, the file +0.31 / -0.11 / +0.04 dB: where a shot's image is small or arrives late, the
model's weaker highlights show (docs/video-rate-1080p.md)."""
REFINE_STEPS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
"""Candidate steps of a refinement's residual, in units of each channel's residual RMS. Measured
by ``benchmarks/grid_refine.py`` on the 640x360 benchmark clip (docs/grid-video.md): on its
first shot XXS (953 B, 36.33 dB) refined at 0.35 costs 868 B for 37.38 dB, at 1.0 556 B for
35.94 dB (a coarse step can lose to no refinement: the score decides); on its second shot S
(3933 B, 32.11 dB) refined at 0.25 costs 7344 B for 32.75 dB, at 2.0 2645 B for 32.22 dB."""
REFINE_FIT_FRACTIONS = (1.0, 0.5)
"""A refinement is fitted twice, for the encoder's refinement steps (300) and half as many: the
longer the fine grid trains, the further it moves from the upsampled grid and the sooner its
coded residual breaks down at coarse steps (not an over-fit to the fit frames: 16 frames fit
as 6), so the shorter fit codes better there. Measured by ``benchmarks/grid_refine.py --refine-steps`` on the benchmark
clip's first shot (XXS): 300 steps 868 B for 37.38 dB, 661 B for 36.43; 150 steps 871 B for
37.25, 674 B for 37.13; 900 steps 842 B for 36.86 (docs/grid-video.md)."""
SCORE_PIXELS = 1 << 15  # pixels of the fit frames the candidates are scored on
MAX_REFINEMENTS = 2
"""Refinements a segment may carry, each doubling the cells of the one before (chosen one after
the other while each raises the segment's expected score)."""
MAX_REFINED_VALUES = 1 << 18
"""No refinement is tried whose grid would hold more values than this (its fit grows with it)."""


def score_pixels(frames: list[tuple[np.ndarray, np.ndarray]], xy: np.ndarray, seed: int = 0):
    """``(sdr, nits, xy)`` of :data:`SCORE_PIXELS` pixels drawn from the fit frames (``frames``
    as :func:`fit_segment_grid`'s, ``xy`` their pooled grid coordinates), each ``(N, 1, C)``."""
    rgb = np.concatenate([s.reshape(-1, 3) for s, _ in frames])
    nits = np.concatenate([n.reshape(-1, 3) for _, n in frames])
    pick = np.random.default_rng(seed).choice(rgb.shape[0], min(SCORE_PIXELS, rgb.shape[0]), replace=False)
    return rgb[pick][:, None], nits[pick][:, None], np.asarray(xy).reshape(-1, 2)[pick][:, None]


_PRE_SCENE: list[tuple] = []
"""The last few :func:`itmfilter.model.grid.pre_scene_pq` results of :func:`model_score`, each
beside the model arrays and pixels it was computed from (held, so compared by identity)."""
_PRE_SCENE_KEEP = 4


def _pre_scene(model: GridModel, sdr: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """:func:`~itmfilter.model.grid.pre_scene_pq` of ``model`` at the SDR pixels ``sdr`` and
    grid coordinates ``xy``, reused while the same model arrays are scored on the same arrays:
    a segment's scene residuals (every scale and quality of :func:`scene_options`) are scored
    over one model each, and the MLP's forward pass was three quarters of a capped test
    encode's scoring time."""
    for entry in _PRE_SCENE:
        if (entry[0] is model.mmr and entry[1] is model.grid and entry[2] is model.mlp and entry[3] == model.config
                and entry[4] is sdr and entry[5] is xy):
            return entry[6]
    pre = pre_scene_pq(model, sdr, xy=xy)
    _PRE_SCENE.insert(0, (model.mmr, model.grid, model.mlp, model.config, sdr, xy, pre))
    del _PRE_SCENE[_PRE_SCENE_KEEP:]
    return pre


def model_score(model: GridModel, pixels) -> float:
    """PU21-PSNR (dB) of ``model`` through the decoder on ``pixels`` (:func:`score_pixels`):
    :func:`~itmfilter.model.grid.predict_pq`'s bits, its part before the scene residual
    computed once per model and pixels (:func:`_pre_scene`)."""
    sdr, nits, xy = pixels
    pq = finish_pq(model, _pre_scene(model, sdr, xy), xy).reshape(nits.shape)
    return float(psnr_pu21(nits, np.asarray(eotf_st2084(pq), dtype=np.float32)))


def expected_score(frames: int, arrivals: list[int], scores: list[float]) -> float:
    """Mean PU21-PSNR over a segment of ``frames`` when refinement ``j`` completes at frame
    ``arrivals[j]`` (0: in the KEY; ascending): ``scores[0]`` (the KEY's model) before the
    first, ``scores[j + 1]`` from ``arrivals[j]`` on."""
    bounds = [0, *arrivals, frames]
    return sum((bounds[j + 1] - bounds[j]) * s for j, s in enumerate(scores)) / frames


def refinement_options(model: GridModel, frames: list[tuple[np.ndarray, np.ndarray]], xy: np.ndarray,
                       options: GridFitOptions, steps=REFINE_STEPS, device=None) -> list[tuple[float, bytes, GridModel]]:
    """Fit a refinement of ``model`` to the fit frames (``xy`` their pooled grid coordinates)
    for ``options.steps`` and for half as many (:data:`REFINE_FIT_FRACTIONS`), and code each at
    every step of ``steps`` (:data:`REFINE_STEPS`): ``(step, bytes, refined model)``."""
    rgb = np.concatenate([s.reshape(-1, 3) for s, _ in frames])
    nits = np.concatenate([n.reshape(-1, 3) for _, n in frames])
    out = []
    for fraction in REFINE_FIT_FRACTIONS:
        fit = replace(options, steps=max(1, int(options.steps * fraction)))
        residual = fit_grid_refinement(model, rgb, nits, xy, fit, device=device)
        for step in steps:
            data = pack_grid_refinement(*quantise_refinement(residual, step))
            out.append((step, data, apply_grid_refinement(model, data)))
    return out


SCENE_SCALES = (2, 3, 4, 6, 8, 12, 16)
"""Scene residual cell sizes tried (pixels of the scene a cell; :mod:`itmfilter.model.scene`).
Measured on two 2 s shots of the 1080p benchmark clip (``local`` grade, S at 6 grid bits, 38.54
and 31.95 dB alone, scored on frames the image was not built from): 1/4 at AVIF quality 20
2.3 / 2.1 KB for +2.62 / +0.89 dB, 1/8 at quality 40 2.4 / 1.9 KB for +1.95 / +0.82, 1/16 at
quality 40 1.1 / 1.0 KB for +1.09 / +0.55: at equal bytes the finer image at a lower quality wins.
Finer still on the first shot (model 2923 B, 38.59 dB; residual bytes): 1/3 at quality 10 / 20 / 30
1.5 / 2.4 / 3.8 KB for 41.43 / 41.91 / 42.35 dB against 1/4's 0.9 / 1.5 / 2.4 / 4.2 KB for
40.60 / 41.18 / 41.67 / 42.09; 1/2 at quality 20 / 30 4.0 / 6.4 KB for 42.37 / 42.80
(``benchmarks/scene_residual.py --scales 2,3``). The encoder scores them on frames between its
fit frames (:func:`heldout_frames_of`), so a fine image that only fits its own frames loses."""
SCENE_QUALITIES = tuple(range(10, 95, 5))
"""AVIF qualities tried for a scene residual (0-100; 1/4 at quality 60 and 80 cost 5 and 10 times
quality 20's bytes for +1.2 and +1.4 dB more on the first shot above). Steps of 5 (the larger
ones are skipped once one arrives too late): with four (10, 20, 35, 55) the 1080p clip's 32
kbit/s encode spent 24.3 kbit/s, with steps of 10 24.1, the next quality up not arriving in time."""


@dataclass(frozen=True)
class GridSearch:
    """How widely a capped grid encode searches each shot's stream
    (``VideoEncodeOptions.search``): the steps each refinement is coded at
    (:func:`refinement_options`) and the scene residual's scales and qualities
    (:func:`scene_options`, :func:`scene_piece_options`). Every candidate is placed on the
    budget and scored, so the search's width is most of a capped encode's time beside the fits."""

    refine_steps: tuple[float, ...]
    scene_scales: tuple[int, ...]
    scene_qualities: tuple[int, ...]


SEARCHES = {
    "thorough": GridSearch(REFINE_STEPS, SCENE_SCALES, SCENE_QUALITIES),
    # half the refinement steps, four of the seven scales and every third quality: about a third
    # of the candidates; the shipped format and the rate promise are the same
    "fast": GridSearch((0.35, 0.7, 1.5, 3.0), (2, 4, 8, 16), (15, 30, 45, 60, 75)),
}
"""The searches by name (``--search``); ``thorough``, the default, is the one every rate
measurement in docs/ was made with."""


SCENE_SOLVE_STEPS = 6
"""Conjugate-gradient steps from the splatted image towards the least-squares one under the
decoder's bilinear read (:func:`itmfilter.model.scene.build_scene_residual`). Measured on the
1080p clip's first shot (held-out frames): at equal bytes +0.3 to +0.4 dB over the splatted
mean (1/4 at quality 30: 2384 B for 41.67 dB against 3062 B for 41.51), ~4 s a scale here."""
SCENE_SUBSAMPLE = 2
"""The scene image of a scale coarser than :data:`SCENE_EVERY_PIXEL` is built from every
this-many-th pixel of each fit frame along each axis: a cell still gets 4 or more of a frame's
pixels, and its solve reads a quarter of them."""
SCENE_EVERY_PIXEL = 3
"""Scene images of this scale and finer (1/2, 1/3) are built from every pixel of the fit frames:
at every 2nd pixel a cell of 1/2 gets one sample of a frame, an aliased view of what the decoder
reads through the cell's bilinear weights. Measured on the 1080p clip's zoom shot (M) and a pan
(S at 6 grid bits), ``benchmarks/scene_residual.py --shot N --scales 2,3 --subsample 2,1``
(``docs/scene-residual.md``): at equal bytes (interpolated in log bytes) -0.09 to +0.42 dB
PU21-PSNR, above on 12 of 14 points, the most at 1/2 and the higher qualities (the pan at 1/2,
quality 40: 9,580 B for 42.48 dB against 10,552 B for 42.18)."""


def _scene_diffs(model: GridModel, frames, offsets, picks, centre, half, frame_scale, sub: int = 1):
    """The fit frames' PQ differences master - ``model`` (without its scene residual) at every
    ``sub``-th pixel each way, and those pixels' grid coordinates: ``(diffs, xys)``, lists of
    ``(h, w, 3)`` and ``(h, w, 2)`` float32 pictures, a fit frame each."""
    from itmfilter.colour.transfer import eotf_inverse_st2084

    base = replace(model, scene=None)
    h, w = frames[0][0].shape[:2]
    diffs, xys = [], []
    for (sdr, nits), k in zip(frames, picks):
        xy = np.ascontiguousarray(frame_xy(h, w, offsets[k], centre, half, frame_scale[k])[::sub, ::sub])
        pq = predict_pq(base, np.ascontiguousarray(sdr[::sub, ::sub]), xy=xy)
        target = eotf_inverse_st2084(np.clip(nits[::sub, ::sub], 0, 10000)).astype(np.float32)
        diffs.append(target - pq)
        xys.append(xy)
    return diffs, xys


def _scene_step(scale: int) -> int:
    """Every how-many-th pixel each way a scene image of ``scale`` is built from."""
    return 1 if scale <= SCENE_EVERY_PIXEL else SCENE_SUBSAMPLE


def _scene_inputs(model: GridModel, frames, offsets, picks, centre, half, frame_scale, scales):
    """Per :func:`_scene_step` the ``scales`` need, the flat ``(diffs, xys)`` their scene
    images are built from: every pixel up to :data:`SCENE_EVERY_PIXEL`, every
    :data:`SCENE_SUBSAMPLE`-th coarser (the model runs once, on the finest pixels any needs)."""
    steps = {_scene_step(s) for s in scales}
    base = min(steps, default=SCENE_SUBSAMPLE)
    diffs, xys = _scene_diffs(model, frames, offsets, picks, centre, half, frame_scale, base)
    return {step: ([d[::step // base, ::step // base].reshape(-1, 3) for d in diffs],
                   [xy[::step // base, ::step // base].reshape(-1, 2) for xy in xys]) for step in steps}


def scene_options(model: GridModel, frames: list[tuple[np.ndarray, np.ndarray]], offsets: np.ndarray,
                  picks: list[int], centre, half, scales=SCENE_SCALES, qualities=SCENE_QUALITIES, zoom: float = 0.0):
    """Scene residuals over ``model`` (:mod:`itmfilter.model.scene`) from the fit frames
    (``frames[k] = (sdr, nits)`` at ``picks[k]``, placed by ``offsets``): per scale, the image
    of the frames' PQ differences master - model, coded at each quality from the lowest. Yields
    ``(record bytes, model with the decoded residual)``; ``send(True)`` after one says it came too
    late (it does not arrive within the shot), which skips that scale's larger qualities."""
    from itmfilter.model.scene import ScenePlan, build_scene_residual, scene_cells, unpack_scene_residual

    h, w = frames[0][0].shape[:2]
    inputs = _scene_inputs(model, frames, offsets, picks, centre, half, frame_scales(len(offsets), zoom), scales)
    for scale in scales:
        diffs, xys = inputs[_scene_step(scale)]
        plan = ScenePlan(build_scene_residual(diffs, xys, scene_cells(w, h, half, scale), SCENE_SOLVE_STEPS))
        for quality in sorted(qualities):
            data = plan.code(quality)
            too_late = yield data, replace(model, scene=unpack_scene_residual(data))
            if too_late:  # the caller's signal: this one arrives too late, so would every larger one
                yield None
                break


SCENE_PIECE_MARGIN = 2
"""Frames each side of a piece's range its window also covers (a piece of a long shot's scene
residual, refinement kind 4): the next piece's arrival moves by a frame or two with its size."""


def frames_window(offsets: np.ndarray, centre, half, scales: np.ndarray, first: int, end: int):
    """The window (``(cx, cy, hx, hy)``, grid units, binary32 values) that holds every pixel of
    frames ``first`` to ``end - 1`` of a shot placed by ``offsets``, ``centre``, ``half`` and
    the frames' ``scales``: frame ``k`` spans ``(offset_k -+ s_k - centre) / half`` per axis."""
    ks = np.arange(max(0, first), min(len(offsets), end))
    off = np.asarray(offsets, np.float64)[ks]
    s = np.asarray(scales, np.float64)[ks, None]
    lo = ((off - s - np.asarray(centre, np.float64)) / np.asarray(half, np.float64)).min(0)
    hi = ((off + s - np.asarray(centre, np.float64)) / np.asarray(half, np.float64)).max(0)
    lo, hi = np.maximum(lo, -1.0), np.minimum(hi, 1.0)  # the grid's square holds every frame
    c, h = (lo + hi) / 2, np.maximum((hi - lo) / 2, 2.0 ** -8)
    return tuple(float(np.float32(v)) for v in (c[0], c[1], h[0], h[1]))


def scene_piece_options(model: GridModel, frames: list[tuple[np.ndarray, np.ndarray]], offsets: np.ndarray,
                        picks: list[int], centre, half, split: int, scales=SCENE_SCALES,
                        qualities=SCENE_QUALITIES, zoom: float = 0.0):
    """A shot's scene residual in two pieces (refinement kind 4) over ``model``: the first over
    the window of frames ``0`` to ``split`` (:func:`frames_window`, with
    :data:`SCENE_PIECE_MARGIN`), built from the fit frames up to the first at or after
    ``split``; the second over the window of the frames from ``split`` on, from the fit frames
    from the last at or before ``split``. Each window holds the same cells per scene pixel as
    a whole-shot residual at that scale, on a smaller extent, so each piece costs about the
    bytes of its share of the pan. Per scale and quality (both pieces alike) yields
    ``(first record, second record, model with the first, model with the second)``;
    ``send(True)`` says the pair arrives too late (the scale's larger qualities are skipped)."""
    from itmfilter.model.scene import ScenePlan, SceneResidual, build_scene_residual, scene_cells, unpack_scene_residual

    h, w = frames[0][0].shape[:2]
    n = len(offsets)
    frame_scale = frame_scales(n, zoom)
    inputs = _scene_inputs(model, frames, offsets, picks, centre, half, frame_scale, scales)
    after = min((k for k in picks if k >= split), default=picks[-1])
    before = max((k for k in picks if k <= split), default=picks[0])
    windows = [(frames_window(offsets, centre, half, frame_scale, first, end), use)
               for first, end, use in ((0, split + SCENE_PIECE_MARGIN, [k <= after for k in picks]),
                                       (split - SCENE_PIECE_MARGIN, n, [k >= before for k in picks]))]

    def piece(window, use, diffs, xys):
        reader = SceneResidual(np.zeros((2, 2, 3), np.float32), window)
        local_d, local_xy = [], []
        for d, xy, keep in zip(diffs, xys, use):
            if not keep:
                continue
            loc = np.stack([reader.local(xy[:, 0], 0), reader.local(xy[:, 1], 1)], 1)
            inside = (np.abs(loc) <= 1).all(1)  # the window's own pixels (outside it, its edge is read)
            local_d.append(d[inside])
            local_xy.append(loc[inside])
        return local_d, local_xy

    pieces = {step: [piece(window, use, *inp) for window, use in windows] for step, inp in inputs.items()}
    for scale in scales:
        plans = []
        for (window, _), (d, xy) in zip(windows, pieces[_scene_step(scale)]):
            cells = scene_cells(w, h, (window[2] * half[0], window[3] * half[1]), scale)
            plans.append((window, ScenePlan(build_scene_residual(d, xy, cells, SCENE_SOLVE_STEPS))))
        for quality in sorted(qualities):
            first, second = (plan.code(quality, window=window) for window, plan in plans)
            too_late = yield (first, second, replace(model, scene=unpack_scene_residual(first)),
                              replace(model, scene=unpack_scene_residual(second)))
            if too_late:
                yield None
                break


__all__ = ["DEFAULT_GRID", "ESTIMATE_SLACK", "GRID_LADDER", "MAX_REFINED_VALUES", "MAX_REFINEMENTS", "PLACEMENT_BYTES",
           "REFINE_FIT_FRACTIONS",
           "GRID_STARTS", "GRID_TRIAL_SHARE", "GridSearch", "SEARCHES", "SCENE_CLIPPED_WEIGHT", "REFINE_STEPS", "SCENE_QUALITIES", "SCENE_PIECE_MARGIN", "SCENE_SCALES", "SCENE_EVERY_PIXEL", "SCENE_SOLVE_STEPS", "SCENE_SUBSAMPLE", "SCORE_PIXELS",
           "CHAIN_STEP", "REFIT_TOLERANCE", "estimate_zoom", "estimated_bytes", "expected_score", "fit_frames_of", "fit_segment_grid", "frame_scales",
           "frame_xy", "frames_window", "grid_geometry", "heldout_frames_of",
           "ladder_from", "model_score", "refinement_options", "scene_options", "scene_piece_options", "score_pixels"]
