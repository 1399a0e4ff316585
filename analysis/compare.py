"""Measured against predicted: cell by cell, exponent by exponent, and the paper's claims.

Like with like: the closed forms give the mean, the median, the restricted mean E[min(τ, budget)]
and the fraction escaped by the budget. A cell where every run escaped is compared on its mean
(t interval); a censored cell whose median is defined on its KM median (KM interval); a cell
censored past half on the fraction that escaped (Wilson interval), its restricted mean shown
alongside. A cell where no run escaped and the theory also expects most runs not to is
**uninformative (censored)**: both sides say only "longer than the budget", which is no agreement.
Cells whose escape time is an artefact (analysis.sanity) get the verdict "artefact" and count for
nothing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from workflows.core.survival import RESTRICTED

from . import lag_cells
from .prediction import CLOSED_FORM_PROBLEMS, predictions
from .scaling import MAX_EXPONENT_WIDTH, covariate_name, design, scaling_groups
from .theory import local_exponents

CLOSE_RATIO = 0.10          # "close": measured/predicted within ±10%
CLOSE_FRACTION = 0.10       # "close" for a fraction escaped: within 0.1
CLOSE_EXPONENT = 0.10       # "close": |fitted − theory| ≤ 10% of |theory| (relative, as for escape times)
NO_VERDICT = "no verdict"   # a fit that cannot carry one (analysis.scaling: `no_verdict` says why)
# A least-squares slope of the closed form's log median on exact inputs is exact to about 1e-15;
# below this it is zero (a covariate the closed form does not depend on), never "5.7e-16".
SLOPE_ZERO = 1e-9
UNINFORMATIVE = "uninformative (censored)"
ARTEFACT = "artefact"
VERDICTS = ("holds", "close", "fails", UNINFORMATIVE, ARTEFACT)


def with_predictions(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.join(predictions(cells))


def _verdict(inside, ratio_or_difference, tolerance, is_ratio=True):
    off = np.abs(np.log(ratio_or_difference)) if is_ratio else np.abs(ratio_or_difference)
    close = off <= (np.log1p(tolerance) if is_ratio else tolerance)
    return np.select([np.isnan(off), inside, close], ["no prediction", "holds", "close"], "fails")


def exponent_verdict(inside, fitted, theory):
    """holds (theory inside the fitted 95% interval), close (outside, but within CLOSE_EXPONENT of
    |theory|: relative, so 0.22 against 0.156 is not close), fails, or no prediction."""
    inside, fitted, theory = np.asarray(inside, bool), np.asarray(fitted, float), np.asarray(theory, float)
    close = np.abs(fitted - theory) <= CLOSE_EXPONENT * np.abs(theory)
    return np.select([np.isnan(theory), inside, close], ["no prediction", "holds", "close"], "fails")


def wilson_interval(successes, trials, z=stats.norm.ppf(0.975)):
    p = successes / trials
    centre = (p + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return centre - half, centre + half


# The measure a cell is compared on -> (measured column, predicted column).
MEASURED, PREDICTED = 0, 1
MEASURES = {"mean": ("escape_mean", "predicted_mean"),
            "median": ("escape_median", "predicted_median"),
            "restricted mean": ("escape_restricted_mean", "predicted_restricted_mean")}


def _by_measure(c: pd.DataFrame, kind: np.ndarray, side: int, suffix: str = "") -> np.ndarray:
    """Per cell, the column of its measure (the restricted mean has no _lo/_hi: NaN)."""
    out = np.full(len(c), np.nan)
    for measure, columns in MEASURES.items():
        if columns[side] + suffix in c:
            out = np.where(kind == measure, c[columns[side] + suffix], out)
    return out


def compare_cells(cells: pd.DataFrame, artefacts=frozenset()) -> pd.DataFrame:
    """One row per cell with a prediction: the measure compared, measured [lo, hi], predicted,
    ratio measured/predicted, whether the prediction is inside the interval, the escaped fraction
    against its prediction (Wilson interval), and a verdict: holds (inside), close (within 10%, or
    0.1 of the fraction), fails, uninformative (censored), artefact."""
    c = cells if "predicted_mean" in cells else with_predictions(cells)
    # A prediction may lack a mean (the lag model's law past its horizon) and still have a median,
    # an escaped fraction and a restricted mean to compare with.
    c = c[c[["predicted_mean", "predicted_median", "predicted_escape_fraction"]].notna().any(axis=1)]
    kind = np.select([c["escape_kind"].eq(RESTRICTED), c["escape_mean"].notna()], ["restricted mean", "mean"],
                     "median")
    out = c[["cell_id", "problem", "optimizer", "theory_model", "theory_assumptions", "theory_note"]].copy() \
        if "theory_assumptions" in c else c[["cell_id", "problem", "optimizer", "theory_model", "theory_note"]].copy()
    out["measure"] = kind
    out["measured"] = _by_measure(c, kind, MEASURED)
    out["measured_lo"] = _by_measure(c, kind, MEASURED, "_lo")
    out["measured_hi"] = _by_measure(c, kind, MEASURED, "_hi")
    out["predicted"] = _by_measure(c, kind, PREDICTED)
    out["ratio"] = out["measured"] / out["predicted"]
    inside = (out["predicted"] >= out["measured_lo"]) & (out["predicted"] <= out["measured_hi"])
    out["inside_95"] = inside
    verdict = _verdict(inside.to_numpy(), out["ratio"].to_numpy(), CLOSE_RATIO)
    # Censored past half: the fraction escaped is what the data can test.
    lo, hi = wilson_interval(c["escaped_runs"], c["runs"])
    predicted_fraction = c["predicted_escape_fraction"]
    fraction_inside = (predicted_fraction >= lo) & (predicted_fraction <= hi)
    fraction_close = (c["escaped_fraction"] - predicted_fraction).abs() <= CLOSE_FRACTION
    restricted = kind == "restricted mean"
    verdict = np.where(restricted, np.select([fraction_inside, fraction_close], ["holds", "close"], "fails"), verdict)
    none_escaped = (c["escaped_runs"] == 0) & (predicted_fraction < 0.5)
    verdict = np.where(restricted & none_escaped, UNINFORMATIVE, verdict)
    verdict = np.where(c["cell_id"].isin(list(artefacts)), ARTEFACT, verdict)
    out["verdict"] = verdict
    with np.errstate(all="ignore"):
        sd_ratio = c["escape_sd"] / c["predicted_sd"]
    # A spread below one step (deep in the sign regime every quantile escapes at the same step) is
    # the step's resolution, not the model's: no sd to compare with.
    out["sd_ratio"] = sd_ratio.where(c["predicted_sd"] >= 1)
    out["predicted_sd"] = c["predicted_sd"]
    out["escaped_fraction"] = c["escaped_fraction"]
    out["predicted_escaped_fraction"] = predicted_fraction
    out["fraction_inside_95"] = fraction_inside
    return out


def summarize_cell_verdicts(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, optimizer, model): how many cells hold / are close / fail / are uninformative /
    artefacts, and the spread of measured/predicted over the informative ones (holds, close, fails)."""
    grouped = comparison.groupby(["problem", "optimizer", "theory_model"], sort=True)
    table = grouped["verdict"].value_counts().unstack(fill_value=0)
    for verdict in VERDICTS:
        if verdict not in table:
            table[verdict] = 0
    table = table[list(VERDICTS)]
    table.insert(0, "cells", grouped.size())
    informative = comparison[comparison["verdict"].isin(["holds", "close", "fails"])]
    by = informative.groupby(["problem", "optimizer", "theory_model"], sort=True)
    table["ratio_median"] = by["ratio"].median()
    table["ratio_min"], table["ratio_max"] = by["ratio"].min(), by["ratio"].max()
    table["sd_ratio_median"] = by["sd_ratio"].median()
    return table.reset_index()


