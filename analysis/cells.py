"""One row per cell: its parameters, its outcome counts, and the survival summaries of every
censored duration the rows carry (analysis.survival)."""
from __future__ import annotations

import pandas as pd

from workflows.rows import is_per_run

from .survival import duration_pairs, summarize_cells

# Per-run losses summarised per cell by their median over the runs.
LOSS_COLUMNS = ("loss_at_escape", "final_loss", "tail_loss_mean", "tail_loss_q50", "tail_loss_q90")


# Hyperparameters that sweeps vary as covariates (x axes, scaling-law exponents); any other that
# varies within one optimizer tells its variants apart (adam's beta1, precond_sgd's target).
COVARIATE_HYPERPARAMETERS = ("optimizer.name", "optimizer.lr", "optimizer.beta2", "optimizer.eps")


def method_labels(cells: pd.DataFrame) -> pd.Series:
    """'adam (beta1=0.9)', 'precond_sgd (target=second_moment)', or just the name where an
    optimizer has one variant in the sweep: the identity of a line, a colour, a scaling fit."""
    labels = cells["optimizer.name"].astype(str)
    for name, part in cells.groupby("optimizer.name"):
        varying = [c for c in part.columns if c.startswith("optimizer.") and c not in COVARIATE_HYPERPARAMETERS
                   and part[c].nunique(dropna=True) > 1]
        if varying:
            fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
            labels[part.index] = [f"{name} (" + ", ".join(f"{c.split('.', 1)[1]}={fmt(v)}" for c, v in
                                                         zip(varying, values) if pd.notna(v)) + ")"
                                  for values in part[varying].itertuples(index=False)]
    return labels


def cell_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Indexed by cell_id; `problem` is the problem's name, `optimizer` the optimizer's variant
    label (method_labels); `optimizer.name` stays the name."""
    described = [c for c in rows.columns if not is_per_run(c)]
    cells = rows.drop_duplicates("cell_id")[described].set_index("cell_id", drop=False)
    cells.index.name = None
    for column in described:
        if isinstance(cells[column].dtype, pd.CategoricalDtype):
            cells[column] = cells[column].astype(object)
    cells["problem"], cells["optimizer"] = cells["problem.name"], method_labels(cells)

    groups = rows.groupby("cell_id", observed=True, sort=False)
    cells["runs"] = groups.size()
    cells["escaped_runs"] = groups["escaped"].sum()
    cells["diverged_runs"] = groups["diverged"].sum() if "diverged" in rows else 0
    cells["escaped_fraction"] = cells["escaped_runs"] / cells["runs"]
    losses = [c for c in LOSS_COLUMNS if c in rows]
    if losses:
        cells = cells.join(groups[losses].median().add_prefix("median_"))
    for name in duration_pairs(rows):
        cells = cells.join(summarize_cells(rows, name))
    return cells
