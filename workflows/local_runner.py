"""Cells run in this process, one after another, without Ray (`--backend local`, run_sweep's
backend="local"), and the one function that computes and stores a cell, shared with the Ray
Tune trainable (workflows/tune_runner.py).

A cell that raises is recorded in the store (failed/<cell_id>.json) and retried up to
`max_failures` times, as Tune retries a failed trial; the other cells go on. Cells are written a
block at a time (workflows/blocks.py), on either backend.

The cells run on one torch thread, as each Ray trial does (workflows/tune_runner.py): torch's
default of one intra-op thread per core made the README's loss-defined digits example take
26-39 s on 2 busy cores against 3.8-4.5 s on one thread (the threads contend with the cell's
own small operations and with everything else on the machine). The caller's setting is restored
afterwards (a notebook keeps its own).
"""
from __future__ import annotations

import contextlib
import time
import traceback
from typing import NamedTuple

from . import progress
from .cell import cell_id
from .engine import simulate
from .blocks import BlockWriter, block_prefix
from .store import Store

TRIAL_THREADS = 1            # torch intra-op threads of a cell, on either backend: a cell owns one core


@contextlib.contextmanager
def trial_threads():
    """torch's intra-op threads set to TRIAL_THREADS for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(TRIAL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Outcome(NamedTuple):
    cell_id: str
    engine_seconds: float
    error: str | None            # "<Type>: message" when the engine raised


def compute(cell: dict, store: Store, writer: BlockWriter) -> Outcome:
    """Simulate one cell and give its rows to `writer` (written with its block); an exception is
    recorded as the cell's failure (failed/<cell_id>.json), never raised."""
    key = cell_id(cell)
    try:
        result = simulate(cell)
    except Exception as e:                                      # noqa: BLE001 - recorded, not swallowed
        error = f"{type(e).__name__}: {e}"
        store.record_failure(cell, key, error + "\n" + traceback.format_exc())
        return Outcome(key, 0.0, error)
    writer.add(key, cell["seeds"], result.columns, result.trace, result.seconds)
    return Outcome(key, result.seconds, None)


def run_cells(cells: list[dict], store: Store, *, run: str, max_failures: int = 2, echo=print, every: float = 2.0,
              on_cell=None) -> float:
    """Every cell in turn, on TRIAL_THREADS torch threads (the caller's setting restored after);
    returns the summed engine seconds. Progress lines as the Ray runner's. The cells are written
    a block at a time (workflows/blocks.py), named after `run`.
    `on_cell(cell_id)`: told of each cell once it is stored, as the Ray runner's Progress tells
    it (the experiment trackers, workflows/trackers.py)."""
    with trial_threads():
        return _run_cells(cells, store, run, max_failures, echo, every, on_cell)


def _run_cells(cells, store, run, max_failures, echo, every, on_cell) -> float:
    start, last, engine, finished, first_at = time.monotonic(), 0.0, 0.0, 0, None
    stored = (lambda keys, seconds: [on_cell(key) for key in keys]) if on_cell is not None else None
    with BlockWriter(store, block_prefix(run, "local"), stored) as writer:   # a Ctrl-C too: what finished is kept
        for cell in cells:
            for _attempt in range(max_failures + 1):
                outcome = compute(cell, store, writer)
                if outcome.error is None:
                    break
            engine += outcome.engine_seconds
            finished += 1
            now = time.monotonic()
            first_at = now - start if first_at is None else first_at
            if now - last >= every or finished == len(cells):
                last = now
                echo(progress.line(finished, len(cells), now - start, first_at))
    return engine
