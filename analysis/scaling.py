"""Scaling laws: censored log-linear fits of a duration on the parameters that vary.

Per (problem, optimizer variant) group (the variant's label, analysis.cells.method_labels: adam
(beta1=0) and adam (beta1=0.9) are fitted apart), and within it per value of any other parameter
that varies but cannot be a power-law covariate (a category, a flag, a value that can be 0), a log-normal
accelerated-failure-time model (lifelines LogNormalAFTFitter):

    log τ = c + Σ_j a_j log x_j + σ ε,    ε ~ N(0, 1),

fitted by maximum likelihood with the censored runs in it (a run that did not escape says
τ > its censoring step, never τ = budget). The a_j are the scaling exponents; for β₁, β₂ the
covariate is 1 − β (the memory's inverse).

A fit gets no verdict (`no_verdict` in the fits table and the exponents table says why) where it
cannot carry one: fewer cells with an escape (distinct in the covariates) than the location
parameters c, a_1 … a_k (k + 1), the rest being censored only (a cell where no run escaped bounds
the law from one side: alone, it lets the slope run off to ±∞); a warning from lifelines during
the fit (kept in the fits table's `warnings`, never silenced); and, per exponent, a 95% interval
wider than MAX_EXPONENT_WIDTH (it cannot tell exponents half a unit apart), or none.

Speed: identical (covariates, duration, event) rows become one weighted row (weights_col, exact:
escape steps are integers). Where more distinct rows remain than a group's share of
TOTAL_FIT_ROWS, event times are rounded on a log grid of relative width `bin_width` (grown ×1.5 from
0.1% until they fit) and the fits table says so; censored times are never moved. A 3% grid adds
a variance of 0.03²/12 ≈ 1e-4 to log τ, against the ~0.1 of the escape-time noise itself.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import LogNormalAFTFitter, exceptions

from workflows.core.survival import DURATIONS

# Columns that describe the physics of a cell, in the order covariates are preferred when some are
# collinear (σ₁ = noise_scale/anisotropy: sigma_escape is kept, anisotropy dropped).
PREFERRED_COVARIATES = ("optimizer.lr", "curvature", "sigma_escape", "problem.noise_scale", "problem.anisotropy",
                        "optimizer.beta2", "optimizer.beta1", "problem.dim", "escape_radius")
# cnc_constant is not among them: it is a Monte Carlo estimate of what sigma_escape gives exactly
# (σ₁² at a stationary saddle), and its sampling noise would pass for a covariate of its own.
DERIVED = ("curvature", "sigma_escape", "escape_radius", "start_offset")
DUPLICATES = ("problem.curvature", "problem.escape_radius")     # the same as the derived columns
MAX_FIT_ROWS = 50_000           # per group
TOTAL_FIT_ROWS = 80_000         # over all groups: the fits' time is about linear in it
MIN_FIT_ROWS = 2_000
MAX_FITS = 60
MIN_BIN_WIDTH = 1e-3
# An exponent's 95% interval wider than this cannot tell a square-root law from a linear one (or
# from none): the fit measured nothing that a verdict could rest on.
MAX_EXPONENT_WIDTH = 1.0
# lifelines' own warnings: each says the fit or its intervals may not be what they seem.
LIFELINES_WARNINGS = (exceptions.ConvergenceWarning, exceptions.StatisticalWarning, exceptions.ApproximationWarning)


def covariate_name(column: str) -> str:
    short = column.split(".", 1)[-1]
    return f"1-{short}" if short in ("beta1", "beta2") or short.startswith("betas[") else short


def covariate_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy(dtype=float)
    return 1 - values if covariate_name(column).startswith("1-") else values


def descriptors(cells: pd.DataFrame) -> list[str]:
    columns = [c for c in cells.columns if (c.startswith(("problem.", "optimizer.")) or c in DERIVED)
               and c not in DUPLICATES + ("problem.name", "optimizer.name")]
    rank = {c: i for i, c in enumerate(PREFERRED_COVARIATES)}
    return sorted(columns, key=lambda c: (rank.get(c, len(rank)), c))


def _can_be_covariate(cells: pd.DataFrame, column: str) -> bool:
    series = cells[column]
    if series.dtype == bool or not pd.api.types.is_numeric_dtype(series):
        return False
    values = covariate_values(cells, column)
    return bool(np.isfinite(values).all() and (values > 0).all())


def _varies(series: pd.Series) -> bool:
    return series.astype(str).nunique() > 1


@dataclass
class Group:
    """Cells fitted together: their labels, the covariates kept and those dropped (with why)."""
    keys: dict
    cell_ids: list
    covariates: list = field(default_factory=list)           # column names
    dropped: dict = field(default_factory=dict)               # column -> reason

    @property
    def label(self) -> str:
        return ", ".join(f"{covariate_name(k)}={v}" for k, v in self.keys.items())


def design(cells: pd.DataFrame, covariates: list[str]) -> np.ndarray:
    """log covariates, one column per covariate: the AFT's design matrix (without intercept)."""
    return np.column_stack([np.log(covariate_values(cells, c)) for c in covariates]) if covariates \
        else np.zeros((len(cells), 0))


