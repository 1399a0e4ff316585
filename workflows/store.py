"""The results store: one directory per sweep, on a local path or any pyarrow filesystem URI.

    <root>/<sweep>/blocks/<name>.parquet        the rows of a block of cells, written by the worker that ran them
    <root>/<sweep>/blocks/<name>.trace.parquet  their traces, where a cell of the block asks for one
    <root>/<sweep>/index.parquet                what is stored: one row per cell (its block, row range, summary)
    <root>/<sweep>/failed/<cell_id>.json        a cell that failed after its retries, with the error
    <root>/<sweep>/rows.parquet, cells.parquet, traces.parquet, meta.json   the tables (workflows/tables.py)
    <root>/<sweep>/parts/<cell_id>.parquet      the layout before blocks: one file per cell, read as a block of one

A block is what one worker computed in a few seconds (workflows/blocks.py): a few to a few
thousand cells of the same columns, one file, written to a temporary name and renamed (on an
object store one PUT), so a killed writer leaves nothing that looks complete and a kill loses only
the cells of the blocks not yet written. Its footer lists its cells: id, seed count, row range,
engine seconds, whether it has a trace, and the cell's summary (core.survival.cell_summary,
computed where the cell was). A block is trusted only where its footer reads and its row counts
add up (one row per seed of each cell): a truncated or corrupt block is recomputed, never read.

The index is a cache of those footers: a rerun reads it, lists blocks/, and opens only the blocks
it does not know (written since, by a run that was killed before its tables). Losing it costs a
rescan, never a result. The same cell stored twice (a retried trial, two runs of one sweep on an
object store) is read from one block, the first by name.
"""
from __future__ import annotations

import base64
import datetime
import io
import json
import os
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .core.survival import cell_summary

META_KEY = b"saddlescape"
BLOCKS, LEGACY = "blocks", "parts"
INDEX = "index.parquet"
FORMAT = 3                       # the block layout; parts/ (one file per cell) was 1; 2 listed the cells as plain JSON
# The index's own columns; every other column is the cell's summary (core.survival.cell_summary).
INDEX_COLUMNS = ("cell_id", "block", "block_bytes", "block_mtime", "row_start", "n_rows", "seeds", "has_trace",
                 "stored_at")
ENTRIES_AT_ONCE = 2000           # footer entries (dicts) held at once while the index is made


