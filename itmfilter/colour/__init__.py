"""Colour science for itmfilter: transfer functions, primaries, Y'CbCr, HDR10 metadata.

Pure numpy functions on channel-last ``(..., 3)`` arrays with explicit units (cd/m2,
normalised code values). Submodules:

* :mod:`.transfer` - PQ (ST 2084), HLG (BT.2100), BT.1886, sRGB, BT.709 curves.
* :mod:`.primaries` - BT.709 / BT.2020 / P3 primaries, RGB <-> XYZ <-> RGB matrices.
* :mod:`.ycbcr` - R'G'B' <-> Y'CbCr integer codes, chroma subsampling.
* :mod:`.hdr10` - ST 2086 / CTA-861.3 static metadata and MaxCLL / MaxFALL.
"""

from .hdr10 import *  # noqa: F403
from .hdr10 import __all__ as _hdr10_all
from .primaries import *  # noqa: F403
from .primaries import __all__ as _primaries_all
from .transfer import *  # noqa: F403
from .transfer import __all__ as _transfer_all
from .ycbcr import *  # noqa: F403
from .ycbcr import __all__ as _ycbcr_all

__all__ = [*_transfer_all, *_primaries_all, *_ycbcr_all, *_hdr10_all]
