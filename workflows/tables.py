"""The sweep's tables, from what its store holds (workflows/store.py):

    rows.parquet     every row of the sweep's stored cells, a block at a time (grouped by cell)
    cells.parquet    one row per cell of the sweep: its parameters, status (ok | failed | missing),
                     error, its summary (core.survival.cell_summary, from the index), and where its
                     rows are in rows.parquet (rows_start, rows_count)
    traces.parquet   the traces of the cells that asked for one

The rows are streamed: each block is read, given the table's columns and written on, so the
driver holds one block at a time, never the sweep. The tables carry a fingerprint of what they
were made from (each cell's status and where its rows are stored); when it is the stored
tables' own, nothing is rewritten. `collect` writes the new tables to temporary files (a Ctrl-C
there leaves the stored tables as they were); `publish` renames them into place, then writes
meta.json, the last (it describes them).

The tables read back as the one-file-per-cell layout's did: text columns as pandas' "string",
a boolean column that some cells lack as "boolean", a whole-number column that some cells lack
as float (pandas' concatenation of the cells' frames, which made them before).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .core.rows import flatten_cell
from .store import INDEX_COLUMNS, META_KEY, Index, Store, take_releasing

STATUS = ("status", "error")
# cells.parquet's counts, as before the summaries were stored (whole numbers where every cell has them).
COUNTS = ("n_seeds", "n_escaped", "n_diverged")
FIRST_SUMMARY = (*COUNTS, "mean_escape_step_of_escaped", "engine_seconds")
LOCATION = ("rows_start", "rows_count")
TABLES = ("rows.parquet", "cells.parquet", "traces.parquet")
CELLS_AT_ONCE = 2_000          # cells flattened at once for cells.parquet's parameters
ROWS_AT_ONCE = 16_384          # a block's rows read and written to rows.parquet at once (a row group)


@dataclass
class Tables:
    """The tables of a sweep's cells, made (in temporaries) or found up to date."""
    counts: dict                     # total, done, failed, missing
    done: set                        # ids of the cells with results
    fingerprint: str
    temporaries: dict                # table name -> temporary path in the store ({} when up to date)
    statuses: list                   # (cell_id, status), the sweep's order: what a report depends on
    engine_seconds: dict             # cell_id -> engine seconds, of the cells with results

    @property
    def up_to_date(self) -> bool:
        return not self.temporaries


def collect(store: Store, cells: dict, index: Index | None = None) -> Tables:
    """The tables of `cells` (id -> cell, in the sweep's order) from `store`: found up to date, or
    written to temporary files (publish puts them in place). Writes nothing else."""
    own = index is None               # the index read here is this function's alone: let go as it is used
    index = index if index is not None else store.index()
    store.save_index(index)
    if store.local:                 # a killed run's temporaries (a local folder is one run's at a time)
        for name in store._listed(""):
            if name.startswith(TABLES) and ".tmp-" in name:
                store.delete(name)
    done = index.done(cells)
    failed = _failures(store, cells.keys() - done)
    statuses = [(key, "ok" if key in done else "failed" if key in failed else "missing") for key in cells]
    counts = {"total": len(cells), "done": len(done), "failed": len(failed),
              "missing": len(cells) - len(done) - len(failed)}
    ok = [key for key in cells if key in done]
    rows = pa.array([index.positions[key] for key in ok], type=pa.int64())
    if own:
        holder, index.table = [index.table], None
        where = take_releasing(holder, rows)
    else:
        where = index.table.take(rows)
    del index, rows                 # `where` has what the tables need (the caller may keep its own)
    fingerprint = _fingerprint(statuses, where, failed)
    seconds = dict(zip(ok, where.column("engine_seconds").to_pylist())) if "engine_seconds" in where.column_names \
        else {key: 0.0 for key in ok}
    tables = Tables(counts, set(done), fingerprint, {}, statuses, seconds)
    if _stored_fingerprint(store) == fingerprint:
        return tables
    try:
        order = _block_order(where)
        rows_at = _write_rows(store, where, order, tables)
        _write_traces(store, where, order, tables)
        _write_cells(store, cells, statuses, where, failed, rows_at, tables)
    except BaseException:
        discard(store, tables)
        raise
    return tables


