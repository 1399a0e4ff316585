"""One row per cell: its parameters, its outcome counts, the survival summaries of every censored
duration the rows carry (analysis.survival), and every per-run value summarised over the runs.

Which columns describe the cell and which hold one value per run comes from the producer's
declaration (workflows/core/rows.py, read by analysis.schema). A per-run column is never shown as the
cell's: numeric ones become `median_<column>` with their spread `q10_<column>` and `q90_<column>`
(the 10% and 90% quantiles over the cell's runs, NaN runs left out); others are left out of the
cell table. `per_run_columns(cells)` lists what was summarised, for the report to label.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from workflows.core.survival import duration_pairs

from .schema import split_columns
from .survival import summarize_cells

# Hyperparameters that sweeps vary as covariates (x axes, scaling-law exponents); any other that
# varies within one optimizer tells its variants apart (adam's beta1, precond_sgd's target).
COVARIATE_HYPERPARAMETERS = ("optimizer.name", "optimizer.lr", "optimizer.beta2", "optimizer.eps")
# Per-run columns that are the durations' own (summarised by survival, not by quantiles).
DURATION_COLUMNS = ("seed", "escaped", "escape_step", "final_step", "sosp_reached", "sosp_step", "gap_reached",
                    "gap_step")
SPREAD = (0.1, 0.9)


def _format(value) -> str:
    """A hyperparameter's value as a label shows it; a null one (cnc_sgd's g_thres: no test) as the
    sweep file writes it, `null`, never left out."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)) or value is pd.NA:
        return "null"
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def method_labels(cells: pd.DataFrame) -> pd.Series:
    """'adam (beta1=0.9)', 'precond_sgd (target=second_moment)', 'cnc_sgd (g_thres=null)', or just
    the name where an optimizer has one variant in the sweep: the identity of a line, a colour, a scaling fit.
    Any name works (a plugin, `torch.optim.NAdam`); list entries (`betas[0]`) are hyperparameters
    like any other."""
    labels = cells["optimizer.name"].astype(str)
    for name, part in cells.groupby("optimizer.name", observed=True):
        varying = _distinguishing(part)
        if varying:
            labels[part.index] = [f"{name} (" + ", ".join(f"{c.split('.', 1)[1]}={_format(v)}" for c, v in
                                                         zip(varying, values)) + ")"
                                  for values in part[varying].itertuples(index=False)]
    return labels


def _distinguishing(part: pd.DataFrame) -> list[str]:
    """The hyperparameters that vary among one optimizer's cells, less those the others determine:
    a sweep over `lr_schedule` also varies `warmup_steps`, `final_lr`, ... (each schedule keeps only
    its own; the rest are reset to their defaults), and a label 'adam (lr_schedule=cosine,
    final_lr=0.0001, warmup_steps=1, ...)' names what was not swept."""
    varying = [c for c in part.columns if c.startswith("optimizer.") and c not in COVARIATE_HYPERPARAMETERS
               and not _is_beta2(c) and part[c].astype(str).nunique(dropna=True) > 1]
    text = part[varying].astype(str)
    for column in reversed(list(varying)):
        rest = [c for c in varying if c != column]
        if rest and (text.groupby(rest, sort=False)[column].nunique() <= 1).all():
            varying.remove(column)                # the other varied hyperparameters fix it
    return varying


def _is_beta2(column: str) -> bool:
    """β₂ under another name (torch.optim's betas[1]) is a covariate like optimizer.beta2."""
    return column.endswith("betas[1]")


def variant_columns(cells: pd.DataFrame) -> list[str]:
    """The hyperparameters that method_labels puts in a label (they tell variants apart)."""
    columns = []
    for _, part in cells.groupby("optimizer.name", observed=True):
        columns += [c for c in _distinguishing(part) if c not in columns]
    return columns


def cell_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Indexed by cell_id; `problem` is the problem's name, `optimizer` the optimizer's variant
    label (method_labels); `optimizer.name` stays the name. Per-run columns appear only as
    `median_`/`q10_`/`q90_` summaries over the cell's runs."""
    split = split_columns(rows)
    return labelled(cell_summaries(rows, split, summarised_columns(rows, split)), len(split[0]))


def summarised_columns(rows: pd.DataFrame, split) -> list[str]:
    """The per-run columns summarised by median and spread: numeric, not boolean, not a duration's."""
    _, declared_run, undeclared_run = split
    return [c for c in declared_run + undeclared_run if c not in DURATION_COLUMNS and c not in ("diverged",)
            and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].dtype != bool]


def cell_summaries(rows: pd.DataFrame, split, summarised: list[str]) -> pd.DataFrame:
    """cell_table without the labels, from `rows` holding every run of each of its cells: what can
    be computed a group of cells at a time (analysis.load reads a large table so) and put together
    with pd.concat. split: analysis.schema.split_columns of the whole table; summarised: its
    summarised_columns."""
    described = split[0]
    cells = rows.drop_duplicates("cell_id")[described].set_index("cell_id", drop=False)
    cells.index.name = None
    for column in described:
        if isinstance(cells[column].dtype, pd.CategoricalDtype):
            cells[column] = cells[column].astype(object)

    groups = rows.groupby("cell_id", observed=True, sort=False)
    cells["runs"] = groups.size()
    cells["escaped_runs"] = groups["escaped"].sum()
    cells["diverged_runs"] = groups["diverged"].sum() if "diverged" in rows else 0
    cells["escaped_fraction"] = cells["escaped_runs"] / cells["runs"]
    if summarised:
        numeric = rows[summarised].astype(float)
        by_cell = numeric.groupby(rows["cell_id"], observed=True, sort=False)
        cells = cells.join(by_cell.median().add_prefix("median_"))
        for q in SPREAD:
            cells = cells.join(by_cell.quantile(q).add_prefix(f"q{round(100 * q)}_"))
    for name in duration_pairs(rows):
        cells = cells.join(summarize_cells(rows, name))
    return cells


def labelled(cells: pd.DataFrame, described: int) -> pd.DataFrame:
    """`problem` and `optimizer` (the variant labels, which depend on every cell) after the first
    `described` columns, or in place where the table has columns of those names."""
    problem, optimizer = cells["problem.name"].astype(str), method_labels(cells)
    at = described
    for name, values in (("problem", problem), ("optimizer", optimizer)):
        if name in cells:
            cells[name] = values
        else:
            cells.insert(at, name, values)
            at += 1
    return cells


def per_run_columns(cells: pd.DataFrame, rows: pd.DataFrame | None = None) -> list:
    """The per-run columns summarised in this cell table (median and spread over the runs). With
    the `rows`, columns equal to another on every run (loss_at_escape and final_loss where every
    run stops at its escape) come as one tuple, ('loss_at_escape', 'final_loss'), to be shown once."""
    columns = [c.removeprefix("median_") for c in cells.columns if c.startswith("median_")]
    if rows is None:
        return columns
    groups: list[list[str]] = []
    for column in columns:
        values = rows[column].to_numpy(float)
        same = next((g for g in groups if np.array_equal(rows[g[0]].to_numpy(float), values, equal_nan=True)), None)
        if same is None:
            groups.append([column])
        else:
            same.append(column)
    return [g[0] if len(g) == 1 else tuple(g) for g in groups]