def scaling_groups(cells: pd.DataFrame) -> list[Group]:
    """Split the cells into groups and choose each group's covariates."""
    groups = []
    method = "optimizer" if "optimizer" in cells else "optimizer.name"
    for (problem, optimizer), by_method in cells.groupby(["problem.name", method], sort=True):
        varying = [c for c in descriptors(by_method) if by_method[c].notna().any() and _varies(by_method[c])]
        splits = [c for c in varying if not _can_be_covariate(by_method, c)]
        candidates = [c for c in varying if c not in splits]
        parts = by_method.groupby(splits, sort=True, dropna=False) if splits else [((), by_method)]
        for split_values, part in parts:
            keys = {"problem": problem, "optimizer": optimizer,
                    **dict(zip(splits, split_values if isinstance(split_values, tuple) else (split_values,)))}
            group = Group(keys, list(part["cell_id"]))
            _choose_covariates(group, part, [c for c in candidates if _varies(part[c])])
            groups.append(group)
    return groups


def _choose_covariates(group: Group, cells: pd.DataFrame, candidates: list[str]) -> None:
    """Keep a candidate only if it adds a direction to the (cell-level) design: collinear ones,
    e.g. anisotropy next to sigma_escape, or 1 − β₂ under the rule β₂ = 1 − η^(2/3), are dropped."""
    kept = []
    for column in candidates:
        trial = design(cells, kept + [column])
        trial = (trial - trial.mean(0)) / trial.std(0)          # centred: the intercept's share removed
        if np.linalg.matrix_rank(trial, tol=1e-6 * np.sqrt(len(cells))) > len(kept):
            kept.append(column)
        else:
            group.dropped[column] = "collinear with " + ", ".join(covariate_name(c) for c in kept)
    group.covariates = kept


def compress(frame: pd.DataFrame, covariates: list[str], max_rows: int = MAX_FIT_ROWS):
    """Identical rows as one weighted row; event times log-binned only if still too many.
    Returns (table with T, E, weight, covariate columns; the relative bin width used, 0 = exact)."""
    width = 0.0
    while True:
        duration = frame["T"]
        if width:
            binned = np.exp(np.round(np.log(duration) / width) * width)
            duration = duration.where(~frame["E"], binned)
        table = (frame.assign(T=duration).groupby(covariates + ["T", "E"], sort=False, observed=True)
                 .size().rename("weight").reset_index())
        if len(table) <= max_rows:
            return table, width
        width = MIN_BIN_WIDTH if not width else 1.5 * width


