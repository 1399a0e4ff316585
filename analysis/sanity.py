"""Cells whose escape time measures an artefact of the set-up rather than the saddle.

A median escape step of 1 is not a finding: it says the first step (or the start) already met
the escape criterion. Each check below names what it saw and, where the cell's parameters
explain it, why:

    start beyond r       start_offset ≥ escape_radius: every run starts escaped
    first step reaches r half or more of the runs escape at step 1; the first step's typical
                         length is given where it is known in closed form:
                           sgd           η·√(tr Σ) (norm) or η·σ₁·√k (projection): one step of noise
                           rmsprop       η/√(1−β₂) per coordinate (v₁ = (1−β₂)g², no bias correction)
                           adam          η per coordinate with bias correction, else η(1−β₁)/√(1−β₂)
                           adagrad, precond_sgd (noise)   η per coordinate
    diverging step       a fixed step with η·p·λ_max ≥ 2 along a positive direction (the iteration
                         diverges there) whose runs are recorded as escaping at step 1
    SOSP at step 0       the second-order test passes at the start (√(ρε) ≥ γ, or ε above the
                         start's gradient): time to an SOSP measures nothing
    within a few steps   median escape step ≤ FEW_STEPS: one step is the resolution (a caution,
                         not an artefact)
    diverged runs        some runs diverged (censored where they blew up; a caution)

Artefact cells are kept in every table, marked, and left out of the theory verdicts and the
scaling fits of the duration they affect (`affects`: escape, or sosp for the SOSP test; the report
says how many).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

FEW_STEPS = 3
STEP_ONE_SHARE = 0.5
ARTEFACT, CAUTION = "artefact", "caution"


def _get(cells, name, default=np.nan):
    return cells[name] if name in cells else pd.Series(default, index=cells.index)


def _float(cells, name, default=np.nan):
    return pd.to_numeric(_get(cells, name, default), errors="coerce").astype(float)


def first_step_length(cells: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(typical length of the first step from the start, the formula used) per cell; NaN where
    the optimizer's first step is not known in closed form."""
    name = _get(cells, "optimizer.name", "").astype(str)
    lr = _float(cells, "optimizer.lr")
    dim = _float(cells, "problem.dim").where(_get(cells, "problem.name", "").astype(str) != "staib_toy", 2.0)
    k = _float(cells, "problem.n_negative", 1.0).fillna(1.0)
    projection = _get(cells, "problem.escape_measure", "norm").astype(str) == "projection"
    coordinates = np.where(projection, k, dim)
    sigma = _float(cells, "sigma_escape")
    total_noise = _float(cells, "noise_anisotropy") * sigma * np.sqrt(dim)     # √(tr Σ)
    beta1 = _float(cells, "optimizer.beta1", 0.0).fillna(0.0)
    beta2 = _float(cells, "optimizer.beta2")
    corrected = _get(cells, "optimizer.bias_correction", True).map(lambda v: True if pd.isna(v) else bool(v))
    per_coordinate = np.select(
        [name == "rmsprop", (name == "adam") & ~corrected, name.isin(["adam", "amsgrad", "adagrad"]),
         name == "precond_sgd"],
        [lr / np.sqrt(1 - beta2), lr * (1 - beta1) / np.sqrt(1 - beta2), lr, lr], np.nan)
    length = np.where(name == "sgd", np.where(projection, lr * sigma * np.sqrt(k), lr * total_noise),
                      per_coordinate * np.sqrt(coordinates))
    per_coordinate_text = [f" = {p:.3g} per coordinate, over {c:g} coordinates" if np.isfinite(p) and np.isfinite(c)
                           else "" for p, c in zip(per_coordinate, coordinates)]
    formula = np.select(
        [(name == "sgd") & ~projection, name == "sgd", name == "rmsprop", (name == "adam") & ~corrected,
         name.isin(["adam", "amsgrad", "adagrad", "precond_sgd"])],
        ["one step of noise, lr*sqrt(tr Sigma)", "one step of noise, lr*sigma1*sqrt(k)",
         "rmsprop's un-bias-corrected first step lr/sqrt(1-beta2) per coordinate",
         "adam's un-bias-corrected first step lr*(1-beta1)/sqrt(1-beta2) per coordinate",
         "lr per coordinate"], "")
    formula = np.char.add(formula.astype(str), np.array(per_coordinate_text, dtype=str))
    return pd.Series(length, index=cells.index), pd.Series(formula, index=cells.index)


