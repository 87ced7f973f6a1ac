"""Write output files whole or not at all, and never over an input.

A writer gets a temporary path beside the final one (same folder, so the final
``os.replace`` is an atomic rename on one file system). The temporary name keeps the
real extension at its end (``.out.png.partial-1234.png``) so that writers which pick
the format from the extension (Pillow, PyAV, OpenEXR) still work.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from itmfilter.errors import ItmError

_PARTIAL = re.compile(r"^\..+\.partial-(\d+)(\.[^.]*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a number we cannot ask about): leave it
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.partial-PID.EXT``) that runs killed before they
    could clean up (SIGKILL, power loss) left in ``folder``: those whose process no longer
    exists on this machine. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    return removed


def check_writable(folder: str | os.PathLike, output: str | os.PathLike) -> None:
    """Raise :class:`ItmError` naming ``output`` unless a file can be created in ``folder``.

    Tried, not inferred from the mode bits: root ignores those, while a read-only mount or
    a full disk stops everyone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ItmError(output, f"the output folder {str(folder)!r} does not exist",
                       "create it first or choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".itmfilter-probe-", dir=folder)
    except OSError as exc:
        raise ItmError(output, f"the output folder {str(folder)!r} is not writable ({exc.strerror or exc})",
                       "choose a folder you can write to, or change its permissions") from None
    os.close(fd)
    os.unlink(probe)


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
    folder does not exist or is not writable. Temporaries that killed runs left in the
    folder are removed first (:func:`remove_stale_partials`).
    """
    final = Path(path)
    for source in inputs:
        if _same_file(final, Path(source)):
            raise ItmError(
                final, "the output is the same file as an input",
                "choose another output name; inputs are never overwritten",
            )
    folder = final.parent
    check_writable(folder, final)
    remove_stale_partials(folder)
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