class Store:
    def __init__(self, root: str, sweep: str):
        self.uri, query = join_uri(root, sweep)
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(self.uri + query)
        else:                               # a local path, relative to where the command runs
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._block_cache: tuple[str, pa.Table] | None = None

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # --- writing, atomically -------------------------------------------------------------
    def _write_bytes(self, relpath: str, data: bytes):
        final = self.path(relpath)
        if self.local:                      # an object store has no directories to make
            self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if not self.local:                  # one PUT is atomic there; a rename would be copy + delete
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, final)        # a rename on local disks and NFS
        except BaseException:               # Ctrl-C or a full disk: no temporary file left behind
            self.delete(tmp.removeprefix(self.base + "/"))
            raise

    def write_table(self, relpath: str, table: pa.Table | pd.DataFrame, metadata: dict | None = None):
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   META_KEY: json.dumps(metadata).encode()})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self._write_bytes(relpath, sink.getvalue())

    def write_json(self, relpath: str, data: dict):
        self._write_bytes(relpath, json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def write_block(self, name: str, rows: pa.Table, cells: list[dict], traces: pa.Table | None = None) -> str:
        """blocks/<name>.parquet holding `rows` (the cells' rows, one after another in `cells`' order)
        with `cells` in its footer (each: cell_id, seeds, n_rows, has_trace, summary; row_start and
        stored_at are added here). The trace first: a complete block implies its trace. Returns the
        block's path in the store."""
        start, listed = 0, []
        now = time.time()
        for entry in cells:
            listed.append({**entry, "row_start": start, "stored_at": now})
            start += entry["n_rows"]
        if start != rows.num_rows:
            raise ValueError(f"block {name}: {rows.num_rows} rows for cells of {start}")
        if traces is not None:
            self.write_table(f"{BLOCKS}/{name}.trace.parquet", traces)
        relpath = f"{BLOCKS}/{name}.parquet"
        # The list of cells goes into the file's key-value metadata only, compressed: put in the
        # table's schema it was written twice (pyarrow also stores the schema, base64-encoded, with
        # its metadata), 1.5 KB a cell for 0.46 KB of rows; its JSON compresses about 8x.
        listing = base64.b64encode(zlib.compress(json.dumps(listed).encode(), 6)).decode()
        sink = io.BytesIO()
        rows = rows.replace_schema_metadata(None)
        with pq.ParquetWriter(sink, rows.schema) as writer:
            writer.write_table(rows)
            writer.add_key_value_metadata({META_KEY: json.dumps({"format": FORMAT, "cells_zlib": listing})})
        self._write_bytes(relpath, sink.getvalue())
        return relpath

    def record_failure(self, cell: dict, key: str, error: str):
        """One record per failed cell, counting the attempts of this run (the driver clears the
        records of the cells it is about to retry)."""
        previous = self.read_json(f"failed/{key}.json") or {}
        self.write_json(f"failed/{key}.json", {"cell_id": key, "cell": cell, "error": error,
                                               "attempts": previous.get("attempts", 0) + 1})

    def clear_failures(self, keys: Iterable[str]):
        """Delete the failure records of `keys` that exist (one listing, then one delete each)."""
        present = self._listed("failed")
        for key in keys:
            if f"{key}.json" in present:
                self.delete(f"failed/{key}.json")

    def delete(self, relpath: str):
        try:
            self.fs.delete_file(self.path(relpath))
        except FileNotFoundError:
            pass

    # --- what is stored ----------------------------------------------------------------------
    def index(self, prefix: str = "") -> "Index":
        """Every complete stored cell: the cached index.parquet, less the blocks that are gone, plus
        the footers of the blocks it does not know. `prefix`: only the blocks whose names start
        with it (a trial's own, on a retry), without the cache. Reads; writes nothing."""
        listed = self._blocks(prefix)
        known = None if prefix else self._cached_index()
        kept: list[pa.Table] = []
        fresh = dict(listed)
        if known is not None and known.num_rows:
            # A block is immutable; a file of the same name with another size or time (a part of the
            # old layout rewritten, a block replaced by hand) is read afresh.
            sizes = dict(zip(known.column("block").to_pylist(),
                             zip(known.column("block_bytes").to_pylist(), known.column("block_mtime").to_pylist())))
            still = [block for block, stamp in sizes.items() if listed.get(block) == stamp]
            if still:
                mask = pc.is_in(known.column("block"), pa.array(still))
                kept.append(known.filter(mask))
            for block in still:
                fresh.pop(block, None)
        # The footers' cells made into columns a few thousand at a time: as dicts, 10⁵ cells took
        # 0.25 GiB of the driver at once (the index they make is about 0.3 KB a cell).
        entries, read = [], False
        for block, stamp in sorted(fresh.items()):
            entries += self._footer_entries(block, stamp)
            read = read or bool(entries)
            if len(entries) >= ENTRIES_AT_ONCE:
                kept.append(_entries_table(entries))
                entries = []
        if entries:
            kept.append(_entries_table(entries))
        holder = [_concat(kept)]
        kept.clear()                    # the index's only copy is the holder's, which Index empties
        changed = read or known is None or holder[0].num_rows != known.num_rows
        return Index(holder, changed=changed)

    def save_index(self, index: "Index"):
        """Write index.parquet where it changed (a cache: a kill before or during this costs a rescan)."""
        if index.changed:
            self.write_table(INDEX, index.table)
            index.changed = False

    def _cached_index(self) -> pa.Table | None:
        try:
            with self.fs.open_input_file(self.path(INDEX)) as f:
                table = pq.read_table(f)
        except (FileNotFoundError, OSError, pa.ArrowException):
            return None
        return table if set(INDEX_COLUMNS) <= set(table.column_names) else None

    def _blocks(self, prefix: str = "") -> dict[str, tuple[int, int]]:
        """{path in the store: (bytes, mtime in ns)} of every block file (and of every part of the old layout)."""
        out = {}
        for folder in (BLOCKS, LEGACY):
            if prefix and folder == LEGACY:
                continue
            selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                name = info.base_name
                if (name.endswith(".parquet") and not name.endswith(".trace.parquet") and name.startswith(prefix)
                        and info.type == pafs.FileType.File):
                    out[f"{folder}/{name}"] = (info.size, info.mtime_ns or 0)
        return out

    def _footer_entries(self, block: str, stamp: tuple[int, int]) -> list[dict]:
        """The cells a block holds, from its footer; [] where it is not a complete block (truncated,
        corrupt, or counts that do not add up). A part of the old layout is a block of its cell."""
        try:
            with self.fs.open_input_file(self.path(block)) as f:
                meta = pq.read_metadata(f)
            info = json.loads(meta.metadata[META_KEY])
        except (FileNotFoundError, OSError, KeyError, TypeError, ValueError, pa.ArrowException):
            return []
        if block.startswith(LEGACY + "/"):
            key = block.rsplit("/", 1)[1].removesuffix(".parquet")
            if not _complete(info, key, meta.num_rows, info.get("seeds") if isinstance(info, dict) else None):
                return []
            return [{"cell_id": key, "block": block, "block_bytes": stamp[0], "block_mtime": stamp[1], "row_start": 0,
                     "n_rows": meta.num_rows,
                     "seeds": info["seeds"], "has_trace": bool(info.get("has_trace")),
                     "stored_at": self._mtime(block), **self._legacy_summary(block, info)}]
        cells = _listed_cells(info)
        if not isinstance(cells, list) or sum(c.get("n_rows", -1) for c in cells) != meta.num_rows:
            return []
        if any(c.get("n_rows") != c.get("seeds") for c in cells):
            return []
        return [{"cell_id": c["cell_id"], "block": block, "block_bytes": stamp[0], "block_mtime": stamp[1],
                 "row_start": c["row_start"],
                 "n_rows": c["n_rows"], "seeds": c["seeds"], "has_trace": bool(c.get("has_trace")),
                 "stored_at": c.get("stored_at"), **(c.get("summary") or {})} for c in cells]

    def _legacy_summary(self, block: str, info: dict) -> dict:
        """A part of the old layout has no summary in its footer: computed once, from its rows, and
        kept in the index."""
        with self.fs.open_input_file(self.path(block)) as f:
            rows = pq.read_table(f).to_pandas()
        return cell_summary(rows, info.get("engine_seconds", 0.0))

    def _mtime(self, relpath: str) -> float | None:
        mtime = self.fs.get_file_info(self.path(relpath)).mtime
        return mtime.timestamp() if mtime else None

    # --- reading -----------------------------------------------------------------------------
    def read_block(self, block: str) -> pa.Table:
        """A block's rows (the last block read is kept: a tracker reads its cells one by one)."""
        if self._block_cache is not None and self._block_cache[0] == block:
            return self._block_cache[1]
        with self.fs.open_input_file(self.path(block)) as f:
            table = pq.read_table(f)
        self._block_cache = (block, table)
        return table

    def read_cell(self, key: str, index: "Index | None" = None) -> tuple[pd.DataFrame, dict]:
        """The stored cell's rows, as the engine made them, and its index entry (block, row range,
        engine_seconds, stored_at, summary). Raises KeyError where the cell is not stored."""
        index = index if index is not None else self.index()
        entry = index.entry(key)
        rows = self.read_block(entry["block"]).slice(entry["row_start"], entry["n_rows"])
        return rows.to_pandas(), entry

    def read_json(self, relpath: str) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path(relpath)) as f:
                return json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def failures(self) -> dict[str, dict]:
        records = (self.read_json(f"failed/{name}") for name in self._listed("failed") if name.endswith(".json"))
        return {r["cell_id"]: r for r in records if r}

    def _listed(self, folder: str) -> set[str]:
        """The names in a folder of the sweep's ("": the sweep's folder itself)."""
        selector = pafs.FileSelector(self.path(folder) if folder else self.base, allow_not_found=True)
        return {info.base_name for info in self.fs.get_file_info(selector)}

    def read_table(self, relpath: str) -> pd.DataFrame:
        with self.fs.open_input_file(self.path(relpath)) as f:
            return pq.read_table(f).to_pandas()

    def table_metadata(self, relpath: str) -> dict | None:
        """The saddlescape metadata in a table's footer, or None where there is none (or no table)."""
        try:
            with self.fs.open_input_file(self.path(relpath)) as f:
                return json.loads(pq.read_metadata(f).metadata[META_KEY])
        except (FileNotFoundError, OSError, KeyError, TypeError, ValueError, pa.ArrowException):
            return None

    def stored_cell_ids(self) -> set[str]:
        """The cells with results in the stored tables (cells.parquet); where there are no tables
        (a run killed before its first consolidation), every complete stored cell."""
        try:
            with self.fs.open_input_file(self.path("cells.parquet")) as f:
                cells = pq.read_table(f, columns=["cell_id", "status"])
            ok = pc.equal(cells.column("status"), "ok")
            return set(cells.column("cell_id").filter(ok).to_pylist())
        except (FileNotFoundError, OSError, KeyError, pa.ArrowException):
            return set(self.index().ids())

    def mark_analysis_stale(self, counts: dict, why: str = "the tables of this sweep changed"):
        """Put a banner at the top of analysis/report.md, if there is one and it has none yet."""
        try:
            with self.fs.open_input_stream(self.path("analysis/report.md")) as f:
                report = f.read().decode("utf-8", errors="replace")
        except (FileNotFoundError, OSError):
            return
        if report.startswith(STALE_BANNER):
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        banner = (f"{STALE_BANNER} {why} after this report was written ({stamp}: {counts.get('done', '?')} of "
                  f"{counts.get('total', '?')} cells with results now). Run `saddlescape analyze {self.uri}` "
                  "to bring it up to date.\n\n")
        self._write_bytes("analysis/report.md", (banner + report).encode())


