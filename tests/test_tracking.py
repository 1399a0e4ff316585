"""The preconditioner's tracking error ‖v_t − E[g²|x_t]‖ / ‖E[g²|x_t]‖ (workflows/kernels.py):
against a direct torch computation on the same noise, and against what a moving average of
squared Gaussians must give at a flat saddle."""
import numpy as np
import pytest
import torch

from workflows.registry import make_problem
from workflows import normalize_cell, simulate
from workflows.engine import block_steps, start_points


def cell(optimizer, **run):
    # A far escape radius: no run escapes, so no run leaves the batch and the escape phase is every step.
    return normalize_cell({"problem": {"name": "quadratic_saddle", "dim": 8, "anisotropy": 10, "escape_radius": 1e3},
                           "optimizer": optimizer, "seeds": 16, "budget": 600, "tracking_error": True, **run})


def direct(c) -> np.ndarray:
    """The mean tracking error per run, recomputed with torch ops, the same problem and noise."""
    problem = make_problem(c["problem"], seed=2 * c["seed"])
    hp = c["optimizer"]
    generator = torch.Generator().manual_seed(2 * c["seed"] + 1)
    x = start_points(c, problem, generator)
    v = torch.zeros_like(x)
    total, t, noise_var = torch.zeros(len(x), dtype=torch.float64), 0, torch.diagonal(problem.noise_cov())
    while t < c["budget"]:
        for drawn in problem.draw(generator, block_steps(t, c["budget"], len(x), problem), len(x)):
            t += 1
            full = problem.grad(x)
            g = problem.stochastic_grad(x, drawn)
            v = v * hp["beta2"] + (1 - hp["beta2"]) * g * g
            v_hat = v / (1 - hp["beta2"] ** t) if hp["name"] == "adam" else v
            expected = (full * full + noise_var).double()
            total += torch.linalg.vector_norm(v_hat.double() - expected, dim=-1) / torch.linalg.vector_norm(expected, dim=-1)
            step = g / (v_hat.sqrt() + hp["eps"])
            if hp["name"] == "adam":          # β₁ = 0 in these cells: m = g
                step = step / (1 - 0.0 ** t)
            x = x - hp["lr"] * step
    return (total / t).numpy()


@pytest.mark.parametrize("optimizer", [{"name": "rmsprop", "lr": 1e-3, "beta2": 0.99},
                                       {"name": "adam", "lr": 1e-3, "beta1": 0.0, "beta2": 0.99}])
def test_tracking_error_matches_a_direct_computation(optimizer):
    c = cell(optimizer)
    rows = simulate(c).rows
    assert rows.tracking_error_at_escape.isna().all()                 # nobody escaped
    np.testing.assert_allclose(rows.tracking_error_mean, direct(c), rtol=1e-4)


def test_tracking_error_at_a_flat_saddle_is_the_moving_averages_noise():
    """With ∇f ≈ 0 and isotropic Gaussian noise, Adam's bias-corrected v̂_t is a weighted mean of
    squared Gaussians with weights w_s ∝ β^(t−s): its relative error has rms √(2 Σ w_s²) per
    coordinate, which the mean over 64 coordinates and 32 runs must reproduce."""
    beta2, budget = 0.99, 2000
    c = normalize_cell({"problem": {"name": "quadratic_saddle", "dim": 64, "curvature": 1e-8, "positive_curvature": 1e-8,
                                    "escape_radius": 1e3},
                        "optimizer": {"name": "adam", "lr": 1e-6, "beta1": 0.0, "beta2": beta2},
                        "seeds": 32, "budget": budget, "tracking_error": True})
    measured = simulate(c).rows.tracking_error_mean.mean()
    t = np.arange(1, budget + 1)
    # Σ w² for normalised EMA weights (1−β)β^(t−s)/(1−β^t), s = 1 … t.
    sum_w2 = (1 - beta2) ** 2 * (1 - beta2 ** (2 * t)) / (1 - beta2**2) / (1 - beta2**t) ** 2
    predicted = np.sqrt(2 * sum_w2).mean()
    assert measured == pytest.approx(predicted, rel=0.03)
