"""The per-picture iTM network: SDR colour + pixel position -> PQ BT.2020 colour.

The shape follows the paper (Liu et al., "meta-transfer learning for HDR/WCG media
transmission", section 3.2 and figure 3): a coordinate branch and an SDR-colour branch,
concatenated, then fusion layers 64/32/64/3. About 8.8k parameters: 17.5 KB in fp16.

Tensor layout: inputs are channel-last, ``sdr`` of shape ``(N, 3)`` holding BT.709
R'G'B' code values in [0, 1] (BT.1886, 100 cd/m2 white) and ``xy`` of shape ``(N, 2)``
holding the pixel centre in [-1, 1] (x left to right, y top to bottom). The output is
``(N, 3)`` PQ (SMPTE ST 2084) code values of BT.2020 R'G'B', nominally in [0, 1].

:class:`ModelConfig` travels with every stored weight set, so that any stored weights can
be rebuilt later; :data:`CONFIGS` is the registry of named configurations.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from itmfilter.colour.primaries import MATRIX_BT709_TO_BT2020
from itmfilter.colour.tensor import eotf_inverse_st2084
from itmfilter.colour.transfer import SDR_WHITE_NITS_BT2408
from itmfilter.limits import (
    MAX_FOURIER_BANDS,
    MAX_HIDDEN_LAYERS,
    MAX_LAYER_WIDTH,
    MAX_PARAMETERS,
    MAX_SIREN_W0,
)

# torch twins of the numpy colour functions (the network runs on CUDA too); the constants
# are the colour module's own, so the two can never disagree.

PRIORS = ("none", "bt2408", "mmr3")
MMR_TERMS = 22  # third-order MMR: 1 + 7 * 3 regressors
COORD_ENCODINGS = ("siren", "fourier", "none")


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network from its stored weights.

    ``prior``: ``"bt2408"`` makes the network predict a residual over SDR placed as
    BT.2408 recommends (BT.1886 decode, 203 cd/m2 white, BT.709 -> BT.2020, PQ encode);
    ``"mmr3"`` predicts a residual over a per-picture third-order MMR polynomial (the
    kind of global colour mapping Dolby Vision metadata carries) whose 22x3 coefficients
    are a buffer of the network, fitted by least squares before adaptation and stored
    with the weights (in fp32); ``"none"`` predicts PQ directly. ``coord_encoding``: ``"siren"`` (a sine layer with
    frequency ``siren_w0``, as in the authors' code), ``"fourier"`` (fixed sin/cos bands,
    then a ReLU layer) or ``"none"``.
    """

    coord_encoding: str = "siren"
    coord_features: int = 32
    rgb_features: int = 32
    hidden: tuple[int, ...] = (64, 32, 64)
    siren_w0: float = 30.0
    fourier_bands: int = 6
    prior: str = "bt2408"

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; expected one of {PRIORS}")
        if self.coord_encoding not in COORD_ENCODINGS:
            raise ValueError(
                f"unknown coord_encoding {self.coord_encoding!r}; expected one of {COORD_ENCODINGS}"
            )
        if not isinstance(self.hidden, (tuple, list)) or not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS:
            raise ValueError(f"hidden must list 1 to {MAX_HIDDEN_LAYERS} layer widths, got {self.hidden!r}")
        for name, value in [("coord_features", self.coord_features), ("rgb_features", self.rgb_features)] + [
            ("hidden", h) for h in self.hidden
        ]:
            _check_int(name, value, 1, MAX_LAYER_WIDTH)
        _check_int("fourier_bands", self.fourier_bands, 1, MAX_FOURIER_BANDS)
        if isinstance(self.siren_w0, bool) or not isinstance(self.siren_w0, (int, float)) or not (
            math.isfinite(self.siren_w0) and abs(self.siren_w0) <= MAX_SIREN_W0
        ):
            raise ValueError(f"siren_w0 must be a finite number within +-{MAX_SIREN_W0:g}, got {self.siren_w0!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(
                f"the network would have {self.parameter_count()} parameters, at most {MAX_PARAMETERS} are accepted"
            )

    def parameter_count(self) -> int:
        """Values in a weight set of this config (``state_dict()`` entries, the ``prior_*``
        buffer included), computed from the sizes alone: nothing is allocated, so an absurd
        config is refused before any network is built."""
        coord = {"siren": 3 * self.coord_features,
                 "fourier": (4 * self.fourier_bands + 1) * self.coord_features, "none": 0}[self.coord_encoding]
        width = (self.coord_features if self.coord_encoding != "none" else 0) + self.rgb_features
        total = coord + 4 * self.rgb_features
        for h in (*self.hidden, 3):
            total += (width + 1) * h
            width = h
        return total + (MMR_TERMS * 3 if self.prior == "mmr3" else 0)

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the form stored beside every weight set."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        data = dict(data)
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


