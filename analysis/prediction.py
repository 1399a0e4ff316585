"""The theory's prediction for any cell of a results table, or NaN with the reason.

Which model applies to a cell:

    sgd                             the linear recursion (analysis.theory), p₁ = 1
    precond_sgd, target noise       the fixed noise preconditioner Σ^(−α/2): the linear recursion with
                                    the step η p₁, p₁ = (σ₁² + ε)^(−α/2)
    rmsprop, adam, adagrad (and     the lag model (analysis.lag, analysis.lag_cells): the noise phase
    their torch.optim classes),     sets an amplitude, then the mean-field map with the second-moment
    precond_sgd, target             estimate's lag; the paper's second-moment preconditioner
    second_moment                   G(x)^(−α/2) is its no-lag case

The linear forms follow the escape coordinate alone. They hold exactly for quadratic_saddle when the
preconditioner keeps the escape direction (H not rotated for diagonal methods; Σ aligned with
H for a full one) and approximately for staib_toy (γ = σ₁ = 0.1, r = 0.3: finite-sum noise).
They count whole steps (analysis.theory: ⌈τ⌉). A start offset below r is predicted for the linear
recursions (sgd, fixed preconditioner) with the offset in a uniformly random direction of the
problem's `dim` dimensions (analysis.theory.OffsetLaw), and by the lag model for adaptive methods; a
start at or beyond r has no prediction (every run escapes at step 1: analysis.sanity flags it). Any
other optimizer or problem (a plugin, another torch.optim class, a notebook registration) has no
model, and says so. Every prediction states its model (`theory_model`) and the assumptions it rests
on (`theory_assumptions`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from workflows.core.saddles import SYNTHETIC_SADDLES
from workflows.core.schedules import SCHEDULE_SCHEMA, learning_rates

from .lag_cells import LAG_OPTIMIZERS, is_lag_cell, lag_predictions
from .recursion import recursion_escape
from .theory import linear_escape

CLOSED_FORM_PROBLEMS = SYNTHETIC_SADDLES
# Optimizers that whiten each matrix of the parameter (optimizers/muon.py, matrix_whitening.py and
# their library counterparts): docs/theory.md says what their whitening predicts and what it does not.
MATRIX_WHITENING = ("muon", "matrix_whitening", "torch.optim.Muon", "pytorch_optimizer.Muon", "pytorch_optimizer.AdaMuon",
                    "pytorch_optimizer.Shampoo", "pytorch_optimizer.ScalableShampoo", "pytorch_optimizer.SOAP")
CLOSED_FORM_OPTIMIZERS = ("sgd", "precond_sgd", *LAG_OPTIMIZERS)
PREDICTION_COLUMNS = ("predicted_mean", "predicted_median", "predicted_sd", "predicted_escape_fraction",
                      "predicted_restricted_mean", "theory_model", "theory_assumptions", "theory_note")
VALUE_COLUMNS = PREDICTION_COLUMNS[:5]


def predict(frame: pd.DataFrame) -> pd.Series:
    """Predicted mean escape step per row (a row per seed, or per cell); NaN where no model
    applies (`predictions(frame).theory_note` says why)."""
    return predictions(frame)["predicted_mean"]


def predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, sd, fraction escaped by the budget and restricted mean min(τ, budget),
    with the model used, its assumptions and a note (a caveat, or why there is no prediction)."""
    if "cell_id" in frame and frame["cell_id"].duplicated().any():     # one computation per cell
        cells = frame.drop_duplicates("cell_id").set_index("cell_id", drop=False)
        per_cell = _predict_cells(cells)
        return per_cell.loc[frame["cell_id"]].set_index(frame.index)
    return _predict_cells(frame)


def _column(frame, name, default):
    if name not in frame:
        return pd.Series(default, index=frame.index)
    return frame[name].where(frame[name].notna(), default)