def publish(store: Store, tables: Tables, meta: dict):
    """The tables into place (rows, traces, then cells.parquet), then meta.json; an analysis
    written for other cells is marked out of date. Tables found up to date are left alone."""
    if not tables.up_to_date:
        changed = _stored_statuses(store) != tables.statuses
        for name in ("rows.parquet", "traces.parquet", "cells.parquet"):
            temporary = tables.temporaries.get(name)
            if temporary is not None:
                _place(store, temporary, name)
            else:                           # a table with nothing in it is absent, never left over
                store.delete(name)
        tables.temporaries.clear()
        store.clear_failures(tables.done)      # a cell that failed once and was then stored
        if changed:
            store.mark_analysis_stale(tables.counts)
    store.write_json("meta.json", {**meta, "cells": {**meta.get("cells", {}), **tables.counts}})


def _place(store: Store, temporary: str, name: str):
    """A table's temporary renamed to its name (on an object store: copied, then deleted)."""
    store.fs.move(store.path(temporary), store.path(name))


def discard(store: Store, tables: Tables):
    for temporary in tables.temporaries.values():
        if temporary is not None:
            store.delete(temporary)
    tables.temporaries.clear()


# --- what the tables are made from ----------------------------------------------------------------

def _failures(store: Store, keys: set) -> dict[str, str]:
    """{cell_id: error} of the failure records of `keys` (one listing; a record read per failed cell)."""
    listed = store._listed("failed")
    out = {}
    for key in keys:
        if f"{key}.json" in listed:
            record = store.read_json(f"failed/{key}.json")
            if record:
                out[key] = record.get("error", "")
    return out


def _fingerprint(statuses: list, where: pa.Table, failed: dict) -> str:
    digest = hashlib.sha256(b"tables 2\n")
    for key, status in statuses:
        digest.update(f"{key} {status}\n".encode())
    for column in ("cell_id", "block", "row_start"):
        _update_json_list(digest, where.column(column))
    digest.update(json.dumps(sorted(failed.items())).encode())
    return digest.hexdigest()[:32]


def _update_json_list(digest, column: pa.ChunkedArray, chunk: int = 10_000):
    """digest.update(json.dumps(column.to_pylist()).encode()), the column converted a chunk at a
    time: the same bytes, without 10⁵ Python objects at once."""
    digest.update(b"[")
    for start in range(0, len(column), chunk):
        text = json.dumps(column.slice(start, chunk).to_pylist())[1:-1]
        digest.update(((", " if start else "") + text).encode())
    digest.update(b"]")


def _stored_fingerprint(store: Store) -> str | None:
    """The fingerprint the stored tables were written with, where rows.parquet (or its absence)
    and cells.parquet agree on it; None otherwise."""
    cells = store.table_metadata("cells.parquet") or {}
    fingerprint = cells.get("fingerprint")
    if fingerprint is None:
        return None
    for name in ("rows.parquet", "traces.parquet"):
        if cells.get(name) and (store.table_metadata(name) or {}).get("fingerprint") != fingerprint:
            return None
    return fingerprint


def _stored_statuses(store: Store) -> list | None:
    """(cell_id, status) of the stored cells.parquet, in its order: what a report depends on."""
    try:
        with store.fs.open_input_file(store.path("cells.parquet")) as f:
            table = pq.read_table(f, columns=["cell_id", "status"])
    except (FileNotFoundError, OSError, KeyError, pa.ArrowException):
        return None
    return list(zip(table.column("cell_id").to_pylist(), table.column("status").to_pylist()))


def _block_order(where: pa.Table) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """[(block, row_start of each wanted cell, n_rows of each, their rows in `where`)], the blocks
    ordered by their first cell in the sweep (`where` is in the sweep's order): a sweep run by one
    process (the local backend) gets its rows in its order."""
    if not where.num_rows:
        return []
    encoded = where.column("block").combine_chunks().dictionary_encode()
    codes, names = encoded.indices.to_numpy(), encoded.dictionary.to_pylist()
    starts, counts = where.column("row_start").to_numpy(), where.column("n_rows").to_numpy()
    by_block = np.argsort(codes, kind="stable")          # each block's rows, in the sweep's order
    members = np.split(by_block, np.cumsum(np.bincount(codes, minlength=len(names)))[:-1])
    ordered = sorted((m for m in members if len(m)), key=lambda m: m[0])
    return [(names[codes[m[0]]], starts[m], counts[m], m) for m in ordered]


