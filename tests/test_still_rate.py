"""Stills at a byte budget: the grid model, the residual gain layer, the version-2 still
payload (and version 1 still read), the RD choice and ``itmfilter encode --max-bytes``."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from itmfilter.cli import app
from itmfilter.colour.tonecurves import get_curve
from itmfilter.data import sample_path
from itmfilter.encode.still_rate import choose_payload, grid_sizes_for, highest_fitting
from itmfilter.errors import ItmError
from itmfilter.media.stills import read_hdr, read_png_chunks
from itmfilter.model.grid import (
    GRID_SIZES,
    GridFitOptions,
    GridFormatError,
    fit_grid_model,
    predict_nits,
    unpack_grid_model,
)
from itmfilter.model.initial import STILLS_INIT, load_init
from itmfilter.model.residual import BASE_SDR_PLACED, ResidualPlan, apply_residual, upsample_bilinear
from itmfilter.model.weightset import (
    GridStill,
    WeightFormatError,
    WeightSet,
    decode,
    decode_still,
    encode,
    encode_grid_still,
)
from itmfilter.quality.metrics import psnr_pu21

SIDECAR = Path(__file__).resolve().parents[1] / "sidecar"
runner = CliRunner()


@pytest.fixture(scope="module")
def pair():
    """The shipped sample, cropped small, SDR by the spatially varying curve (8-bit)."""
    nits = read_hdr(sample_path()).nits[:96, :160].astype(np.float32)
    sdr = (np.round(np.clip(get_curve("local").forward(nits), 0, 1) * 255) / 255).astype(np.float32)
    return sdr, np.ascontiguousarray(nits)


FAST = GridFitOptions(steps=60, batch=1024, finetune_steps=30)


def test_grid_model_bytes_round_trip_and_bit_exact_decode(pair):
    sdr, nits = pair
    fit = fit_grid_model(sdr, nits, GRID_SIZES["XS"], FAST)
    again = unpack_grid_model(fit.data)
    a, b = predict_nits(fit.model, sdr), predict_nits(again, sdr.copy())
    assert a.dtype == np.float32 and a.shape == nits.shape and np.array_equal(a, b)
    poly = fit_grid_model(sdr, nits, GRID_SIZES["P"], GridFitOptions(steps=0, finetune_steps=0))
    # the grid model beats its own polynomial, even after 60 steps
    assert psnr_pu21(nits, a) > psnr_pu21(nits, predict_nits(poly.model, sdr)) + 1
    with pytest.raises(GridFormatError, match="truncated|length"):
        unpack_grid_model(fit.data[:-3])
    with pytest.raises(GridFormatError, match="magic"):
        unpack_grid_model(b"XX" + fit.data[2:])


def test_upsample_keeps_constants_and_matches_at_scale_one():
    small = np.full((3, 4, 1), 1.5, np.float32)
    assert np.array_equal(upsample_bilinear(small, 6, 8, 2), np.full((6, 8, 1), 1.5, np.float32))
    ramp = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    assert np.array_equal(upsample_bilinear(ramp, 3, 4, 1), ramp)
    up = upsample_bilinear(ramp, 5, 7, 2)  # odd sizes: row 4 samples u = 4.5 / 2 - 0.5 = 1.75
    assert up.shape == (5, 7, 1) and up[0, 0, 0] == 0 and up[-1, -1, 0] == np.float32(1.75 * 4 + 2.75)


def test_residual_layer_improves_and_only_touches_the_mask(pair):
    sdr, nits = pair
    model = predict_nits(fit_grid_model(sdr, nits, GRID_SIZES["P"], GridFitOptions(steps=0, finetune_steps=0)).model, sdr)
    codes = np.round(sdr.max(-1) * 255)
    threshold = int(np.median(codes))  # half the crop is masked, whatever its content
    data = ResidualPlan(sdr, model, nits, threshold, 1).code(90)
    out = apply_residual(sdr, model, data)
    mask = codes >= threshold
    assert mask.any() and (~mask).any()
    assert np.array_equal(out[~mask], model[~mask])
    assert psnr_pu21(nits, out) > psnr_pu21(nits, model)
    gm = ResidualPlan(sdr, None, nits, 0, 2, 3, base=BASE_SDR_PLACED).code(80)
    still = GridStill(b"", gm)
    assert psnr_pu21(nits, still.reconstruct_nits(sdr)) > 25


def test_pq_domain_layer_decodes_to_the_master_and_is_flagged(pair):
    from itmfilter.colour.transfer import eotf_inverse_st2084
    from itmfilter.model.residual import DOMAIN_PQ, HEAD, ResidualFormatError, describe_residual, residual_base

    sdr, nits = pair
    log2 = ResidualPlan(sdr, None, nits, 0, 1, 3, base=BASE_SDR_PLACED).code(90)
    pq = ResidualPlan(sdr, None, nits, 0, 1, 3, base=BASE_SDR_PLACED, domain="pq")
    data = pq.code(90)
    assert data[4] == BASE_SDR_PLACED | DOMAIN_PQ and residual_base(data) == BASE_SDR_PLACED
    assert describe_residual(data)["domain"] == "pq" and describe_residual(log2)["domain"] == "log2"
    out = apply_residual(sdr, None, data)
    # the layer carries PQ(master) - PQ(placed SDR): decoded, within a few of its 8-bit steps
    err = np.abs(eotf_inverse_st2084(out) - eotf_inverse_st2084(np.minimum(nits, 10000)))
    assert np.median(err) < 2 * (pq.gmax - pq.gmin) / 255
    assert psnr_pu21(nits, out) > 25 and out.dtype == np.float32
    with pytest.raises(ValueError, match="pq needs 3"):
        ResidualPlan(sdr, None, nits, 0, 1, 1, base=BASE_SDR_PLACED, domain="pq")
    one = bytearray(ResidualPlan(sdr, None, nits, 0, 2, 1, base=BASE_SDR_PLACED).code(60))
    one[4] |= DOMAIN_PQ  # a 1-channel layer with the PQ flag: not a layer 2.1 defines
    with pytest.raises(ResidualFormatError, match="unknown residual layer"):
        apply_residual(sdr, None, bytes(one))
    assert HEAD.size == 9


def test_residual_range_clip_narrows_the_step_and_keeps_minmax_by_default(pair):
    sdr, nits = pair
    model = predict_nits(fit_grid_model(sdr, nits, GRID_SIZES["P"], GridFitOptions(steps=0, finetune_steps=0)).model, sdr)
    spiky = nits.copy()
    spiky[5, 7] *= 64.0  # one outlier six stops above: min/max would spread 255 steps over it
    full = ResidualPlan(sdr, model, spiky, 0, 1)
    clipped = ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=0.02)
    assert clipped.gmax - clipped.gmin < (full.gmax - full.gmin) / 2
    assert ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=0.0).gmax == full.gmax
    # at a lossless-ish quality the finer step wins everywhere but on the one clipped pixel
    a = apply_residual(sdr, model, full.code(100))
    b = apply_residual(sdr, model, clipped.code(100))
    a[5, 7] = b[5, 7] = spiky[5, 7]  # scored on every other pixel
    assert psnr_pu21(spiky, b) > psnr_pu21(spiky, a) + 1
    with pytest.raises(ValueError, match="clip_percent"):
        ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=50)
    # a pair clips each tail on its own: the high tail only keeps the minimum and drops the spike
    high = ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=(0.0, 0.02))
    low = ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=(0.02, 0.0))
    assert high.gmin == full.gmin and high.gmax == clipped.gmax
    assert low.gmax == full.gmax and low.gmin == clipped.gmin
    with pytest.raises(ValueError, match="clip_percent"):
        ResidualPlan(sdr, model, spiky, 0, 1, clip_percent=(0.0, 50.0))


def test_version2_payload_and_version1_still_read(pair):
    sdr, nits = pair
    fit = fit_grid_model(sdr, nits, GRID_SIZES["P"], GridFitOptions(steps=0, finetune_steps=0))
    blob = encode_grid_still(fit.data)
    assert blob[:5] == b"ITMW\x02" and blob[5] == 3 and len(blob) == len(fit.data) + 20
    got = decode_still(blob)
    assert isinstance(got, GridStill) and got.model_data == fit.data and got.residual is None
    with pytest.raises(WeightFormatError, match="grid-model still payload"):
        decode(blob)  # an MLP-only reader says what it is, rather than "damaged"
    bad = bytearray(blob)
    bad[30] ^= 4
    with pytest.raises(WeightFormatError, match="CRC-32"):
        decode_still(bytes(bad))
    with pytest.raises(WeightFormatError, match="needs a gain layer"):
        GridStill(b"", None).reconstruct_nits(sdr)
    # version 1 (every PNG written before) reads through the same entry point, unchanged
    net, _ = load_init(name=STILLS_INIT)
    v1 = encode(WeightSet.from_net(net))
    assert v1[4] == 1
    ws = decode_still(v1)
    assert isinstance(ws, WeightSet) and all(np.array_equal(ws.state[k], decode(v1).state[k]) for k in ws.state)


def test_highest_fitting_finds_the_highest_quality():
    sizes = {q: 100 + 7 * q + (q % 3) for q in range(10, 101)}  # not quite monotone

    def code(q):
        return b"x" * sizes[q]

    q, data = highest_fitting(code, 500)
    assert len(data) <= 500 and sizes[q + 1] > 500
    assert highest_fitting(code, 50) is None
    assert highest_fitting(code, 10_000)[0] == 100


def test_choose_payload_within_budget_and_never_below_polynomial(pair):
    sdr, nits = pair
    cache: dict = {}
    poly = None
    for budget in (400, 2048, 4096):
        choice = choose_payload(sdr, nits, budget, fit_options=FAST, cache=cache)
        assert len(choice.best.payload) <= budget
        assert all(len(c.payload) <= budget for c in choice.candidates)
        poly = next(c.pu21 for c in choice.candidates if c.name == "polynomial")
        assert choice.best.pu21 >= poly
        decoded = decode_still(choice.best.payload).reconstruct_nits(sdr)
        assert psnr_pu21(nits, decoded) == choice.best.pu21  # the reader's picture is the one scored
        if budget == 400:  # no grid model fits: the polynomial, or a gain layer if one pays
            assert choice.best.name.startswith(("polynomial", "gainmap")), choice.best.name
        if budget >= 2048:  # both domains of the gain map are tried
            names = {c.name.split("-c")[0] for c in choice.candidates}
            assert {"gainmap", "gainmap-pq"} <= names, names
    assert choice.best.pu21 > poly + 3
    with pytest.raises(ItmError, match="below the smallest payload"):
        choose_payload(sdr, nits, 200)


def test_polish_retries_the_best_residual_with_more_ranges_and_the_other_domain(pair):
    sdr, nits = pair
    cache: dict = {}
    plain = choose_payload(sdr, nits, 4096, fit_options=FAST, cache=cache, polish=False)
    polished = choose_payload(sdr, nits, 4096, fit_options=FAST, cache=cache)
    first = plain.best
    assert first.residual is not None, first.name  # a residual layer pays on this picture at 4 KB
    plain_names = {c.name for c in plain.candidates}
    assert plain_names <= {c.name for c in polished.candidates}  # the stages before are unchanged
    extra = [c for c in polished.candidates if c.name not in plain_names]
    assert extra, "no polish candidate"
    name, _, _, threshold, base, domain, scale, _ = first.residual
    for c in extra:  # all from the best residual's model, threshold and scale
        assert c.residual[0] == name and c.residual[3] == threshold and c.residual[6] == scale, c.name
    labels = {c.name for c in extra}
    if base == BASE_SDR_PLACED:
        assert any("-c0.005" in x for x in labels) and any("-c0.05" in x for x in labels), labels
    else:  # over a model the other domain is tried at every range
        assert any("-pq" in x for x in labels) == (domain == "log2"), labels
        assert {c.residual[5] for c in extra} == {"log2", "pq"}, labels
    assert polished.best.pu21 >= first.pu21
    assert len(polished.best.payload) <= 4096


def test_cli_max_bytes(tmp_path):
    out = tmp_path / "sdr.png"
    res = runner.invoke(app, ["encode", str(sample_path()), "-o", str(out), "--tm", "local", "--max-bytes", "400",
                              "--sidecar", "both"])
    assert res.exit_code == 0, res.output
    assert "rate:polynomial" in res.output and "<= 400" in res.output
    blob = read_png_chunks(out)["itMf"]
    assert len(blob) <= 400 and blob[4] == 2
    assert json.loads(runner.invoke(app, ["info", str(out)]).output)["kind"] == "grid"
    hdr = tmp_path / "hdr.exr"
    assert runner.invoke(app, ["transcode", str(out), "-o", str(hdr), "--quiet"]).exit_code == 0
    scores = json.loads(runner.invoke(app, ["eval", str(sample_path()), str(hdr), "--json"]).output)
    assert scores["pu21_psnr"] > 20
    # the sidecar carries the same payload and decodes the same pixels
    (tmp_path / "hdr2.exr").unlink(missing_ok=True)
    small = tmp_path / "small.png"
    res = runner.invoke(app, ["encode", str(sample_path()), "-o", str(small), "--max-bytes", "100"])
    assert res.exit_code == 2 and "below the smallest payload" in res.output and "--max-bytes" in res.output
    assert not small.exists() and not list(tmp_path.glob("*.tmp*"))


def test_still_vectors_regenerate_and_decode():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", SIDECAR / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = mod.build_still_vectors()
    vec = SIDECAR / "vectors"
    for name, data in built.items():
        if name.endswith(".bin") or name.endswith(".json"):
            # the AVIF inside is this libavif build's; the pixels below are what must hold
            assert name.startswith("still_") and (vec / name).exists()
    manifest = json.loads((vec / "still_manifest.json").read_text())
    for entry in manifest["vectors"]:
        raw = (vec / entry["file"]).read_bytes()
        if "error_contains" in entry:
            with pytest.raises(WeightFormatError, match=entry["error_contains"]):
                decode_still(raw)
            continue
        sdr = np.load(vec / entry["sdr"])
        expected = np.load(vec / entry["expected"])
        got = decode_still(raw).reconstruct_nits(sdr)
        assert got.dtype == np.float32 and np.array_equal(got, expected), entry["file"]


def test_grid_sizes_tried_centre_on_the_budget_with_a_neighbour_each_side():
    assert grid_sizes_for(2048) == ()
    assert grid_sizes_for(4096) == ("XS",)
    assert grid_sizes_for(8192) == ("S", "XS", "M")
    assert grid_sizes_for(16384) == ("M", "S", "L")
    assert grid_sizes_for(32768) == ("L", "M")
    assert all(size in GRID_SIZES for b in (4096, 8192, 16384, 32768, 1 << 20) for size in grid_sizes_for(b))
    # every size tried is an existing grid size and the sizes grow with the budget
    order = list(GRID_SIZES)
    assert [order.index(grid_sizes_for(b)[0]) for b in (4096, 8192, 16384, 32768)] == sorted(
        order.index(grid_sizes_for(b)[0]) for b in (4096, 8192, 16384, 32768))