def fit_group(part: pd.DataFrame, group: Group, name: str = "escape", max_rows: int = MAX_FIT_ROWS,
              allowed: bool = True):
    """(exponents: one row per covariate, quality: one dict) from the group's rows `part`."""
    duration, event = DURATIONS[name]
    names = [covariate_name(c) for c in group.covariates]
    quality = {"group": group.label, **group.keys, "duration": name, "covariates": ", ".join(names),
               "dropped": "; ".join(f"{covariate_name(c)} ({why})" for c, why in group.dropped.items()),
               "cells": len(group.cell_ids), "runs": len(part), "events": int(part[event].sum())}
    if not names:
        return pd.DataFrame(), {**quality, "status": "skipped: no parameter varies within the group"}
    if quality["events"] == 0:
        return pd.DataFrame(), {**quality, "status": "skipped: no run escaped (all censored)"}
    if not allowed:
        return pd.DataFrame(), {**quality, "status": f"skipped: over the {MAX_FITS} fits of the time budget "
                                                     "(shared out over the methods, largest groups first)"}
    frame = pd.DataFrame(design(part, group.covariates), columns=names, index=part.index)
    frame["T"], frame["E"] = part[duration].to_numpy(float), part[event].to_numpy(bool)
    support = _support(frame, part["cell_id"], names)
    quality.update(support)
    table, width = compress(frame, names, max_rows)
    fitter = LogNormalAFTFitter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fitter.fit(table, "T", "E", weights_col="weight")
        except Exception as error:                       # lifelines' ConvergenceError and friends
            first = " ".join(str(error).split()).split(". ")[0].rstrip(".")
            return pd.DataFrame(), {**quality, "status": f"failed: {type(error).__name__}: {first}"[:200],
                                    "warnings": _lifelines_warnings(caught)}
    said = _lifelines_warnings(caught)
    reasons = [why for why in (_too_few_points(support, len(names)),
                               f"lifelines warned during the fit ({said})" if said else "") if why]
    intervals = fitter.confidence_intervals_
    mu = [("mu_", n) for n in names]
    exponents = pd.DataFrame({
        "group": group.label, **group.keys, "duration": name, "covariate": names,
        "exponent": fitter.params_.loc[mu].to_numpy(),
        "lo": intervals.loc[mu].iloc[:, 0].to_numpy(), "hi": intervals.loc[mu].iloc[:, 1].to_numpy(),
        "se": fitter.standard_errors_.loc[mu].to_numpy()})
    exponents["no_verdict"] = ["; ".join(why for why in [*reasons, _interval_reason(lo, hi)] if why)
                               for lo, hi in zip(exponents["lo"], exponents["hi"])]
    quality.update(status="ok", no_verdict="; ".join(reasons), warnings=said, fit_rows=len(table), bin_width=width,
                   log_likelihood=fitter.log_likelihood_,
                   AIC=fitter.AIC_, sigma=float(np.exp(fitter.params_.loc[("sigma_", "Intercept")])),
                   intercept=float(fitter.params_.loc[("mu_", "Intercept")]))
    return exponents, quality


def _support(frame: pd.DataFrame, cell_ids: pd.Series, names: list[str]) -> dict:
    """How many cells, distinct in the covariates, have an escape; how many have none (censored only)."""
    events = frame["E"].groupby(cell_ids.to_numpy(), sort=False).any()
    points = frame[names].groupby(cell_ids.to_numpy(), sort=False).first()
    return {"cells_with_events": int(len(points[events].drop_duplicates())),
            "censored_only_cells": int((~events).sum())}


def _too_few_points(support: dict, covariates: int) -> str:
    needed = covariates + 1
    have = support["cells_with_events"]
    if have >= needed:
        return ""
    censored = support["censored_only_cells"]
    return (f"it rests on {have} cell{'s' if have != 1 else ''} with an escape for {needed} location parameters "
            f"(an intercept and {covariates} exponent{'s' if covariates != 1 else ''})"
            + (f"; the other {censored} cells are censored only" if censored > 1 else
               "; the other cell is censored only" if censored else ""))


