"""Errors a user can act on: which file, what is wrong, what to do.

Every error raised for bad input is an :class:`ItmError`; the CLI prints its one line
and exits with status 2. Nothing else in the package prints errors.
"""

from __future__ import annotations

import os


class ItmError(Exception):
    """A problem with a user's input or request.

    ``path`` is the file concerned (or ``None``), ``problem`` what was found, ``hint``
    what to do. ``str(err)`` is the one line shown to the user.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, hint: str = "") -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.path}: {self.problem}" if self.path else self.problem
        return f"{head}. {self.hint}" if self.hint else head
