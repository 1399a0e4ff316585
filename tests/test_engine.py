"""The engine against THEORY.md's closed forms and the paper's Figure 1; censoring,
divergence, traces, determinism and bad cells."""
import pandas as pd
import pytest

from analysis.theory import noise_preconditioner_escape_time, sgd_escape_sd, sgd_escape_time
from workflows import cell_id, normalize_cell, simulate, simulate_cell


def saddle_cell(optimizer, lr, sigma_escape, seeds=512, budget=40_000, **problem):
    # noise_scale 0.1 elsewhere; anisotropy sets the escape direction's std.
    return {"problem": {"name": "quadratic_saddle", "dim": 2, "noise_scale": 0.1,
                        "anisotropy": 0.1 / sigma_escape, **problem},
            "optimizer": {"name": optimizer, "lr": lr}, "seeds": seeds, "budget": budget}


# 3 decades of lr (1e-3 .. 1e-1) and 3 of sigma_escape (1e-4 .. 1e-1).
SGD_POINTS = [(1e-1, 1e-1), (1e-1, 1e-4), (1e-2, 1e-2), (1e-2, 1e-4), (1e-3, 1e-1), (1e-3, 1e-3)]


@pytest.mark.parametrize("lr, sigma_escape", SGD_POINTS)
def test_sgd_mean_escape_step_matches_the_closed_form(lr, sigma_escape):
    rows = simulate_cell(saddle_cell("sgd", lr, sigma_escape))
    assert rows.escaped.all()
    predicted = sgd_escape_time(lr, 1.0, sigma_escape, 1.0)
    assert rows.escape_step.mean() == pytest.approx(predicted, rel=0.05)
    # The spread of ln|W| does not depend on σ₁; sd within 15% over 512 seeds (its SE is ~5%).
    assert rows.escape_step.std() == pytest.approx(sgd_escape_sd(lr, 1.0), rel=0.15)


@pytest.mark.parametrize("lr, sigma_escape", [(1e-3, 1e-1), (1e-4, 1e-2), (1e-5, 1e-3), (1e-4, 1e-3)])
def test_fixed_noise_preconditioner_matches_its_closed_form(lr, sigma_escape):
    rows = simulate_cell(saddle_cell("precond_sgd", lr, sigma_escape))
    assert rows.escaped.all()
    assert rows.escape_step.mean() == pytest.approx(noise_preconditioner_escape_time(lr, 1.0, sigma_escape, 1.0), rel=0.07)


def staib(optimizer, seeds=256):
    return simulate_cell({"problem": {"name": "staib_toy"}, "optimizer": optimizer, "seeds": seeds,
                          "budget": 10_000, "run_to_budget": True, "tail_steps": 1000})


def test_staib_figure_1():
    """Staib et al. Figure 1: RMSProp with η = 1e-3 (β₂ = 1 − η^(2/3)) escapes about as fast as
    SGD with η = 1e-2; SGD with η = 1e-3 mostly has not escaped after 10⁴ steps; and RMSProp
    then sits closer to the minimum's loss than the fast SGD."""
    rmsprop = staib({"name": "rmsprop", "lr": 1e-3, "beta2": 1 - 1e-3 ** (2 / 3)})
    sgd_fast, sgd_slow = staib({"name": "sgd", "lr": 1e-2}), staib({"name": "sgd", "lr": 1e-3})
    ratio = rmsprop.escape_step.median() / sgd_fast.escape_step.median()
    assert rmsprop.escaped.mean() > 0.9 and sgd_fast.escaped.mean() > 0.9
    assert 0.5 < ratio < 2
    assert sgd_slow.escaped.mean() < 0.5
    assert rmsprop.tail_loss_mean.mean() < sgd_fast.tail_loss_mean.mean()


def test_censoring_records_the_budget_not_an_escape():
    rows = simulate_cell(saddle_cell("sgd", 1e-3, 1e-3, seeds=64, budget=2000))
    assert not rows.escaped.any()
    assert (rows.escape_step == 2000).all() and (rows.final_step == 2000).all()
    assert rows.loss_at_escape.isna().all()


