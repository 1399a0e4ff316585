"""The engine's second-order metrics: time to an (ε, √(ρε))-SOSP against a predictable case, the
λ_min check, Lanczos against dense eigenvalues, the CNC constant, the neighbourhood relative to
f_min; and one small engine run per data-driven problem and per new optimizer."""

import numpy as np
import pandas as pd
import pytest
import torch

from workflows.registry import make_problem
from problems.curvature import lanczos_min_eigenvalue, min_hessian_eigenvalue
from workflows import cell_id, simulate_cell

F64 = torch.float64


def quartic_cell(**run):
    # f = ½(−x² + y²) + ¼(x² + y²)²: minima at distance √(γ/λ) = 1 along x, loss −¼.
    return {"problem": {"name": "quadratic_saddle", "dim": 2, "quartic": 1.0, "noise_scale": 1e-6,
                        "escape_radius": 0.5},
            "optimizer": {"name": "sgd", "lr": 0.05}, "seeds": 16, "budget": 3000, "dtype": "float64",
            "sosp_epsilon": 1e-3, "sosp_rho": 1.0, "sosp_every": 5, **run}


def steps_to_small_gradient(x, lr=0.05, epsilon=1e-3):
    """The noise-free continuation along the escape direction, x ← x − η(−x + x³), from x until
    |∇f| = |x³ − x| ≤ ε."""
    steps = 0
    while abs(x**3 - x) > epsilon:
        x -= lr * (x**3 - x)
        steps += 1
    return steps


def test_sosp_step_is_where_the_deterministic_continuation_predicts():
    """Once escaped (|x| ≥ r = 0.5), the tiny noise no longer matters: the SOSP comes
    T(r) = steps_to_small_gradient(r) steps later (one step less if the escape step overshot r),
    rounded up to the next test (every 5 steps). At the saddle the gradient is 0 ≤ ε but
    λ_min = −1 < −√(ρε): it must not count."""
    rows = simulate_cell(quartic_cell())
    assert rows.escaped.all() and rows.sosp_reached.all()
    T = steps_to_small_gradient(0.5)
    assert T > 50
    lower, upper = rows.escape_step + T - 1, rows.escape_step + T + 5
    assert ((rows.sosp_step >= lower) & (rows.sosp_step <= upper)).all()
    assert (rows.sosp_step % 5 == 0).all()
    # Runs stay until both events are seen; at the SOSP the curvature is the minimum's, 2.
    assert (rows.final_step == rows.sosp_step).all()
    assert rows.final_min_eig.to_numpy() == pytest.approx(2.0, rel=0.01)
    assert (rows.final_grad_norm <= 1e-3).all()


def test_without_the_curvature_test_the_saddle_itself_would_count():
    """ρε ≥ γ²: −√(ρε) ≤ λ_min = −γ, so the saddle (gradient 0) passes at step 0."""
    rows = simulate_cell(quartic_cell(sosp_rho=2.0 / 1e-3))
    assert rows.sosp_reached.all() and (rows.sosp_step == 0).all()


def test_lanczos_gives_the_same_sosp_steps_as_the_exact_eigenvalues():
    exact = simulate_cell(quartic_cell(sosp_method="exact", seeds=8))
    lanczos = simulate_cell(quartic_cell(sosp_method="lanczos", seeds=8))
    pd.testing.assert_series_equal(exact.sosp_step, lanczos.sosp_step)
    np.testing.assert_allclose(exact.final_min_eig, lanczos.final_min_eig, rtol=1e-9)


def test_sosp_not_reached_is_censored_at_the_last_step():
    rows = simulate_cell(quartic_cell(budget=100))               # far too short to escape
    assert not rows.sosp_reached.any() and (rows.sosp_step == 100).all()
    assert (rows.final_step == 100).all()


def test_sosp_tracking_does_not_change_the_runs():
    on, off = simulate_cell(quartic_cell(seeds=8)), simulate_cell(quartic_cell(seeds=8, sosp_epsilon=0.0))
    pd.testing.assert_series_equal(on.escape_step, off.escape_step)
    assert "sosp_step" not in off and (on.final_step > off.final_step).all()


