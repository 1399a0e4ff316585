"""The progress line of a run: cells done, time elapsed, and an estimate of the time left once
it means something.

The first cells of a run pay its start-up (Ray's start, the workers' imports, the compiled
kernel's load: about 12 s on 2 cores for cells that then take 0.05 s each), so a rate measured
from the start said 3000 s left for a sweep that ended 15 s later. The rate is measured from the
first finished cell instead, and the estimate shown only once MIN_CELLS more have finished.
"""
from __future__ import annotations

from .core.suggest import plural

MIN_CELLS = 3          # cells finished after the first before the time left is estimated


def line(done: int, total: int, elapsed: float, first_at: float | None) -> str:
    """'  12/250 cells  elapsed 14s  left ~9s' (elapsed and first_at: seconds since the start,
    first_at when the first cell finished); without 'left' until MIN_CELLS cells have finished
    after the first, or when every cell is done."""
    text = f"  {done}/{total} {plural(total, 'cell')}  elapsed {elapsed:.0f}s"
    since = done - 1
    if first_at is None or since < MIN_CELLS or done >= total:
        return text
    rate = (elapsed - first_at) / since
    return f"{text}  left ~{rate * (total - done):.0f}s"
