"""The lag model (analysis.lag, analysis.lag_cells): its map against the closed forms in their limits,
against a direct Monte Carlo of the scalar recursion, THEORY's floor table, and the engine."""
import numpy as np
import pandas as pd
import pytest
from scipy import special

from analysis.cells import cell_table
from analysis.lag import (Stable, bessel_time, crossover, debye_time, exact_rule, exponential_rule, floor,
                          floor_led_time, floor_ratio, lag_escape, monte_carlo, noise_led_time, run_map,
                          small_ratio_time, sum_rule)
from analysis.lag_cells import local_exponents
from analysis.prediction import predictions
from workflows.engine import simulate


def trajectory_time(rule, sigma, y_from, y_to, u_from):
    """Steps of the deterministic map from (y_from, u_from) until y ≥ y_to (γ = 1, one node)."""
    steps = run_map(rule, 1.0, sigma, lambda n: np.full(n, y_to), np.array([y_from]), np.array([y_from]), u_from)
    return float(steps[0]) - 1


def test_map_has_the_debye_limit_where_the_estimate_tracks():
    """ν = σ₁(1 − β₂)/(2ηγ) = 250: the estimate follows E g² = γ²x² + σ₁² and the map is the paper's
    second-moment preconditioner, t = [F(Y) − F(y)]/ε."""
    lr, beta2, y_from, y_to = 1e-3, 0.5, 0.05, 10.0
    rule = exponential_rule(np.full(40_000, lr), beta2)
    steps = trajectory_time(rule, 1.0, y_from, y_to, y_from**2 + 1)
    assert steps == pytest.approx(debye_time(y_from, y_to, lr, 1.0, 1.0), rel=0.005)
    # and the no-lag rule (u = E g² exactly) is the same limit
    assert trajectory_time(exact_rule(np.full(40_000, lr)), 1.0, y_from, y_to, 1.0) == pytest.approx(steps, rel=0.005)


@pytest.mark.parametrize("sigma", [0.002, 0.02, 0.2])
def test_map_follows_the_bessel_solution_of_the_lag_ode(sigma):
    """Small steps (η = 1e-4, β₂ = 0.998): ν = σ₁(1 − β₂)/(2η) = 0.02, 0.2, 2, from x = 0.05 to 1. The map
    started on the ODE's regular branch, √v = (σ₁/ν)(ν + z I_{ν+1}(z)/I_ν(z)), takes the Bessel time
    2M ln[I_ν(z_b)/I_ν(z_a)]."""
    lr, beta2, x_from, x_to = 1e-4, 0.998, 0.05, 1.0
    nu, z = sigma * (1 - beta2) / (2 * lr), x_from * (1 - beta2) / (2 * lr)
    root_v = sigma / nu * (nu + z * special.ive(nu + 1, z) / special.ive(nu, z))
    rule = exponential_rule(np.full(60_000, lr), beta2)
    steps = trajectory_time(rule, sigma, x_from / sigma, x_to / sigma, (root_v / sigma) ** 2)
    assert steps == pytest.approx(bessel_time(x_from, x_to, lr, 1.0, sigma, beta2), rel=0.01)


def test_floor_table_of_the_reference_is_reproduced():
    """Deep in the sign regime (σ₁ = 1e-6, r = 1, the paper's β₂), f = η E[τ]/r: the continuum floor
    (2/R) ln I₀(R/2) and the discrete map's, for RMSProp, Adam bias-corrected (β₁ = 0) and Adam β₁ = 0.9."""
    expected = {1e-3: (10.0, 0.661, 0.670, 0.775, 0.814), 3e-3: (6.93, 0.568, 0.591, 0.735, 0.834),
                1e-2: (4.64, 0.455, 0.520, 0.700, 0.940)}
    for lr, (ratio, continuum, rmsprop, adam, momentum) in expected.items():
        beta2 = 1 - lr ** (2 / 3)
        assert floor_ratio(lr, beta2) == pytest.approx(ratio, abs=0.005)
        assert floor(floor_ratio(lr, beta2)) == pytest.approx(continuum, abs=0.0005)
        for kw, value in ((dict(), rmsprop), (dict(bias_correction=True), adam),
                          (dict(bias_correction=True, beta1=0.9), momentum)):
            law = lag_escape(exponential_rule(np.full(int(3 / lr), lr), beta2, **kw), 1.0, 1e-6, 1.0)
            assert law.mean * lr == pytest.approx(value, abs=0.0006), (lr, kw)


