"""The best still payload within a byte budget (``itmfilter encode ... --max-bytes N``).

Candidates, each coded, decoded exactly as a reader will and scored against the master
(PU21-PSNR, :func:`itmfilter.quality.metrics.psnr_pu21`); the best that fits wins:

* ``polynomial``: the grid format's smallest model (MMR3 + a zero 2x2 plane, ~0.3 KB);
* ``gainmap``: no model, a residual gain layer everywhere over the SDR placed per BT.2408:
  a gain map (ISO 21496-1 style, 3 channels, AVIF) inside the same payload;
* ``gainmap-pq``: the same layer as a difference of PQ code values instead of a log2 gain
  (:data:`itmfilter.model.residual.DOMAIN_PQ`): the error where PU21 counts it;
* ``polynomial+res-t0``: the polynomial with a gain layer everywhere over it (below 3 KB,
  where no grid model is tried);
* ``grid-<size>`` alone, and with a residual layer everywhere (``t0``) or only where the SDR's
  largest channel code is >= 242 (``t242``): up to three model sizes per budget (:func:`grid_sizes_for`);
* ``mlp``: today's adapted MLP weight set (version 1), only when its size fits.

The residual image's AVIF quality is the highest that fits the room left (an interpolating
search over 10-100 on coded sizes, a handful of encodes); each residual is tried with its
8-bit range spanning the gains' minimum to maximum and their 0.02-99.98 % percentiles
(:class:`itmfilter.model.residual.ResidualPlan`'s ``clip_percent``), the better one kept. A last
stage (``polish``) takes the best candidate's residual picture (same model, threshold and scale)
through more ranges (:data:`POLISH_CLIPS`), over a model also in the other domain, and then with
each tail clipped on its own around the best range: which range pays differs from picture to
picture by up to 0.9 dB, and each range moves the coded size against the AVIF quality's coarse
steps. A budget below the polynomial's size is an error. The budget counts the payload bytes (the ``itMf`` chunk's data, the
sidecar's decoded ``weights``), not the PNG chunk's own 12 bytes nor the ``itMj`` info chunk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from itmfilter.errors import ItmError
from itmfilter.model.grid import (
    GRID_SIZES,
    GridFitOptions,
    fit_grid_model,
    predict_nits,
)
from itmfilter.model.residual import (
    AVIF_QUALITY_RANGE,
    BASE_MODEL,
    BASE_SDR_PLACED,
    ResidualPlan,
    apply_residual,
)
from itmfilter.model.weightset import encode_grid_still, grid_still_overhead
from itmfilter.quality.metrics import psnr_pu21

HIGHLIGHT_CODE = 242  # round(0.95 * 255): the residual's second setting, clipped highlights only
RESIDUAL_THRESHOLDS = (0, HIGHLIGHT_CODE)  # where a grid model's residual layer applies (SDR codes)
RESIDUAL_CLIPS = (0.0, 0.02)  # the gain image's range: min/max, or the 0.02-99.98 % percentiles
POLISH_CLIPS = (0.001, 0.002, 0.005, 0.01, 0.05)
"""Ranges tried only for the best residual found (:func:`choose_payload`'s last stage)."""
POLISH_OTHER_CLIPS = (0.0, 0.005, 0.02)
"""Ranges tried there over the model in the other domain."""


def one_sided_clips(clip: float) -> tuple[tuple[float, float], ...]:
    """``(low, high)`` tail pairs around a range clipped at ``clip`` % each side: one tail a
    quarter or four times the other (the min/max range: either tail at 0.005 %), tried last."""
    if not clip:
        return ((0.0, 0.005), (0.005, 0.0))
    return tuple(sorted({(clip / 4, clip), (clip, clip / 4), (clip * 4, clip), (clip, clip * 4)}))


@dataclass
class Candidate:
    """One payload the encoder tried: its name, bytes, score (dB) and the note on its parts."""

    name: str
    payload: bytes
    pu21: float
    note: str = ""
    residual: tuple | None = None  # how its residual layer was made, for the last stage (with_residual's arguments)


@dataclass
class RateChoice:
    """The chosen payload and everything tried (for reports and benchmarks)."""

    best: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


STILL_FIT = GridFitOptions(steps=1800, finetune_steps=1200, clipped_weight=0.1)
"""The grid fit of a still under ``--max-bytes``: 1800 Adam steps, then 1200 on the quantised
grid. Three times the 600 + 400 both grid fits ran before, which left them short of convergence
(the video KEY's fit runs twice as many, ``VideoEncodeOptions.grid_steps``, where a scene
image follows the model and the longer fit still paid): on the val
split (``local``, 1024x512) the model alone scored +1.7 to +3.9 dB (``bridge``) and +0.6 to +1.1 dB
(``st_fagans_interior``) over 600 steps for XS / S / M, the payload with its residual +0.21 /
+0.60 / +0.80 and +0.45 / +0.06 / -0.19 dB at 8 / 16 / 32 KB, for about 7 s more CPU a budget
(3600 steps: within 0.2 dB of 1800 at twice the fit time).

Clipped SDR pixels weigh 0.1 in the fit (``GridFitOptions.clipped_weight``). Where the SDR clips
it holds nothing of the master, and 70-98 % of an M model's squared PU21 error lies there
(``benchmarks/clipped_error.py``); the residual layer carries that detail whatever the model
does, so the model is fitted for the pixels where it is the whole answer. The payload at 8 / 16 /
32 KB, ``local``, 1024x512, against weight 1: val split +0.42 / +0.46 / +0.16 dB (``bridge``),
+0.47 / +0.86 / +0.58 (``st_fagans_interior``); all 12 train pictures +0.20 dB mean over 36
rows (best +1.40, worst -0.47: ``forest_slope`` at 8 KB; 9 rows unchanged, where a plain gain
map wins either way). 0.3 gave +0.19 and 0.03 +0.11 on the four train pictures where 0.1 gave
+0.27. Where the model is near exact off the clipped pixels (a global curve: ``bt2446a`` on val
-0.14 dB mean at 4 / 16 / 64 KB) weight 1 wins, so :func:`choose_payload` also fits the
budget's own grid size at weight 1 (one fit more) and keeps the better payload.

The models are packed in the full layout, not the video KEYs' compact one (binary16 polynomial
and MLP scales, ~140-500 bytes less a model; a still reader reads either): fitted compact, the
test split's payloads came out -0.20 dB mean over 9 of the 12 rows of ``docs/stills-rate.md``
(+0.23 to -1.12; the polynomial's rounding is 2e-4 PQ mean, so most of that is the fit landing
elsewhere, whose spread between seeds is as large: an M model 33.90 / 33.87 dB full, 33.65 /
33.84 compact)."""


def grid_size_for(max_bytes: int) -> str | None:
    """The grid size a budget is centred on (with the roughness penalty of
    :class:`itmfilter.model.grid.GridFitOptions` an M model is ~5 KB, an L ~7-12 KB on 1024x512
    pictures); None below 3 KB."""
    if max_bytes < 3072:
        return None
    if max_bytes < 6144:
        return "XS"
    if max_bytes < 12288:
        return "S"
    if max_bytes < 24576:
        return "M"
    return "L"


def grid_sizes_for(max_bytes: int) -> tuple[str, ...]:
    """The grid sizes tried at a budget: :func:`grid_size_for`'s and its neighbours, one smaller
    and one larger (below 6 KB only the smaller). A model that takes more of the budget leaves
    the residual layer less room; which split pays differs from picture to picture (on the val
    split at 8 KB S won on one picture and M on the other, at 32 KB L and M likewise)."""
    size = grid_size_for(max_bytes)
    if size is None:
        return ()
    order = ("XS", "S", "M", "L")
    i = order.index(size)
    if i == 0:
        return (size,)
    return (size, order[i - 1]) + order[i + 1:i + 2]


def residual_scales_for(room: int, pixels: int) -> tuple[int, ...]:
    """Scales of the residual image to try: full resolution once the room allows ~1 byte per
    32 pixels, 1/2 below ~1 byte per 512 (a full-resolution AVIF at very low quality loses to
    a 1/2 one), both in between, where either may win (near 1 byte per 128 pixels the
    better one differs from picture to picture)."""
    if room * 32 >= pixels:
        return (1,)
    if room * 512 < pixels:
        return (2,)
    return (1, 2)


def highest_fitting(code: Callable[[int], bytes], room: int, lo: int = AVIF_QUALITY_RANGE[0],
                    hi: int = AVIF_QUALITY_RANGE[1]) -> tuple[int, bytes] | None:
    """Highest quality in [lo, hi] whose ``code(q)`` is at most ``room`` bytes, or None.

    Coded sizes grow with quality (near enough: the answer is always checked); the next
    probe interpolates log size between the bracket's ends, so a handful of encodes do."""
    cache: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in cache:
            cache[q] = code(q)
        return len(cache[q])

    first = min(max(60, lo), hi)
    if size(first) <= room:
        a = first
        if size(hi) <= room:
            return hi, cache[hi]
        b = hi
    else:
        b = first
        if size(lo) > room:
            return None
        a = lo
    while b - a > 1:  # invariant: a fits, b does not
        la, lb, lr = math.log(size(a)), math.log(size(b)), math.log(max(room, 1))
        t = (lr - la) / (lb - la) if lb > la else 0.5
        margin = max(1, (b - a) // 4)  # at least a quarter of the bracket goes each probe
        q = min(max(int(round(a + t * (b - a))), a + margin), b - margin)
        if size(q) <= room:
            a = q
        else:
            b = q
    return a, cache[a]


def _score(hdr: np.ndarray, nits: np.ndarray) -> float:
    return float(psnr_pu21(hdr, nits))


def choose_payload(sdr: np.ndarray, hdr: np.ndarray, max_bytes: int, *, mlp: Callable[[], bytes] | None = None,
                   mlp_bytes: int | None = None, fit_options: GridFitOptions = STILL_FIT,
                   progress: Callable[[str], None] | None = None, path=None,
                   cache: dict | None = None, polish: bool = True) -> RateChoice:
    """The best still payload of at most ``max_bytes`` (see the module docstring).

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' [0, 1] as stored; ``hdr``: ``(H, W, 3)`` BT.2020 cd/m2.
    ``mlp``: makes today's MLP payload (called only when ``mlp_bytes`` fits). ``progress(stage)``
    is called as each stage starts. ``cache``: a dict kept across calls on the same picture
    pair (fits, decodes and the MLP are reused across budgets; benchmarks). ``polish``: the last
    stage (more ranges and the other domain for the best residual). Raises
    :class:`ItmError` when not even the polynomial fits.
    """
    cache = {} if cache is None else cache
    t_start, cpu_start = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    say = progress or (lambda stage: None)
    overhead = grid_still_overhead()
    h, w = sdr.shape[:2]

    def clock(name: str, t0: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

    say("polynomial")
    t0 = time.perf_counter()
    if "P" not in cache:
        cache["P"] = fit_grid_model(sdr, hdr, GRID_SIZES["P"], GridFitOptions(steps=0, finetune_steps=0, seed=fit_options.seed))
    poly = cache["P"]
    smallest = len(poly.data) + overhead
    if max_bytes < smallest:
        raise ItmError(path, f"--max-bytes {max_bytes} is below the smallest payload, the polynomial "
                       f"({smallest} bytes for this picture)", f"give --max-bytes {smallest} or more")
    if "P nits" not in cache:
        cache["P nits"] = predict_nits(poly.model, sdr)
    poly_nits = cache["P nits"]
    candidates = [Candidate("polynomial", encode_grid_still(poly.data), _score(hdr, poly_nits))]
    clock("fit+decode polynomial", t0)

    def with_residual(name: str, model_data: bytes, model_nits: np.ndarray | None, threshold: int,
                      base: int = BASE_MODEL, domain: str = "log2", scales: tuple[int, ...] | None = None,
                      clips: tuple[float | tuple[float, float], ...] = RESIDUAL_CLIPS) -> None:
        room = max_bytes - overhead - len(model_data)
        if room <= 200:
            return
        scales = residual_scales_for(room, h * w) if scales is None else scales
        for scale, clip in ((s, c) for s in scales for c in clips):
            t0 = time.perf_counter()
            plan = ResidualPlan(sdr, model_nits, hdr, threshold, scale, base=base, clip_percent=clip, domain=domain)
            if plan.empty:
                return
            hit = highest_fitting(plan.code, room)
            clock("residual search", t0)
            if hit is None:
                continue
            t0 = time.perf_counter()
            nits = apply_residual(sdr, model_nits, hit[1])
            label = name if base == BASE_SDR_PLACED else f"{name}+res-t{threshold}"
            label += "" if base == BASE_SDR_PLACED or domain == "log2" else f"-{domain}"
            label += f"-c{clip[0]:g}_{clip[1]:g}" if isinstance(clip, tuple) else f"-c{clip:g}" if clip else ""
            candidates.append(Candidate(label, encode_grid_still(model_data, hit[1]),
                                        _score(hdr, nits), f"AVIF q{hit[0]} 1/{scale}, {len(hit[1])} B",
                                        (name, model_data, model_nits, threshold, base, domain, scale, clip)))
            clock("residual score", t0)

    say("gain map")
    with_residual("gainmap", b"", None, 0, BASE_SDR_PLACED)
    with_residual("gainmap-pq", b"", None, 0, BASE_SDR_PLACED, domain="pq")
    size = grid_size_for(max_bytes)
    if size is None:  # with a grid model, its own gain layer takes this one's place
        say("polynomial + gain")
        with_residual("polynomial", poly.data, poly_nits, 0)
    sizes = [(size, size, fit_options) for size in grid_sizes_for(max_bytes)]
    if sizes and fit_options.clipped_weight != 1.0:  # the budget's own size also fitted at weight 1
        sizes.insert(1, (sizes[0][0], sizes[0][0] + "-w1", replace(fit_options, clipped_weight=1.0)))
    for size, name, options in sizes:
        say(f"grid {name}")
        t0 = time.perf_counter()
        if name not in cache:
            cache[name] = fit_grid_model(sdr, hdr, GRID_SIZES[size], options)
        fit = cache[name]
        clock("fit grid", t0)
        if len(fit.data) + overhead <= max_bytes:
            t0 = time.perf_counter()
            if name + " nits" not in cache:
                cache[name + " nits"] = predict_nits(fit.model, sdr)
            nits = cache[name + " nits"]
            clock("decode grid", t0)
            candidates.append(Candidate(f"grid-{name}", encode_grid_still(fit.data), _score(hdr, nits)))
            say(f"grid {name} + residual")
            for threshold in RESIDUAL_THRESHOLDS:
                with_residual(f"grid-{name}", fit.data, nits, threshold)

    if mlp is not None and mlp_bytes is not None and mlp_bytes <= max_bytes:
        say("mlp")
        t0 = time.perf_counter()
        if "mlp" not in cache:
            cache["mlp"] = mlp()
        blob, nits = cache["mlp"]
        if len(blob) <= max_bytes:
            candidates.append(Candidate("mlp", blob, _score(hdr, nits)))
        clock("mlp", t0)

    def best_fitting() -> Candidate:
        fitting = [c for c in candidates if len(c.payload) <= max_bytes]
        return max(fitting, key=lambda c: (c.pu21, -len(c.payload)))

    best = best_fitting()
    if polish and best.residual is not None:
        # The last stage tries the best residual's picture with more ranges, and over a model in
        # the other domain: each choice moves the coded size against the AVIF quality's coarse
        # steps and the step of the 8-bit gain, and the better one differs from picture to picture.
        say("residual polish")
        name, model_data, model_nits, threshold, base, domain, scale, _ = best.residual
        with_residual(name, model_data, model_nits, threshold, base, domain, (scale,), POLISH_CLIPS)
        if base == BASE_MODEL:
            other = "pq" if domain == "log2" else "log2"
            with_residual(name, model_data, model_nits, threshold, base, other, (scale,), POLISH_OTHER_CLIPS)
        best = best_fitting()
        # then each tail on its own around the best range
        name, model_data, model_nits, threshold, base, domain, scale, clip = best.residual
        with_residual(name, model_data, model_nits, threshold, base, domain, (scale,), one_sided_clips(clip))
        best = best_fitting()
    return RateChoice(best, candidates, time.perf_counter() - t_start, time.process_time() - cpu_start, timings)