def _temporary(name: str) -> str:
    return f"{name}.tmp-{uuid.uuid4().hex}"


def _wanted(table: pa.Table, starts: np.ndarray, counts: np.ndarray) -> pa.Table:
    """The rows of a block that belong to the wanted cells (all of them, usually)."""
    if counts.sum() == table.num_rows:
        return table
    return pa.concat_tables([table.slice(int(s), int(n)) for s, n in sorted(zip(starts, counts))])


# --- rows.parquet and traces.parquet, streamed -----------------------------------------------------

def _write_rows(store: Store, where: pa.Table, order: list, tables: Tables) -> np.ndarray:
    """rows.parquet's temporary, block by block; returns each cell's first row in the table (an
    array over `where`'s rows)."""
    rows_at = np.zeros(where.num_rows, dtype=np.int64)
    if not order:
        tables.temporaries["rows.parquet"] = None
        return rows_at
    schemas = [_read_schema(store, block) for block, *_ in order]
    schema = _union(schemas)
    temporary = _temporary("rows.parquet")
    tables.temporaries["rows.parquet"] = temporary
    offset = 0
    with store.fs.open_output_stream(store.path(temporary)) as sink, \
            pq.ParquetWriter(sink, schema.with_metadata(_metadata(schema, tables.fingerprint))) as writer:
        for block, starts, counts, members in order:
            for part in _block_parts(store, block, starts, counts):
                writer.write_table(_conform(part, schema))
            by_start = np.argsort(starts, kind="stable")
            rows_at[members[by_start]] = offset + np.concatenate([[0], np.cumsum(counts[by_start])[:-1]])
            offset += int(counts.sum())
    return rows_at


def _block_parts(store: Store, block: str, starts: np.ndarray, counts: np.ndarray):
    """The rows of a block that belong to the wanted cells, ROWS_AT_ONCE rows at a time where that
    is the whole block (the usual case): a block of 5,000 cells decoded at once took about 60 MB
    of the driver, and as much again in the writer's row group."""
    with store.fs.open_input_file(store.path(block)) as f:
        reader = pq.ParquetFile(f)
        if counts.sum() != reader.metadata.num_rows:
            yield _wanted(reader.read(), starts, counts)
            return
        for batch in reader.iter_batches(batch_size=ROWS_AT_ONCE):
            yield pa.Table.from_batches([batch])


def _write_traces(store: Store, where: pa.Table, order: list, tables: Tables):
    with_trace = where.filter(where.column("has_trace"))
    traced = set(with_trace.column("cell_id").to_pylist())
    if not traced:
        tables.temporaries["traces.parquet"] = None
        return
    blocks = set(with_trace.column("block").to_pylist())
    temporary = _temporary("traces.parquet")
    tables.temporaries["traces.parquet"] = temporary
    writer = None
    wanted = pa.array(sorted(traced))
    with store.fs.open_output_stream(store.path(temporary)) as sink:
        try:
            for block, *_ in order:
                if block not in blocks:
                    continue
                with store.fs.open_input_file(store.path(_trace_path(block))) as f:
                    part = pq.read_table(f)
                part = part.filter(pc.is_in(part.column("cell_id"), wanted))
                if writer is None:
                    schema = _union([part.schema])
                    writer = pq.ParquetWriter(sink, schema.with_metadata(_metadata(schema, tables.fingerprint,
                                                                                   text="object")))
                writer.write_table(_conform(part, schema))
        finally:
            if writer is not None:
                writer.close()


def _trace_path(block: str) -> str:
    return block.removesuffix(".parquet") + ".trace.parquet"


def _read_schema(store: Store, block: str) -> pa.Schema:
    with store.fs.open_input_file(store.path(block)) as f:
        return pq.read_schema(f)


