"""The results store: one directory per sweep, on a local path or any pyarrow filesystem URI.

    <root>/<sweep>/parts/<cell_id>.parquet          one cell's rows, written by the worker that ran it
    <root>/<sweep>/parts/<cell_id>.trace.parquet    its trace, where the cell asks for one
    <root>/<sweep>/failed/<cell_id>.json            a cell that failed after its retries, with the error
    <root>/<sweep>/rows.parquet, cells.parquet, traces.parquet, meta.json   consolidated at the end

Every file is written to a temporary name and then renamed, so a killed writer leaves no file
that looks complete; meta.json is written after the tables it describes, and a report written
for other tables is marked out of date at its top. A part is trusted only if its parquet footer reads, its row count is the
cell's seed count and its embedded cell id is its name: a truncated or corrupt part is
recomputed, never read as results.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import uuid
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .core.rows import flatten_cell

META_KEY = b"saddlescape"


class Store:
    def __init__(self, root: str, sweep: str):
        self.uri = f"{root.rstrip('/')}/{sweep}"
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(self.uri)
        else:                               # a local path, relative to where the command runs
            self.fs, self.base = pafs.LocalFileSystem(), os.path.abspath(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # --- writing, atomically -------------------------------------------------------------
    def _write_bytes(self, relpath: str, data: bytes):
        final = self.path(relpath)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, final)        # a rename on local disks and NFS
        except BaseException:               # Ctrl-C or a full disk: no temporary file left behind
            self.delete(tmp.removeprefix(self.base + "/"))
            raise

    def write_table(self, relpath: str, frame: pd.DataFrame, metadata: dict | None = None):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   META_KEY: json.dumps(metadata).encode()})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self._write_bytes(relpath, sink.getvalue())

    def write_json(self, relpath: str, data: dict):
        self._write_bytes(relpath, json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def write_part(self, cell: dict, key: str, rows: pd.DataFrame, trace, seconds: float):
        if trace is not None:               # the trace first: a complete part implies its trace
            self.write_table(f"parts/{key}.trace.parquet", trace)
        self.write_table(f"parts/{key}.parquet", rows,
                         {"cell_id": key, "seeds": cell["seeds"], "engine_seconds": seconds,
                          "has_trace": trace is not None})
        self.delete(f"failed/{key}.json")

    def record_failure(self, cell: dict, key: str, error: str):
        """One record per failed cell, counting the attempts of this run (the CLI clears the
        records of the cells it is about to retry)."""
        previous = self.read_json(f"failed/{key}.json") or {}
        self.write_json(f"failed/{key}.json", {"cell_id": key, "cell": cell, "error": error,
                                               "attempts": previous.get("attempts", 0) + 1})

    def delete(self, relpath: str):
        try:
            self.fs.delete_file(self.path(relpath))
        except FileNotFoundError:
            pass

    # --- reading ---------------------------------------------------------------------------
    def part_info(self, key: str, seeds: int) -> dict | None:
        """The part's embedded metadata if it is complete and belongs to this cell, else None."""
        try:
            with self.fs.open_input_file(self.path(f"parts/{key}.parquet")) as f:
                meta = pq.read_metadata(f)
            info = json.loads(meta.metadata[META_KEY])
        except (FileNotFoundError, OSError, KeyError, TypeError, ValueError, pa.ArrowException):
            return None
        return info if _complete(info, key, meta.num_rows, seeds) else None

    def read_part(self, key: str) -> tuple[pd.DataFrame, dict]:
        """The stored cell's rows and its part's metadata. Raises OSError where the part is missing,
        ValueError where it is not the complete part of this cell (the check part_info makes)."""
        with self.fs.open_input_file(self.path(f"parts/{key}.parquet")) as f:
            table = pq.read_table(f)
        info = json.loads(table.schema.metadata[META_KEY])
        if not _complete(info, key, table.num_rows, info.get("seeds")):
            raise ValueError(f"parts/{key}.parquet is not the complete part of cell {key}")
        return table.to_pandas(), info

    def done(self, cells: dict[str, dict]) -> dict[str, dict]:
        """{cell_id: part metadata} for the cells whose results are complete."""
        listed = self._listed("parts")
        out = {}
        for key, cell in cells.items():
            if f"{key}.parquet" in listed:
                info = self.part_info(key, cell["seeds"])
                if info is not None:
                    out[key] = info
        return out

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
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return {info.base_name for info in self.fs.get_file_info(selector)}

    def read_table(self, relpath: str) -> pd.DataFrame:
        with self.fs.open_input_file(self.path(relpath)) as f:
            return pq.read_table(f).to_pandas()

    def stored_cell_ids(self) -> set[str]:
        """The cells with results in the stored tables (cells.parquet); where there are no tables
        (a run killed before its first consolidation), every complete-looking part file."""
        try:
            cells = self.read_table("cells.parquet")
            return set(cells.loc[cells.status == "ok", "cell_id"])
        except (FileNotFoundError, OSError, KeyError, AttributeError, pa.ArrowException):
            return {name.removesuffix(".parquet") for name in self._listed("parts")
                    if name.endswith(".parquet") and not name.endswith(".trace.parquet")}

    # --- consolidation ---------------------------------------------------------------------
    def consolidate(self, cells: dict[str, dict], meta: dict) -> dict:
        """rows.parquet, cells.parquet, traces.parquet (where any) and meta.json for the sweep's
        current cells, in the sweep's order. Parts of cells no longer in the sweep stay on disk
        but out of the tables. Returns the cell counts."""
        tables = self.collect(cells)
        self.publish(tables, meta)
        return tables.counts

    def collect(self, cells: dict[str, dict]) -> "Tables":
        """The tables, in memory: reading every part is the slow half of a consolidation, and
        writes nothing (a Ctrl-C here leaves the stored tables as they were)."""
        done, failed = self.done(cells), self.failures()
        frames, traces, summary = [], [], []
        for key, cell in cells.items():
            status = {"cell_id": key, **flatten_cell(cell)}
            if key in done:
                rows = self.read_table(f"parts/{key}.parquet")
                frames.append(rows)
                if done[key].get("has_trace"):
                    traces.append(self.read_table(f"parts/{key}.trace.parquet"))
                escaped = rows.loc[rows.escaped, "escape_step"]
                status.update(status="ok", error="", n_seeds=len(rows), n_escaped=int(rows.escaped.sum()),
                              n_diverged=int(rows.diverged.sum()),
                              mean_escape_step_of_escaped=float(escaped.mean()) if len(escaped) else float("nan"),
                              engine_seconds=done[key]["engine_seconds"])
            else:
                error = failed.get(key, {}).get("error", "not computed")
                status.update(status="failed" if key in failed else "missing", error=error)
            summary.append(status)
        counts = {"total": len(cells), "done": len(done),
                  "failed": sum(s["status"] == "failed" for s in summary),
                  "missing": sum(s["status"] == "missing" for s in summary)}
        return Tables(tidy_concat(frames) if frames else None,
                      pd.concat(traces, ignore_index=True) if traces else None,
                      tidy_concat([pd.DataFrame([s]) for s in summary]), counts, set(done))

    def publish(self, tables: "Tables", meta: dict):
        """Write the tables, then meta.json (last: it describes them). An analysis written for
        other tables is marked out of date at the top of its report.md."""
        changed = _fingerprint(self._stored_cells_table()) != _fingerprint(tables.cells)
        # A table with nothing in it is absent, never left over from other cells.
        for name, frame in (("rows.parquet", tables.rows), ("traces.parquet", tables.traces)):
            if frame is not None:
                self.write_table(name, frame)
            else:
                self.delete(name)
        self.write_table("cells.parquet", tables.cells)
        self.write_json("meta.json", {**meta, "cells": {**meta.get("cells", {}), **tables.counts}})
        if changed:
            self.mark_analysis_stale(tables.counts)

    def _stored_cells_table(self) -> pd.DataFrame | None:
        try:
            return self.read_table("cells.parquet")
        except (FileNotFoundError, OSError, pa.ArrowException):
            return None

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