def test_lanczos_finds_the_smallest_eigenvalue():
    gen = torch.Generator().manual_seed(0)
    for d, steps in [(12, 12), (200, 60)]:
        Q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
        evals = torch.linspace(-1.0, 3.0, d, dtype=F64)
        H = (Q * evals) @ Q.T
        x = torch.zeros(3, d, dtype=F64)
        found = lanczos_min_eigenvalue(lambda x, v: v @ H, x, steps=steps, generator=gen)
        torch.testing.assert_close(found, torch.full((3,), -1.0, dtype=F64), rtol=0, atol=1e-6)


def test_lanczos_agrees_with_dense_eigenvalues_on_a_network():
    problem = make_problem({"name": "mlp_teacher_student", "input_dim": 6, "hidden": 5}, seed=0, dtype=F64)
    x = 0.5 * torch.randn(4, problem.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    exact = min_hessian_eigenvalue(problem, x, "exact")
    lanczos = min_hessian_eigenvalue(problem, x, "lanczos", torch.Generator().manual_seed(2))
    torch.testing.assert_close(lanczos, exact, rtol=1e-6, atol=1e-9)


# --- the CNC constant and the neighbourhood ---------------------------------------------------------

@pytest.mark.parametrize("spec", [
    {"name": "quadratic_saddle", "dim": 3, "noise_scale": 0.5, "anisotropy": 5, "rotate_hessian": True},
    {"name": "tensor_decomposition", "dim": 5},
    {"name": "matrix_factorization", "size": 5, "rank": 1},
], ids=lambda s: s["name"])
def test_cnc_constant_estimates_the_noise_along_the_escape_direction(spec):
    """At a stationary point E[(vᵀg)²] = vᵀΣv = sigma_escape², which the problem knows exactly."""
    rows = simulate_cell({"problem": spec, "optimizer": {"name": "sgd"}, "seeds": 2, "budget": 1,
                          "cnc_samples": 20_000, "dtype": "float64"})
    assert rows.cnc_constant.iloc[0] == pytest.approx(rows.sigma_escape.iloc[0] ** 2, rel=0.06)
    assert rows.cnc_constant.nunique() == 1


def test_cnc_constant_can_be_turned_off_and_never_changes_the_runs():
    cell = {"problem": {"name": "pca", "dim": 5}, "optimizer": {"name": "sgd"}, "seeds": 8, "budget": 300}
    on, off = simulate_cell(cell), simulate_cell({**cell, "cnc_samples": 0})
    assert off.cnc_constant.isna().all() and on.cnc_constant.notna().all()
    pd.testing.assert_frame_equal(on.drop(columns=["cnc_constant", "cnc_samples", "cell_id"]),
                                  off.drop(columns=["cnc_constant", "cnc_samples", "cell_id"]))


def test_tail_gap_is_the_tail_loss_above_the_minimum():
    rows = simulate_cell(quartic_cell(seeds=8, budget=1000, tail_steps=100, run_to_budget=True))
    assert (rows.minimum_loss == -0.25).all()
    for stat in ("mean", "q50", "q90"):
        np.testing.assert_allclose(rows[f"tail_gap_{stat}"], rows[f"tail_loss_{stat}"] + 0.25)
    assert (rows.tail_gap_q50 >= 0).all() and (rows.tail_gap_q50 < 1e-6).all()
    no_minimum = simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 2},
                                "optimizer": {"name": "sgd"}, "seeds": 2, "budget": 50, "tail_steps": 10})
    assert no_minimum.tail_gap_mean.isna().all() and no_minimum.tail_loss_mean.notna().all()


def test_cells_from_before_the_new_settings_keep_their_ids():
    # cell_id of these cells at 37017e1, before the SOSP and CNC settings existed.
    assert cell_id({"problem": {"name": "quadratic_saddle", "dim": 4}, "optimizer": {"name": "adam", "lr": 1e-3},
                    "seeds": 64}) == "5b755fa53b69552d"
    assert cell_id({"problem": {"name": "staib_toy"}, "optimizer": {"name": "sgd"}}) == "40ef1df4dc2dd092"
    base = {"problem": {"name": "staib_toy"}, "optimizer": {"name": "sgd"}}
    assert cell_id({**base, "sosp_epsilon": 0.1}) != cell_id(base) == cell_id({**base, "cnc_samples": 4096})


# --- every data-driven problem and every new optimizer runs in the engine ---------------------------