STALE_BANNER = "> **Out of date:**"


# Where an S3 endpoint and region may be given in the environment (the AWS SDK's names), and the
# URI query options pyarrow's S3 filesystem reads them from.
S3_ENVIRONMENT = (("endpoint_override", ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")),
                  ("region", ("AWS_REGION", "AWS_DEFAULT_REGION")))


def explicit_root(root: str, environ=os.environ) -> str:
    """`root` with what this process's environment adds to it written into the URI: an s3:// root's
    endpoint (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL: endpoint_override and scheme) and region
    (AWS_REGION or AWS_DEFAULT_REGION), unless the URI names them. The driver hands this to the
    workers, whose nodes need not have the driver's environment (issue 25: 100 of 100 cells
    failed on a second node). Credentials are never put in it: each node uses its own (its
    environment, ~/.aws, an instance role)."""
    if not root.startswith("s3://"):
        return root
    base, _, query = root.partition("?")
    given = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    before = dict(given)
    for option, names in S3_ENVIRONMENT:
        value = next((environ[name] for name in names if environ.get(name)), None)
        if option in given or value is None:
            continue
        if option == "endpoint_override":
            url = urllib.parse.urlsplit(value if "://" in value else f"https://{value}")
            given["endpoint_override"] = url.netloc + url.path.rstrip("/")
            given.setdefault("scheme", url.scheme)
        else:
            given[option] = value
    added = {key: value for key, value in given.items() if key not in before}
    if not added:
        return root
    return f"{base}?{'&'.join(filter(None, (query, urllib.parse.urlencode(added))))}"


def _listed_cells(info) -> list | None:
    """A block footer's cells: compressed (format 3) or plain JSON (format 2); None where neither."""
    if not isinstance(info, dict):
        return None
    if "cells_zlib" in info:
        try:
            return json.loads(zlib.decompress(base64.b64decode(info["cells_zlib"])))
        except (ValueError, TypeError, zlib.error):
            return None
    return info.get("cells")


def join_uri(root: str, sweep: str) -> tuple[str, str]:
    """(root/sweep without a query, the query): `s3://b/p?endpoint_override=...` names the
    folder s3://b/p/<sweep>, with the same options (the sweep's name goes before the query)."""
    base, mark, query = root.partition("?") if "://" in root else (root, "", "")
    return f"{base.rstrip('/')}/{sweep}", f"{mark}{query}"


def _complete(info, key: str, rows: int, seeds) -> bool:
    """Whether a part of the old layout is the whole of cell `key`: its metadata names the cell,
    and it holds one row per seed (a part cut short by a crash, or another cell's rows under
    this name, is not)."""
    return isinstance(info, dict) and info.get("cell_id") == key and rows == seeds and info.get("seeds") == seeds


def _entries_table(entries: list[dict]) -> pa.Table:
    # Every key of every entry: from_pylist takes its columns from the first entry alone, and cells
    # of one block can differ in their summaries (an SOSP summary only where sosp_epsilon > 0).
    keys = dict.fromkeys(k for entry in entries for k in entry)
    table = pa.table({k: [entry.get(k) for entry in entries] for k in keys})
    return table.cast(_index_types(table.schema))


def _index_types(schema: pa.Schema) -> pa.Schema:
    """The index's columns as their fixed types; every summary column a float."""
    fixed = {"cell_id": pa.string(), "block": pa.string(), "block_bytes": pa.int64(), "block_mtime": pa.int64(),
             "row_start": pa.int64(),
             "n_rows": pa.int64(), "seeds": pa.int64(), "has_trace": pa.bool_(), "stored_at": pa.float64()}
    return pa.schema([pa.field(f.name, fixed.get(f.name, pa.float64())) for f in schema])


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t.replace_schema_metadata(None) for t in tables if t.num_rows]
    if not tables:
        return pa.table({name: pa.array([], type=t) for name, t in
                         zip(INDEX_COLUMNS, _index_types(pa.schema([(n, pa.null()) for n in INDEX_COLUMNS])).types)})
    return pa.concat_tables(tables, promote_options="permissive")


