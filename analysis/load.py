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

Every column is checked against its declared type (analysis.schema.declared_kind: the row schema
of workflows/core/rows.py and the run settings' kinds) before anything is computed: a value that cannot
be read exactly as that type (the text "False" in a boolean column, which bool() reads as True;
"0.001" in a number's column; 12.5 as a step) is refused in one line naming the column, never
converted. A column without a declared type (a problem's or an optimizer's own parameter, a column
of your own) is refused where it holds numbers or booleans written as text, or mixes numbers and
text.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .lean import Lean, lean_rows
from .schema import declared_kind, derive_cell_ids

REQUIRED_COLUMNS = ("escaped", "escape_step")
THEORY_INPUTS = ("optimizer.lr", "curvature", "sigma_escape", "escape_radius")
# traces.parquet's columns and their types (`seed` is rows.parquet's per-run seed).
TRACE_COLUMNS = {"cell_id": declared_kind("cell_id"), "seed": declared_kind("seed"), "step": "int64",
                 "loss": "float64"}
ALLOWED = {"bool": "booleans (true/false, or 0/1)", "int64": "whole numbers", "float64": "numbers",
           "string": "text"}
UNNAMED = "(unnamed)"


class Results(NamedTuple):
    root: Path | None                 # the results directory (None for a DataFrame)
    rows: pd.DataFrame                # one row per seed per cell
    cells: pd.DataFrame | None        # cells.parquet, when present
    traces: pd.DataFrame | None       # traces.parquet, when present
    meta: dict | None                 # meta.json, when present
    notes: tuple = ()                 # what loading had to derive or leave out, for the report
    lean: Lean | None = None          # lean=True: the cell table computed while reading (rows are then lean)


def load_results(path_or_rows, lean: bool = False) -> Results:
    """`path_or_rows`: a results directory holding rows.parquet, a rows.parquet file, or a DataFrame
    of rows (one per run). Raises FileNotFoundError / ValueError naming what is wrong.

    lean: read a file a group of cells at a time (analysis.lean): `rows` then holds only the
    durations' columns and `lean` the cell table of the whole, computed as the file was read; where
    the file cannot be read so, as without lean (`lean` None)."""
    if isinstance(path_or_rows, pd.DataFrame):
        rows, notes = check_rows(path_or_rows, "rows")
        return Results(None, rows, None, None, None, tuple(notes))
    path = Path(path_or_rows)
    rows_path = path / "rows.parquet" if path.is_dir() else path
    if not rows_path.is_file():
        raise FileNotFoundError(f"results: {rows_path} does not exist; allowed: a results directory "
                                "holding rows.parquet, a rows.parquet file, or a DataFrame")
    root = rows_path.parent
    summary = lean_rows(rows_path, check_rows) if lean and not (root / "tuning.parquet").is_file() else None
    if summary is not None:
        rows, notes = summary.rows, summary.notes
    else:
        rows, notes = check_rows(_read_parquet(rows_path), str(rows_path))
    cells = _read_parquet(root / "cells.parquet") if (root / "cells.parquet").is_file() else None
    traces = None
    if (root / "traces.parquet").is_file():
        traces = _read_parquet(root / "traces.parquet")
        missing = [c for c in TRACE_COLUMNS if c not in traces]
        if missing:
            raise ValueError(f"{root / 'traces.parquet'}: missing columns {', '.join(missing)}; "
                             f"required: {', '.join(TRACE_COLUMNS)}")
        check_types(traces[list(TRACE_COLUMNS)], str(root / "traces.parquet"), TRACE_COLUMNS)
    meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else None
    return Results(root, rows, cells, traces, meta, tuple(notes), summary)


def _read_parquet(path: Path) -> pd.DataFrame:
    # Repeated strings (cell_id, names) as categoricals: a tenth of the memory at 10⁶ rows. Each
    # Arrow column is freed as soon as it is converted (self_destruct; split_blocks keeps pandas from
    # copying the columns into one block): the table and the frame were both whole at once, a peak
    # of 2.7x the frame's size at 10⁶ rows (0.81 GiB beside the imports), now 1.7x.
    table = pq.read_table(path)
    return table.to_pandas(strings_to_categorical=True, self_destruct=True, split_blocks=True)


def _distinct(values: pd.Series) -> list:
    """The distinct non-missing values of a column (of its categories where it is categorical)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        values = pd.Series(values.cat.categories[np.unique(codes[codes >= 0])])
    try:
        return list(pd.unique(values.dropna()))
    except TypeError:                                   # unhashable values (lists): not ours to type
        return []


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _reads_as_number(text: str) -> bool:
    """Text that stands for a number or a boolean ('0.001', ' 12', 'True', 'nan')."""
    if text.strip().lower() in ("true", "false"):
        return True
    try:
        number = float(text)
    except ValueError:
        return False
    # '9193e35603236865' (a hex cell id) parses, to inf: only a spelled-out infinity is one.
    return math.isfinite(number) or text.strip().lower().lstrip("+-") in ("inf", "infinity")


def _examples(values, limit: int = 3) -> str:
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _type_error(values: pd.Series, kind: str | None) -> str:
    """Why a column cannot be read exactly as `kind` ('' where it can)."""
    dtype = values.dtype
    if kind is not None and (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)) \
            and not isinstance(dtype, pd.CategoricalDtype):
        boolean = pd.api.types.is_bool_dtype(dtype)
        if kind == "string":
            return f"holds {'booleans' if boolean else 'numbers'} ({_examples(_distinct(values))})"
        if kind == "bool":
            if boolean:
                return ""
            odd = [v for v in _distinct(values) if v not in (0, 1)]
            return f"holds numbers other than 0 and 1 ({_examples(odd)})" if odd else ""
        if boolean:
            return "holds booleans"
        if kind == "int64" and pd.api.types.is_float_dtype(dtype):
            numbers = values.dropna().to_numpy(float)
            fractional = numbers[numbers != np.round(numbers)]
            return f"holds values that are not whole numbers ({_examples(list(np.unique(fractional)))})" \
                if len(fractional) else ""
        return ""
    distinct = _distinct(values)
    texts = [v for v in distinct if isinstance(v, str)]
    numbers = [v for v in distinct if _is_number(v)]
    booleans = [v for v in distinct if isinstance(v, (bool, np.bool_))]
    # Text is what a declared text column holds, digits or not (ids, labels): only columns declared
    # numeric or boolean, or not declared at all, can hold numbers written as text.
    numeric_texts = [] if kind == "string" else [v for v in texts if _reads_as_number(v)]
    if numeric_texts:
        what = "booleans" if all(v.strip().lower() in ("true", "false") for v in numeric_texts) else "numbers"
        return f"holds {what} written as text ({_examples(numeric_texts)}; read back from a CSV?)"
    if texts and (numbers or booleans):
        other = numbers or booleans
        return f"mixes text and {'numbers' if numbers else 'booleans'} ({_examples(texts[:1] + other[:2])})"
    if kind == "string" and (numbers or booleans):
        return f"holds {'numbers' if numbers else 'booleans'} ({_examples(numbers or booleans)})"
    if kind in ("bool", "int64", "float64") and texts:
        return f"holds text ({_examples(texts)})"
    if kind == "bool" and numbers:
        odd = [v for v in numbers if v not in (0, 1)]
        return f"holds numbers other than 0 and 1 ({_examples(odd)})" if odd else ""
    if kind in ("int64", "float64") and booleans:
        return "holds booleans"
    if kind == "int64":
        fractional = [v for v in numbers if float(v) != round(float(v))]
        return f"holds values that are not whole numbers ({_examples(fractional)})" if fractional else ""
    return ""


def check_types(frame: pd.DataFrame, where: str = "rows", kinds: dict | None = None) -> None:
    """ValueError, in one line naming the column, where a column holds values that cannot be read
    exactly as its declared type (`kinds`: {column: kind}; default analysis.schema.declared_kind)."""
    for column in frame.columns:
        kind = kinds.get(column) if kinds is not None else declared_kind(str(column))
        why = _type_error(frame[column], kind)
        if why:
            allowed = (f"{ALLOWED[kind]}, as the row schema declares it (workflows/core/rows.py)" if kind else
                       "numbers as numbers and text as text, one type per column")
            raise ValueError(f"{where}: column {column} {why}; allowed: {allowed}")


def check_rows(rows: pd.DataFrame, where: str = "rows") -> tuple[pd.DataFrame, list[str]]:
    """(the rows with booleans as booleans and a cell_id, notes on what was derived), or a
    ValueError naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)} "
                         "(and the parameter columns that tell the cells apart)")
    if len(rows) == 0:
        raise ValueError(f"{where}: no rows; a results table needs at least one row (one per seed per cell)")
    check_types(rows, where)
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
