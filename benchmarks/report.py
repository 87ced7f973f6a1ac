"""The benchmarks' common ending: a markdown report printed and, with ``--out``, written."""

from __future__ import annotations

from pathlib import Path


def write_report(lines: list[str], out: Path | None) -> str:
    """``lines`` joined with newlines (and one at the end), printed, and written to ``out``
    when given; returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)
    return text