def test_a_partly_censored_cell_keeps_every_seed():
    budget = int(sgd_escape_time(1e-2, 1.0, 1e-2, 1.0))      # about half escape by the mean
    rows = simulate_cell(saddle_cell("sgd", 1e-2, 1e-2, seeds=256, budget=budget))
    assert len(rows) == 256 and 0.2 < rows.escaped.mean() < 0.8
    assert (rows.loc[~rows.escaped, "escape_step"] == budget).all()
    assert (rows.loc[rows.escaped, "escape_step"] <= budget).all()
    assert (rows.loc[rows.escaped, "final_distance"] >= 1.0).all()


def test_divergence_is_recorded_never_a_crash():
    # Far escape radius: the first step lands at |x₂| ≈ 5, the next overflows before escaping.
    cell = {"problem": {"name": "staib_toy", "escape_radius": 100.0}, "optimizer": {"name": "sgd", "lr": 50.0},
            "seeds": 32, "budget": 100}
    rows = simulate_cell(cell)
    assert rows.diverged.all()
    assert rows.escape_step.notna().all() and rows.escaped.notna().all()
    assert (rows.escape_step >= 1).all() and (rows.escape_step <= 100).all()


def test_same_cell_same_rows():
    cell = saddle_cell("adam", 1e-2, 1e-2, seeds=64, budget=3000)
    pd.testing.assert_frame_equal(simulate_cell(cell), simulate_cell(cell))
    other = simulate_cell({**cell, "seed": 1})
    assert not other.escape_step.equals(simulate_cell(cell).escape_step)


def test_rows_carry_the_cell_flattened_and_the_derived_quantities():
    cell = saddle_cell("adam", 1e-2, 1e-2, seeds=8, budget=3000)
    rows = simulate_cell(cell)
    assert list(rows.seed) == list(range(8))
    assert (rows.cell_id == cell_id(cell)).all()
    assert rows["optimizer.beta2"].iloc[0] == 0.999 and rows["problem.anisotropy"].iloc[0] == 10
    assert rows.sigma_escape.iloc[0] == pytest.approx(1e-2)
    assert rows.base_seed.iloc[0] == 0 and rows.budget.iloc[0] == 3000


def test_trace_is_log_spaced_and_covers_the_budget():
    result = simulate({"problem": {"name": "staib_toy"}, "optimizer": {"name": "sgd", "lr": 1e-2},
                       "seeds": 4, "budget": 1000, "run_to_budget": True, "trace_points": 20})
    steps = sorted(result.trace.step.unique())
    assert steps[0] == 1 and steps[-1] == 1000 and len(steps) <= 20
    assert len(result.trace) == 4 * len(steps) and result.trace.loss.notna().all()


def test_start_offset_starts_at_that_distance():
    rows = simulate_cell({**saddle_cell("sgd", 1e-2, 1e-3, seeds=16, budget=1), "start_offset": 0.5})
    assert rows.final_distance.between(0.45, 0.56).all()


@pytest.mark.parametrize("cell, message", [
    ({"problem": {"name": "quadratic_saddle"}}, "cell: optimizer=None is not a mapping"),
    ({"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "sgd"}, "seeds": 0},
     "cell: seeds=0 is out of range; allowed: >= 1"),
    ({"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "sgd"}, "budget": -5},
     "cell: budget=-5 is out of range; allowed: >= 1"),
    ({"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "sgd"}, "steps": 5},
     "cell: unknown parameter 'steps'"),
    ({"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "sgd"}, "dtype": "float16"},
     "cell: dtype='float16' is not allowed; allowed: one of float32, float64"),
    ({"problem": {"name": "quadratic_saddle", "anisotropy": 0.1}, "optimizer": {"name": "sgd"}},
     "problem quadratic_saddle: anisotropy=0.1 is out of range; allowed: >= 1"),
    ({"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "adam", "lr": 0}},
     "optimizer adam: lr=0.0 is out of range; allowed: > 0"),
])
def test_bad_cells_raise_a_clear_error(cell, message):
    with pytest.raises(ValueError) as err:
        simulate_cell(cell)
    assert message in str(err.value)


def test_equivalent_spellings_share_a_cell_id():
    a = {"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "sgd"}}
    b = {"problem": {"name": "quadratic_saddle", "dim": 10}, "optimizer": {"name": "sgd", "lr": 1e-2},
         "seeds": 256}
    assert normalize_cell(a) == normalize_cell(b) and cell_id(a) == cell_id(b)