def test_floor_has_its_limits():
    """f → 1 − ln(πR)/R for large R, and R/8 for small R (T ≈ r²(1 − β₂)/(8η²))."""
    assert floor(200.0) == pytest.approx(1 - np.log(np.pi * 200) / 200, rel=1e-4)
    assert floor(0.05) == pytest.approx(0.05 / 8, rel=1e-3)
    assert small_ratio_time(2e-4, 0.9999) * 2e-4 == pytest.approx(floor(0.5), rel=0.01)


def test_map_inside_the_memory_window():
    """R = r(1 − β₂)/η = 0.5 < 1: escape within the average's memory takes about r²(1 − β₂)/(8η²)
    steps; the discrete map a few more (its first steps move η√M, the continuum's x = η√(8Mt) more)."""
    lr, beta2 = 2e-4, 0.9999
    law = lag_escape(exponential_rule(np.full(2000, lr), beta2), 1.0, 1e-9, 1.0)
    continuum = small_ratio_time(lr, beta2)
    assert 0 <= law.mean - continuum <= 0.04 * continuum
    assert continuum == pytest.approx(2 / (1 - beta2) * np.log(special.i0(0.25)), rel=0.01)


SCALAR = {
    "rmsprop": lambda lr, n: exponential_rule(np.full(n, lr), 1 - lr ** (2 / 3), eps=1e-8),
    "adam b1=0.9": lambda lr, n: exponential_rule(np.full(n, lr), 0.995, beta1=0.9, bias_correction=True, eps=1e-8),
    "adam no bias correction": lambda lr, n: exponential_rule(np.full(n, lr), 1 - lr ** (2 / 3), beta1=0.5, eps=1e-8),
    "adagrad": lambda lr, n: sum_rule(np.full(n, 5 * lr), eps=1e-10),
    "second moment": lambda lr, n: exact_rule(np.full(n, lr)),
}


@pytest.mark.parametrize("name", list(SCALAR))
@pytest.mark.parametrize("sigma, stable", [(0.3, None), (0.03, Stable(np.array([1.0]), np.array([1.0]), np.array([3])))])
def test_map_matches_a_monte_carlo_of_the_scalar_recursion(name, sigma, stable):
    """Mean, median and sd of τ against 4000 runs of the exact recursion (float64), noise-led (σ₁ = 0.3,
    projection) and lag-led with the norm over three stable coordinates (σ₁ = 0.03)."""
    lr, steps = 1e-2, 3000
    rule = SCALAR[name](lr, steps)
    law = lag_escape(rule, 1.0, sigma, 1.0, stable)
    runs = monte_carlo(rule, 1.0, sigma, 1.0, stable, runs=4000, seed=3)
    assert (runs <= steps).all()
    assert runs.mean() == pytest.approx(law.mean, rel=0.03)
    assert np.median(runs) == pytest.approx(law.median, rel=0.04)
    if law.sd >= 5:                          # below, the spread is the whole step's resolution
        assert runs.std() == pytest.approx(law.sd, rel=0.12)


