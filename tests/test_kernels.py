"""The compiled block of steps (workflows/kernels.py) against the engine's reference loop: the
same cell gives the same runs. Outcomes (escaped, escape_step, diverged, final_step) must agree
run for run. Iterates agree bit for bit except where torch's own order cannot be reproduced (its
kernels handle a batch's last numel mod 8 elements on a scalar path, a rotated Hessian goes
through BLAS): there they differ by float32 rounding accumulated over the run, 1e-4 relative at
most here. Losses on the trace and over the tail the compiled path sums in double, the reference in
float32: they agree to float32's resolution of the loss."""
import numpy as np
import pandas as pd
import pytest
import torch

from workflows import simulate

OUTCOMES = ["escaped", "escape_step", "diverged", "final_step"]
LOSSES = ["loss_at_escape", "final_loss", "final_grad_norm", "final_distance"]


def quadratic(**params):
    return {"name": "quadratic_saddle", "dim": 4, "anisotropy": 10, **params}


CASES = {
    "sgd": (quadratic(), {"name": "sgd", "lr": 0.02}),
    "sgd rotated noise": (quadratic(noise_alignment="rotated"), {"name": "sgd", "lr": 0.02}),
    "sgd rotated hessian, quartic": (quadratic(rotate_hessian=True, quartic=1.0, escape_radius=0.5),
                                     {"name": "sgd", "lr": 0.02}),
    "momentum": (quadratic(), {"name": "momentum", "lr": 0.01}),
    "nesterov": (quadratic(), {"name": "momentum", "lr": 0.01, "nesterov": True}),
    "rmsprop": (quadratic(anisotropy=100), {"name": "rmsprop", "lr": 0.003, "beta2": 0.99}),
    "adam": (quadratic(anisotropy=100), {"name": "adam", "lr": 0.003}),
    "adam beta1=0": (quadratic(anisotropy=100), {"name": "adam", "lr": 0.003, "beta1": 0.0}),
    "adam no bias correction": (quadratic(), {"name": "adam", "lr": 0.003, "bias_correction": False}),
    "amsgrad": (quadratic(anisotropy=100), {"name": "amsgrad", "lr": 0.003}),
    "adagrad": (quadratic(), {"name": "adagrad", "lr": 0.05}),
    "precond diagonal": (quadratic(anisotropy=100), {"name": "precond_sgd", "lr": 0.001}),
    "precond full": (quadratic(anisotropy=100, noise_alignment="rotated"),
                     {"name": "precond_sgd", "lr": 0.001, "form": "full"}),
    "projection, 2 escape directions": (quadratic(n_negative=2, escape_measure="projection"),
                                        {"name": "sgd", "lr": 0.02}),
    "student-t noise": (quadratic(noise_dist="student_t", df=3), {"name": "sgd", "lr": 0.02}),
    "alpha-stable noise": (quadratic(noise_dist="alpha_stable", stable_alpha=1.5), {"name": "rmsprop", "lr": 0.003}),
    "staib_toy": ({"name": "staib_toy"}, {"name": "rmsprop", "lr": 0.001, "beta2": 0.99}),
}


def both(cell):
    fast, slow = simulate(cell), simulate(cell, reference=True)
    return fast, slow


@pytest.mark.parametrize("case", CASES)
def test_compiled_and_reference_runs_agree(case):
    problem, optimizer = CASES[case]
    cell = {"problem": problem, "optimizer": optimizer, "seeds": 128, "budget": 3000, "start_offset": 0.0}
    fast, slow = both(cell)
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES]), case
    assert fast.rows.escaped.any(), "the case must exercise escapes"
    for column in LOSSES:
        np.testing.assert_allclose(fast.rows[column], slow.rows[column], rtol=1e-4, atol=1e-7, err_msg=column)
    same = [c for c in slow.rows.columns if c not in OUTCOMES + LOSSES]
    pd.testing.assert_frame_equal(fast.rows[same], slow.rows[same])


