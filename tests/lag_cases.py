"""A varied set of cells for the lag model (tests/test_lag_speed.py): every rule kind, momentum with
and without bias correction, schedules, start offsets, the quartic, both escape measures, one and
several stable curvatures, rotated noise, staib_toy, torch classes and a cell it refuses. Their
predictions by the numpy map (before the compiled one) are frozen in lag_cases.json."""
import pandas as pd

BASE = {"problem.name": "quadratic_saddle", "problem.dim": 4, "curvature": 1.0, "sigma_escape": 0.1,
        "escape_radius": 1.0, "budget": 3000, "optimizer.lr": 3e-3}


def _cells():
    rms = {"optimizer.name": "rmsprop", "optimizer.beta2": 0.99, "optimizer.eps": 1e-8}
    adam = {"optimizer.name": "adam", "optimizer.beta1": 0.9, "optimizer.beta2": 0.999, "optimizer.eps": 1e-8}
    yield rms
    yield {**rms, "sigma_escape": 0.01}
    yield {**rms, "sigma_escape": 1.0, "optimizer.lr": 1e-2}
    yield {**rms, "problem.escape_measure": "projection"}
    yield {**rms, "problem.escape_measure": "projection", "problem.dim": 64}
    yield {**rms, "problem.dim": 32, "problem.condition": 10.0}              # 31 stable curvatures
    yield {**rms, "problem.dim": 3, "problem.condition": 100.0}              # 2
    yield {**rms, "problem.dim": 9, "problem.condition": 4.0, "problem.noise_scale": 0.3}
    yield {**rms, "problem.noise_alignment": "rotated", "problem.anisotropy": 5.0}
    yield {**rms, "start_offset": 0.05, "problem.dim": 6}
    yield {**rms, "start_offset": 0.2, "problem.escape_measure": "projection"}
    yield {**rms, "problem.quartic": 1.0, "escape_radius": 0.5}
    yield {**rms, "problem.quartic": 1.0, "escape_radius": 0.5, "problem.escape_measure": "projection"}
    yield {**rms, "optimizer.lr_schedule": "cosine", "optimizer.lr": 1e-2}
    yield {**rms, "optimizer.lr_schedule": "linear_warmup", "optimizer.warmup_steps": 200}
    yield {**rms, "optimizer.lr_schedule": "step", "optimizer.decay_factor": 0.5, "optimizer.decay_every": 300,
           "sigma_escape": 0.01}
    yield {**rms, "optimizer.lr_schedule": "inverse_sqrt", "optimizer.beta2_rule": "paper"}
    yield {**rms, "optimizer.beta2": 0.5, "optimizer.lr": 1e-3}
    yield adam
    yield {**adam, "problem.escape_measure": "projection", "sigma_escape": 0.03}
    yield {**adam, "problem.dim": 2, "problem.condition": 3.0}
    yield {**adam, "problem.dim": 12, "problem.condition": 50.0}
    yield {**adam, "optimizer.bias_correction": False}
    yield {**adam, "optimizer.beta1": 0.0, "optimizer.beta2": 0.99}
    yield {**adam, "optimizer.beta1": 0.5, "problem.quartic": 0.5, "escape_radius": 0.8}
    yield {**adam, "start_offset": 0.1, "problem.dim": 5}
    yield {**adam, "optimizer.lr_schedule": "cosine", "optimizer.beta2_rule": "paper", "optimizer.lr": 1e-2}
    yield {**adam, "budget": 20_000, "optimizer.lr": 3e-4, "sigma_escape": 0.001}
    yield {**adam, "budget": 280}                                           # censored near its median
    yield {"optimizer.name": "adagrad", "optimizer.eps": 1e-10}
    yield {"optimizer.name": "adagrad", "optimizer.eps": 1e-10, "optimizer.lr": 0.3,
           "problem.escape_measure": "projection"}
    yield {"optimizer.name": "adagrad", "optimizer.initial_accumulator": 0.1, "optimizer.lr": 3e-2,
           "problem.escape_measure": "projection"}
    yield {"optimizer.name": "precond_sgd", "optimizer.target": "second_moment", "optimizer.alpha": 1.0,
           "optimizer.eps": 1e-12, "optimizer.lr": 1e-2}
    yield {"optimizer.name": "precond_sgd", "optimizer.target": "second_moment", "optimizer.alpha": 0.5,
           "optimizer.eps": 1e-12, "optimizer.lr": 1e-2, "problem.escape_measure": "projection"}
    yield {"optimizer.name": "precond_sgd", "optimizer.target": "second_moment", "optimizer.alpha": 1.0,
           "optimizer.eps": 1e-6, "optimizer.lr": 3e-3, "problem.dim": 8, "problem.condition": 10.0}
    yield {"optimizer.name": "torch.optim.RMSprop", "optimizer.alpha": 0.99, "optimizer.eps": 1e-8}
    yield {"optimizer.name": "torch.optim.Adam", "optimizer.betas[0]": 0.9, "optimizer.betas[1]": 0.99,
           "optimizer.eps": 1e-8, "problem.escape_measure": "projection"}
    yield {**rms, "problem.name": "staib_toy", "curvature": 0.1, "sigma_escape": 0.1, "escape_radius": 0.3,
           "problem.dim": None}
    yield {"optimizer.name": "torch.optim.Adam", "optimizer.amsgrad": True}                 # refused


def lag_cells() -> pd.DataFrame:
    """The cells as one table (missing settings NaN, as in a sweep's cells table)."""
    return pd.DataFrame([{**BASE, **cell, "cell_id": f"lag{i:02d}"} for i, cell in enumerate(_cells())])
