"""Write output files whole or not at all, and never over an input.

A writer gets a temporary path beside the final one (same folder, so the final
``os.replace`` is an atomic rename on one file system). The temporary name keeps the
real extension at its end (``.out.png.partial-1234.png``) so that writers which pick
the format from the extension (Pillow, PyAV, OpenEXR) still work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from itmfilter.errors import ItmError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` when the block succeeds.

    On any exception (``KeyboardInterrupt`` included) the temporary file is deleted and
    the exception re-raised, so ``path`` is either the complete new file or unchanged.
    Raises :class:`ItmError` if ``path`` is (resolves to) one of ``inputs``, or if its
    folder does not exist.
    """
    final = Path(path)
    for source in inputs:
        if _same_file(final, Path(source)):
            raise ItmError(
                final, "the output is the same file as an input",
                "choose another output name; inputs are never overwritten",
            )
    folder = final.parent
    if not folder.is_dir():
        raise ItmError(final, f"the output folder {str(folder)!r} does not exist",
                       "create it first or choose another output path")
    temp = folder / f".{final.name}.partial-{os.getpid()}{final.suffix}"
    try:
        yield temp
        if not temp.exists():
            raise ItmError(final, "the writer produced no file", "this is a bug; please report it")
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
