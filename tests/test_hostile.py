"""Hostile and careless inputs (issue 15): each crafted here from real bytes and files.

Every case asserts what the README promises for bad input: a clean refusal (an
:class:`ItmError` in the library; one line and exit status 2 from the CLI), memory and
time bounded by the limits in :mod:`itmfilter.limits`, nothing partial left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard

from itmfilter.model.net import ModelConfig
from itmfilter.track import TrackFormatError
from itmfilter.track.codec import decode_delta_payload, decode_key_payload
from itmfilter.track.format import tensor_sizes

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SMALL = ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8))


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root."""
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def cli(*args, timeout: float = 300, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    """``itmfilter ARGS`` as a user runs it, in a fresh process."""
    return subprocess.run([PYTHON, "-m", "itmfilter.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 and one line on stderr that names each of ``words`` and no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], err[-3000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("itmfilter: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


# --------------------------------------------------------------------------- 1. zstd bombs


def _claiming_frame(size: int) -> bytes:
    """A tiny zstd frame whose header claims ``size`` bytes of content (and holds none)."""
    with_size = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * 1000)
    # frame header: magic, descriptor (FCS flag 3: 8-byte size), window, then the size
    descriptor = 0xC0 | 0x20  # 8-byte content size, single segment
    head = with_size[:4] + bytes([descriptor]) + size.to_bytes(8, "little")
    return head + b"\x01\x00\x00"  # one empty last raw block


def test_a_frame_claiming_64_gib_is_damaged_without_allocating():
    sizes = tensor_sizes(SMALL)
    bomb = _claiming_frame(64 << 30)
    assert len(bomb) <= 16 and zstandard.frame_content_size(bomb) == 64 << 30
    for decode in (lambda: decode_key_payload(1, bomb, sizes), lambda: decode_key_payload(2, bomb, sizes),
                   lambda: decode_delta_payload(bomb, np.zeros(sum(sizes), np.float32), sizes)):
        with pytest.raises(TrackFormatError, match="declares"):
            decode()


def test_a_real_bomb_expands_no_further_than_the_packet_allows():
    """A 256 MiB frame of zeros (a few KB compressed) costs the decoder no more memory than a
    packet's worth, with or without a declared content size."""
    proc = _run_child("""
        import io, resource, zstandard
        import numpy as np
        from itmfilter.model.net import ModelConfig
        from itmfilter.track.codec import decode_key_payload
        from itmfilter.track.format import TrackFormatError, tensor_sizes
        sizes = tensor_sizes(ModelConfig(coord_features=8, rgb_features=8, hidden=(16, 8)))
        for declare in (True, False):
            out = io.BytesIO()
            comp = zstandard.ZstdCompressor(level=3, write_content_size=declare)
            with comp.stream_writer(out, size=(256 << 20) if declare else -1, closefd=False) as w:
                for _ in range(256):
                    w.write(bytes(1 << 20))
            bomb = out.getvalue()
            assert len(bomb) < 100_000, len(bomb)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                decode_key_payload(1, bomb, sizes)
                raise SystemExit("decoded a bomb")
            except TrackFormatError as exc:
                print(declare, exc)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert grown < 64 << 10, f"memory grew by {grown} KiB"
        """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