def _union(schemas: list[pa.Schema]) -> pa.Schema:
    """The table's columns, in their order of first appearance: as pandas concatenated the cells'
    frames. A column some blocks lack becomes nullable: whole numbers as float (NaN), booleans
    as pandas' "boolean"; text is text; a column of nulls only is text."""
    names: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            names.setdefault(field.name, []).append(field.type)
    fields, nullable = [], set()
    for name, types in names.items():
        kind = types[0] if len(set(types)) == 1 else _common(types)
        missing = len(types) < len(schemas)
        if pa.types.is_null(kind) or pa.types.is_large_string(kind):
            kind = pa.string()
        if missing and pa.types.is_integer(kind):
            kind = pa.float64()
        if missing and pa.types.is_boolean(kind):
            nullable.add(name)
        fields.append(pa.field(name, kind))
    schema = pa.schema(fields)
    return schema.with_metadata({b"nullable": json.dumps(sorted(nullable)).encode()})


def _common(types: list[pa.DataType]) -> pa.DataType:
    present = [t for t in types if not pa.types.is_null(t)]
    if not present:
        return pa.null()
    if len(set(present)) == 1:
        return present[0]
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in present):
        return pa.float64()
    return pa.string()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns, in its order and types (a missing column all null)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def _metadata(schema: pa.Schema, fingerprint: str, extra: dict | None = None, text: str = "string") -> dict:
    """The footer's metadata: pandas' (so that pandas reads each column as the old layout's
    tables did: `text` columns as pandas' "string", or "object" as traces.parquet's) and
    saddlescape's (the fingerprint)."""
    nullable = set(json.loads((schema.metadata or {}).get(b"nullable", b"[]")))
    sample = {}
    for field in schema:
        if pa.types.is_string(field.type) or pa.types.is_null(field.type):
            sample[field.name] = pd.array(["x"], dtype=text) if text == "string" else np.array(["x"], dtype=object)
        elif pa.types.is_boolean(field.type):
            sample[field.name] = pd.array([True], dtype="boolean") if field.name in nullable else np.array([True])
        else:
            sample[field.name] = np.zeros(1, dtype=field.type.to_pandas_dtype())
    pandas = pa.Schema.from_pandas(pd.DataFrame(sample), preserve_index=False).metadata[b"pandas"]
    return {b"pandas": pandas, META_KEY: json.dumps({"fingerprint": fingerprint, **(extra or {})}).encode()}


# --- cells.parquet -------------------------------------------------------------------------------

def _write_cells(store: Store, cells: dict, statuses: list, where: pa.Table, failed: dict, rows_at: np.ndarray,
                 tables: Tables):
    """cells.parquet's temporary: the cells' parameters (flattened as their rows' columns), status
    and error, then the stored summaries of the cells with results and where their rows are."""
    arrays = _parameter_columns(cells)
    errors = [failed.get(key, "") if status != "missing" else "not computed" for key, status in statuses]
    arrays["status"] = pa.array([status for _, status in statuses], pa.string())
    arrays["error"] = pa.array([e if s != "ok" else "" for e, (_, s) in zip(errors, statuses)], pa.string())
    summary = _summaries(where, np.fromiter((status == "ok" for _, status in statuses), bool, len(statuses)),
                         rows_at)
    # The columns in the order the one-row frames of each cell gave them: the first cell's
    # parameters, its status and counts, then what later cells add.
    first = ["cell_id", *flatten_cell(next(iter(cells.values()))), *STATUS, *(c for c in FIRST_SUMMARY if c in summary)]
    arrays.update(summary)
    arrays = {name: arrays[name] for name in dict.fromkeys([*first, *arrays])}
    table = pa.table(arrays)
    nullable = [name for name in table.column_names if pa.types.is_boolean(table.schema.field(name).type)
                and table.column(name).null_count]
    schema = table.schema.with_metadata({b"nullable": json.dumps(nullable).encode()})
    table = _conform(table, schema)
    extra = {name: tables.temporaries.get(name) is not None for name in ("rows.parquet", "traces.parquet")}
    table = table.replace_schema_metadata(_metadata(schema, tables.fingerprint, extra))
    temporary = _temporary("cells.parquet")
    tables.temporaries["cells.parquet"] = temporary
    store.write_table(temporary, table)


