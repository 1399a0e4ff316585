"""Read a results directory (or a bare rows.parquet) and check it has what the analysis needs.

    results/<sweep>/rows.parquet     one row per seed per cell           (required)
    results/<sweep>/cells.parquet    per-cell status and timing          (optional)
    results/<sweep>/traces.parquet   cell_id, seed, step, loss           (optional)
    results/<sweep>/meta.json        what was run                        (optional)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

REQUIRED_COLUMNS = ("cell_id", "problem.name", "optimizer.name", "optimizer.lr", "budget",
                    "curvature", "sigma_escape", "escape_radius", "seed", "escaped", "escape_step")
TRACE_COLUMNS = ("cell_id", "seed", "step", "loss")


class Results(NamedTuple):
    root: Path                        # the results directory
    rows: pd.DataFrame                # one row per seed per cell
    cells: pd.DataFrame | None        # cells.parquet, when present
    traces: pd.DataFrame | None       # traces.parquet, when present
    meta: dict | None                 # meta.json, when present


def load_results(path) -> Results:
    """`path`: a results directory holding rows.parquet, or a rows.parquet file itself."""
    path = Path(path)
    rows_path = path / "rows.parquet" if path.is_dir() else path
    if not rows_path.is_file():
        raise FileNotFoundError(f"results: {rows_path} does not exist; allowed: a results directory "
                                "holding rows.parquet, or a rows.parquet file")
    root = rows_path.parent
    rows = check_rows(_read_parquet(rows_path), str(rows_path))
    cells = _read_parquet(root / "cells.parquet") if (root / "cells.parquet").is_file() else None
    traces = None
    if (root / "traces.parquet").is_file():
        traces = _read_parquet(root / "traces.parquet")
        missing = [c for c in TRACE_COLUMNS if c not in traces]
        if missing:
            raise ValueError(f"{root / 'traces.parquet'}: missing columns {', '.join(missing)}; "
                             f"required: {', '.join(TRACE_COLUMNS)}")
    meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else None
    return Results(root, rows, cells, traces, meta)


def _read_parquet(path: Path) -> pd.DataFrame:
    # Repeated strings (cell_id, names) as categoricals: a tenth of the memory at 10⁶ rows.
    return pq.read_table(path).to_pandas(strings_to_categorical=True)


def check_rows(rows: pd.DataFrame, where: str = "rows") -> pd.DataFrame:
    """The rows with booleans as booleans, or a ValueError naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}")
    if len(rows) == 0:
        raise ValueError(f"{where}: no rows; a results table needs at least one row (one per seed per cell)")
    rows = rows.copy(deep=False)
    for flag in ("escaped", "diverged", "sosp_reached"):
        if flag in rows and rows[flag].dtype != bool:
            if rows[flag].isna().any():
                raise ValueError(f"{where}: column {flag} has missing values; allowed: true or false")
            rows[flag] = rows[flag].astype(bool)
    steps = rows["escape_step"].to_numpy(dtype=float)
    if not (np.isfinite(steps).all() and (steps >= 1).all()):
        raise ValueError(f"{where}: escape_step has values < 1 or missing; allowed: a step >= 1 "
                         "(the escape step, or the censoring step where not escaped)")
    return rows