def test_censored_law_matches_monte_carlo():
    """A budget inside the law: the fraction escaped and the restricted mean."""
    lr, sigma, budget = 1e-2, 1.0, 140
    rule = exponential_rule(np.full(budget, lr), 0.99, eps=1e-8)
    law = lag_escape(rule, 1.0, sigma, 1.0)
    runs = monte_carlo(rule, 1.0, sigma, 1.0, runs=6000, seed=5)
    assert np.isnan(law.mean) and 0.2 < law.escape_fraction < 0.8
    assert (runs <= budget).mean() == pytest.approx(law.escape_fraction, abs=0.03)
    assert np.minimum(runs, budget).mean() == pytest.approx(law.restricted_mean, rel=0.02)


@pytest.mark.parametrize("lr, sigma, radius, start_y", [(1e-2, 0.3, 3.0, 2.0), (3e-3, 1.0, 1.0, 0.3)])
def test_a_start_offset_matches_monte_carlo(lr, sigma, radius, start_y):
    """From y₀ noise lengths along the escape direction (d = 1): W centred there, the first step a
    biased sign step; a third to two thirds of the time from the saddle."""
    rule = exponential_rule(np.full(5000, lr), 0.99, eps=1e-8)
    law = lag_escape(rule, 1.0, sigma, radius, start_offset=start_y * sigma, dim=1)
    runs = monte_carlo(rule, 1.0, sigma, radius, runs=4000, seed=7, start_y=start_y)
    assert runs.mean() == pytest.approx(law.mean, rel=0.02)
    assert law.mean < 0.7 * lag_escape(rule, 1.0, sigma, radius).mean


def engine_cell(problem, optimizer, seeds=512, budget=20_000):
    return simulate({"problem": problem, "optimizer": optimizer, "seeds": seeds, "budget": budget}).rows


@pytest.fixture(scope="module")
def engine_cells():
    frames = [
        engine_cell({"name": "quadratic_saddle", "dim": 4, "anisotropy": 30}, {"name": "rmsprop", "lr": 3e-3, "beta2": 0.99}),
        engine_cell({"name": "quadratic_saddle", "dim": 10, "anisotropy": 3, "curvature": 2.0, "escape_radius": 0.5},
                    {"name": "adam", "lr": 5e-3, "beta1": 0.9, "beta2": 0.999}),
        engine_cell({"name": "quadratic_saddle", "dim": 10, "anisotropy": 300, "escape_measure": "projection"},
                    {"name": "adam", "lr": 1e-2, "beta1": 0.0, "beta2": 0.995, "bias_correction": False}),
        engine_cell({"name": "staib_toy"}, {"name": "rmsprop", "lr": 3e-3, "beta2": 1 - 3e-3 ** (2 / 3)}),
        engine_cell({"name": "quadratic_saddle", "dim": 10, "anisotropy": 30},
                    {"name": "rmsprop", "lr": 0.01, "lr_schedule": "inverse_sqrt", "beta2": 0.99}),
    ]
    return cell_table(pd.concat(frames, ignore_index=True))


def test_predictions_match_small_engine_cells(engine_cells):
    predicted = predictions(engine_cells)
    assert predicted["theory_model"].str.startswith("lag map").all()
    ratio = engine_cells["escape_mean"] / predicted["predicted_mean"]
    assert ratio.between(0.97, 1.03).all(), ratio.to_dict()
    assert (engine_cells["escape_median"] / predicted["predicted_median"]).between(0.96, 1.04).all()


def test_local_exponents_are_the_models_own_slopes(engine_cells):
    """Deep in the sign regime the time is flat in σ₁ and γ and ≈ 1/η; in the noise-led regime its σ₁
    exponent approaches the tracking preconditioner's ≈ 1 − 1/Λ'."""
    sign = engine_cells[engine_cells["problem.anisotropy"] == 300].iloc[0]
    slopes = local_exponents(sign)
    assert abs(slopes["sigma_escape"]) < 0.02 and abs(slopes["curvature"]) < 0.02
    assert slopes["lr"] == pytest.approx(-1, abs=0.2)
    assert slopes["anisotropy"] == -slopes["sigma_escape"]


