"""A worker's computed cells, written a block at a time (the store's layout: workflows/store.py).

A cell of a large grid takes milliseconds; one file per cell cost more than the cell (37 KB of
which 31 KB were the parquet footer, about 20 object-store requests to write). A worker keeps its
computed cells and writes them together once FLUSH_SECONDS have passed since the first of them,
or MAX_CELLS are waiting, and at the end of its pack: one file per block (per kind of row table:
cells whose columns differ go to separate files), each cell summarised on the way
(core.survival.cell_summary: the index and cells.parquet read it, nobody re-reads the rows).

What a kill can lose is the cells waiting to be written: at most FLUSH_SECONDS of one worker's
work (the cells "in flight"); a written block is whole or absent.
"""
from __future__ import annotations

import time
import uuid

import pandas as pd
import pyarrow as pa

from .core.survival import cell_summary
from .store import Store

FLUSH_SECONDS = 3.0       # a worker's cells are written at least this often (and a kill loses at most these)
MAX_CELLS = 5000          # nor more cells than this in one file


def block_prefix(run: str, pack: int | str) -> str:
    """The names of the blocks a pack writes begin with this: a retried trial finds what its
    earlier attempt wrote by listing them (workflows/tune_runner.py)."""
    return f"{run}-{pack}-"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class BlockWriter:
    """Collects computed cells; `add` writes a block when one is due, `flush` writes what is
    waiting. `on_written(cell_ids, engine_seconds)` is told of each block written."""

    def __init__(self, store: Store, prefix: str, on_written=None, flush_seconds: float = FLUSH_SECONDS,
                 max_cells: int = MAX_CELLS):
        self.store, self.prefix, self.on_written = store, prefix, on_written
        self.flush_seconds, self.max_cells = flush_seconds, max_cells
        self.waiting: dict[tuple, _Pending] = {}
        self.first_waiting: float | None = None
        self.count = 0
        self.written = 0

    def add(self, key: str, seeds: int, rows: pd.DataFrame, trace: pd.DataFrame | None, seconds: float):
        kind = (tuple(rows.columns), tuple(map(str, rows.dtypes)))
        pending = self.waiting.setdefault(kind, _Pending([], [], []))
        pending.rows.append(rows)
        pending.cells.append({"cell_id": key, "seeds": seeds, "n_rows": len(rows),
                              "has_trace": trace is not None, "summary": cell_summary(rows, seconds)})
        if trace is not None:
            pending.traces.append(trace)
        self.count += 1
        if self.first_waiting is None:
            self.first_waiting = time.monotonic()
        if self.count >= self.max_cells or time.monotonic() - self.first_waiting >= self.flush_seconds:
            self.flush()

    def flush(self):
        """Write every waiting cell (a block per kind of row table)."""
        for pending in self.waiting.values():
            name = f"{self.prefix}{self.written:06d}-{uuid.uuid4().hex[:8]}"
            self.written += 1
            # One conversion per block: pyarrow's per-table cost (2 ms for a cell's 60 columns) is
            # most of a small cell's; frames of one kind concatenate with their dtypes.
            rows = pa.Table.from_pandas(pd.concat(pending.rows, ignore_index=True), preserve_index=False)
            traces = (pa.Table.from_pandas(pd.concat(pending.traces, ignore_index=True), preserve_index=False)
                      if pending.traces else None)
            self.store.write_block(name, rows, pending.cells, traces)
            if self.on_written is not None:
                self.on_written([c["cell_id"] for c in pending.cells],
                                sum(c["summary"].get("engine_seconds", 0.0) for c in pending.cells))
        self.waiting, self.first_waiting, self.count = {}, None, 0


class _Pending:
    __slots__ = ("rows", "cells", "traces")

    def __init__(self, rows, cells, traces):
        self.rows, self.cells, self.traces = rows, cells, traces