def take_releasing(holder: list, rows: pa.Array) -> pa.Table:
    """holder[0].take(rows) made a column at a time, each column of holder[0] let go once taken
    (holder[0] is emptied, so nothing else should hold that table): a table and its reordered copy
    are never both whole in memory (the index of 10⁵ cells: about 30 MB each)."""
    table, holder[0] = holder[0], None
    columns = {}
    for name in table.column_names:
        columns[name] = table.column(name).take(rows)
        table = table.drop_columns([name])
    return pa.table(columns)


class Index:
    """What the store holds: one row per complete stored cell (a pyarrow table: INDEX_COLUMNS and
    the cells' summaries), the first block by name where a cell is stored twice."""

    def __init__(self, table: pa.Table | list, changed: bool = False):
        """`table`, or a list holding it, which is emptied (take_releasing: its columns let go as
        they are sorted)."""
        holder = table if isinstance(table, list) else [table]
        del table
        order = pc.sort_indices(holder[0], sort_keys=[("block", "ascending"), ("row_start", "ascending")]) \
            if holder[0].num_rows else None
        table = take_releasing(holder, order) if order is not None else holder[0]
        ids = table.column("cell_id").to_pylist()
        first: dict[str, int] = {}
        for position, key in enumerate(ids):
            first.setdefault(key, position)
        if len(first) < len(ids):
            table = table.take(pa.array(sorted(first.values())))
            first = {key: position for position, key in enumerate(table.column("cell_id").to_pylist())}
        self.table, self.positions, self.changed = table, first, changed

    def __contains__(self, key: str) -> bool:
        return key in self.positions

    def __len__(self) -> int:
        return len(self.positions)

    def ids(self) -> Iterable[str]:
        return self.positions.keys()

    def seeds(self, key: str) -> int:
        return self.table.column("seeds")[self.positions[key]].as_py()

    def done(self, cells: dict) -> set[str]:
        """The ids of `cells` (id -> cell) stored whole: one row per seed of the cell."""
        seeds = self.table.column("seeds").to_numpy()
        return {key for key, cell in cells.items()
                if key in self.positions and seeds[self.positions[key]] == cell["seeds"]}

    def entry(self, key: str) -> dict:
        """The cell's row of the index: block, row_start, n_rows, engine_seconds, stored_at, and
        its summary (the summary's names only where they have a value)."""
        row = self.table.slice(self.positions[key], 1).to_pylist()[0]
        fixed = {k: row[k] for k in INDEX_COLUMNS}
        summary = {k: v for k, v in row.items() if k not in INDEX_COLUMNS and v is not None}
        return {**fixed, "engine_seconds": summary.get("engine_seconds", 0.0), "summary": summary}

