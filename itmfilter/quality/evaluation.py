"""Side-by-side scoring of the MLP against the baselines on the same picture.

Used by ``itmfilter demo`` and ``benchmarks/stills.py``: every figure the project quotes
is computed by :func:`baseline_rows` beside the method it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from itmfilter.model.inference import reconstruct_nits
from itmfilter.quality import baselines
from itmfilter.quality.metrics import evaluate, psnr_pu21


@dataclass
class Row:
    method: str
    metadata_bytes: int
    scores: dict[str, float]


def baseline_rows(sdr: np.ndarray, hdr_nits: np.ndarray, *, init_net=None, gainmap_scales=(4,),
                  gainmap_budget: int | None = None) -> list[Row]:
    """Score the baselines on one SDR/HDR pair.

    ``sdr``: ``(H, W, 3)`` BT.709 R'G'B' [0, 1] as stored; ``hdr_nits``: the master,
    linear BT.2020 cd/m2. Baselines: SDR placed per BT.2408 (no expansion, 0 bytes), the
    inverse BT.2446a curve (0 bytes), the initialisation alone (domain-wise, 0 bytes), a
    per-picture third-order MMR polynomial, and ISO 21496-1-style gain maps: one per scale of
    ``gainmap_scales`` at the default setting, and with ``gainmap_budget`` the best of a sweep
    (JPEG quality, scale 1-8, 1 or 3 channels) within that many bytes, best by PU21-PSNR.
    """

    rows = [
        Row("sdr-bt2408", 0, evaluate(hdr_nits, baselines.sdr_placed_bt2408(sdr))),
        Row("inverse-bt2446a", 0, evaluate(hdr_nits, baselines.inverse_bt2446a(sdr))),
    ]
    if init_net is not None:
        rows.append(Row("init-only", 0, evaluate(hdr_nits, reconstruct_nits(init_net, sdr))))
    coeffs = baselines.fit_mmr(sdr, hdr_nits, order=3)
    rows.append(Row("mmr3-poly", baselines.mmr_nbytes(coeffs), evaluate(hdr_nits, baselines.apply_mmr(coeffs, sdr))))
    for scale in gainmap_scales:
        data, params = baselines.encode_gainmap(sdr, hdr_nits, scale=scale)
        nbytes = len(data) + len(repr(params).encode())
        rows.append(Row(f"gainmap-1/{scale}", nbytes, evaluate(hdr_nits, baselines.decode_gainmap(sdr, data, params))))
    if gainmap_budget:
        best = baselines.best_gainmap(sdr, hdr_nits, gainmap_budget, psnr_pu21)
        if best is not None:
            data, params, _ = best
            rows.append(Row("gainmap-best", baselines.gainmap_nbytes(data, params),
                            evaluate(hdr_nits, baselines.decode_gainmap(sdr, data, params))))
    return rows


def format_table(rows: list[Row], keys=("pu21_psnr", "pq_psnr", "delta_e_itp", "pu21_ssim")) -> str:
    head = f"{'method':<18}{'bytes':>8}" + "".join(f"{k:>14}" for k in keys)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row.method:<18}{row.metadata_bytes:>8}" + "".join(f"{row.scores[k]:>14.3f}" for k in keys))
    return "\n".join(lines)
