"""Read a results directory, a bare rows.parquet or a DataFrame, and check it has what the analysis needs.

    results/<sweep>/rows.parquet     one row per seed per cell           (required)
    results/<sweep>/cells.parquet    per-cell status and timing          (optional)
    results/<sweep>/traces.parquet   cell_id, seed, step, loss           (optional)
    results/<sweep>/meta.json        what was run                        (optional)

Survival summaries and scaling fits need only the parameters, `escaped` and `escape_step`; a
table made elsewhere may lack the rest. Without `cell_id` the cells are the distinct
combinations of the parameter columns (analysis.schema.derive_cell_ids); without the theory's
inputs (curvature, sigma_escape, escape_radius, optimizer.lr) the closed forms are skipped and
the report says so (`Results.notes`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .schema import derive_cell_ids

REQUIRED_COLUMNS = ("escaped", "escape_step")
THEORY_INPUTS = ("optimizer.lr", "curvature", "sigma_escape", "escape_radius")
TRACE_COLUMNS = ("cell_id", "seed", "step", "loss")
UNNAMED = "(unnamed)"


class Results(NamedTuple):
    root: Path | None                 # the results directory (None for a DataFrame)
    rows: pd.DataFrame                # one row per seed per cell
    cells: pd.DataFrame | None        # cells.parquet, when present
    traces: pd.DataFrame | None       # traces.parquet, when present
    meta: dict | None                 # meta.json, when present
    notes: tuple = ()                 # what loading had to derive or leave out, for the report


def load_results(path_or_rows) -> Results:
    """`path_or_rows`: a results directory holding rows.parquet, a rows.parquet file, or a DataFrame
    of rows (one per run). Raises FileNotFoundError / ValueError naming what is wrong."""
    if isinstance(path_or_rows, pd.DataFrame):
        rows, notes = check_rows(path_or_rows, "rows")
        return Results(None, rows, None, None, None, tuple(notes))
    path = Path(path_or_rows)
    rows_path = path / "rows.parquet" if path.is_dir() else path
    if not rows_path.is_file():
        raise FileNotFoundError(f"results: {rows_path} does not exist; allowed: a results directory "
                                "holding rows.parquet, a rows.parquet file, or a DataFrame")
    root = rows_path.parent
    rows, notes = check_rows(_read_parquet(rows_path), str(rows_path))
    cells = _read_parquet(root / "cells.parquet") if (root / "cells.parquet").is_file() else None
    traces = None
    if (root / "traces.parquet").is_file():
        traces = _read_parquet(root / "traces.parquet")
        missing = [c for c in TRACE_COLUMNS if c not in traces]
        if missing:
            raise ValueError(f"{root / 'traces.parquet'}: missing columns {', '.join(missing)}; "
                             f"required: {', '.join(TRACE_COLUMNS)}")
    meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else None
    return Results(root, rows, cells, traces, meta, tuple(notes))


def _read_parquet(path: Path) -> pd.DataFrame:
    # Repeated strings (cell_id, names) as categoricals: a tenth of the memory at 10⁶ rows.
    return pq.read_table(path).to_pandas(strings_to_categorical=True)


def check_rows(rows: pd.DataFrame, where: str = "rows") -> tuple[pd.DataFrame, list[str]]:
    """(the rows with booleans as booleans and a cell_id, notes on what was derived), or a
    ValueError naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)} "
                         "(and the parameter columns that tell the cells apart)")
    if len(rows) == 0:
        raise ValueError(f"{where}: no rows; a results table needs at least one row (one per seed per cell)")
    rows = rows.copy(deep=False)
    notes = []
    for flag in ("escaped", "diverged", "sosp_reached", "gap_reached"):
        if flag in rows and rows[flag].dtype != bool:
            missing = rows[flag].isna()
            # SOSP tracking may be on in some cells only: there both of its columns are missing.
            step = flag.replace("_reached", "_step")
            optional = flag != "escaped" and flag != "diverged" and step in rows and rows.loc[missing, step].isna().all()
            if missing.any() and not optional:
                raise ValueError(f"{where}: column {flag} has missing values; allowed: true or false")
            if not missing.any():
                rows[flag] = rows[flag].astype(bool)
    steps = rows["escape_step"].to_numpy(dtype=float)
    if not (np.isfinite(steps).all() and (steps >= 1).all()):
        raise ValueError(f"{where}: escape_step has values < 1 or missing; allowed: a step >= 1 "
                         "(the escape step, or the censoring step where not escaped)")
    for name in ("problem.name", "optimizer.name"):
        if name not in rows:
            rows[name] = UNNAMED
            notes.append(f"The table has no `{name}` column: its rows are labelled `{UNNAMED}`.")
    if "cell_id" not in rows:
        rows["cell_id"], key = derive_cell_ids(rows)
        notes.append("The table has no `cell_id` column: cells are the distinct combinations of "
                     + (", ".join(f"`{c}`" for c in key) if key else "nothing (one cell)") + ".")
    absent = [c for c in THEORY_INPUTS if c not in rows]
    if absent:
        notes.append("The closed forms were skipped: the table lacks " + ", ".join(f"`{c}`" for c in absent)
                     + " (the theory's inputs); survival summaries, scaling fits and comparisons need only the "
                     "parameters, `escaped` and `escape_step`.")
    if "budget" not in rows:
        notes.append("The table has no `budget` column: each cell's censoring horizon is its longest recorded step.")
    return rows, notes
