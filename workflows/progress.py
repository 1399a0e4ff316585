"""The progress line of a run: cells done, time elapsed, and an estimate of the time left once
it means something.

The first cells of a run pay its start-up (Ray's start, the workers' imports, the compiled
kernel's load: about 12 s on 2 cores for cells that then take 0.05 s each), so a rate measured
from the start said 3000 s left for a sweep that ended 15 s later. The rate is measured from the
first report of finished cells instead, and the estimate shown only once MIN_CELLS more have
finished over at least MIN_SECONDS. Cells are stored a block at a time (workflows/blocks.py), so
a report can bring many at once: the rate counts the cells after the first report's, and never
over less than MIN_SECONDS (four cells a few milliseconds apart said "left ~0s" for 80 more).
"""
from __future__ import annotations

from .core.suggest import plural

MIN_CELLS = 3          # cells finished after the first report before the time left is estimated
MIN_SECONDS = 2.0      # and the time they took at least


def line(done: int, total: int, elapsed: float, first_at: float | None, first_done: int = 1) -> str:
    """'  12/250 cells  elapsed 14s  left ~9s' (elapsed and first_at: seconds since the start,
    first_at when the first cells were reported finished, first_done how many they were); without
    'left' until MIN_CELLS more have finished over MIN_SECONDS, or when every cell is done."""
    text = f"  {done}/{total} {plural(total, 'cell')}  elapsed {elapsed:.0f}s"
    since = done - first_done
    if first_at is None or since < MIN_CELLS or elapsed - first_at < MIN_SECONDS or done >= total:
        return text
    rate = (elapsed - first_at) / since
    return f"{text}  left ~{rate * (total - done):.0f}s"