def _predict_cells(cells: pd.DataFrame) -> pd.DataFrame:
    get = lambda name, default=np.nan: _column(cells, name, default)
    problem, optimizer = get("problem.name", "").astype(str), get("optimizer.name", "").astype(str)
    lr, gamma = get("optimizer.lr").astype(float), get("curvature").astype(float)
    sigma, radius = get("sigma_escape").astype(float), get("escape_radius").astype(float)
    k = get("problem.n_negative", 1).astype(float)
    eps, alpha = get("optimizer.eps", 0.0).astype(float), get("optimizer.alpha", 1.0).astype(float)
    form, target = get("optimizer.form", "diagonal"), get("optimizer.target", "noise")
    adaptive = is_lag_cell(optimizer, target)
    fixed_p = np.where(optimizer == "precond_sgd", (sigma**2 + eps) ** (-alpha / 2), 1.0)
    offset = get("start_offset", 0.0).astype(float).fillna(0.0)
    dim = get("problem.dim", np.nan).astype(float).where(problem != "staib_toy", 2.0)

    with np.errstate(all="ignore"):
        linear = linear_escape(lr, gamma, sigma, radius, k, fixed_p)
        budget = get("budget").astype(float)
        out = pd.DataFrame({
            "predicted_mean": linear.mean,
            "predicted_median": linear.median,
            "predicted_sd": linear.sd,
            "predicted_escape_fraction": linear.probability_by(budget),
            "predicted_restricted_mean": linear.restricted_mean(budget),
        }, index=cells.index)
        few_steps = ~adaptive & (linear.s >= radius / 2)
        from_offset = np.asarray((offset > 0) & (offset < radius) & ~adaptive & dim.notna())
        if from_offset.any():
            _offset_predictions(out, from_offset, lr, gamma, sigma, radius, k, fixed_p, offset, dim, budget)
        stable_alpha = get("problem.stable_alpha", 2.0).astype(float)
        stable = np.asarray((get("problem.noise_dist", "gaussian") == "alpha_stable") & ~adaptive & (k == 1))
        if stable.any():
            _stable_predictions(out, stable, lr, gamma, sigma, radius, fixed_p, stable_alpha, budget)
        schedule = get("optimizer.lr_schedule", "constant").astype(str)
        scheduled = np.asarray((schedule != "constant") & ~adaptive & (offset == 0) & (k == 1))
        if scheduled.any():
            _schedule_predictions(out, scheduled, cells, gamma, sigma, radius, fixed_p, budget)

    model = np.select(
        [optimizer == "sgd", optimizer == "precond_sgd"],
        ["sgd: linear recursion", "fixed noise preconditioner Sigma^(-alpha/2), p1=sigma1^-" + alpha.map("{:g}".format)],
        "")
    model = np.where(stable, np.char.add(model.astype(str), ", alpha-stable W"), model)
    model = np.where(scheduled, np.char.add(model.astype(str), ", time-varying step (numerical)"), model)
    reason = _no_closed_form(get, problem, optimizer, lr, gamma, sigma, radius, eps, alpha, form, target,
                             few_steps, offset, dim, adaptive)
    model = np.where(np.asarray(offset > 0) & (reason == ""), np.char.add(model.astype(str), ", from a start offset"),
                     model)
    assumptions = _linear_assumptions(get, optimizer, stable, scheduled, offset)
    out.loc[reason != "", list(VALUE_COLUMNS)] = np.nan
    out["theory_model"] = np.where(reason == "", model, "none")
    out["theory_assumptions"] = np.where(reason == "", assumptions, "")
    caveats = _caveats(get, problem, offset)
    out["theory_note"] = np.where(reason == "", caveats, reason)
    if adaptive.any():
        lag = lag_predictions(cells[adaptive])
        for column in VALUE_COLUMNS + ("theory_model", "theory_assumptions"):
            out.loc[adaptive, column] = lag[column].to_numpy()
        out.loc[adaptive, "theory_note"] = np.where(lag["reason"] != "", lag["reason"],
                                                    lag["theory_assumptions"].map(_approximations)).astype(object)
    return out


def _approximations(assumptions: str) -> str:
    """The assumptions that make a lag prediction approximate, as its note."""
    return "; ".join(a for a in assumptions.split("; ") if a.startswith("approximate"))