def _local_theory(part: pd.DataFrame) -> tuple[dict, str]:
    """The theory's local exponents at the group's centre: docs/theory.md's table for the linear
    recursions (at the geometric means), the lag model's own slopes for adaptive methods."""
    inputs = ("optimizer.lr", "curvature", "sigma_escape", "escape_radius")
    if not all(k in part for k in inputs) or part[list(inputs)].isna().any().any() or \
            (part[list(inputs)].astype(float) <= 0).any().any():      # σ₁ = 0 at a zero saddle: no local law
        return {}, ""
    optimizer = part["optimizer.name"].iloc[0]
    centre = {k: float(np.exp(np.log(part[k].astype(float)).mean())) for k in
              ("optimizer.lr", "curvature", "sigma_escape", "escape_radius")}
    if optimizer == "sgd":
        alpha, regime = 0.0, "sgd"
    elif optimizer == "precond_sgd" and part.get("optimizer.target", pd.Series("noise")).eq("noise").all():
        alpha = float(part["optimizer.alpha"].mean()) if "optimizer.alpha" in part else 1.0
        alpha, regime = (1.0 if np.isnan(alpha) else alpha), "fixed preconditioner"
    elif lag_cells.is_lag_cell(part["optimizer.name"].iloc[:1].astype(str),
                               part.get("optimizer.target", pd.Series("noise", index=part.index)).iloc[:1]).all():
        # The lag model's own local slopes at the cell nearest the group's centre (in log settings).
        logs = np.log(part[list(inputs)].astype(float))
        centre_cell = part.iloc[int(np.argmin(((logs - logs.mean()) ** 2).sum(axis=1).to_numpy()))]
        table = lag_cells.local_exponents(centre_cell)
        return ({k: float(v) for k, v in table.items()},
                "lag model at the cell nearest the group's centre" if np.isfinite(table["lr"]) else "")
    else:
        return {}, ""
    table = local_exponents(centre["optimizer.lr"], centre["curvature"], centre["sigma_escape"],
                            centre["escape_radius"], alpha)
    return {k: float(v) for k, v in table.items()}, regime