def test_adaptive_cells_from_an_offset_and_under_a_schedule_are_predicted(engine_cells):
    cell = engine_cells.iloc[[0]].copy()
    cell["start_offset"] = 0.05
    got = predictions(cell)
    assert got["predicted_mean"].notna().all()
    assert "start offset" in got["theory_assumptions"].iloc[0]


@pytest.mark.parametrize("lr", [1e-3, 1e-2])
def test_crossover_is_where_the_models_two_limits_meet(lr):
    """The noise-led limit (the estimate tracking the noise alone, up to r) equals the floor-led one
    (σ₁ → 0) at γr/σ₁ = crossover; there the lag map itself is slower than both (the transition is
    smooth), and the crossing sits at 4-8 for RMSProp under the paper's rule."""
    rule = exponential_rule(np.full(20_000, lr), 1 - lr ** (2 / 3))
    ratio = crossover(rule, 1.0, 1.0)
    assert 4 < ratio < 8
    floor_time = floor_led_time(rule, 1.0)
    assert noise_led_time(rule, 1.0, 1 / ratio, 1.0) == pytest.approx(floor_time, rel=0.005)
    assert lag_escape(rule, 1.0, 1 / ratio, 1.0).mean > 1.3 * floor_time
    # far from it, the map approaches each limit
    assert lag_escape(rule, 1.0, 1e-6, 1.0).mean == pytest.approx(floor_time, rel=0.01)


def test_each_verdict_states_its_model_and_assumptions(engine_cells):
    """Issue 24 item 5: a beta1 = 0.9 Adam cell is predicted by the beta1 = 0.9 model, and the verdict
    sentence and comparison.csv's row say which model and what it assumes."""
    from analysis.compare import compare_cells, summarize_cell_verdicts
    from analysis.report import cell_verdicts

    cells = engine_cells.join(predictions(engine_cells))
    comparison = compare_cells(cells)
    assert {"optimizer", "measure", "measured", "predicted", "ratio", "theory_model", "theory_assumptions",
            "verdict"} <= set(comparison.columns)
    momentum = comparison[comparison["theory_model"].str.contains("beta1=0.9")]
    assert len(momentum) == 1 and "bias-corrected" in momentum["theory_model"].iloc[0]
    sentences = cell_verdicts(summarize_cell_verdicts(comparison), comparison, cells, ["optimizer.lr"],
                              pd.Series(dtype=int))
    adam = [s for s in sentences if "beta1=0.9" in s]
    assert adam and "; assumes the escape coordinate alone" in adam[0] and "mean-field second moment" in adam[0]


def test_torch_classes_get_the_built_in_methods_prediction():
    base = {"cell_id": "a", "problem.name": "quadratic_saddle", "problem.dim": 4, "optimizer.lr": 3e-3,
            "curvature": 1.0, "sigma_escape": 0.1, "escape_radius": 1.0, "budget": 5000}
    frame = pd.DataFrame([
        {**base, "optimizer.name": "adam", "optimizer.beta1": 0.9, "optimizer.beta2": 0.99, "optimizer.eps": 1e-8},
        {**base, "cell_id": "b", "optimizer.name": "torch.optim.Adam", "optimizer.betas[0]": 0.9,
         "optimizer.betas[1]": 0.99, "optimizer.eps": 1e-8},
        {**base, "cell_id": "c", "optimizer.name": "rmsprop", "optimizer.beta2": 0.99, "optimizer.eps": 1e-8},
        {**base, "cell_id": "d", "optimizer.name": "torch.optim.RMSprop", "optimizer.alpha": 0.99,
         "optimizer.eps": 1e-8},
        {**base, "cell_id": "e", "optimizer.name": "torch.optim.Adam", "optimizer.amsgrad": True}])
    got = predictions(frame)["predicted_mean"]
    assert got[0] == got[1] and got[2] == got[3] and got[0] != got[2]
    assert np.isnan(got[4])