def _interval_reason(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no finite 95% interval (a degenerate fit)"
    if hi - lo > MAX_EXPONENT_WIDTH:
        return f"its 95% interval is {hi - lo:.3g} wide (over {MAX_EXPONENT_WIDTH:g}: uninformative)"
    return ""


def _lifelines_warnings(caught) -> str:
    """lifelines' warnings during a fit, each once, its first sentence ('' for none); the rest
    (numpy's overflow inside the optimiser's line search) says nothing about the result."""
    said = []
    for warning in caught:
        if issubclass(warning.category, LIFELINES_WARNINGS):
            text = " ".join(str(warning.message).split())
            text = f"{warning.category.__name__}: " + text.split(". ")[0].rstrip(".")
            if text not in said:
                said.append(text)
    return " | ".join(said)


def fitted_median(cells: pd.DataFrame, exponents: pd.DataFrame, quality: dict) -> np.ndarray:
    """The AFT's median exp(c + Σ a_j log x_j) at each cell (log-normal: median = e^μ)."""
    columns = {covariate_name(c): c for c in descriptors(cells)}
    x = design(cells, [columns[n] for n in exponents["covariate"]])
    return np.exp(quality["intercept"] + x @ exponents["exponent"].to_numpy())


def with_covariates(part: pd.DataFrame, cells: pd.DataFrame, covariates: list[str]) -> pd.DataFrame:
    """The runs `part` with each covariate they lack taken from their cell's row of `cells` (lean
    rows hold the durations only: analysis.lean)."""
    missing = [c for c in covariates if c not in part]
    if not missing:
        return part
    ids = part["cell_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):     # by the codes: no lookup of a text per run
        at = ids.cat.codes.to_numpy()
        return part.assign(**{c: cells[c].reindex(ids.cat.categories.astype(object)).to_numpy()[at] for c in missing})
    return part.assign(**{c: cells[c].reindex(ids.astype(object).to_numpy()).to_numpy() for c in missing})


def fit_scaling(rows: pd.DataFrame, cells: pd.DataFrame, name: str = "escape", max_rows: int | None = None,
                exclude=frozenset()):
    """(exponents table, fits table) over every group; the fits table also says how well the fitted
    medians match the measured KM medians cell by cell (rms and worst factor). `max_rows`: the
    distinct rows each fit may use (default: a share of TOTAL_FIT_ROWS). `exclude`: cell ids left
    out (artefacts, analysis.sanity)."""
    all_exponents, all_quality = [], []
    groups = scaling_groups(cells[~cells["cell_id"].isin(list(exclude))] if exclude else cells)
    if max_rows is None:
        max_rows = int(np.clip(TOTAL_FIT_ROWS // max(len(groups), 1), MIN_FIT_ROWS, MAX_FIT_ROWS))
    # lifelines spends ~0.3 s on a fit of any size: past MAX_FITS groups, each (problem, optimizer)
    # in turn gets its next largest group fitted.
    rank, order = {}, []
    for group in sorted((g for g in groups if g.covariates), key=lambda g: -len(g.cell_ids)):
        method = (group.keys["problem"], group.keys["optimizer"])
        rank[method] = rank.get(method, -1) + 1
        order.append((rank[method], -len(group.cell_ids), id(group)))
    fitted = {group_id for _, _, group_id in sorted(order)[:MAX_FITS]}
    positions = rows.groupby("cell_id", observed=True, sort=False).indices     # cell -> its row numbers
    # Only what a fit reads is copied per group (a group may hold most of the runs).
    used = list(dict.fromkeys(["cell_id", *DURATIONS[name], *(c for g in groups for c in g.covariates if c in rows)]))
    slim = rows[used]
    for group in groups:
        part = with_covariates(slim.iloc[np.concatenate([positions[cell] for cell in group.cell_ids])], cells,
                               group.covariates)
        exponents, quality = fit_group(part, group, name, max_rows, allowed=id(group) in fitted)
        if quality["status"] == "ok":
            part = cells.loc[group.cell_ids]
            measured = part[f"{name}_median"].to_numpy(float)
            known = np.isfinite(measured)
            ratio = np.log(fitted_median(part, exponents, quality)[known] / measured[known])
            quality.update(median_cells=len(ratio),
                           rms_factor=float(np.exp(np.sqrt(np.mean(ratio**2)))) if len(ratio) else np.nan,
                           worst_factor=float(np.exp(np.abs(ratio).max())) if len(ratio) else np.nan)
        all_exponents.append(exponents)
        all_quality.append(quality)
    exponents = pd.concat(all_exponents, ignore_index=True) if all_exponents else pd.DataFrame()
    return exponents, pd.DataFrame(all_quality)
