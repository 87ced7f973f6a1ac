"""An encode's bytes do not depend on torch's thread count: a Ray worker (one thread), a
local run (every core) and a resumed run must write the same packets. On an Intel Xeon,
MKL split a long matrix product between threads and the 1- and 2-thread encodes of this
clip differed in their KEY packets (frames 0, 6, 12 and 20); the package turns on MKL's
strict reproducibility and sums the polynomial's normal equations in NumPy. Both checks
run in a fresh interpreter, where ``import itmfilter`` comes before torch's first product,
as it does for the command line and for Ray's workers."""

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
import itmfilter  # first, as the command line does
import torch
from itmfilter.data.testmedia import make_master_from_arrays
from itmfilter.encode.video import VideoEncodeOptions, encode_video
from itmfilter.model.net import fit_mmr_prior
from itmfilter.track.carriage import load_track
from pathlib import Path
import numpy as np

work = Path(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from twoshots import CUT, frames
rng = np.random.default_rng(3)
sdr = torch.from_numpy(rng.random((40000, 3)).astype(np.float32))
pq = torch.from_numpy(rng.random((40000, 3)).astype(np.float32))
priors = []
for threads in (1, 2):
    torch.set_num_threads(threads)
    priors.append(fit_mmr_prior(sdr, pq))
assert torch.equal(priors[0], priors[1]), "the polynomial's fit depends on the thread count"

master = work / "master.mkv"
make_master_from_arrays(master, frames(), fps=24, codec="hevc", peak_nits=1000)
for model, cap in (("mlp", 64), ("grid", None)):
    # the grid without a cap: its fit, not the refinement and scene searches of a capped
    # encode, which take ~45 s on this clip's first shot
    opts = VideoEncodeOptions(first_steps=40, warm_steps=5, preset="ultrafast", key_seconds=0.5, model=model,
                              grid_steps=200, max_kbps=cap)
    source = master
    if model == "grid":  # its first shot alone
        source = work / "shot.mkv"
        make_master_from_arrays(source, (f for _, f in zip(range(CUT), frames())), fps=24, codec="hevc",
                                peak_nits=1000)
    tracks = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = work / f"{model}{threads}.mp4"
        encode_video(source, out, options=opts, quiet=True)
        tracks.append(load_track(out).packets)
    differ = [i for i in tracks[0] if tracks[0][i] != tracks[1].get(i)]
    assert not differ and tracks[0].keys() == tracks[1].keys(), f"{model}: packets {differ} differ between 1 and 2 threads"
    print(model, len(tracks[0]))
"""


def test_encode_bytes_do_not_depend_on_the_thread_count(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(REPO / "tests")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[::2] == ["mlp", "grid"], done.stdout


def test_the_polynomial_s_sums_match_the_matrix_product():
    import torch

    from itmfilter.model.net import _gram, mmr_features

    rng = np.random.default_rng(5)
    x = mmr_features(torch.from_numpy(rng.random((5000, 3))))
    y = torch.from_numpy(rng.random((5000, 3)))
    xtx, xty = _gram(x, y)
    assert xtx.dtype == xty.dtype == torch.float64
    np.testing.assert_allclose(xtx.numpy(), (x.T @ x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(xty.numpy(), (x.T @ y).numpy(), rtol=1e-12)