def test_rotated_noise_is_predicted_along_the_escape_direction():
    """A diagonal method on a diagonal H sees only Σ₁₁ along the escape coordinate, rotated noise or not."""
    cell = pd.DataFrame([{"cell_id": "a", "problem.name": "quadratic_saddle", "problem.dim": 10,
                          "problem.noise_alignment": "rotated", "problem.escape_measure": "projection",
                          "optimizer.name": "rmsprop", "optimizer.lr": 3e-3, "optimizer.beta2": 0.99,
                          "curvature": 1.0, "sigma_escape": 0.3, "escape_radius": 1.0, "budget": 5000}])
    got = predictions(cell)
    assert got["predicted_mean"].notna().all() and "rotated noise" in got["theory_assumptions"].iloc[0]


def test_floor_figure_is_drawn(tmp_path):
    from analysis.lag_figures import floor_figure

    curves = pd.DataFrame({"variant": "rmsprop", "beta2": "paper rule", "lr": [1e-3, 1e-2], "R": [10.0, 4.64],
                           "floor": [0.670, 0.520]})
    measured = pd.DataFrame({"variant": ["rmsprop"], "R": [10.0], "floor": [0.668], "lo": [0.665], "hi": [0.671]})
    png = floor_figure(measured, tmp_path / "floor_vs_R.png", curves, dpi=40)
    assert png.is_file() and png.with_suffix(".pdf").is_file()


def test_a_start_far_out_in_noise_lengths_is_predicted():
    """A start offset of about 12 noise lengths in a random direction of 6 (a cell of the verification
    sweep): the first step's sign change lies far in ξ₁'s tail, where no quadrature node may round to
    probability 1 (they did, and the cell was predicted to escape at step 1)."""
    rows = simulate({"problem": {"name": "quadratic_saddle", "dim": 6, "curvature": 1.627, "escape_radius": 0.4236,
                                 "noise_scale": 1.0, "anisotropy": 155.2, "escape_measure": "projection"},
                     "optimizer": {"name": "rmsprop", "lr": 0.00676, "beta2": 0.9642}, "start_offset": 0.05,
                     "seeds": 1024, "budget": 2000}).rows
    cells = cell_table(rows)
    got = predictions(cells)["predicted_mean"].iloc[0]
    assert got > 5 and cells["escape_mean"].iloc[0] == pytest.approx(got, rel=0.03)


def test_a_schedule_that_ends_at_zero_is_predicted_past_the_budget():
    """Cosine to 0 at the budget: past it the gains are 0, and the noise phase must not divide 0 by 0."""
    cell = pd.DataFrame([{"cell_id": "a", "problem.name": "quadratic_saddle", "problem.dim": 4,
                          "problem.escape_measure": "projection", "optimizer.name": "rmsprop",
                          "optimizer.lr": 0.01, "optimizer.beta2": 0.99, "optimizer.lr_schedule": "cosine",
                          "curvature": 1.0, "sigma_escape": 0.1, "escape_radius": 1.0, "budget": 2000}])
    got = predictions(cell)["predicted_mean"].iloc[0]
    constant = predictions(cell.assign(**{"optimizer.lr_schedule": "constant"}))["predicted_mean"].iloc[0]
    assert 10 < got < 2000 and got == pytest.approx(constant, rel=0.02)   # escape within the first 1% of it


def test_a_censored_cell_without_a_predicted_mean_is_still_compared():
    """The lag law is known only up to its horizon: a cell censored past half is compared on the
    escaped fraction, one censored below half on its median."""
    from analysis.compare import compare_cells

    cells = pd.DataFrame({"cell_id": ["a", "b"], "problem": "quadratic_saddle", "optimizer": "adagrad",
                          "theory_model": "lag map: adagrad (running sum)", "theory_assumptions": "", "theory_note": "",
                          "escape_kind": ["restricted", "median"], "escape_mean": np.nan,
                          "escape_median": [np.inf, 900.0], "escape_median_lo": [np.nan, 880.0],
                          "escape_median_hi": [np.nan, 920.0], "escape_restricted_mean": [990.0, 800.0],
                          "escape_sd": np.nan, "escaped_runs": [100, 600], "runs": 1000,
                          "escaped_fraction": [0.1, 0.6], "predicted_mean": np.nan,
                          "predicted_median": [np.nan, 905.0], "predicted_sd": np.nan,
                          "predicted_escape_fraction": [0.11, 0.62], "predicted_restricted_mean": [985.0, 790.0]})
    from workflows.core.survival import RESTRICTED
    cells.loc[0, "escape_kind"] = RESTRICTED
    got = compare_cells(cells)
    assert list(got["measure"]) == ["restricted mean", "median"] and list(got["verdict"]) == ["holds", "holds"]