def _theory_slopes(part: pd.DataFrame, covariates: list[str]) -> tuple[dict, str]:
    """Least-squares slopes of log(predicted median) on the log covariates over the cells that have
    a prediction, if those still span every covariate; and 'n of m' cells used."""
    predicted = part["predicted_median"].to_numpy(float)
    usable = np.isfinite(predicted) & (predicted > 0)
    x = np.column_stack([np.ones(usable.sum()), design(part[usable], covariates)])
    if usable.sum() <= len(covariates) or np.linalg.matrix_rank(x) <= len(covariates):
        return {}, f"0 of {len(part)}"
    slope = np.linalg.lstsq(x, np.log(predicted[usable]), rcond=None)[0][1:]
    slope = np.where(np.abs(slope) < SLOPE_ZERO, 0.0, slope)
    return dict(zip((covariate_name(c) for c in covariates), slope)), f"{usable.sum()} of {len(part)}"


def compare_exponents(exponents: pd.DataFrame, cells: pd.DataFrame, exclude=frozenset()) -> pd.DataFrame:
    """Each fitted exponent next to the theory's: `theory` is the slope of the closed form's
    median over the same cells (least squares on the same log covariates: the like-for-like
    number; `theory_cells` says over how many had a prediction); `theory_local` is docs/theory.md's
    table at the group's centre."""
    if exponents.empty:
        return exponents
    c = cells if "predicted_median" in cells else with_predictions(cells)
    c = c[~c["cell_id"].isin(list(exclude))] if exclude else c
    rows = []
    for group in scaling_groups(c):
        fitted = exponents[exponents["group"] == group.label]
        if fitted.empty:
            continue
        part = c.loc[group.cell_ids]
        theory, covered = _theory_slopes(part, group.covariates)
        local, regime = _local_theory(part)
        for _, row in fitted.iterrows():
            key = row["covariate"].removeprefix("1-")
            rows.append({**row.to_dict(), "theory": theory.get(row["covariate"], np.nan), "theory_cells": covered,
                         "theory_local": local.get(key, np.nan), "theory_regime": regime})
    table = pd.DataFrame(rows)
    reference = table["theory"].fillna(table["theory_local"])
    inside = (reference >= table["lo"]) & (reference <= table["hi"])
    table["inside_95"] = inside
    table["verdict"] = exponent_verdict(inside, table["exponent"], reference)
    # A fit that cannot carry a verdict (too few cells with an escape, a lifelines warning, an
    # interval too wide or none: analysis.scaling) tests nothing, whatever the interval holds.
    reasons = table["no_verdict"].fillna("") if "no_verdict" in table else pd.Series("", index=table.index)
    table["verdict"] = table["verdict"].where((reasons == "") | reference.isna(), NO_VERDICT)
    # On a problem without a closed form the quadratic's local exponent is a reference, not a test.
    modelled = table["problem"].isin(CLOSED_FORM_PROBLEMS) | table["theory"].notna()
    table["verdict"] = table["verdict"].where(modelled, "not tested (no closed form for this problem)")
    return table


