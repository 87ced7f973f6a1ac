"""Progress bars: every long job shows a tqdm bar with a unit and an ETA, and ``quiet``
turns it off."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm


def progress_bar(total: int | None, *, unit: str, desc: str, quiet: bool, **kwargs) -> tqdm:
    """A tqdm bar counting ``unit`` (``frame``, ``step``, ``file``...) up to ``total`` (None:
    unknown, no ETA). Disabled when ``quiet``."""
    return tqdm(total=total, unit=unit, desc=desc, disable=quiet, **kwargs)


def step_bar(total: int, quiet: bool, desc: str) -> tuple[tqdm, Callable[[int, float], None]]:
    """A bar over adaptation steps and the ``(step, loss)`` callback that advances it (the
    loss shown every 20 steps)."""
    bar = progress_bar(total, unit="step", desc=desc, quiet=quiet, leave=False)

    def advance(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.2e}")

    return bar, advance