def test_a_parameter_missing_as_pandas_na_is_a_missing_parameter():
    """A smoke-like table: a staib_toy cell beside quadratic_saddle cells, whose problem.rotate_hessian
    is missing as pandas' NA in a nullable boolean column (how rows read back from parquet carry it).
    bool(pd.NA) raised in the lag model's settings, and the smoke sweep's analysis failed."""
    import pandas as pd

    from analysis.prediction import predictions

    cells = pd.DataFrame({
        "cell_id": ["a", "b"], "problem.name": ["staib_toy", "quadratic_saddle"],
        "problem.rotate_hessian": pd.array([pd.NA, False], dtype="boolean"),
        "optimizer.name": ["adam", "adam"], "optimizer.lr": [0.001, 0.001], "optimizer.beta1": [0.0, 0.0],
        "optimizer.beta2": [0.99, 0.99], "optimizer.eps": [1e-8, 1e-8], "optimizer.bias_correction": [True, True],
        "curvature": [0.1, 1.0], "sigma_escape": [0.1, 1.0], "escape_radius": [0.3, 1.0], "budget": [3000, 3000],
        "problem.dim": pd.array([pd.NA, 2], dtype="Int64"), "seeds": [64, 64]})
    out = predictions(cells)
    assert len(out) == 2 and out["theory_model"].notna().all()


@pytest.mark.parametrize("lr, beta2, sigma", [(1e-3, 0.99, 0.1), (1e-4, 0.9999, 0.1)])
def test_a_confining_quartic_is_in_the_map(lr, beta2, sigma):
    """(λ/4)‖x‖⁴ with λ = 1 and r = 0.5 slows the drift by a quarter at r: the map with it against a
    Monte Carlo of the recursion with it (without it the map is 3-6% fast here)."""
    rule = exponential_rule(np.full(20_000, lr), beta2, eps=1e-8)
    law = lag_escape(rule, 1.0, sigma, 0.5, quartic=1.0)
    runs = monte_carlo(rule, 1.0, sigma, 0.5, runs=3000, seed=1, quartic=1.0)
    assert runs.mean() == pytest.approx(law.mean, rel=0.015)
    assert abs(lag_escape(rule, 1.0, sigma, 0.5).mean / runs.mean() - 1) > 0.03


def test_a_step_size_decayed_to_almost_nothing_leaves_the_noise_phase_finite():
    """Halving every 500 steps for 3 budgets: the last gains are ~1e-75, (1 + κ)² − 1 rounds to 0, and
    the noise phase's tail must not become inf (the lr_schedules study cell that stopped the analysis)."""
    cell = pd.DataFrame([{"cell_id": "a", "problem.name": "quadratic_saddle", "problem.dim": 10,
                          "problem.escape_measure": "projection", "optimizer.name": "rmsprop", "optimizer.lr": 1e-3,
                          "optimizer.beta2": 0.99, "optimizer.lr_schedule": "step", "optimizer.decay_factor": 0.5,
                          "optimizer.decay_every": 500, "curvature": 1.0, "sigma_escape": 0.01, "escape_radius": 1.0,
                          "budget": 40_000}])
    got = predictions(cell)["predicted_mean"].iloc[0]
    assert 500 < got < 2000