def _parameter_columns(cells: dict, chunk: int = CELLS_AT_ONCE) -> dict[str, pa.ChunkedArray]:
    """cell_id and the cells' parameters flattened (core.rows.flatten_cell), a column per name in
    the order names first appear, null where a cell lacks it, typed as pandas' concatenation of
    one-row frames typed them (`_array` on the whole column). Made `chunk` cells at a time: as
    Python lists, every value of 10⁵ cells took about 0.1 GiB of the driver at once."""
    parts: dict[str, list[pa.Array]] = {"cell_id": []}
    done = 0
    items = iter(cells.items())
    while True:
        batch = list(itertools.islice(items, chunk))
        if not batch:
            break
        columns: dict[str, list] = {"cell_id": [key for key, _ in batch]}
        for n, (_, cell) in enumerate(batch):
            for name, value in flatten_cell(cell).items():
                if name not in columns:
                    columns[name] = [None] * n
                columns[name].append(value)
            for values in columns.values():
                if len(values) <= n:
                    values.append(None)
        for name, values in columns.items():
            if name not in parts:
                parts[name] = [pa.nulls(done)] if done else []
            parts[name].append(pa.array(values, from_pandas=True))
        done += len(batch)
        for name, pieces in parts.items():
            if name not in columns:
                pieces.append(pa.nulls(len(batch)))
    return {name: _joined(pieces) for name, pieces in parts.items()}


def _joined(pieces: list[pa.Array]) -> pa.ChunkedArray:
    """A column made in pieces, typed as `_array` types the whole: the pieces' one type (a piece
    of nulls only takes it), whole numbers and floats together as float, and anything else mixed
    converted as one list, as before."""
    kinds = {piece.type for piece in pieces if not pa.types.is_null(piece.type)}
    if len(kinds) > 1 and all(pa.types.is_integer(k) or pa.types.is_floating(k) for k in kinds):
        kinds = {pa.float64()}
    if len(kinds) > 1:
        return pa.chunked_array([_array([value for piece in pieces for value in piece.to_pylist()])])
    kind = kinds.pop() if kinds else pa.null()
    column = pa.chunked_array([piece.cast(kind) if piece.type != kind else piece for piece in pieces], type=kind)
    if pa.types.is_integer(column.type) and column.null_count:
        return column.cast(pa.float64())
    if pa.types.is_null(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    return column


def _array(values: list) -> pa.Array:
    """A column of Python values as pandas' concatenation typed it: whole numbers with a gap as
    float, text as text."""
    array = pa.array(values, from_pandas=True)
    if pa.types.is_integer(array.type) and array.null_count:
        return array.cast(pa.float64())
    if pa.types.is_null(array.type) or pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    return array


def _summaries(where: pa.Table, ok: np.ndarray, rows_at: np.ndarray) -> dict[str, pa.Array]:
    """The index's summary columns for every cell of the sweep (null where it has no results: `ok`
    false; `where` holds the cells with results, in the sweep's order), with FIRST_SUMMARY first,
    and each cell's place in rows.parquet (`rows_at`, over `where`'s rows)."""
    position = np.cumsum(ok) - 1
    take = None if ok.all() else pa.array(position, mask=~ok, type=pa.int64())    # None: every cell, in order
    names = [c for c in where.column_names if c not in INDEX_COLUMNS]
    names = [c for c in FIRST_SUMMARY if c in names] + [c for c in names if c not in FIRST_SUMMARY]
    pick = (lambda column: column) if take is None else (lambda column: column.take(take))
    out = {}
    for name in names:
        column = pick(where.column(name))
        if name in COUNTS and not column.null_count:
            column = column.cast(pa.int64())
        out[name] = column
    start = pa.array(rows_at[np.maximum(position, 0)] if len(rows_at) else np.zeros(len(ok), np.int64), mask=~ok)
    counts = pick(where.column("n_rows"))
    # as `_array` typed the Python list: float with a gap, text (a column of None) with no cell at all
    out["rows_start"] = start if not start.null_count else start.cast(pa.float64() if ok.any() else pa.string())
    out["rows_count"] = counts if counts.null_count else counts.cast(pa.int64())
    if counts.null_count:
        out["rows_count"] = counts.cast(pa.float64())
    return out


def engine_seconds(tables: Tables, keys: Iterable[str]) -> float:
    return float(sum(tables.engine_seconds.get(key, 0.0) for key in keys))
