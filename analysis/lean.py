"""rows.parquet read a group of cells at a time: the cell table computed as it goes, and only the
per-run columns that the later stages read kept in memory (issue 25: the analysis of 10⁷ rows
within 2 GB).

Every stage after the cell table reads the runs through their durations alone (survival curves,
scaling fits, pairwise comparisons, sanity flags: `escape_step`, `escaped`, the SOSP and gap
pairs, `diverged`, `seed`, `final_step`, by `cell_id`); their parameters come from the cell table.
So the file is read in batches of rows (pyarrow's `iter_batches`), the rows of the cells each
batch holds whole are summarised by analysis.cells.cell_summaries exactly as the whole table would
be (every summary is per cell), and the lean columns are kept. Memory then grows with the rows by
the lean columns only (about 30 bytes a row against 330 for the whole frame at 53 columns).

Two passes: the first reads `cell_id` and the columns nothing declares, to learn which of those
vary within a cell (analysis.schema.split_columns looks at the whole table); the second does the
rest. A table whose cells' rows are not each in one run of consecutive rows (one written by hand),
one with the preconditioner's tracking error (its β₂ scans read the parameters per run), a tuned
sweep's (analysis.tuned reads budgets per run) or one that stores a pandas index of its own is read
whole, as before (`lean_rows` returns None).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from .cells import DURATION_COLUMNS, cell_summaries
from .schema import declared_scope, split_by

BATCH_ROWS = 1 << 16
LEAN_COLUMNS = ("cell_id", *DURATION_COLUMNS, "diverged")
WHOLE_IF = ("tracking_error_mean",)       # analysis.tracking_error reads parameters per run
ADDED = ("problem.name", "optimizer.name")  # analysis.load.check_rows adds them where missing


class NotGrouped(Exception):
    """A cell's rows are not consecutive in the file."""


@dataclass(frozen=True)
class Lean:
    """rows: the lean columns of every run; cells: analysis.cells.cell_summaries of the whole table
    (unlabelled); split: analysis.schema.split_columns of the whole table; per_run:
    analysis.cells.per_run_columns of it; notes: analysis.load.check_rows's."""
    rows: pd.DataFrame
    cells: pd.DataFrame
    split: tuple
    per_run: list
    notes: list


def lean_rows(path, check) -> Lean | None:
    """The file at `path` read lean; `check` is analysis.load.check_rows. None where it must be read
    whole (see the module's docstring)."""
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    stored_index = [c for c in (source.schema_arrow.pandas_metadata or {}).get("index_columns", [])
                    if isinstance(c, str)]
    if "cell_id" not in names or source.metadata.num_rows == 0 or any(c in names for c in WHOLE_IF) or stored_index:
        return None                           # (a stored index becomes the frame's: read whole, as before)
    columns = names + [c for c in ADDED if c not in names]
    try:
        undeclared_run = _varying_within_cells(source, [c for c in names if declared_scope(c) is None
                                                        and c != "cell_id"])
        split = split_by(columns, undeclared_run.__contains__)
        summarised = _summarised(source.schema_arrow, split)
        return _read(source, str(path), check, split, summarised)
    except NotGrouped:
        return None


def _chunks(source: pq.ParquetFile, columns: list[str]):
    """Frames of consecutive rows, each holding every row of its cells (a cell cut by a batch's end
    is carried into the next); NotGrouped where a cell's rows come back after another cell's."""
    done: set = set()
    carry = None
    batches = source.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    while True:
        batch = next(batches, None)
        table = carry if batch is None else (pa.Table.from_batches([batch]) if carry is None
                                             else pa.concat_tables([carry, pa.Table.from_batches([batch])]))
        if table is None or not len(table):
            return
        ids = table.column("cell_id").to_numpy(zero_copy_only=False)
        if batch is None:
            end = len(table)
        else:
            starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            end = int(starts[-1]) if len(starts) else 0          # the last cell may go on
        carry = table.slice(end) if end < len(table) else None
        if end:
            whole = ids[:end]
            seen = set(pd.unique(whole))
            if seen & done:
                raise NotGrouped
            done |= seen
            yield _frame(table.slice(0, end))
        if batch is None:
            return


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(strings_to_categorical=True, self_destruct=True, split_blocks=True)


def _varying_within_cells(source, undeclared: list[str]) -> set:
    """The undeclared columns that vary within some cell (split_columns's test, over the whole file)."""
    if not undeclared:
        for _ in _chunks(source, ["cell_id"]):              # the order of the rows checked all the same
            pass
        return set()
    varying = set()
    for chunk in _chunks(source, ["cell_id", *undeclared]):
        for column in undeclared:
            if column in varying:
                continue
            values = chunk[column]
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(object)
            if (values.groupby(chunk["cell_id"], observed=True, sort=False).nunique(dropna=False) > 1).any():
                varying.add(column)
    return varying


def _summarised(schema: pa.Schema, split) -> list[str]:
    """analysis.cells.summarised_columns from the file's types: a numeric pandas column is an Arrow
    integer or float one (with or without nulls)."""
    _, declared_run, undeclared_run = split
    numeric = {f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    return [c for c in declared_run + undeclared_run if c not in DURATION_COLUMNS and c not in ("diverged",)
            and c in numeric]


def _read(source, where: str, check, split, summarised) -> Lean:
    parts, lean, notes = [], [], None
    equal = {(a, b): True for i, a in enumerate(summarised) for b in summarised[i + 1:]}
    for chunk in _chunks(source, source.schema_arrow.names):
        chunk, said = check(chunk, where)
        notes = said if notes is None else notes
        parts.append(cell_summaries(chunk, split, summarised))
        values = {c: chunk[c].to_numpy(float) for c in summarised}
        for (a, b), same in equal.items():
            if same:
                equal[a, b] = np.array_equal(values[a], values[b], equal_nan=True)
        lean.append(chunk[[c for c in LEAN_COLUMNS if c in chunk]])
        del chunk, values
    cells = pd.concat(parts) if len(parts) > 1 else parts[0]
    rows = _concat(lean)
    # Arrow's allocator keeps what the batches used (a row group's columns, 0.3 GiB at 10⁶-row
    # groups) for reuse by Arrow alone: handed back, so that the later stages' peaks do not add to it.
    pa.default_memory_pool().release_unused()
    return Lean(rows, cells, split, _groups(summarised, equal), notes or [])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The lean chunks as one frame, a column at a time, each chunk's column freed once joined (the
    chunks and the frame are never both whole); cell_id stays categorical (its categories in order
    of appearance, as reading the whole file gives them)."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    columns = {}
    for column in list(frames[0].columns):
        if column == "cell_id":
            columns[column] = pd.Series(union_categoricals([f[column].astype("category") for f in frames]))
        else:
            columns[column] = pd.concat([f[column] for f in frames], ignore_index=True)
        for frame in frames:
            del frame[column]
    return pd.DataFrame(columns, copy=False)


def _groups(columns: list[str], equal: dict) -> list:
    """analysis.cells.per_run_columns from the pairwise equalities over every run."""
    groups: list[list[str]] = []
    for column in columns:
        same = next((g for g in groups if equal[g[0], column]), None)
        if same is None:
            groups.append([column])
        else:
            same.append(column)
    return [g[0] if len(g) == 1 else tuple(g) for g in groups]
