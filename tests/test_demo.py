"""The README's first command (``itmfilter demo``) end to end on the built-in sample:
the still part and the video part (real HDR10 master, encode, transcode, decoded file)."""

from typer.testing import CliRunner

from itmfilter.cli import app
from itmfilter.media.video import probe_video


def test_demo_runs_both_parts_and_the_mlp_beats_the_polynomial(tmp_path):
    # a short still fit, a short grid fit and the fast search (the video part's default encode is
    # a grid under the 64 kbit/s cap, whose fit of the encoder's steps, then 1800, was ~115 of this test's 124 s on 2 cores)
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps", "60", "--video-seconds", "1",
                                   "--grid-steps", "150", "--search", "fast", "--quiet"])
    assert res.exit_code == 0, res.output
    still = {line.split()[0]: line.split() for line in res.output.splitlines() if line[:1].isalpha()}
    assert float(still["itmfilter-mlp"][2]) > float(still["mmr3-poly"][2])  # PU21-PSNR
    assert (tmp_path / "sample-sdr.png").exists() and (tmp_path / "sample-hdr.exr").exists()
    info = probe_video(tmp_path / "pan-hdr10.mkv")
    assert info.is_hdr and info.color_primaries == "bt2020" and info.color_trc == "smpte2084"
    assert "'covered'" in res.output  # the default video track (grid, under the 64 kbit/s cap): the pan in shift runs
    rows = {line[:34].strip(): line[34:].split() for line in res.output.splitlines()
            if line.startswith(("itmfilter (decoded", "per-frame MMR3"))}
    assert float(rows["itmfilter (decoded HDR10 file)"][0]) > float(rows["per-frame MMR3 polynomial"][0])
