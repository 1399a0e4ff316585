"""What a sweep varied, read off its cells: every figure, table and comparison is chosen from this.

- `varied`: the parameters (problem.*, optimizer.*, run settings; a table's own cell-level
  columns) that take more than one value, plus a derived column (sigma_escape, curvature, ...)
  only where the parameters do not already determine it (a table made elsewhere);
- `variant`: the columns that make an optimizer variant (its name and the hyperparameters in
  its label, analysis.cells.method_labels): a variant is a colour, never an axis;
- `per_variant`: parameters that differ between variants but never within one (each optimizer's
  own lr in a sweep that gives each its own, eps defaults): a property of the line, not an axis,
  and not something two variants are matched on when compared;
- `fixed`: the parameters with one value throughout, for titles;
- `not_applicable`: the fixed ones that have no effect on any cell (the Student-t df under Gaussian
  noise, a cosine schedule's final_lr under a constant step, sosp_rho with the SOSP test off), as
  Param.applies declares them (analysis.schema.declared_conditions, and meta.json's `conditions`
  for a problem's or an optimizer's own), with why: a report lists them apart, never as settings.

Values are always sorted as values (numbers numerically), never as strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workflows.core.params import condition_holds
from workflows.core.schedules import paper_beta2

from .cells import variant_columns
from .schema import DERIVED, declared_conditions, declared_scope, is_parameter

# Axes and facets are preferred in this order; any other column follows, alphabetically.
PREFERRED = ("problem.name", "problem.anisotropy", "problem.noise_scale", "optimizer.lr", "optimizer.beta2",
             "optimizer.beta1", "problem.dim", "problem.curvature", "problem.escape_radius", "problem.noise_alignment",
             "problem.rotate_hessian", "problem.noise_dist", "problem.df", "problem.escape_measure", "start_offset",
             "budget")
# Derived columns that describe a cell but are never an axis: a Monte Carlo estimate (cnc_constant)
# and values computed from the others.
NOT_AXES = ("cnc_constant", "noise_anisotropy", "saddle_loss", "minimum_loss")
# The theory's own names for a parameter: a sweep's escape_radius and curvature are the problem's.
SHORT = {"problem.escape_radius": "escape_radius", "problem.curvature": "curvature", "problem.name": "problem",
         "optimizer.name": "optimizer"}


def short_name(column: str) -> str:
    return SHORT.get(column, column.split(".", 1)[-1])


def is_beta(column: str) -> bool:
    """β-like hyperparameters are plotted and fitted as 1 − β (the averaging memory's inverse)."""
    name = short_name(column)
    return name in ("beta1", "beta2") or name.startswith("betas[")


def axis_label(column: str) -> str:
    return f"1 - {short_name(column)}" if is_beta(column) else short_name(column)


def axis_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
    return 1 - values if is_beta(column) else values


def is_numeric(series: pd.Series) -> bool:
    values = series.dropna()
    if len(values) == 0 or values.map(lambda v: isinstance(v, (bool, np.bool_))).any():
        return False
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def sort_values(values) -> list:
    """Distinct values in their natural order: numbers numerically, then everything else as text."""
    distinct = list(pd.unique(pd.Series(list(values), dtype=object).dropna()))
    numbers = [v for v in distinct if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
    others = [v for v in distinct if v not in numbers]
    return sorted(numbers) + sorted(others, key=str)


def sorted_groups(frame: pd.DataFrame, columns: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(values, part) per combination of `columns` that occurs, in the values' natural order."""
    if not columns:
        return [((), frame)]
    order = {c: {str(v): i for i, v in enumerate(sort_values(frame[c]))} for c in columns}
    groups = []
    for key, part in frame.groupby([frame[c].astype(str) for c in columns], dropna=False, sort=False):
        values = tuple(part[c].iloc[0] for c in columns)
        rank = tuple(order[c].get(str(v), len(order[c])) for c, v in zip(columns, values))
        groups.append((rank, values, part))
    return [(values, part) for _, values, part in sorted(groups, key=lambda g: g[0])]


def format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def varies(series: pd.Series) -> bool:
    return series.dropna().astype(str).nunique() > 1


def is_function_of(cells: pd.DataFrame, target: str, by: list[str]) -> bool:
    """Whether `target` takes one value per combination of `by`, over the cells that have it."""
    part = cells[cells[target].notna()]
    if not by:
        return part[target].astype(str).nunique() <= 1
    keys = [part[c].astype(str) for c in by]
    return bool((part[target].astype(str).groupby(keys, dropna=False).nunique() <= 1).all())


def _rank(column: str) -> tuple:
    return (PREFERRED.index(column) if column in PREFERRED else len(PREFERRED), column)


def independent(frame: pd.DataFrame, columns: list[str], given=("optimizer",)) -> tuple[list[str], list[str]]:
    """(columns that vary on their own, columns determined by the others and `given`): checked from
    the least preferred, so that of two that determine each other (lr and β₂ under the paper's
    rule) the preferred one stays."""
    kept = [c for c in columns if c in frame and varies(frame[c])]
    dropped = []
    for column in reversed(list(kept)):
        # Only a parameter defined wherever `column` is can determine it: anisotropy, missing on
        # staib_toy's cells, does not "determine" the problem's name by being missing there.
        defined = frame[column].notna()
        others = [c for c in kept if c != column and frame.loc[defined, c].notna().all()]
        others += [g for g in given if g in frame]
        if others and is_function_of(frame, column, others):
            kept.remove(column)
            dropped.insert(0, column)
    return kept, dropped


@dataclass
class Design:
    varied: list = field(default_factory=list)        # ordered by PREFERRED
    variant: list = field(default_factory=list)       # optimizer.name + the hyperparameters in labels
    fixed: dict = field(default_factory=dict)         # parameter -> its one value
    per_variant: list = field(default_factory=list)   # differ between variants only
    determined: dict = field(default_factory=dict)    # varied parameter -> what determines it (words)
    not_applicable: dict = field(default_factory=dict)  # fixed parameter -> why it has no effect (words)

    @property
    def independent(self) -> list:
        """The varied parameters that no other varied parameter (with the variant) determines."""
        return [c for c in self.varied if c not in self.determined]

    @property
    def numeric(self) -> list:
        return [c for c in self.varied if c in self._numeric]

    @property
    def categorical(self) -> list:
        return [c for c in self.varied if c not in self._numeric]

    _numeric: set = field(default_factory=set)


def sweep_design(cells: pd.DataFrame, cell_columns: list[str] | None = None, conditions: dict | None = None) -> Design:
    """`cell_columns`: the rows' columns that describe a cell (analysis.schema.split_columns);
    default: every parameter column of `cells`. `conditions`: {column: [column it depends on,
    *values]} besides the declared ones (meta.json's, for the problems' and optimizers' own)."""
    columns = cell_columns if cell_columns is not None else [c for c in cells.columns if is_parameter(c)]
    variant = ["optimizer.name"] + variant_columns(cells)
    parameters = [c for c in columns if c in cells and c != "cell_id" and c not in variant
                  and (is_parameter(c) or declared_scope(c) is None)]
    varied = sorted((c for c in parameters if varies(cells[c])), key=_rank)
    for column in DERIVED:
        if column in cells and column not in NOT_AXES and varies(cells[column]) and \
                not is_function_of(cells, column, varied + variant):
            varied.append(column)
    per_variant = [c for c in varied if "optimizer" in cells and cells["optimizer"].nunique() > 1
                   and is_function_of(cells, c, ["optimizer"])]
    varied = [c for c in varied if c not in per_variant]
    fixed = {c: cells[c].dropna().iloc[0] for c in parameters if c not in varied and c not in per_variant
             and cells[c].notna().any()}
    kept, dropped = independent(cells, varied, given=("optimizer",) if "optimizer" in cells else ())
    determined = {c: _determined_by(cells, c, kept) for c in dropped}
    conditions = {**declared_conditions(), **(conditions or {})}
    not_applicable = {c: why for c in fixed if c in conditions and (why := _not_applicable(cells, c, conditions[c]))}
    return Design(varied, variant, fixed, per_variant, determined, not_applicable,
                  {c for c in varied if is_numeric(cells[c])})


def _not_applicable(cells: pd.DataFrame, column: str, condition: list) -> str:
    """Why `column` has an effect on no cell ('noise_dist is gaussian', 'off'), or '' where it has one
    somewhere (or nothing tells: the column it depends on is not in the table)."""
    key = condition[0]
    if key not in cells:
        return ""
    own = cells.loc[cells[column].notna(), key].dropna()
    if own.empty or own.map(lambda v: condition_holds(condition, v)).any():
        return ""
    if key == column:
        return "off"
    return f"{short_name(key)} is " + "/".join(format_value(v) for v in sort_values(own))


def _determined_by(cells: pd.DataFrame, column: str, kept: list[str]) -> str:
    """'follows lr (the paper's rule beta2 = 1 - lr^(2/3))', 'follows problem.name', ..."""
    given = ["optimizer"] if "optimizer" in cells else []
    defined = cells[column].notna()
    single = [c for c in kept if cells.loc[defined, c].notna().all() and is_function_of(cells, column, [c] + given)]
    if short_name(column) == "beta2" and "optimizer.lr" in single:
        part = cells[cells[column].notna()]
        rule = np.isclose(part[column].astype(float), paper_beta2(part["optimizer.lr"].astype(float)))
        if rule.all():
            return "follows lr (beta2 = 1 - lr^(2/3), the paper's rule)"
    if single:
        return f"follows {short_name(single[0])}"
    return "follows " + ", ".join(short_name(c) for c in kept)


def variant_settings(cells: pd.DataFrame, per_variant: list[str]) -> dict[str, str]:
    """{variant label: 'lr=0.01, eps=1e-08'}: the per-variant parameters of each variant."""
    out = {}
    for label, part in cells.groupby("optimizer", sort=False):
        values = [(c, part[c].dropna().iloc[0]) for c in per_variant if part[c].notna().any()]
        out[str(label)] = ", ".join(f"{short_name(c)}={format_value(v)}" for c, v in values)
    return out


__all__ = ["Design", "axis_label", "axis_values", "format_value", "independent", "is_beta", "is_function_of",
           "is_numeric", "short_name", "sort_values", "sweep_design", "variant_settings", "varies"]
