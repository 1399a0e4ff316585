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
from .store import INDEX_COLUMNS, META_KEY, Index, Store

STATUS = ("status", "error")
# cells.parquet's counts, as before the summaries were stored (whole numbers where every cell has them).
COUNTS = ("n_seeds", "n_escaped", "n_diverged")
FIRST_SUMMARY = (*COUNTS, "mean_escape_step_of_escaped", "engine_seconds")
LOCATION = ("rows_start", "rows_count")
TABLES = ("rows.parquet", "cells.parquet", "traces.parquet")


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
    where = index.table.take(pa.array([index.positions[key] for key in ok], type=pa.int64()))
    fingerprint = _fingerprint(statuses, where, failed)
    seconds = dict(zip(ok, where.column("engine_seconds").to_pylist())) if "engine_seconds" in where.column_names \
        else {key: 0.0 for key in ok}
    tables = Tables(counts, set(done), fingerprint, {}, statuses, seconds)
    if _stored_fingerprint(store) == fingerprint:
        return tables
    try:
        order = _block_order(cells, where)
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
        digest.update(json.dumps(where.column(column).to_pylist()).encode())
    digest.update(json.dumps(sorted(failed.items())).encode())
    return digest.hexdigest()[:32]


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


def _block_order(cells: dict, where: pa.Table) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(block, row_start of each wanted cell, n_rows of each)], the blocks ordered by their first
    cell in the sweep: a sweep run by one process (the local backend) gets its rows in its order."""
    position = {key: i for i, key in enumerate(cells)}
    blocks = where.column("block").to_pylist()
    starts, counts = where.column("row_start").to_numpy(), where.column("n_rows").to_numpy()
    ids = where.column("cell_id").to_pylist()
    grouped: dict[str, list[int]] = {}
    for i, block in enumerate(blocks):
        grouped.setdefault(block, []).append(i)
    ordered = sorted(grouped.items(), key=lambda item: min(position[ids[i]] for i in item[1]))
    return [(block, starts[members], counts[members], members) for block, members in ordered]


def _temporary(name: str) -> str:
    return f"{name}.tmp-{uuid.uuid4().hex}"


def _wanted(table: pa.Table, starts: np.ndarray, counts: np.ndarray) -> pa.Table:
    """The rows of a block that belong to the wanted cells (all of them, usually)."""
    if counts.sum() == table.num_rows:
        return table
    return pa.concat_tables([table.slice(int(s), int(n)) for s, n in sorted(zip(starts, counts))])


# --- rows.parquet and traces.parquet, streamed -----------------------------------------------------

def _write_rows(store: Store, where: pa.Table, order: list, tables: Tables) -> dict[str, int]:
    """rows.parquet's temporary, block by block; returns {cell_id: its first row in the table}."""
    if not order:
        tables.temporaries["rows.parquet"] = None
        return {}
    schemas = [_read_schema(store, block) for block, *_ in order]
    schema = _union(schemas)
    temporary = _temporary("rows.parquet")
    tables.temporaries["rows.parquet"] = temporary
    rows_at, offset = {}, 0
    ids = where.column("cell_id").to_pylist()
    with store.fs.open_output_stream(store.path(temporary)) as sink, \
            pq.ParquetWriter(sink, schema.with_metadata(_metadata(schema, tables.fingerprint))) as writer:
        for block, starts, counts, members in order:
            part = _wanted(store.read_block(block), starts, counts)
            writer.write_table(_conform(part, schema))
            for i, start, count in sorted(zip(members, starts, counts), key=lambda m: m[1]):
                rows_at[ids[i]] = offset
                offset += int(count)
    store._block_cache = None
    return rows_at


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

def _write_cells(store: Store, cells: dict, statuses: list, where: pa.Table, failed: dict, rows_at: dict,
                 tables: Tables):
    """cells.parquet's temporary: the cells' parameters (flattened as their rows' columns), status
    and error, then the stored summaries of the cells with results and where their rows are."""
    columns: dict[str, list] = {"cell_id": []}
    n = 0
    for (key, status), cell in zip(statuses, cells.values()):
        columns["cell_id"].append(key)
        for name, value in flatten_cell(cell).items():
            # Not setdefault(name, [None] * n): that makes an n-long list for every value of every
            # cell, quadratic (10⁵ cells: 196 of the tables' 212 s).
            if name not in columns:
                columns[name] = [None] * n
            columns[name].append(value)
        n += 1
        for values in columns.values():
            if len(values) < n:
                values.append(None)
    errors = [failed.get(key, "") if status != "missing" else "not computed" for key, status in statuses]
    arrays = {name: _array(values) for name, values in columns.items()}
    arrays["status"] = pa.array([status for _, status in statuses], pa.string())
    arrays["error"] = pa.array([e if s != "ok" else "" for e, (_, s) in zip(errors, statuses)], pa.string())
    summary = _summaries(where, [key for key, _ in statuses], rows_at)
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


def _array(values: list) -> pa.Array:
    """A column of Python values as pandas' concatenation typed it: whole numbers with a gap as
    float, text as text."""
    array = pa.array(values, from_pandas=True)
    if pa.types.is_integer(array.type) and array.null_count:
        return array.cast(pa.float64())
    if pa.types.is_null(array.type) or pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    return array


def _summaries(where: pa.Table, order: list, rows_at: dict) -> dict[str, pa.Array]:
    """The index's summary columns for every cell of `order` (null where it has no results), with
    FIRST_SUMMARY first, and each cell's place in rows.parquet."""
    position = {key: i for i, key in enumerate(where.column("cell_id").to_pylist())}
    take = pa.array([position.get(key) for key in order], type=pa.int64())
    names = [c for c in where.column_names if c not in INDEX_COLUMNS]
    names = [c for c in FIRST_SUMMARY if c in names] + [c for c in names if c not in FIRST_SUMMARY]
    out = {}
    for name in names:
        column = where.column(name).take(take)
        if name in COUNTS and not column.null_count:
            column = column.cast(pa.int64())
        out[name] = column
    start = [rows_at.get(key) for key in order]
    counts = where.column("n_rows").take(take)
    out["rows_start"] = _array(start)
    out["rows_count"] = counts if counts.null_count else counts.cast(pa.int64())
    if counts.null_count:
        out["rows_count"] = counts.cast(pa.float64())
    return out


def engine_seconds(tables: Tables, keys: Iterable[str]) -> float:
    return float(sum(tables.engine_seconds.get(key, 0.0) for key in keys))