def _unstable(cells: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(whether a fixed step diverges along a positive direction, lr·p·λ_max) for quadratic saddles."""
    name = _get(cells, "optimizer.name", "").astype(str)
    quadratic = _get(cells, "problem.name", "").astype(str) == "quadratic_saddle"
    lam_max = _float(cells, "problem.positive_curvature", 1.0).fillna(1.0)
    noise = _float(cells, "problem.noise_scale", 1.0).fillna(1.0)
    eps = _float(cells, "optimizer.eps", 0.0).fillna(0.0)
    alpha = _float(cells, "optimizer.alpha", 1.0).fillna(1.0)
    fixed = (name == "sgd") | ((name == "precond_sgd") & (_get(cells, "optimizer.target", "noise") == "noise"))
    p = np.where(name == "precond_sgd", (noise**2 + eps) ** (-alpha / 2), 1.0)
    product = _float(cells, "optimizer.lr") * p * lam_max
    return fixed & quadratic & (product >= 2), product


def sanity_flags(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, flag): cell_id, flag, severity (artefact | caution), why."""
    groups = rows.groupby("cell_id", observed=True, sort=False)
    at_step_one = (rows["escaped"] & (rows["escape_step"] == 1)).groupby(rows["cell_id"], observed=True).mean()
    share_one = at_step_one.reindex(cells.index).fillna(0.0)
    radius = _float(cells, "escape_radius").fillna(_float(cells, "problem.escape_radius"))
    offset = _float(cells, "start_offset", 0.0).fillna(0.0)
    length, formula = first_step_length(cells)
    unstable, product = _unstable(cells)
    median = _float(cells, "escape_median")
    found = []

    def flag(mask, name, severity, why, affects="escape"):
        for cell in cells.index[np.asarray(mask, bool)]:
            found.append({"cell_id": cell, "flag": name, "severity": severity, "affects": affects, "why": why(cell)})

    beyond = offset >= radius
    flag(beyond, "start beyond r", ARTEFACT, lambda c: (
        f"start_offset {offset[c]:g} >= escape radius {radius[c]:g}: every run starts escaped; "
        f"{share_one[c]:.0%} escape at step 1"))
    many_at_one = (share_one >= STEP_ONE_SHARE) & ~beyond
    flag(many_at_one & unstable, "diverging step", ARTEFACT, lambda c: (
        f"{share_one[c]:.0%} of runs escape at step 1, but lr*p*lambda_max = {product[c]:.3g} >= 2: the iteration "
        "diverges along a positive direction, and its first step is recorded as an escape"))
    explained = many_at_one & ~unstable & (length >= 0.5 * radius)
    flag(explained, "first step reaches r", ARTEFACT, lambda c: (
        f"{share_one[c]:.0%} of runs escape at step 1: the first step's typical length is {length[c]:.3g} "
        f"({formula[c]}), against r = {radius[c]:g}"))
    flag(many_at_one & ~unstable & ~(length >= 0.5 * radius), "first step reaches r", ARTEFACT, lambda c: (
        f"{share_one[c]:.0%} of runs escape at step 1 (the first step alone reaches r = {radius[c]:g})"))
    if {"sosp_step", "sosp_reached"} <= set(rows.columns):
        reached = rows["sosp_reached"].map(lambda v: False if pd.isna(v) else bool(v)).astype(bool)
        at_start = (reached & (rows["sosp_step"] == 0)).groupby(rows["cell_id"], observed=True).mean()
        at_start = at_start.reindex(cells.index).fillna(0.0)
        eps, rho = _float(cells, "sosp_epsilon"), _float(cells, "sosp_rho", 1.0)
        gamma = _float(cells, "curvature")
        def sosp_why(c):
            head = f"{at_start[c]:.0%} of runs pass the SOSP test at step 0"
            if not gamma[c] > 1e-12:
                return head + (": the start has no negative curvature (curvature 0): it is itself a second-order "
                               "stationary point, so the time to an SOSP measures nothing (the escape time is kept)")
            if np.sqrt(rho[c] * eps[c]) >= gamma[c]:
                return head + (f": sqrt(rho*eps) = {np.sqrt(rho[c] * eps[c]):.3g} >= curvature {gamma[c]:.3g}, so the "
                               "saddle's negative eigenvalue passes as >= -sqrt(rho*eps)")
            return head + ": the start already meets the test; the time to an SOSP measures nothing"
        flag(at_start >= STEP_ONE_SHARE, "SOSP at step 0", ARTEFACT, sosp_why, affects="sosp")
    artefact = set(r["cell_id"] for r in found)
    few = (median <= FEW_STEPS) & ~cells.index.isin(list(artefact))
    flag(few, "within a few steps", CAUTION, lambda c: (
        f"median escape step {median[c]:g}: one step is the resolution; intervals and ratios are coarse"))
    diverged = groups["diverged"].sum().reindex(cells.index).fillna(0) if "diverged" in rows else 0 * share_one
    flag(diverged > 0, "diverged runs", CAUTION, lambda c: (
        f"{int(diverged[c])} of {int(cells.loc[c, 'runs'])} runs diverged (censored at the step they blew up)"))
    return pd.DataFrame(found, columns=["cell_id", "flag", "severity", "affects", "why"])


def artefact_cells(flags: pd.DataFrame, duration: str = "escape") -> set:
    """Cells whose `duration` (escape, sosp) is an artefact (left out of verdicts and fits)."""
    return set(flags.loc[(flags["severity"] == ARTEFACT) & (flags["affects"] == duration), "cell_id"])