def test_run_to_budget_traces_and_tails_agree():
    cell = {"problem": quadratic(quartic=1.0, escape_radius=0.5), "optimizer": {"name": "adam", "lr": 0.003},
            "seeds": 64, "budget": 2000, "run_to_budget": True, "trace_points": 30, "tail_steps": 200}
    fast, slow = both(cell)
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES])
    tails = [c for c in slow.rows if c.startswith("tail_")]
    resolution = 8 * np.finfo(np.float32).eps * slow.rows["tail_loss_mean"].abs().max()
    np.testing.assert_allclose(fast.rows[tails], slow.rows[tails], rtol=0, atol=resolution)
    pd.testing.assert_frame_equal(fast.trace[["seed", "step"]].reset_index(drop=True),
                                  slow.trace[["seed", "step"]].reset_index(drop=True))
    np.testing.assert_allclose(fast.trace.loss, slow.trace.loss, rtol=1e-4, atol=8 * np.finfo(np.float32).eps)


def test_divergence_agrees():
    cell = {"problem": quadratic(positive_curvature=1.0), "optimizer": {"name": "sgd", "lr": 2.5},
            "seeds": 32, "budget": 500, "divergence_radius": 1e3, "run_to_budget": True}
    fast, slow = both(cell)
    assert slow.rows.diverged.any()
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES])


@pytest.mark.parametrize("optimizer", [{"name": "rmsprop", "eps": 0.0}, {"name": "adagrad", "eps": 0.0,
                                                                         "initial_accumulator": 0.0}])
def test_a_division_by_zero_diverges_as_in_torch(optimizer):
    """eps = 0 and a zero gradient (no noise, at the saddle): g/(√v + ε) is 0/0. torch gives NaN and
    the run diverges at step 1; the compiled block must too (it raised ZeroDivisionError, numba's
    Python error model, before it used IEEE division)."""
    cell = {"problem": {"name": "quadratic_saddle", "dim": 2, "noise_scale": 0.0}, "optimizer": optimizer,
            "seeds": 4, "budget": 10}
    fast, slow = both(cell)
    assert slow.rows.diverged.all() and (slow.rows.final_step == 1).all()
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES])


def test_float64_cells_agree():
    cell = {"problem": quadratic(), "optimizer": {"name": "adam", "lr": 0.003}, "seeds": 64, "budget": 3000,
            "dtype": "float64"}
    fast, slow = both(cell)
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES])


@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.02}, {"name": "adam", "lr": 0.003}])
def test_time_to_a_gap_agrees(optimizer):
    """gap_epsilon: runs finish when escaped and at f − f_min ≤ ε; both paths find the same step."""
    cell = {"problem": quadratic(quartic=1.0, escape_radius=0.5), "optimizer": optimizer, "seeds": 64,
            "budget": 4000, "gap_epsilon": 0.02}
    fast, slow = both(cell)
    columns = OUTCOMES + ["gap_reached", "gap_step"]
    assert slow.rows.gap_reached.any() and (slow.rows.gap_step > slow.rows.escape_step).any()
    assert fast.rows[columns].equals(slow.rows[columns])


@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.02}, {"name": "adam", "lr": 0.003}])
def test_proportional_noise_agrees(optimizer):
    """Noise that vanishes at the saddle (its scale ‖x‖/ℓ): runs start off it."""
    cell = {"problem": quadratic(noise_model="proportional", noise_length=0.1), "optimizer": optimizer,
            "seeds": 64, "budget": 3000, "start_offset": 0.01}
    fast, slow = both(cell)
    assert slow.rows.escaped.any()
    assert fast.rows[OUTCOMES].equals(slow.rows[OUTCOMES])


def test_the_compiled_block_is_used_only_where_it_is_the_faster_path():
    """Up to MAX_COMPILED_COORDINATES seeds × dim, or in at most MAX_WIDE_DIM dimensions, the compiled
    block runs the cell; beyond both the reference loop's torch kernels are faster (workflows/kernels.py
    gives the figures)."""
    from workflows.registry import make_problem
    from workflows.cell import normalize_cell
    from workflows.kernels import MAX_COMPILED_COORDINATES, MAX_WIDE_DIM, compiled_block

    def chosen(seeds, dim):
        cell = normalize_cell({"problem": {"name": "quadratic_saddle", "dim": dim},
                               "optimizer": {"name": "adam", "lr": 1e-3}, "seeds": seeds})
        problem = make_problem(cell["problem"], seed=0, dtype=torch.float32)
        hp = {k: v for k, v in cell["optimizer"].items() if k != "name"}
        return compiled_block(cell, problem, hp) is not None

    assert chosen(1024, 10) and chosen(MAX_COMPILED_COORDINATES // 32, 32) and chosen(262144, MAX_WIDE_DIM)
    assert not chosen(MAX_COMPILED_COORDINATES // 32 + 1, 32) and not chosen(16384, 100)
