"""A worker's computed cells, written a block at a time (the store's layout: workflows/store.py).

A cell of a large grid takes milliseconds; one file per cell cost more than the cell (37 KB of
which 31 KB were the parquet footer, about 20 object-store requests to write). A worker keeps its
computed cells and writes them together: once FLUSH_SECONDS have passed since the first of them
finished (a thread of the writer sees to it while the next cell runs, however long that one
takes), once MAX_CELLS are waiting, and when its pack ends. One file per block (per kind of row
table: cells whose columns differ go to separate files), each cell summarised on the way
(core.survival.cell_summary: the index and cells.parquet read it, nobody re-reads the rows).

What a kill can lose is the cells waiting to be written: at most FLUSH_SECONDS of one worker's
finished work, besides the cell it is computing; a written block is whole or absent.
"""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa

from .core.survival import cell_summary
from .store import Store

FLUSH_SECONDS = 3.0       # a finished cell is written within this (and a kill loses at most these)
MAX_CELLS = 5000          # nor more cells than this in one file


def block_prefix(run: str, pack: int | str) -> str:
    """The names of the blocks a pack writes begin with this: a retried trial finds what its
    earlier attempt wrote by listing them (workflows/tune_runner.py)."""
    return f"{run}-{pack}-"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class BlockWriter:
    """Collects computed cells and writes them a block at a time; use as a context manager (the
    end writes what is waiting, also on an exception or Ctrl-C: the cells finished are kept).
    `on_written(cell_ids, engine_seconds)` is told of each block written, from the thread that
    wrote it; `take_written()` gives the same to the caller's thread (Tune's reports)."""

    def __init__(self, store: Store, prefix: str, on_written=None, flush_seconds: float | None = None,
                 max_cells: int | None = None):
        self.store, self.prefix, self.on_written = store, prefix, on_written
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.max_cells = MAX_CELLS if max_cells is None else max_cells
        self.waiting: dict[tuple, _Pending] = {}
        self.first_waiting: float | None = None
        self.count = 0
        self.blocks = 0
        self.told: list[tuple[list[str], float]] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="saddlescape-blocks", daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, key: str, seeds: int, columns: dict, trace: pd.DataFrame | None, seconds: float):
        """A computed cell: `columns` its row table as the engine gives it (engine.Result.columns:
        column -> array, or a value all its runs share)."""
        # Kept as they are (arrays, and values the runs share) and made into columns when the block
        # is written: making frames of the cells and concatenating those cost 4-5 ms a cell, about
        # what a small cell's engine takes; repeating each shared value into an array here, 0.05 ms.
        n = len(columns["seed"])
        kind = tuple((name, _dtype(value)) for name, value in columns.items())
        entry = {"cell_id": key, "seeds": seeds, "n_rows": n, "has_trace": trace is not None,
                 "summary": cell_summary(columns, seconds)}
        self._raise()
        with self.lock:
            pending = self.waiting.setdefault(kind, _Pending([], [], []))
            pending.rows.append(columns)
            pending.cells.append(entry)
            if trace is not None:
                pending.traces.append(trace)
            self.count += 1
            if self.first_waiting is None:
                self.first_waiting = time.monotonic()
            if self.count >= self.max_cells or time.monotonic() - self.first_waiting >= self.flush_seconds:
                self._flush()

    def flush(self):
        """Write every waiting cell now."""
        self._raise()
        with self.lock:
            self._flush()

    def close(self):
        """Stop the watch and write what is waiting."""
        self.stop.set()
        self.thread.join()
        with self.lock:
            self._flush()
        self._raise()

    def take_written(self) -> list[tuple[list[str], float]]:
        """The blocks written since the last call: (cell ids, engine seconds) each."""
        with self.lock:
            told, self.told = self.told, []
        return told

    def _watch(self):
        while not self.stop.wait(min(0.5, self.flush_seconds / 4)):
            with self.lock:
                due = self.first_waiting is not None and time.monotonic() - self.first_waiting >= self.flush_seconds
                if due:
                    try:
                        self._flush()
                    except Exception as error:          # noqa: BLE001 - raised in the caller's thread
                        self.error = error
                        return

    def _raise(self):
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _flush(self):
        """Write every waiting cell (a block per kind of row table); the caller holds the lock."""
        for kind, pending in list(self.waiting.items()):
            block = f"{self.prefix}{self.blocks:06d}-{uuid.uuid4().hex[:8]}"
            self.blocks += 1
            counts = [cell["n_rows"] for cell in pending.cells]
            rows = pa.table({column: pa.array(_column([cell[column] for cell in pending.rows], dtype, counts),
                                              from_pandas=True)
                             for column, dtype in kind})
            traces = (pa.Table.from_pandas(pd.concat(pending.traces, ignore_index=True), preserve_index=False)
                      if pending.traces else None)
            self.store.write_block(block, rows, pending.cells, traces)
            del self.waiting[kind]
            keys = [c["cell_id"] for c in pending.cells]
            seconds = sum(c["summary"].get("engine_seconds", 0.0) for c in pending.cells)
            self.told.append((keys, seconds))
            if self.on_written is not None:
                self.on_written(keys, seconds)
        self.first_waiting, self.count = None, 0


# The dtype np.full(n, value) gives each type of value the engine shares across a cell's runs.
_SHARED_DTYPES = {float: np.dtype(float).str, bool: np.dtype(bool).str, str: np.dtype(object).str,
                  type(None): np.dtype(object).str}
_INT64 = np.dtype(np.int64).str


def _dtype(value) -> str:
    """The dtype (its .str) of the column `value` makes: an array's own, or that of the array a
    DataFrame repeats a single value into (`_repeated`)."""
    if isinstance(value, np.ndarray):
        return value.dtype.str
    shared = _SHARED_DTYPES.get(type(value))
    if shared is not None:
        return shared
    if type(value) is int and -2**63 <= value < 2**63:
        return _INT64
    return _repeated(value, 1).dtype.str


def _column(values: list, dtype: str, counts: list[int]) -> np.ndarray:
    """One column of a block: each cell's array, or its shared value repeated once per row (the
    same array as each value repeated by `_repeated`, then all concatenated)."""
    if all(isinstance(value, np.ndarray) for value in values):
        return np.concatenate(values)
    if not any(isinstance(value, np.ndarray) for value in values):
        shared = np.empty(len(values), dtype=np.dtype(dtype))
        shared[:] = values
        return np.repeat(shared, counts)
    return np.concatenate([_repeated(value, n) for value, n in zip(values, counts)])


def _repeated(value, n: int) -> np.ndarray:
    """A column as an array of n values, as a DataFrame would hold it (text and None as objects)."""
    if isinstance(value, np.ndarray):
        return value
    if value is None or isinstance(value, str):
        return np.full(n, value, dtype=object)
    return np.full(n, value)


class _Pending:
    __slots__ = ("rows", "cells", "traces")

    def __init__(self, rows, cells, traces):
        self.rows, self.cells, self.traces = rows, cells, traces