def _linear_assumptions(get, optimizer, stable, scheduled, offset) -> np.ndarray:
    """What the linear recursion's prediction rests on, per cell."""
    base = np.where(optimizer == "precond_sgd",
                    "the escape coordinate alone, with step lr*p1 and noise sigma1 (Sigma diagonal in H's eigenbasis)",
                    "the escape coordinate alone, noise sigma1")
    law = np.where(stable, "x_t = a^t W with W alpha-stable of known scale",
                   np.where(scheduled, "x_t = P_t (x0 + W_t) step by step, first passage from its marginals",
                            "x_t = a^t W with W Gaussian at its stationary law; whole steps (+1/2)"))
    text = pd.Series(base).str.cat(pd.Series(law), sep="; ")
    norm = np.asarray(get("problem.escape_measure", "norm") == "norm") & np.asarray(get("problem.name", "") ==
                                                                                     "quadratic_saddle")
    text = text.where(~norm, text + "; escape by the norm with the stable coordinates' share left out")
    text = text.where(~np.asarray(offset > 0), text + "; start offset in a uniformly random direction")
    return text.to_numpy()


def _offset_predictions(out, where, lr, gamma, sigma, radius, k, fixed_p, offset, dim, budget):
    """Replace the cells `where` (a start offset below r) by the linear recursion from the offset,
    computed once per distinct set of inputs (the non-central laws are costlier)."""
    inputs = pd.DataFrame({"lr": lr, "gamma": gamma, "sigma": sigma, "radius": radius, "k": k, "p": fixed_p,
                           "offset": offset, "dim": dim, "budget": budget}, index=out.index)[where]
    unique = inputs.drop_duplicates()
    law = linear_escape(unique["lr"], unique["gamma"], unique["sigma"], unique["radius"], unique["k"], unique["p"],
                        start_offset=unique["offset"], dim=unique["dim"])
    values = pd.DataFrame({"predicted_mean": law.mean, "predicted_median": law.median, "predicted_sd": law.sd,
                           "predicted_escape_fraction": law.probability_by(unique["budget"]),
                           "predicted_restricted_mean": law.restricted_mean(unique["budget"])}, index=unique.index)
    key = list(inputs.columns)
    merged = inputs.reset_index().merge(unique.join(values).reset_index(drop=True), on=key, how="left").set_index("index")
    for column in values.columns:
        out.loc[merged.index, column] = merged[column].to_numpy()


def _stable_predictions(out, where, lr, gamma, sigma, radius, fixed_p, stable_alpha, budget):
    """α-stable noise: the linear recursion's W is α-stable (analysis.theory.StableLaw). Its tail is
    a power law, so the restricted mean (an integral to the budget) is not computed."""
    law = linear_escape(lr[where], gamma[where], sigma[where], radius[where], p_escape=np.asarray(fixed_p)[where],
                        stable_alpha=stable_alpha[where])
    out.loc[where, "predicted_mean"] = law.mean
    out.loc[where, "predicted_median"] = law.median
    out.loc[where, "predicted_sd"] = law.sd
    out.loc[where, "predicted_escape_fraction"] = law.probability_by(budget[where])
    out.loc[where, "predicted_restricted_mean"] = np.nan


def _schedule_predictions(out, where, cells, gamma, sigma, radius, fixed_p, budget):
    """A step-size schedule: the escape-time law of the time-varying recursion, evaluated step by
    step (analysis.recursion), once per distinct cell."""

    for index in cells.index[where]:
        cell = cells.loc[index]
        hp = {"lr": float(cell["optimizer.lr"])}
        for key, param in SCHEDULE_SCHEMA.items():
            value = cell.get(f"optimizer.{key}", param.default)
            hp[key] = param.default if value is None or (isinstance(value, float) and np.isnan(value)) else value
        steps = int(budget[index])
        position = cells.index.get_loc(index)
        p = np.asarray(fixed_p)[position]
        law = recursion_escape(learning_rates(hp, np.arange(1, steps + 1), steps) * p, gamma[index], sigma[index],
                               radius[index])
        out.loc[index, "predicted_mean"] = law.mean
        out.loc[index, "predicted_median"] = law.median
        out.loc[index, "predicted_sd"] = np.nan
        out.loc[index, "predicted_escape_fraction"] = law.escape_fraction
        out.loc[index, "predicted_restricted_mean"] = law.restricted_mean


