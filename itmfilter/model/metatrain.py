"""Training the initialisation: Algorithm 1 (meta-learning) and plain pre-training.

Algorithm 1 of the paper (section 3.2): each task holds 3 support and 1 query SDR/HDR
pairs. The inner update trains a copy of the meta-weights on the support set (the
domain-wise step); the fast adaptation then adapts that copy to the query picture as the
per-picture adaptation will (Adam, same learning rate); the outer update moves the
meta-weights. The authors' released code never steps its outer optimiser; here it is a
real first-order update, either

* ``fomaml``: the query-loss gradient at the adapted weights, applied to the meta-weights
  by an outer Adam (first-order MAML, Finn et al. 2017), or
* ``reptile``: meta-weights move a fraction ``outer_lr`` of the way toward the adapted
  weights (Nichol et al. 2018).

``naive`` is plain pre-training on pooled pixels of every training pair (the paper's
"naive pre-training" row of Table 4). Which of these ships is decided by
``benchmarks/metatrain.py``.

Training pairs: views cut from the train split's scenes (:mod:`itmfilter.data.fetch`),
each made SDR by a randomly chosen curve of :mod:`itmfilter.colour.tonecurves` (spatially
varying ``local`` included), quantised to 8 bits as delivered SDR is.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from itmfilter.colour.tonecurves import get_curve
from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.data.fetch import views
from itmfilter.errors import ItmError
from itmfilter.model.net import CONFIGS, ITMNet, fit_mmr_prior, mmr_features, pixel_grid

ALGORITHMS = ("fomaml", "reptile", "naive")
TRAIN_CURVES = ("bt2446a", "bt2390", "hable", "reinhard", "youtube", "local")


@dataclass(frozen=True)
class MetaOptions:
    algorithm: str = "reptile"
    outer_steps: int = 1500
    inner_steps: int = 8  # support (domain-wise) steps per task
    adapt_steps: int = 8  # fast-adaptation steps on the query
    inner_lr: float = 1e-3  # the per-picture adaptation's Adam learning rate
    outer_lr: float = 0.1  # reptile: step fraction; fomaml: outer Adam lr is outer_lr * 1e-2
    pixels_per_pair: int = 2048
    view_size: tuple[int, int] = (96, 192)
    views_per_picture: int = 12
    curves: tuple[str, ...] = TRAIN_CURVES
    config: str = "default"
    seed: int = 0
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of {ALGORITHMS}")


@dataclass
class PairPool:
    """Training pairs held as flat tensors: ``sdr`` (P, N, 3), ``target`` (P, N, 3) PQ,
    ``xy`` (N, 2) shared pixel grid, ``curve`` names per pair, and ``prior`` (P, N, 3):
    each pair's own global prior in PQ (its least-squares MMR polynomial for ``mmr3``
    configs, as adaptation will fit it; BT.2408 placement otherwise)."""

    sdr: torch.Tensor
    target: torch.Tensor
    xy: torch.Tensor
    prior: torch.Tensor | None = None
    curve: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.sdr.shape[0]


def make_pairs(scenes, options: MetaOptions, *, quiet: bool = False) -> PairPool:
    """Cut views from ``scenes`` and tone-map each with a random curve of ``options.curves``."""


    rng = np.random.default_rng(options.seed)
    h, w = options.view_size
    sdrs, targets, names = [], [], []
    jobs = [(scene, i) for scene in scenes for i in range(len(scene.pictures))]
    for scene, index in tqdm(jobs, unit="picture", desc="cutting views", disable=quiet):
        picture = scene.load(index)
        peak = float(scene.meta[index].get("peak_nits", 1000.0))
        for view in views(picture, (h, w), options.views_per_picture, rng, peak_nits=peak):
            name = options.curves[int(rng.integers(len(options.curves)))]
            sdr = get_curve(name).forward(view)
            sdr = np.round(np.clip(sdr, 0, 1) * 255) / 255
            sdrs.append(sdr.reshape(-1, 3).astype(np.float32))
            targets.append(eotf_inverse_st2084(view).reshape(-1, 3).astype(np.float32))
            names.append(name)
    sdr_t = torch.from_numpy(np.stack(sdrs))
    target_t = torch.from_numpy(np.stack(targets))
    template = ITMNet(CONFIGS[options.config])
    with torch.no_grad():
        if template.config.prior == "mmr3":
            prior = torch.stack([mmr_features(s) @ fit_mmr_prior(s, t) for s, t in zip(sdr_t, target_t)])
        else:
            prior = torch.stack([template.prior(s) for s in sdr_t]) if template.config.prior != "none" else None
    return PairPool(sdr=sdr_t, target=target_t, xy=pixel_grid(h, w).reshape(-1, 2), prior=prior, curve=names)


def _batch(pool: PairPool, pairs, n: int, gen: torch.Generator):
    idx = torch.randint(0, pool.sdr.shape[1], (len(pairs), n), generator=gen)
    pairs = torch.as_tensor(pairs)
    sdr = pool.sdr[pairs[:, None], idx].reshape(-1, 3)
    tgt = pool.target[pairs[:, None], idx].reshape(-1, 3)
    prior = None if pool.prior is None else pool.prior[pairs[:, None], idx].reshape(-1, 3)
    return sdr, pool.xy[idx.reshape(-1)], tgt, prior


def _train(net: ITMNet, pool: PairPool, pairs, steps: int, lr: float, n: int, gen) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        sdr, xy, tgt, prior = _batch(pool, pairs, n, gen)
        loss = torch.nn.functional.mse_loss(net(sdr, xy, prior), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def code_revision() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def save_checkpoint(path: str | os.PathLike, net: ITMNet, outer: torch.optim.Optimizer,
                    gen: torch.Generator, step: int) -> None:
    """Write a resumable training state as safetensors (tensors) plus JSON metadata (the
    step and the optimiser's hyper-parameters): nothing that needs unpickling to read."""
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors["gen"] = gen.get_state()
    opt = outer.state_dict()
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"outer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"step": int(step), "param_groups": opt["param_groups"], "format": "itmfilter-metatrain-checkpoint"}
    tmp = Path(path).with_suffix(".partial")
    save_file(tensors, str(tmp), metadata={"itmfilter": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, net: ITMNet, outer: torch.optim.Optimizer, gen: torch.Generator) -> int:
    """Restore :func:`save_checkpoint`'s state into ``net``, ``outer`` and ``gen``; returns
    the step to resume at. Anything else (a pickle, another file) is an :class:`ItmError`:
    a checkpoint is data, never code."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["itmfilter"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != "itmfilter-metatrain-checkpoint":
            raise ValueError("not a meta-train checkpoint")
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("outer."):
                _, index, slot = key.split(".", 2)
                state.setdefault(int(index), {})[slot] = value
        outer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        gen.set_state(tensors["gen"])
        return int(meta["step"])
    except Exception as exc:  # safetensors raises its own error types for foreign files
        raise ItmError(path, f"is not a meta-train checkpoint this itmfilter wrote ({exc})",
                       "delete it to start training afresh") from None


def meta_train(
    pool: PairPool,
    options: MetaOptions,
    *,
    checkpoint: str | os.PathLike | None = None,
    quiet: bool = False,
) -> tuple[ITMNet, dict]:
    """Run ``options.algorithm`` over ``pool``; resumes from ``checkpoint`` when it exists.

    Returns the trained network and a provenance record.
    """

    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    net = ITMNet(CONFIGS[options.config])
    outer = torch.optim.Adam(net.parameters(), lr=options.outer_lr * 1e-2)
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        start = load_checkpoint(ckpt, net, outer, gen)
    started = time.perf_counter()
    bar = tqdm(total=options.outer_steps, initial=start, unit="task", desc=options.algorithm, disable=quiet)
    loss = float("nan")
    n = options.pixels_per_pair
    for step in range(start, options.outer_steps):
        pairs = torch.randperm(len(pool), generator=gen)[:4].tolist()
        support, query = pairs[:3], pairs[3:]
        if options.algorithm == "naive":
            # Same pixel budget per step as a task, pooled, one optimiser throughout.
            sdr, xy, tgt, prior = _batch(pool, pairs, n, gen)
            loss_t = torch.nn.functional.mse_loss(net(sdr, xy, prior), tgt)
            outer.zero_grad(set_to_none=True)
            loss_t.backward()
            outer.step()
            loss = float(loss_t.detach())
        else:
            fast = copy.deepcopy(net)
            _train(fast, pool, support, options.inner_steps, options.inner_lr, n, gen)  # inner update
            loss = _train(fast, pool, query, options.adapt_steps, options.inner_lr, n, gen)  # fast adaptation
            if options.algorithm == "reptile":
                with torch.no_grad():
                    for p, q in zip(net.parameters(), fast.parameters()):
                        p.add_(options.outer_lr * (q - p))
            else:  # first-order MAML: the query gradient at the adapted weights
                sdr, xy, tgt, prior = _batch(pool, query, n, gen)
                fast.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(fast(sdr, xy, prior), tgt).backward()
                outer.zero_grad(set_to_none=True)
                for p, q in zip(net.parameters(), fast.parameters()):
                    p.grad = q.grad.detach().clone()
                outer.step()
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.2e}")
        if ckpt is not None and (step + 1) % options.checkpoint_every == 0:
            save_checkpoint(ckpt, net, outer, gen, step + 1)
    bar.close()
    if net.config.prior == "mmr3":
        # Blind mode has no per-picture polynomial: store the one fitted to all pairs.
        with torch.no_grad():
            pick = torch.randint(0, pool.sdr.shape[0] * pool.sdr.shape[1], (1 << 18,), generator=gen)
            net.prior_mmr.copy_(fit_mmr_prior(pool.sdr.reshape(-1, 3)[pick], pool.target.reshape(-1, 3)[pick]))
    provenance = {
        "kind": options.algorithm,
        "options": json.loads(json.dumps(asdict(options))),
        "pairs": len(pool),
        "curves_used": sorted(set(pool.curve)),
        "seconds": round(time.perf_counter() - started, 1),
        "code_revision": code_revision(),
        "torch": torch.__version__,
    }
    return net.eval(), provenance
