"""Training data and the built-in sample.

``fetch_scenes`` / ``split_scenes`` / ``views`` (in :mod:`itmfilter.data.fetch`) give real
HDR scenes from pinned registry packages; :func:`sample_path` is a small real HDR picture
shipped with the package (test split scene, CC0 Poly Haven, see ``LICENSE-sample.txt``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_NAME = "sample.exr"


def sample_path() -> Path:
    """Path of the built-in sample: half-float OpenEXR, linear BT.2020, ``whiteLuminance`` = 100.

    Read it with :func:`itmfilter.media.stills.read_hdr` (cd/m2, peak above 500).
    """
    return Path(str(resources.files("itmfilter.assets").joinpath(SAMPLE_NAME)))


def __getattr__(name):  # lazy: importing itmfilter.data must not pull numpy/tqdm paths early
    if name in ("Scene", "fetch_scenes", "split_scenes", "views", "SAMPLE_SCENE"):
        from itmfilter.data import fetch

        return getattr(fetch, name)
    raise AttributeError(name)
