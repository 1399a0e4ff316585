"""Synthetic results tables with a known scaling law, in rows.parquet's schema: for the tests
(does a fit recover the exponents? does dropping censored runs bias it?) and the benchmark
(10⁶ rows). Not engine output: the escape steps are drawn from

    log τ = intercept + lr_exponent · log lr + sigma_exponent · log σ₁ + noise · ε,   ε ~ N(0, 1),

rounded up to integer steps; every run still unescaped at the budget is censored there. The
budget is the (1 − censored) quantile of all drawn τ, so about that fraction is censored.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def synthetic_rows(lrs=(1e-3, 3e-3, 1e-2), sigmas=(1e-2, 1e-1, 1.0), seeds=100, lr_exponent=-1.0,
                   sigma_exponent=0.5, intercept=2.0, noise=0.3, censored=0.3, optimizers=("sgd",),
                   dims=(2,), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grid = pd.DataFrame(list(itertools.product(optimizers, lrs, sigmas, dims)),
                        columns=["optimizer.name", "optimizer.lr", "sigma_escape", "problem.dim"])
    grid["cell_id"] = [f"synthetic{i:06d}" for i in range(len(grid))]
    cells = grid.loc[grid.index.repeat(seeds)].reset_index(drop=True)
    log_tau = (intercept + lr_exponent * np.log(cells["optimizer.lr"])
               + sigma_exponent * np.log(cells["sigma_escape"]) + noise * rng.standard_normal(len(cells)))
    tau = np.ceil(np.exp(log_tau)).astype(np.int64)
    budget = int(np.quantile(tau, 1 - censored)) if censored > 0 else int(tau.max())
    escaped = tau <= budget
    adaptive = cells["optimizer.name"].isin(["rmsprop", "adam"])
    return pd.DataFrame({
        "cell_id": cells["cell_id"],
        "problem.name": "quadratic_saddle", "problem.dim": cells["problem.dim"], "problem.n_negative": 1,
        "problem.curvature": 1.0, "problem.noise_scale": 1.0, "problem.anisotropy": 1 / cells["sigma_escape"],
        "problem.noise_alignment": "aligned", "problem.rotate_hessian": False, "problem.escape_radius": 1.0,
        "optimizer.name": cells["optimizer.name"], "optimizer.lr": cells["optimizer.lr"],
        "optimizer.beta2": np.where(adaptive, 0.999, np.nan), "optimizer.eps": np.where(adaptive, 1e-8, np.nan),
        "seeds": seeds, "base_seed": 0, "budget": budget, "start_offset": 0.0, "run_to_budget": False,
        "trace_points": 0, "tail_steps": 0, "divergence_radius": 1e6, "dtype": "float32", "inject_fault": "none",
        "curvature": 1.0, "sigma_escape": cells["sigma_escape"], "escape_radius": 1.0,
        "seed": np.tile(np.arange(seeds), len(grid)),
        "escaped": escaped, "escape_step": np.minimum(tau, budget), "diverged": False,
        "final_step": np.minimum(tau, budget), "loss_at_escape": np.where(escaped, -0.5, np.nan),
        "final_loss": -0.5, "final_grad_norm": 1.0, "final_distance": np.where(escaped, 1.0, 0.5),
    })
