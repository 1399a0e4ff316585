"""Per-cell Kaplan–Meier summaries: scipy's estimator as used here against lifelines, and censoring."""
import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from workflows.core.survival import RESTRICTED

from analysis.survival import summarize_cells


def random_cells(n_cells=25, seed=1):
    """Cells of varied size and censoring: ties (integer steps), divergence-censored runs, a cell
    with no escape and a cell where every run escaped."""
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(n_cells):
        runs, budget = rng.integers(5, 200), int(rng.integers(50, 3000))
        steps = np.ceil(rng.lognormal(np.log(budget) * rng.uniform(0.7, 1.1), 0.4, runs)).astype(int)
        if c == 0:
            steps[:] = budget + 1                      # nobody escapes
        if c == 1:
            steps = np.minimum(steps, budget - 1)      # everybody escapes
        escaped = steps <= budget
        steps = np.minimum(steps, budget)
        diverged = (rng.random(runs) < 0.05) & (c > 1)
        steps[diverged], escaped[diverged] = np.maximum(1, steps[diverged] // 2), False
        frames.append(pd.DataFrame({"cell_id": f"c{c:02d}", "escape_step": steps, "escaped": escaped,
                                    "budget": budget}))
    return pd.concat(frames, ignore_index=True)


def test_matches_lifelines_cell_by_cell():
    rows = random_cells()
    summary = summarize_cells(rows)
    for cell, runs in rows.groupby("cell_id"):
        km = KaplanMeierFitter().fit(runs["escape_step"], runs["escaped"])
        interval = median_survival_times(km.confidence_interval_)
        expected = [km.median_survival_time_, interval.iloc[0, 0], interval.iloc[0, 1],
                    restricted_mean_survival_time(km, t=runs["budget"].iloc[0])]
        columns = ["escape_median", "escape_median_lo", "escape_median_hi", "escape_restricted_mean"]
        got = summary.loc[cell, columns].to_numpy(float)
        # A tie: where S is exactly 0.5 at a time, scipy's product gives 0.5 and lifelines'
        # 0.5 + 1e-16, which moves lifelines' median one event later. Only that may differ.
        if got[0] != expected[0]:
            assert abs(km.survival_function_.loc[got[0]].iloc[0] - 0.5) < 1e-12, cell
            assert expected[0] == km.survival_function_.index[km.survival_function_.index > got[0]][0]
            got[0] = expected[0]
        np.testing.assert_allclose(got, expected, err_msg=cell)


def test_censored_runs_are_never_escapes():
    budget = 1000
    rows = pd.DataFrame({"cell_id": "a", "budget": budget,
                         "escape_step": [100, 200, 300, budget, budget, budget, budget],
                         "escaped": [True, True, True, False, False, False, False]})
    summary = summarize_cells(rows).loc["a"]
    # 4 of 7 censored: the median is undefined, not the budget, and the restricted mean is used.
    assert np.isinf(summary["escape_median"]) and summary["escape_kind"] == RESTRICTED
    assert summary["escape_restricted_mean"] == pytest.approx((100 + 200 + 300 + 4 * budget) / 7)
    assert np.isnan(summary["escape_mean"])          # no plain mean where runs were censored
    assert summary["escape_n_events"] == 3


def test_fully_escaped_cell_has_a_mean_with_a_t_interval():
    rows = pd.DataFrame({"cell_id": "a", "budget": 100, "escape_step": [10, 20, 30, 40], "escaped": True})
    summary = summarize_cells(rows).loc["a"]
    assert summary["escape_mean"] == 25 and summary["escape_kind"] == "median"
    assert summary["escape_mean_lo"] < 25 < summary["escape_mean_hi"]
    assert summary["escape_median"] == 20            # KM: the first time S ≤ 0.5