# The registry of named configurations. "default" was chosen on the val split by
# benchmarks/stills.py --variants (docs/stills-benchmark.md): Fourier coordinates and a
# per-picture MMR prior beat the authors' SIREN + direct prediction. "paper" is the
# paper's shape with a BT.2408 residual prior, "paper-direct" predicts PQ directly.
CONFIGS: dict[str, ModelConfig] = {
    "default": ModelConfig(coord_encoding="fourier", prior="mmr3"),
    # stills: a wider coordinate input (see itmfilter.model.initial.STILLS_INIT)
    "stills": ModelConfig(coord_encoding="fourier", prior="mmr3", fourier_bands=8, coord_features=48),
    "paper": ModelConfig(),
    "paper-direct": ModelConfig(prior="none"),
    "fourier": ModelConfig(coord_encoding="fourier"),
    "siren-mmr": ModelConfig(prior="mmr3", siren_w0=10.0),
}


def prior_bt2408(sdr: torch.Tensor) -> torch.Tensor:
    """SDR placed in PQ BT.2020 as ITU-R BT.2408-7 recommends, no expansion.

    ``sdr``: ``(N, 3)`` BT.709 R'G'B' code values [0, 1]. BT.1886 with L_b = 0 is a pure
    2.4 power; white maps to 203 cd/m2. Returns ``(N, 3)`` PQ code values.
    """
    linear = sdr.clamp(0.0, 1.0).pow(2.4) * SDR_WHITE_NITS_BT2408
    matrix = torch.tensor(MATRIX_BT709_TO_BT2020.tolist(), dtype=linear.dtype, device=linear.device)
    return eotf_inverse_st2084(linear @ matrix.T)


def mmr_features(sdr: torch.Tensor) -> torch.Tensor:
    """Third-order MMR regressors ``(N, 22)`` of ``(N, 3)`` R'G'B' (US 8,811,490):
    ``[1, r, g, b, rg, rb, gb, rgb]`` and the squares and cubes of the seven non-constant
    terms; the same order as :func:`itmfilter.quality.baselines.mmr_features`."""
    r, g, b = sdr.unbind(-1)
    rg = r * g
    first = torch.stack([r, g, b, rg, r * b, g * b, rg * b], dim=-1)
    return torch.cat([torch.ones_like(sdr[..., :1]), first, first * first, first * first * first], dim=-1)


def fit_mmr_prior(sdr: torch.Tensor, target_pq: torch.Tensor, ridge: float = 1e-7) -> torch.Tensor:
    """Least-squares MMR coefficients ``(22, 3)`` from ``(N, 3)`` SDR to ``(N, 3)`` PQ, in
    float64 with a relative ridge (as :func:`itmfilter.quality.baselines.fit_mmr`)."""
    x = mmr_features(sdr.double())
    xtx, xty = _gram(x, target_pq.double())
    reg = ridge * torch.trace(xtx) / xtx.shape[0] * torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device)
    reg[0, 0] = 0.0
    return torch.linalg.solve(xtx + reg, xty).float()


