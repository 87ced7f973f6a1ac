"""Per-picture adaptation with spatial-aware online hard example mining.

Algorithm 2 of the paper (sections 3.3 and 4.1): start from the (meta-)trained
initialisation, draw ~2% of the pixels, take Adam steps on the MSE in PQ, and at the
resampling steps recompute an L1 error map of the current network over the picture and
redraw the pixel set: a share in proportion to the error, the rest uniformly.

Changes from the authors' code, each measured in ``benchmarks/stills.py`` (val split):
the error map is computed without autograd on every ``stride``-th pixel in each direction
(~32k cells whatever the picture size; a hard pixel is then drawn uniformly inside its
``stride x stride`` cell, so every pixel stays reachable); each Adam step uses a random
``batch_size`` subset of the drawn set (512 of them, 1600 steps, 15 redraws, the last
quarter's learning rate decayed: the fit is step-limited); the network predicts a
correction to a per-picture polynomial; and the default network's step has a hand-written
backward (:class:`_ManualStep`, the same bits as autograd, faster at these batch sizes).

Inputs: ``sdr`` ``(H, W, 3)`` BT.709 R'G'B' code values [0, 1]; ``target_pq`` ``(H, W, 3)``
PQ (ST 2084) BT.2020 R'G'B' code values [0, 1]. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from itmfilter.model.inference import predict_pq
from itmfilter.model.net import ITMNet, fit_mmr_prior, pixel_grid
from itmfilter.model.optim import Adam

# The paper's resampling schedule (steps 50, 101 and 152 of 200) as fractions of the steps.
RESAMPLE_FRACTIONS = (0.25, 0.505, 0.76)


@dataclass(frozen=True)
class AdaptOptions:
    """Adaptation settings; defaults chosen by ``benchmarks/stills.py --variants`` on the val split.

    Default recipe: 1600 Adam steps of 512 of the drawn pixels, lr 1e-3, the
    last quarter decayed (cosine) to 1e-4, and OHEM redraws every 100 steps (15) from an
    error map of ~32k cells (stride 8 at 1080p, 2 at 512x256). Val split, all six SDR
    kinds, 4 pictures each, mean PU21-PSNR over the earlier recipe (200 steps of 8192,
    constant lr, 3 redraws, stride 4): 45.38 -> 47.00 dB (spatially varying grade 35.78 ->
    38.01, bt2446a 49.94 -> 50.79, every kind up). Steps: 1600x512 46.23 (1000x1024 46.04,
    2000x512 46.17, 2400x384 46.27): the fit is step-limited, and the decay takes the small
    batches' noise out of the final weights. Redraws: 15 of a 32k-cell map 47.00, of an
    8k-cell map 46.81, 31 of 8k 46.93. At least 16384 drawn pixels (was 8192; changes
    nothing at 1080p, where 2 % is 41k): 47.45 (a 64k-cell map, lr 2e-3: no further gain
    in combination). 1080p time (``benchmarks/adapt_ab.py``, interleaved, min): 1.42 s
    earlier recipe, 1.59 s this one; possible because of the hand-written step
    (:class:`_ManualStep`) and the flat Adam. :data:`RECIPE_200x8192` is the earlier recipe (what the video encoder
    was measured with).
    """

    steps: int = 1600
    lr: float = 1e-3
    lr_final: float | None = 1e-4  # cosine decay from ``lr`` to this over the last steps; None: constant lr
    decay_from: float = 0.75  # ... starting at this fraction of the steps
    sample_fraction: float = 0.02
    min_samples: int = 16384  # ... but never fewer drawn pixels than this (small pictures; see below)
    batch_size: int = 512
    sampling: str = "ohem"  # "ohem" or "uniform"
    resample_at: tuple[int, ...] | None = None  # steps that redraw; None: ``redraws`` evenly spaced
    redraws: int = 15  # ... that many (3: the paper's 50/101/152 of 200)
    hard_share: float = 0.75
    error_stride: int | None = None  # error map on every n-th pixel each way; None: from ``error_cells``
    error_cells: int = 1 << 15  # error_stride=None: about this many cells in the error map
    mmr_fit_pixels: int = 1 << 18
    fit_prior: bool = True  # refit the per-picture polynomial (mmr3 configs) before the steps
    trainable: tuple[str, ...] | None = None  # parameter-name prefixes to train; None: all
    precision: str = "fp32"  # forward/backward of the steps: fp32, or bf16 autocast
    engine: str = "auto"  # "auto": hand-written backward where it applies (same bits), "autograd": always autograd
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in ("ohem", "uniform"):
            raise ValueError(f"unknown sampling {self.sampling!r}; expected ohem or uniform")
        if not 0 < self.sample_fraction <= 1:
            raise ValueError("sample_fraction must be in (0, 1]")
        if not 0 <= self.decay_from <= 1:
            raise ValueError("decay_from must be in [0, 1]")
        if self.engine not in ("auto", "autograd"):
            raise ValueError(f"unknown engine {self.engine!r}; expected auto or autograd")

    def resample_steps(self) -> tuple[int, ...]:
        """The steps at which OHEM redraws the pixel set."""
        if self.resample_at is not None:
            return tuple(self.resample_at)
        if self.redraws == 3:
            return tuple(round(self.steps * f) for f in RESAMPLE_FRACTIONS)
        return tuple(round(self.steps * k / (self.redraws + 1)) for k in range(1, self.redraws + 1))

    def stride_for(self, n_pixels: int) -> int:
        """The error map's pixel stride for a picture of ``n_pixels``."""
        if self.error_stride is not None:
            return max(1, self.error_stride)
        return max(1, round(math.sqrt(n_pixels / self.error_cells)))

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step``: ``lr``, then (``lr_final`` set) a cosine to ``lr_final``
        from ``decay_from`` of the steps to the end."""
        if self.lr_final is None:
            return self.lr
        start = self.decay_from * self.steps
        t = max(0.0, step - start) / max(1.0, self.steps - start)
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * t))


# Sessions 1-3's recipe: 200 steps of 8192 pixels at a constant lr, redraws at 50/101/152
# from a stride-4 error map, at least 8192 drawn pixels.
RECIPE_200x8192 = AdaptOptions(steps=200, batch_size=8192, lr_final=None, redraws=3, error_stride=4, min_samples=8192)


@dataclass
class AdaptResult:
    net: ITMNet
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _draw(
    n_pixels: int,
    count: int,
    error: torch.Tensor | None,
    shape: tuple[int, int],
    stride: int,
    hard_share: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Indices into the flattened picture: hard (error-proportional) plus uniform ones."""
    if error is None or hard_share <= 0:
        return torch.randint(0, n_pixels, (count,), generator=gen)
    h, w = shape
    n_hard = int(count * hard_share)
    weights = error.flatten().double().clamp(min=0) + 1e-12
    cells = torch.multinomial(weights, n_hard, replacement=True, generator=gen)
    ew = error.shape[1]
    cy = (cells // ew) * stride
    cx = (cells % ew) * stride
    if stride > 1:
        cy = cy + torch.randint(0, stride, (n_hard,), generator=gen)
        cx = cx + torch.randint(0, stride, (n_hard,), generator=gen)
    hard = cy.clamp(max=h - 1) * w + cx.clamp(max=w - 1)
    uniform = torch.randint(0, n_pixels, (count - n_hard,), generator=gen)
    return torch.cat([hard, uniform])


class _ManualStep:
    """One training step of the Fourier-feature network with a hand-written backward.

    The network is tiny (~10k weights), so at 512-1024 pixels a step is mostly framework
    overhead, half of it autograd's engine. This computes the same forward (``addmm`` as
    ``nn.Linear`` does, in-place ReLU, the prior added, MSE) and the textbook backward
    (weight gradient ``g^T a``, bias gradient ``sum g``, ``threshold_backward`` through each
    ReLU), writing the gradients into the parameters' ``.grad`` tensors. The results are the
    same bits as autograd's (``tests/test_adapt.py`` adapts with both engines and compares
    every weight); a 1024-pixel step with Adam takes 1.59 ms instead of 2.16 ms on the 2
    cores (``benchmarks/adapt_ab.py``).
    The Fourier features are computed once per draw and packed with the drawn pixels.
    """

    def __init__(self, net: ITMNet) -> None:
        self.coord, self.rgb = net.coord[0], net.rgb[0]
        self.fusion = [m for m in net.fusion if isinstance(m, torch.nn.Linear)]
        self.n_coord = net.config.coord_features
        for p in net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @staticmethod
    def applies(net: ITMNet, options: AdaptOptions) -> bool:
        return (options.engine == "auto" and options.trainable is None and options.precision == "fp32"
                and net.config.coord_encoding == "fourier")

    @torch.no_grad()
    def __call__(self, four, rgb, prior, tgt) -> torch.Tensor:
        coord, colour, fusion = self.coord, self.rgb, self.fusion
        c = torch.addmm(coord.bias, four, coord.weight.t()).relu_()
        r = torch.addmm(colour.bias, rgb, colour.weight.t()).relu_()
        acts = [torch.cat([c, r], 1)]
        for layer in fusion[:-1]:
            acts.append(torch.addmm(layer.bias, acts[-1], layer.weight.t()).relu_())
        out = torch.addmm(fusion[-1].bias, acts[-1], fusion[-1].weight.t())
        if prior is not None:
            out.add_(prior)
        d = out.sub_(tgt)
        loss = d.pow(2).mean()
        g = d.mul_(2.0 / d.numel())  # d(mean squared error)/d(out)
        for layer, a in zip(reversed(fusion), reversed(acts)):
            torch.mm(g.t(), a, out=layer.weight.grad)
            torch.sum(g, 0, out=layer.bias.grad)
            g = torch.ops.aten.threshold_backward(g @ layer.weight, a, 0.0)
        gc, gr = g[:, : self.n_coord], g[:, self.n_coord:]
        torch.mm(gc.t(), four, out=coord.weight.grad)
        torch.sum(gc, 0, out=coord.bias.grad)
        torch.mm(gr.t(), rgb, out=colour.weight.grad)
        torch.sum(gr, 0, out=colour.bias.grad)
        return loss


def adapt(
    init: ITMNet,
    sdr: np.ndarray,
    target_pq: np.ndarray,
    options: AdaptOptions = AdaptOptions(),
    *,
    device: torch.device | str = "cpu",
    progress=None,
) -> AdaptResult:
    """Adapt a copy of ``init`` to one SDR/HDR pair; ``init`` is left unchanged.

    ``progress``: optional callable ``(step, loss)`` for progress bars.
    """
    device = torch.device(device)
    if sdr.shape != target_pq.shape or sdr.ndim != 3 or sdr.shape[-1] != 3:
        raise ValueError(f"sdr {sdr.shape} and target {target_pq.shape} must both be (H, W, 3)")
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    net = copy.deepcopy(init).to(device).train()
    h, w, _ = sdr.shape
    n_pixels = h * w
    rgb = torch.from_numpy(np.ascontiguousarray(sdr, dtype=np.float32)).to(device).reshape(-1, 3)
    tgt = torch.from_numpy(np.ascontiguousarray(target_pq, dtype=np.float32)).to(device)
    tgt_flat = tgt.reshape(-1, 3)
    xy = pixel_grid(h, w, device=device).reshape(-1, 2)
    with torch.no_grad():
        if net.config.prior == "mmr3" and options.fit_prior:
            # The per-picture polynomial: least squares over (a subsample of) all pixels.
            fit_idx = torch.randperm(n_pixels, generator=gen)[: options.mmr_fit_pixels].to(device)
            net.prior_mmr.copy_(fit_mmr_prior(rgb[fit_idx], tgt_flat[fit_idx]))
    # 2 % of a 1080p picture is 41k pixels, of a 512x256 one 2.6k: fewer than one batch, so
    # small pictures took 200 steps on a few thousand pixels. The drawn set is at least
    # ``min_samples`` (val split, 512x256, spatially varying grade: +0.5 to +1.2 dB for 8192
    # with the earlier recipe; 16384 with 15 redraws: +0.45 dB mean over all kinds; no change
    # at 1080p, where 2 % is 41k).
    count = min(n_pixels, max(1, int(round(n_pixels * options.sample_fraction)), options.min_samples))
    stride = options.stride_for(n_pixels)

    def error_map() -> torch.Tensor:
        pred = predict_pq(net, sdr, device=device, stride=stride)
        net.train()
        return (pred - tgt[::stride, ::stride]).abs().sum(-1).cpu()

    manual = _ManualStep.applies(net, options)  # the step's engine: decides the packed columns

    def gather(idx: torch.Tensor) -> torch.Tensor:
        """The drawn pixels' inputs, prior and targets, gathered once per draw into one
        ``(count, columns)`` tensor (SDR, xy, [prior,] target, [Fourier features for the
        hand-written step]): the steps then take one row gather of these ~2% instead of
        gathers from the whole picture (and the prior and the features, which depend on the
        inputs alone and are fixed during the steps, are computed for the drawn pixels only)."""
        with torch.no_grad():
            rgb_s, xy_s = rgb[idx], xy[idx]
            prior_s = net.prior(rgb_s)
            parts = [rgb_s, xy_s] + ([] if prior_s is None else [prior_s]) + [tgt_flat[idx]]
            if manual:
                parts.append(net.fourier_features(xy_s))
            return torch.cat(parts, dim=1)

    has_prior = net.config.prior != "none"

    def split(rows: torch.Tensor) -> tuple:
        prior_b = rows[:, 5:8] if has_prior else None
        t0 = 8 if has_prior else 5
        return rows[:, 0:3], rows[:, 3:5], prior_b, rows[:, t0:t0 + 3], rows[:, t0 + 3:]

    idx = _draw(n_pixels, count, None, (h, w), stride, 0.0, gen).to(device)
    sample = gather(idx)
    if options.trainable is None:
        params = list(net.parameters())
    else:
        params = [p for name, p in net.named_parameters() if name.startswith(tuple(options.trainable))]
        if not params:
            raise ValueError(f"no parameter of {net.config} starts with {options.trainable}")
    # torch.optim.Adam's CPU algorithm without its ~1 s first use, on one flat buffer
    opt = Adam(params, lr=options.lr, flat=True)
    step_fn = _ManualStep(net) if manual else None
    losses: list[float] = []
    resample = set(options.resample_steps())
    for step in range(options.steps):
        opt.lr = options.lr_at(step)
        if options.sampling == "ohem" and step in resample:
            idx = _draw(n_pixels, count, error_map(), (h, w), stride, options.hard_share, gen)
            sample = gather(idx.to(device))
        if options.batch_size and options.batch_size < count:
            batch = torch.randint(0, count, (options.batch_size,), generator=gen).to(device)
            rgb_b, xy_b, prior_b, tgt_b, four_b = split(sample.index_select(0, batch))
        else:
            rgb_b, xy_b, prior_b, tgt_b, four_b = split(sample)
        if step_fn is not None:
            loss = step_fn(four_b, rgb_b, prior_b, tgt_b)  # writes every .grad
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.precision == "bf16"):
                pred = net(rgb_b, xy_b, prior_b)
            loss = torch.nn.functional.mse_loss(pred.float(), tgt_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    opt.release()
    net.eval()
    return AdaptResult(net=net, losses=losses, seconds=time.perf_counter() - started)


class _BatchedManualStep:
    """:class:`_ManualStep` for ``B`` networks at once: every product is a batched matrix
    product (``baddbmm`` / ``bmm``) over the leading frame axis, so one step of ``B``
    networks costs one set of kernel launches, not ``B``. Parameters and gradients are
    views ``(B, *shape)`` into the ``(B, P)`` buffers of :func:`adapt_batch`; the loss is
    per network, ``(B,)``."""

    def __init__(self, net: ITMNet, data: torch.Tensor, grad: torch.Tensor) -> None:
        b = data.shape[0]
        views, offset = {}, 0
        for name, p in net.named_parameters():
            n = p.numel()
            views[name] = (data[:, offset:offset + n].view(b, *p.shape), grad[:, offset:offset + n].view(b, *p.shape))
            offset += n
        self.coord = (views["coord.0.weight"], views["coord.0.bias"])
        self.rgb = (views["rgb.0.weight"], views["rgb.0.bias"])
        self.fusion = [(views[f"fusion.{i}.weight"], views[f"fusion.{i}.bias"])
                       for i, m in enumerate(net.fusion) if isinstance(m, torch.nn.Linear)]
        self.n_coord = net.config.coord_features

    @torch.no_grad()
    def __call__(self, four, rgb, prior, tgt) -> torch.Tensor:
        (cw, cwg), (cb, cbg) = self.coord
        (rw, rwg), (rb, rbg) = self.rgb
        c = torch.baddbmm(cb.unsqueeze(1), four, cw.transpose(1, 2)).relu_()
        r = torch.baddbmm(rb.unsqueeze(1), rgb, rw.transpose(1, 2)).relu_()
        acts = [torch.cat([c, r], 2)]
        for (w, _), (b, _) in self.fusion[:-1]:
            acts.append(torch.baddbmm(b.unsqueeze(1), acts[-1], w.transpose(1, 2)).relu_())
        (w, _), (b, _) = self.fusion[-1]
        out = torch.baddbmm(b.unsqueeze(1), acts[-1], w.transpose(1, 2))
        if prior is not None:
            out.add_(prior)
        d = out.sub_(tgt)
        loss = d.pow(2).mean(dim=(1, 2))
        g = d.mul_(2.0 / (d.shape[1] * d.shape[2]))
        for ((w, wg), (_, bg)), a in zip(reversed(self.fusion), reversed(acts)):
            wg.copy_(torch.bmm(g.transpose(1, 2), a))
            bg.copy_(g.sum(1))
            g = torch.ops.aten.threshold_backward(torch.bmm(g, w), a, 0.0)
        gc, gr = g[:, :, : self.n_coord], g[:, :, self.n_coord:]
        cwg.copy_(torch.bmm(gc.transpose(1, 2), four))
        cbg.copy_(gc.sum(1))
        rwg.copy_(torch.bmm(gr.transpose(1, 2), rgb))
        rbg.copy_(gr.sum(1))
        return loss


def adapt_batch(
    init: ITMNet,
    sdrs,
    targets_pq,
    options: AdaptOptions = AdaptOptions(),
    *,
    device: torch.device | str = "cpu",
) -> list[AdaptResult]:
    """Adapt a copy of ``init`` to each of ``B`` SDR/HDR pairs at once, as a batch of networks.

    ``sdrs`` / ``targets_pq``: sequences of ``B`` arrays ``(H, W, 3)`` of one size (as in
    :func:`adapt`). Returns ``B`` results, each what :func:`adapt` gives for that pair with
    the same ``options`` up to float rounding: every network draws its pixels from its own
    generator seeded as :func:`adapt` seeds its one, in the same order; the steps are the
    same arithmetic, with batched matrix products (:class:`_BatchedManualStep`) whose sums
    may round differently in the last bits; Adam is elementwise on a ``(B, P)`` buffer
    (the same bits per element as :func:`adapt`'s flat Adam). The error maps are computed
    per picture, as :func:`adapt` computes them. ``seconds`` of each result is its share of
    the batch's wall time (the total over ``B``).

    Where the hand-written step does not apply (``trainable`` set, bf16, SIREN networks:
    see :class:`_ManualStep`), the pairs are adapted one after the other by :func:`adapt`.
    The win is on a GPU, where a step of a ~10k-weight network is launch-bound and ``B``
    networks cost about one; on a CPU the step is compute-bound (measured in
    ``benchmarks/adapt_batch.py``).
    """
    device = torch.device(device)
    sdrs, targets_pq = list(sdrs), list(targets_pq)
    if len(sdrs) != len(targets_pq):
        raise ValueError(f"{len(sdrs)} SDR pictures but {len(targets_pq)} targets")
    if not sdrs:
        return []
    shape = sdrs[0].shape
    for s, t in zip(sdrs, targets_pq):
        if s.shape != shape or t.shape != shape or len(shape) != 3 or shape[-1] != 3:
            raise ValueError(f"every SDR picture and target must be (H, W, 3) of one size; got {s.shape}, {t.shape}")
    if len(sdrs) == 1 or not _ManualStep.applies(init, options):
        return [adapt(init, s, t, options, device=device) for s, t in zip(sdrs, targets_pq)]
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    n_nets = len(sdrs)
    gens = [torch.Generator().manual_seed(options.seed) for _ in range(n_nets)]
    nets = [copy.deepcopy(init).to(device).train() for _ in range(n_nets)]
    h, w, _ = shape
    n_pixels = h * w
    rgbs = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)).to(device).reshape(-1, 3) for s in sdrs]
    tgts = [torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)).to(device) for t in targets_pq]
    xy = pixel_grid(h, w, device=device).reshape(-1, 2)
    with torch.no_grad():
        if init.config.prior == "mmr3" and options.fit_prior:
            for net, gen, rgb, tgt in zip(nets, gens, rgbs, tgts):
                fit_idx = torch.randperm(n_pixels, generator=gen)[: options.mmr_fit_pixels].to(device)
                net.prior_mmr.copy_(fit_mmr_prior(rgb[fit_idx], tgt.reshape(-1, 3)[fit_idx]))
    count = min(n_pixels, max(1, int(round(n_pixels * options.sample_fraction)), options.min_samples))
    stride = options.stride_for(n_pixels)
    has_prior = init.config.prior != "none"

    def gather(b: int, idx: torch.Tensor) -> torch.Tensor:
        """As :func:`adapt`'s gather: SDR, xy, prior, target and Fourier features of the drawn pixels."""
        with torch.no_grad():
            rgb_s, xy_s = rgbs[b][idx], xy[idx]
            prior_s = nets[b].prior(rgb_s)
            parts = [rgb_s, xy_s] + ([] if prior_s is None else [prior_s]) + [tgts[b].reshape(-1, 3)[idx]]
            parts.append(nets[b].fourier_features(xy_s))
            return torch.cat(parts, dim=1)

    def error_map(b: int) -> torch.Tensor:
        pred = predict_pq(nets[b], sdrs[b], device=device, stride=stride)
        nets[b].train()
        return (pred - tgts[b][::stride, ::stride]).abs().sum(-1).cpu()

    samples = torch.stack([gather(b, _draw(n_pixels, count, None, (h, w), stride, 0.0, gens[b]).to(device))
                           for b in range(n_nets)])
    # the B networks' parameters as one (B, P) buffer; each network's parameters are views
    # of its row, so the per-picture error maps see the current weights
    params = [list(net.parameters()) for net in nets]
    n_params = sum(p.numel() for p in params[0])
    data = torch.empty(n_nets, n_params, device=device)
    grad = torch.zeros(n_nets, n_params, device=device)
    for b, plist in enumerate(params):
        offset = 0
        for p in plist:
            n = p.numel()
            data[b, offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = data[b, offset:offset + n].view_as(p)
            offset += n
    buffer = torch.nn.Parameter(data, requires_grad=False)
    buffer.grad = grad
    opt = Adam([buffer], lr=options.lr)
    step_fn = _BatchedManualStep(nets[0], buffer.data, grad)
    # a draw's rows of all networks in one index_select over the (B * count) stacked samples
    offsets = (torch.arange(n_nets, device=device) * count).unsqueeze(1)
    use_batches = bool(options.batch_size) and options.batch_size < count
    resample = set(options.resample_steps()) if options.sampling == "ohem" else set()
    # the steps between redraws draw their batches in one call per network: the same
    # numbers as one call per step (the generator's sequence is consumed in the same order)
    bounds = sorted({0, options.steps} | {s for s in resample if 0 < s < options.steps})
    losses: list[torch.Tensor] = []
    for lo, hi in zip(bounds, bounds[1:]):
        if lo in resample:
            samples = torch.stack([gather(b, _draw(n_pixels, count, error_map(b), (h, w), stride,
                                                   options.hard_share, gens[b]).to(device))
                                   for b in range(n_nets)])
        if use_batches:
            draws = torch.stack([torch.randint(0, count, (hi - lo, options.batch_size), generator=g)
                                 for g in gens], dim=1).to(device)  # (steps, B, batch)
        for step in range(lo, hi):
            opt.lr = options.lr_at(step)
            if use_batches:
                flat = samples.view(n_nets * count, -1).index_select(0, (draws[step - lo] + offsets).view(-1))
                rows_b = flat.view(n_nets, options.batch_size, -1)
            else:
                rows_b = samples
            prior_b = rows_b[:, :, 5:8] if has_prior else None
            t0 = 8 if has_prior else 5
            loss = step_fn(rows_b[:, :, t0 + 3:], rows_b[:, :, 0:3], prior_b, rows_b[:, :, t0:t0 + 3])
            opt.step()
            losses.append(loss)
    loss_table = torch.stack(losses).cpu().T.tolist() if losses else [[] for _ in range(n_nets)]
    seconds = (time.perf_counter() - started) / n_nets
    results = []
    for net, plist, net_losses in zip(nets, params, loss_table):
        for p in plist:
            p.data = p.data.clone()
            p.grad = None
        results.append(AdaptResult(net=net.eval(), losses=net_losses, seconds=seconds))
    return results
