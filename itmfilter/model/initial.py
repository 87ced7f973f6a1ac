"""The shipped initialisation: safetensors with its model config and provenance.

The file ``itmfilter/assets/init.safetensors`` holds the network's tensors; its metadata
holds ``config`` (ModelConfig JSON) and ``provenance`` (JSON: how it was trained: data,
curves, steps, seed, code revision). Without it the network starts as its prior alone
(BT.2408 placement; the residual head is zero), and :func:`load_init` says so.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output
from itmfilter.model.net import CONFIGS, ITMNet, ModelConfig

INIT_NAMES = ("meta", "naive", "blind", "stills")


def shipped_init_path(name: str = "meta") -> Path:
    """Path of a shipped initialisation (may not exist)."""
    return Path(str(resources.files("itmfilter") / "assets" / f"init-{name}.safetensors"))


def save_init(net: ITMNet, path: str | os.PathLike, provenance: dict) -> None:


    tensors = {k: v.detach().cpu().float().contiguous() for k, v in net.state_dict().items()}
    meta = {"config": net.config.to_json(), "provenance": json.dumps(provenance, sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


# Measured on the val split (docs/metatrain-benchmark.md): naive pre-training scored
# 44.45 dB PU21-PSNR after 200 steps, Reptile 44.10, first-order MAML 43.21, no
# pre-training 44.04; so the naive set is the default and the blind-mode weights, and the
# Reptile set ships as "meta" for comparison.
DEFAULT_INIT = "naive"

# Stills: with the 1600-step recipe, a wider coordinate input (8 Fourier bands,
# 48 coordinate features; 11.3k weights, ~23 KB in fp16) fits better. Val split, all six
# SDR kinds (`benchmarks/stills.py --split val --variants --only "stills network"`), naive
# pre-training for that config (`itmfilter meta-train --algorithm naive --config stills`, 150 s):
# 47.81 dB mean PU21-PSNR vs 47.45 for the default network with its initialisation
# (spatially varying grade 39.22 vs 38.44). Video and playback keep the default network
# (their rate, speed and real-time budgets were measured with it).
STILLS_INIT = "stills"


def load_init(path: str | os.PathLike | None = None, name: str = DEFAULT_INIT) -> tuple[ITMNet, dict]:
    """Load an initialisation; ``path`` overrides the shipped ``name``.

    Returns the network and its provenance record. When nothing is shipped under
    ``name`` the fallbacks are tried in order and finally the untrained prior, with
    ``provenance["kind"] == "prior-only"``.
    """


    candidates = [Path(path)] if path else [shipped_init_path(n) for n in _fallbacks(name)]
    for candidate in candidates:
        if not candidate.exists():
            if path:
                raise ItmError(candidate, "initialisation file not found", "check the --init path")
            continue
        try:
            with safe_open(str(candidate), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
            config = ModelConfig.from_json(meta["config"])
            net = ITMNet(config)
            net.load_state_dict(state)
        except Exception as exc:  # any failure here means the file is not usable
            raise ItmError(candidate, f"not a valid itmfilter initialisation ({exc})") from None
        provenance = json.loads(meta.get("provenance", "{}"))
        provenance.setdefault("path", str(candidate))
        return net.eval(), provenance
    return ITMNet(CONFIGS["default"]).eval(), {"kind": "prior-only"}


def _fallbacks(name: str) -> list[str]:
    order = {"meta": ["meta", "naive"], "naive": ["naive", "meta"], "blind": ["blind", "naive", "meta"],
             "stills": ["stills", "naive", "meta"]}
    return order.get(name, [name])