def _gram(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x^T x`` and ``x^T y`` summed over the rows in one fixed order on the CPU.

    MKL's float64 ``x.T @ x`` splits the long row axis between threads on some CPUs (an
    Intel Xeon here), so the prior, and every weight adapted from it, changed in the last
    bits with ``torch.set_num_threads``: a Ray worker (one thread) and a local encode (two)
    wrote different KEY packets. NumPy's ``einsum`` without ``optimize`` runs its own
    single-threaded loops (no BLAS), so the sums are the same bits at any thread count;
    262,144 rows by 22 terms take about 40 ms. CUDA keeps the matrix product."""
    if x.device.type != "cpu":
        return x.T @ x, x.T @ y
    xn, yn = x.numpy(), y.numpy()
    return (torch.from_numpy(np.einsum("ni,nj->ij", xn, xn, optimize=False)),
            torch.from_numpy(np.einsum("ni,nj->ij", xn, yn, optimize=False)))


class _Sine(nn.Module):
    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


class ITMNet(nn.Module):
    """The two-branch MLP; see the module docstring for shapes and units."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = CONFIGS["default"] if config is None else config
        self.config = config
        c = config
        if c.coord_encoding == "siren":
            first = nn.Linear(2, c.coord_features)
            # SIREN first-layer init (Sitzmann et al. 2020): U(-1/in, 1/in).
            nn.init.uniform_(first.weight, -1 / 2, 1 / 2)
            self.coord = nn.Sequential(first, _Sine(c.siren_w0))
            coord_out = c.coord_features
        elif c.coord_encoding == "fourier":
            freqs = (2.0 ** torch.arange(c.fourier_bands, dtype=torch.float32)) * math.pi
            self.register_buffer("freqs", freqs, persistent=False)
            self.coord = nn.Sequential(nn.Linear(4 * c.fourier_bands, c.coord_features), nn.ReLU(inplace=True))
            coord_out = c.coord_features
        else:
            self.coord = None
            coord_out = 0
        self.rgb = nn.Sequential(nn.Linear(3, c.rgb_features), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        width = coord_out + c.rgb_features
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        last = nn.Linear(width, 3)
        if c.prior != "none":
            # A residual head starts at zero: the untrained net is the prior itself.
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.fusion = nn.Sequential(*layers)
        if c.prior == "mmr3":
            # Until fitted, the polynomial is the BT.2408 placement's best cubic fit.
            self.register_buffer("prior_mmr", _bt2408_mmr())

    def fourier_features(self, xy: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` coordinates -> ``(N, 4 * fourier_bands)`` sines and cosines (the
        coordinate layer's input; fixed, no parameters)."""
        angles = xy.unsqueeze(-1) * self.freqs.to(xy.dtype)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)

    def _coord_features(self, xy: torch.Tensor) -> torch.Tensor:
        if self.config.coord_encoding == "fourier":
            xy = self.fourier_features(xy)
        return self.coord(xy)

    def prior(self, sdr: torch.Tensor) -> torch.Tensor | None:
        """The global prior in PQ for ``(N, 3)`` SDR, or None; depends on SDR alone, so
        training loops may compute it once per picture and pass it to :meth:`forward`."""
        if self.config.prior == "bt2408":
            return prior_bt2408(sdr)
        if self.config.prior == "mmr3":
            return mmr_features(sdr) @ self.prior_mmr.to(sdr.dtype)
        return None

    def forward(
        self, sdr: torch.Tensor, xy: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        feats = self.rgb(sdr)
        if self.coord is not None:
            # Sine arguments reach +-30 rad and the prior uses pow(): both lose too much
            # in bf16, so they stay fp32 under autocast; the Linear stack may run in bf16.
            with torch.autocast(sdr.device.type, enabled=False):
                coord = self._coord_features(xy.float())
            feats = torch.cat([coord.to(feats.dtype), feats], dim=-1)
        out = self.fusion(feats)
        if self.config.prior != "none":
            if prior is None:
                with torch.autocast(sdr.device.type, enabled=False):
                    prior = self.prior(sdr.float())
            out = out.float() + prior
        return out


@functools.lru_cache(maxsize=1)
def _bt2408_mmr_cached() -> tuple:
    levels = torch.linspace(0, 1, 17)
    grid = torch.cartesian_prod(levels, levels, levels)
    return tuple(fit_mmr_prior(grid, prior_bt2408(grid)).flatten().tolist())


def _bt2408_mmr() -> torch.Tensor:
    return torch.tensor(_bt2408_mmr_cached()).reshape(MMR_TERMS, 3)


def param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel centres in [-1, 1], shape ``(H, W, 2)`` ordered (x, y)."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda")
    return torch.device(name)


__all__ = [
    "CONFIGS",
    "ITMNet",
    "ModelConfig",
    "param_count",
    "pixel_grid",
    "prior_bt2408",
    "resolve_device",
]

