"""Which columns of a results table describe the cell and which hold one value per run.

The producer declares its columns once, in workflows/core/rows.py (scope "cell" or "run", with units);
this module reads that declaration and extends it to columns it does not name:

    declared per run (escape_step, tail_gap_mean, ...)          -> per run
    declared per cell, or a parameter (problem.*, optimizer.*,
      a run setting of workflows/core/settings.py, base_seed)         -> describes the cell
    anything else (a table made elsewhere, a user's own metric)  -> describes the cell only if it is
                                                                   constant within every cell; else
                                                                   per run

so that no per-run value is ever passed off as the cell's (seed 0's value standing for all).
A table without `cell_id` gets one derived from its parameter columns (`derive_cell_ids`).

Each column's type comes from the same declarations (`declared_kind`): rows.py's dtype, the run
settings' and the step-size schedule's Param kinds; a problem's or an optimizer's own parameter
has no torch-free declaration, and analysis.load checks it only for text that stands for a number.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from workflows.core.params import conditions
from workflows.core.rows import BASE_SEED, BY_NAME, PARAMETER_PREFIXES, RUN_SETTING_COLUMNS, is_parameter, is_per_run
from workflows.core.schedules import SCHEDULE_SCHEMA
from workflows.core.settings import RUN_SCHEMA

# Run settings as rows.parquet stores them (workflows/core/rows.py).
RUN_SETTINGS = RUN_SETTING_COLUMNS
# Cell columns the engine derives from the parameters (what the problem says about its saddle).
DERIVED = tuple(c.name for c in BY_NAME.values() if c.scope == "cell" and "<" not in c.name
                and not c.name.startswith(PARAMETER_PREFIXES) and c.name != "cell_id")


def declared_scope(column: str) -> str | None:
    """'cell', 'run', or None where workflows/core/rows.py says nothing about the column."""
    if is_per_run(column):
        return "run"
    if column in BY_NAME or column.startswith(PARAMETER_PREFIXES) or column in RUN_SETTINGS:
        return "cell"
    return None


# A Param's kind as the row schema names it.
KIND_DTYPES = {bool: "bool", int: "int64", float: "float64", str: "string"}


def declared_kind(column: str) -> str | None:
    """'bool', 'int64', 'float64', 'string', or None where nothing declares the column's type
    (a problem's or an optimizer's own parameter, a column of the user's)."""
    declared = BY_NAME.get(column)
    if declared is not None and declared.dtype:
        return declared.dtype
    if column == BASE_SEED:                        # the cell's `seed` setting, stored under this name
        return KIND_DTYPES[RUN_SCHEMA["seed"].kind]
    if column in RUN_SCHEMA:
        return KIND_DTYPES[RUN_SCHEMA[column].kind]
    if column.startswith("optimizer.") and column.removeprefix("optimizer.") in SCHEDULE_SCHEMA:
        return KIND_DTYPES[SCHEDULE_SCHEMA[column.removeprefix("optimizer.")].kind]
    return None


def declared_conditions() -> dict[str, list]:
    """{column: [the column it depends on, *values]} for the run settings and the step-size schedule's
    parameters that have an effect only under a condition (workflows.core.params.Param.applies); a
    problem's or optimizer's own come with the results (meta.json's `conditions`)."""
    return {**conditions("", RUN_SCHEMA), **conditions("optimizer.", SCHEDULE_SCHEMA)}


def unit(column: str) -> str:
    declared = BY_NAME.get(column)
    return declared.unit if declared else ""


def _constant_within_cells(rows: pd.DataFrame, column: str) -> bool:
    values = rows[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    counts = values.groupby(rows["cell_id"], observed=True, sort=False).nunique(dropna=False)
    return bool((counts <= 1).all())


def split_columns(rows: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(cell columns, declared per-run columns, undeclared per-run columns) of a table that has
    `cell_id`; undeclared columns are classified by whether they vary within some cell."""
    return split_by(rows.columns, lambda column: not _constant_within_cells(rows, column))


def split_by(columns, varies) -> tuple[list[str], list[str], list[str]]:
    """split_columns for `columns`, with `varies(column)` saying whether an undeclared column varies
    within some cell (analysis.lean learns it a batch of rows at a time)."""
    cell, run, undeclared = [], [], []
    for column in columns:
        scope = declared_scope(column)
        if scope == "run":
            run.append(column)
        elif scope == "cell" or column == "cell_id" or not varies(column):
            cell.append(column)
        else:
            undeclared.append(column)
    return cell, run, undeclared


def derive_cell_ids(rows: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """A cell id per row from its parameter columns (problem.*, optimizer.*, run settings, and the
    declared cell columns such as sigma_escape): rows with equal parameters share a cell.
    Returns (ids, the columns used). The id is a hash of the values, stable across runs."""
    key = [c for c in rows.columns if declared_scope(c) == "cell" and c != "cell_id"]
    if not key:
        return pd.Series("cell0", index=rows.index), []
    codes = rows[key].astype(object).groupby(key, dropna=False, sort=False).ngroup().to_numpy()
    first = rows[key].iloc[np.unique(codes, return_index=True)[1]]
    ids = np.array(["derived-" + hashlib.sha1("|".join(map(repr, values)).encode()).hexdigest()[:12]
                    for values in first.astype(object).itertuples(index=False)])
    return pd.Series(ids[codes], index=rows.index), key


__all__ = ["DERIVED", "PARAMETER_PREFIXES", "RUN_SETTINGS", "declared_conditions", "declared_kind", "declared_scope",
           "derive_cell_ids", "is_parameter", "split_columns", "unit"]
