"""Synthetic results tables with a known scaling law, in rows.parquet's declared schema: for the
tests (does a fit recover the exponents? does dropping censored runs bias it? is a per-run column
ever shown as the cell's?) and the benchmark (10⁶ rows). Not engine output: the escape steps are
drawn from

    log τ = intercept + lr_exponent · log lr + sigma_exponent · log σ₁ + noise · ε,   ε ~ N(0, 1),

rounded up to integer steps; every run still unescaped at the budget is censored there. The
budget is the (1 − censored) quantile of all drawn τ, so about that fraction is censored.

The columns are workflows/core/rows.py's, filled in its order: every cell-scope column once per cell
(the problem's and optimizer's parameter families from PROBLEM / the optimizer's own values, the
run settings at workflows/core/settings.py's defaults), and every per-run column that applies (the
tail columns with `tail_steps`, the SOSP columns with `sosp_epsilon`), with a value that differs
from run to run wherever the engine's does.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from workflows.core.rows import COLUMNS
from workflows.core.settings import RUN_SCHEMA

# The problem family's values: a quadratic saddle (the engine writes every parameter, defaults included).
PROBLEM = {"dim": None, "n_negative": 1, "curvature": 1.0, "positive_curvature": 1.0, "condition": 1.0,
           "quartic": 0.0, "noise_scale": 1.0, "anisotropy": None, "noise_alignment": "aligned",
           "rotate_hessian": False, "noise_dist": "gaussian", "df": 5.0, "escape_radius": 1.0,
           "escape_measure": "norm"}
ADAPTIVE = ("rmsprop", "adam")


def synthetic_rows(lrs=(1e-3, 3e-3, 1e-2), sigmas=(1e-2, 1e-1, 1.0), seeds=100, lr_exponent=-1.0,
                   sigma_exponent=0.5, intercept=2.0, noise=0.3, censored=0.3, optimizers=("sgd",),
                   dims=(2,), seed=0, tail_steps=0, sosp_epsilon=0.0, budget=None, first_cell=0) -> pd.DataFrame:
    """budget: the censoring step (default: the (1 − censored) quantile of the drawn τ); first_cell:
    the number of the first cell id (tables written in parts: benchmarks/analysis_million_rows.py)."""
    rng = np.random.default_rng(seed)
    grid = pd.DataFrame(list(itertools.product(optimizers, lrs, sigmas, dims)),
                        columns=["optimizer.name", "optimizer.lr", "sigma_escape", "problem.dim"])
    grid["cell_id"] = [f"synthetic{i:06d}" for i in range(first_cell, first_cell + len(grid))]
    per_run = grid.loc[grid.index.repeat(seeds)].reset_index(drop=True)
    n = len(per_run)
    log_tau = (intercept + lr_exponent * np.log(per_run["optimizer.lr"])
               + sigma_exponent * np.log(per_run["sigma_escape"]) + noise * rng.standard_normal(n))
    tau = np.ceil(np.exp(log_tau)).astype(np.int64)
    if budget is None:
        budget = int(np.quantile(tau, 1 - censored)) if censored > 0 else int(tau.max())
    escaped = tau <= budget
    steps = np.minimum(tau, budget)
    adaptive = per_run["optimizer.name"].isin(ADAPTIVE)
    settings = {k: p.default for k, p in RUN_SCHEMA.items() if k != "seed"}
    settings.update(seeds=seeds, base_seed=0, budget=budget, tail_steps=tail_steps, sosp_epsilon=sosp_epsilon)
    sigma = per_run["sigma_escape"].to_numpy(float)

    families = {
        "problem.<parameter>": {f"problem.{k}": (per_run["problem.dim"] if k == "dim" else 1 / sigma
                                                 if k == "anisotropy" else v) for k, v in PROBLEM.items()},
        "optimizer.<hyperparameter>": {"optimizer.lr": per_run["optimizer.lr"],
                                       "optimizer.beta2": np.where(adaptive, 0.999, np.nan),
                                       "optimizer.eps": np.where(adaptive, 1e-8, np.nan)},
        "<run setting>": settings,
    }
    # Per-run values that differ between the runs of a cell, as the engine's do.
    final_loss = -0.5 + 0.01 * rng.standard_normal(n)
    tail = -0.25 + 0.01 * rng.random((3, n)).cumsum(0)
    values = {
        "cell_id": per_run["cell_id"], "problem.name": "quadratic_saddle", "optimizer.name": per_run["optimizer.name"],
        "curvature": 1.0, "sigma_escape": sigma, "escape_radius": 1.0, "noise_anisotropy": 1 / sigma,
        "saddle_loss": 0.0, "minimum_loss": np.nan, "cnc_constant": sigma**2,
        "seed": np.tile(np.arange(seeds), len(grid)), "escaped": escaped, "escape_step": steps,
        "diverged": np.zeros(n, bool), "final_step": steps, "loss_at_escape": np.where(escaped, -0.5, np.nan),
        "final_loss": final_loss, "final_grad_norm": np.abs(rng.standard_normal(n)),
        "final_distance": np.where(escaped, 1.0, rng.random(n)),
        "tail_loss_mean": tail[0], "tail_loss_q50": tail[0], "tail_loss_q90": tail[2],
        "tail_gap_mean": tail[0] + 0.25, "tail_gap_q50": tail[0] + 0.25, "tail_gap_q90": tail[2] + 0.25,
        "sosp_reached": escaped & (steps + 10 <= budget), "sosp_step": np.minimum(steps + 10, budget),
        "final_min_eig": 0.5 + 0.1 * rng.standard_normal(n),
    }
    present = {"tail_steps": tail_steps > 0, "sosp_epsilon": sosp_epsilon > 0}
    columns = {}
    for column in COLUMNS:
        if column.present and not present.get(column.present, False):
            continue
        if column.name in families:
            columns.update(families[column.name])
        elif column.name in values:
            columns[column.name] = values[column.name]
        else:                  # a column declared after this generator was written: a plausible value
            columns[column.name] = _generic(column, escaped, steps, rng)
    return pd.DataFrame(columns)


def _generic(column, escaped, steps, rng):
    """A value of the declared type: per run, one that differs between runs; per cell, missing."""
    if column.scope == "cell":
        return np.nan
    if column.dtype == "bool":
        return escaped
    if column.dtype == "int64":
        return steps
    return rng.random(len(steps))