def sgd_slope_check(cells: pd.DataFrame, artefacts=frozenset()) -> dict | None:
    """docs/theory.md prediction 1: over the SGD cells that have a closed form, every run escaped and
    no sanity flag, lr·γ·E[τ] is linear in ln(γ r²/(η σ₁²)) with slope ½. The OLS slope with its
    95% t interval, the cells used and their settings' range; None with fewer than 3 cells or too
    narrow a range of the logarithm (< 0.5)."""
    c = cells if "theory_model" in cells else with_predictions(cells)
    if not {"optimizer.lr", "curvature", "sigma_escape", "escape_radius"} <= set(c.columns):
        return None
    sgd = c[(c["optimizer.name"] == "sgd") & c["escape_mean"].notna() & c["predicted_mean"].notna()
            & ~c["cell_id"].isin(list(artefacts))]
    lr, gamma = sgd["optimizer.lr"].astype(float), sgd["curvature"].astype(float)
    x = np.log(gamma * sgd["escape_radius"] ** 2 / (lr * sgd["sigma_escape"] ** 2)).to_numpy(float)
    # The measured mean counts whole steps; the continuous law's slope is tested on E[τ] − ½.
    y = (lr * gamma * (sgd["escape_mean"] - 0.5)).to_numpy(float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3 or np.ptp(x) < 0.5:
        return None
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * fit.stderr
    inside = fit.slope - half <= 0.5 <= fit.slope + half
    used = sgd[finite]
    return {"slope": fit.slope, "lo": fit.slope - half, "hi": fit.slope + half, "cells": len(x),
            "lr": (float(lr[finite].min()), float(lr[finite].max())),
            "lr_curvature": (float((lr * gamma)[finite].min()), float((lr * gamma)[finite].max())),
            "log_range": (float(x.min()), float(x.max())), "cell_ids": list(used["cell_id"]),
            # An interval as wide as the slopes it should tell apart (the fit of three cells spanning a
            # narrow range) carries no verdict, as for the scaling exponents.
            "verdict": str(exponent_verdict([inside], [fit.slope], [0.5])[0]) if 2 * half <= MAX_EXPONENT_WIDTH
            else f"{NO_VERDICT} (its 95% interval is {2 * half:.3g} wide, over {MAX_EXPONENT_WIDTH:g})"}


def figure1_check(cells: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figure 1 claim on staib_toy: the SGD step size that escapes as fast as each
    RMSProp/Adam cell (log-log interpolation of SGD's median over lr; paper: ≈ 10× RMSProp's),
    and the neighbourhood each then settles in (median tail loss above the minimum)."""
    toy = cells[(cells["problem"] == "staib_toy") & np.isfinite(cells["escape_median"])]
    sgd = toy[toy["optimizer.name"] == "sgd"].groupby("optimizer.lr")["escape_median"].median().sort_index()
    if len(sgd) < 2:
        return pd.DataFrame()
    loss = next((c for c in ("median_tail_loss_mean", "median_final_loss") if c in toy), None)
    rows = []
    for _, cell in toy[toy["optimizer.name"].isin(["rmsprop", "adam"])].iterrows():
        time = cell["escape_median"]
        # SGD's median falls with lr: interpolate log lr against log τ over SGD's range only.
        log_tau, log_lr = np.log(sgd.to_numpy())[::-1], np.log(sgd.index.to_numpy())[::-1]
        inside = log_tau.min() <= np.log(time) <= log_tau.max()
        matching_lr = float(np.exp(np.interp(np.log(time), log_tau, log_lr))) if inside else np.nan
        row = {"optimizer": cell["optimizer"], "lr": cell["optimizer.lr"], "beta2": cell.get("optimizer.beta2"),
               "median_escape": time, "sgd_lr_as_fast": matching_lr,
               "lr_ratio": matching_lr / cell["optimizer.lr"]}
        if loss and inside:
            sgd_cells = toy[toy["optimizer.name"] == "sgd"]
            nearest = sgd_cells.iloc[np.argmin(np.abs(np.log(sgd_cells["optimizer.lr"]) - np.log(matching_lr)))]
            row.update({"loss_measure": loss, "adaptive_loss": cell[loss],
                        "sgd_lr_nearest": nearest["optimizer.lr"], "sgd_loss": nearest[loss]})
        rows.append(row)
    return pd.DataFrame(rows)
