"""A grid fit coded at other grid bits as well (``twin_bits``): the grid's training does not
depend on its bits, so each twin shares it and adds its own quantisation and MLP fine-tune.
The model at the config's own bits is the same bytes as a fit without twins."""

import numpy as np

from itmfilter.colour.tonecurves import get_curve
from itmfilter.data import sample_path
from itmfilter.media.stills import read_hdr
from itmfilter.model.grid import GRID_SIZES, GridFitOptions, fit_grid_model_pixels, pixel_grid, predict_nits
from itmfilter.quality.metrics import psnr_pu21


def test_twins_share_the_fit_and_code_the_grid_coarser():
    hdr = read_hdr(sample_path()).nits[::8, ::8].astype(np.float32)
    sdr = (np.round(np.clip(get_curve("local").forward(hdr), 0, 1) * 255) / 255).astype(np.float32)
    h, w, _ = sdr.shape
    xy = pixel_grid(h, w).reshape(-1, 2).numpy()
    opts = GridFitOptions(steps=80, finetune_steps=40, batch=1024, compact=True, starts=2, trial_steps=10,
                          clipped_weight=0.3)
    config = GRID_SIZES["S"]
    alone = fit_grid_model_pixels(sdr.reshape(-1, 3), hdr.reshape(-1, 3), xy, config, opts)
    fit = fit_grid_model_pixels(sdr.reshape(-1, 3), hdr.reshape(-1, 3), xy, config, opts, twin_bits=(6, 4))
    assert fit.data == alone.data and alone.twins == []
    assert [t.model.config.grid_bits for t in fit.twins] == [6, 4]
    assert len(fit.data) > len(fit.twins[0].data) > len(fit.twins[1].data)
    # each twin is a model of its own: its MLP was fine-tuned on its own coarser grid
    assert not all(np.array_equal(a, b) for a, b in zip(fit.model.mlp, fit.twins[0].model.mlp))
    scores = [psnr_pu21(hdr, predict_nits(m.model, sdr)) for m in (fit, *fit.twins)]
    assert scores[0] > scores[2] and scores[1] > scores[2] - 0.5 and min(scores) > 25, scores