def _no_closed_form(get, problem, optimizer, lr, gamma, sigma, radius, eps, alpha, form, target,
                    few_steps, offset, dim, adaptive) -> np.ndarray:
    """The first reason each cell (but the lag model's: analysis.lag_cells says why for those) has no
    prediction, or ''."""
    quadratic = problem == "quadratic_saddle"
    diagonal = (optimizer == "precond_sgd") & (form == "diagonal")
    rotated_hessian = get("problem.rotate_hessian", False).astype(bool)
    quartic = get("problem.quartic", 0.0).astype(float)
    # Off the escape direction a fixed step must be stable: η p λ < 2 (λ_max = 1 on staib_toy).
    lam_max = np.where(quadratic, get("problem.positive_curvature", 1.0).astype(float), 1.0)
    other_sigma = np.where(quadratic, get("problem.noise_scale", 1.0).astype(float), 1.0)
    other_p = np.where(optimizer == "precond_sgd", (other_sigma**2 + eps) ** (-alpha / 2), 1.0)
    fixed_step = optimizer.isin(["sgd"]) | ((optimizer == "precond_sgd") & (target == "noise"))
    with np.errstate(all="ignore"):
        beyond_minima = quadratic & (quartic > 0) & (radius >= np.sqrt(gamma / quartic))
        unstable = fixed_step & (lr * other_p * lam_max >= 2)
    noise_dist = get("problem.noise_dist", "gaussian").astype(str)
    scheduled = get("optimizer.lr_schedule", "constant").astype(str) != "constant"
    checks = [
        (optimizer.isin(MATRIX_WHITENING),
         "no prediction for " + optimizer + ": a matrix whitening (docs/theory.md, Matrix whitening, derives its "
         "noise-dominated scaling, escape time linear in the escape direction's noise, but not the constant of its "
         "Newton-Schulz or Kronecker-factored step)"),
        (~problem.isin(CLOSED_FORM_PROBLEMS),
         "no closed form for problem " + problem + " (docs/theory.md covers quadratic saddles)"),
        (~optimizer.isin(CLOSED_FORM_OPTIMIZERS) & ~adaptive,
         "no closed form for optimizer " + optimizer + " (covered: sgd, precond_sgd, rmsprop, adam, adagrad and "
         "their torch.optim classes)"),
        (get("problem.noise_model", "additive") == "proportional",
         "proportional noise (it vanishes at the saddle): no closed form; escape is driven by the start offset"),
        ((noise_dist == "alpha_stable") & (get("problem.n_negative", 1).astype(float) > 1),
         "alpha-stable noise with several escape directions: the norm of stable coordinates has no closed form"),
        ((noise_dist == "alpha_stable") & (offset > 0), "alpha-stable noise from a start offset: no closed form"),
        (scheduled & (offset > 0), "a step-size schedule from a start offset: not evaluated"),
        (~((lr > 0) & (gamma > 0) & (sigma > 0) & (radius > 0)),
         "needs lr, curvature, sigma_escape, escape_radius > 0 (sigma_escape = 0: never leaves the saddle)"),
        (offset >= radius, "start_offset >= escape_radius: every run starts escaped (escape at step 1 by construction)"),
        ((offset > 0) & dim.isna(), "start_offset > 0 without problem.dim: the offset's direction is not known"),
        (beyond_minima, "escape_radius beyond the minima at sqrt(curvature/quartic)"),
        (diagonal & rotated_hessian, "rotated Hessian: a diagonal preconditioner couples the escape direction"),
        ((optimizer == "precond_sgd") & (form == "full")
         & (get("problem.noise_alignment", "aligned") == "rotated"),
         "rotated noise: a full Sigma^(-alpha/2) does not keep the escape direction"),
        (unstable, "unstable: lr * p * lambda_max >= 2 along a positive direction"),
        (few_steps, "escape within a few steps (stationary spread s >= r/2): the asymptotic form does not apply"),
    ]
    reasons = np.select([np.asarray(c, bool) for c, _ in checks], [np.asarray(r, object) for _, r in checks], "")
    return np.where(adaptive, "", reasons)


def _caveats(get, problem, offset) -> np.ndarray:
    """Where the linear recursion applies only approximately, say how."""
    notes = [
        (problem == "staib_toy", "approximate: finite-sum noise, quartic ignored"),
        (get("problem.noise_dist", "gaussian") == "student_t", "approximate: Student-t noise (Gaussian W)"),
        ((offset > 0) & (get("problem.escape_measure", "norm") == "norm"),
         "start offset: the positive directions' share of the start is left out of the escape norm"),
    ]
    text = pd.Series("", index=problem.index)
    for condition, note in notes:
        text = text.where(~np.asarray(condition, bool), text + np.where(text == "", "", "; ") + note)
    return text.to_numpy()