def _complete(info: dict, key: str, rows: int, seeds) -> bool:
    """Whether a part is the whole of cell `key`: its metadata names the cell, and it holds one row
    per seed (a part cut short by a crash, or another cell's rows under this name, is not)."""
    return info.get("cell_id") == key and rows == seeds and info.get("seeds") == seeds


class Tables(NamedTuple):
    rows: pd.DataFrame | None        # None: no cell has results
    traces: pd.DataFrame | None
    cells: pd.DataFrame
    counts: dict
    done: set


def _fingerprint(cells: pd.DataFrame | None) -> str | None:
    """What a report depends on: which cells there are and which have results."""
    if cells is None or "cell_id" not in cells or "status" not in cells:
        return None
    pairs = sorted(zip(cells.cell_id.astype(str), cells.status.astype(str)))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def tidy_concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames whose columns differ (a sweep mixing optimizers: `beta2` is missing
    for sgd): a column that is boolean or text where present keeps that type, with missing
    values, instead of becoming a mixed object column that parquet cannot store."""
    frame = pd.concat(frames, ignore_index=True)
    for column in frame.columns[frame.dtypes == object]:
        present = frame[column].dropna()
        if len(present) and present.map(type).eq(bool).all():
            frame[column] = frame[column].astype("boolean")
        elif present.map(type).eq(str).all():
            frame[column] = frame[column].astype("string")
    return frame