ENGINE_PROBLEMS = {          # spec, start_offset, SGD's and Adam's step sizes
    "matrix_factorization": ({"name": "matrix_factorization", "size": 6, "rank": 2}, 0.0, 1e-2, 3e-2),
    "pca": ({"name": "pca", "dim": 8}, 0.0, 2e-2, 5e-2),
    "tensor_decomposition": ({"name": "tensor_decomposition", "dim": 6}, 0.0, 5e-2, 1e-2),
    "phase_retrieval": ({"name": "phase_retrieval", "dim": 6, "n_samples": 200}, 0.0, 5e-3, 2e-2),
    "deep_linear": ({"name": "deep_linear"}, 0.05, 5e-2, 1e-2),
    "mlp_teacher_student": ({"name": "mlp_teacher_student"}, 0.05, 5e-2, 1e-2),
    "logistic_regression": ({"name": "logistic_regression", "n_samples": 300}, 0.0, 0.5, 0.1),
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ENGINE_PROBLEMS)
def test_each_problem_runs_in_the_engine(name, optimizer):
    spec, offset, sgd_lr, adam_lr = ENGINE_PROBLEMS[name]
    opt = {"name": "sgd", "lr": sgd_lr} if optimizer == "sgd" else {"name": "adam", "lr": adam_lr, "beta1": 0.9}
    rows = simulate_cell({"problem": spec, "optimizer": opt, "seeds": 6, "budget": 400, "start_offset": offset,
                          "sosp_epsilon": 0.05, "sosp_every": 50, "tail_steps": 20, "run_to_budget": True,
                          "cnc_samples": 256})
    assert len(rows) == 6 and not rows.diverged.any()
    assert rows.escaped.any()
    for column in ("curvature", "sigma_escape", "escape_radius", "noise_anisotropy", "cnc_constant",
                   "saddle_loss", "final_min_eig", "tail_loss_mean", "loss_at_escape"):
        assert rows.loc[rows.escaped, column].notna().all(), column
    assert (rows.final_step == 400).all() and (rows.sosp_step <= 400).all()


@pytest.mark.parametrize("spec, problem, offset", [
    ({"name": "amsgrad", "lr": 2e-2}, {"name": "pca", "dim": 8}, 0.0),
    ({"name": "adagrad_full", "lr": 0.05}, {"name": "tensor_decomposition", "dim": 6}, 0.0),
    ({"name": "cnc_sgd", "lr": 5e-3, "large_lr": 0.02, "t_thres": 20},
     {"name": "phase_retrieval", "dim": 6, "n_samples": 200}, 0.0),
    ({"name": "perturbed_sgd", "lr": 5e-3, "radius": 0.05, "g_thres": 0.05},
     {"name": "matrix_factorization", "size": 6, "rank": 2, "saddle": "zero"}, 0.0),
], ids=lambda v: v["name"] if isinstance(v, dict) else "")
def test_each_new_optimizer_runs_in_the_engine(spec, problem, offset):
    cell = {"problem": problem, "optimizer": spec, "seeds": 6, "budget": 1500, "start_offset": offset,
            "cnc_samples": 0}
    rows = simulate_cell(cell)
    assert rows.escaped.all() and not rows.diverged.any()
    pd.testing.assert_frame_equal(rows, simulate_cell(cell))    # the same cell, the same rows


def test_sgd_never_leaves_a_zero_saddle_with_multiplicative_noise():
    rows = simulate_cell({"problem": {"name": "matrix_factorization", "size": 6, "rank": 2, "saddle": "zero"},
                          "optimizer": {"name": "sgd", "lr": 5e-3}, "seeds": 4, "budget": 300, "cnc_samples": 64})
    assert not rows.escaped.any() and (rows.final_distance == 0).all() and (rows.cnc_constant == 0).all()


def test_a_diverged_run_gets_a_nan_curvature_not_a_crash():
    problem = make_problem({"name": "quadratic_saddle", "dim": 3, "quartic": 1.0}, seed=0, dtype=F64)
    x = torch.tensor([[0.1, 0.2, 0.3], [float("nan"), 0.0, 0.0]], dtype=F64)
    for method in ("exact", "lanczos"):
        found = min_hessian_eigenvalue(problem, x, method, torch.Generator().manual_seed(0))
        assert found[1].isnan() and found[0] == pytest.approx(float(torch.linalg.eigvalsh(problem.hessian(x[:1]))[0, 0]))
